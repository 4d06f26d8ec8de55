"""What the driver writes about trials: the final record of each, a live record while it runs, and
its own heartbeat.

* ``results/<trial_id>.json``, the **final record**, written when the trial ends: the sweep's source
  of truth for ``smctune report`` (which must work without Ray or MLflow running) and for skipping
  finished trials when a sweep with the same name runs again.
* ``live/<trial_id>.json``, the **live record**, written when a trial starts, is retried, and (at
  most every ``LIVE_EVERY_S`` per trial) as it reports progress; removed when the final record is
  written. One small file per trial, because a sweep reaches tens of thousands of trials and a
  file rewritten on every event would grow with all of them.
* ``driver.json``, the **heartbeat**: the driver's pid, host and stage, rewritten while the sweep
  runs, so ``smctune status`` tells a live sweep from one whose driver is gone.

Every file is written atomically (``layout.write_atomic``), so a reader never sees half a record.
A write that fails raises its one-line ``UserError`` ("cannot write <path>: <reason>") to the
caller: what a failure means for the sweep (it stops) is decided where Tune's events arrive
(``sweep.tune_events.Listeners``), not here.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Mapping, Optional, Union

from smctune.config.specs import TrialSpec
from smctune.gc_pause import paused
from smctune.rundir.layout import RunDir, names_ending, write_atomic

STATUS_OK, STATUS_FAILED, STATUS_KILLED = "ok", "failed", "killed"
# A trial stopped early because its network collapsed (``smctune.train.collapse``): a result, not an error.
STATUS_COLLAPSED = "collapsed"
FINISHED_STATUSES = (STATUS_OK, STATUS_COLLAPSED)

# live record states: running, or waiting for Tune to restart it from its last checkpoint
LIVE_RUNNING, LIVE_RETRYING = "running", "retrying"
LIVE_EVERY_S = 15.0     # progress rewrites a trial's live record at most this often
# what a live record repeats of its trial, so ``status`` can list trials the plan does not name
LIVE_IDENTITY = ("trial_id", "method", "sparsity", "seed", "model", "fold", "tuning", "group")

PathLike = Union[str, os.PathLike]


# ---------------------------------------------------------------------------------------- reading

def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_bytes())   # bytes: json decodes UTF-8 faster than a text file does
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_dir(directory: Path) -> dict[str, Optional[dict]]:
    """Trial id -> its JSON file's content (None when unreadable: written atomically, so a broken
    file is damage, not a write in progress), keyed by the file's ``trial_id``, else its name."""
    found: dict = {}
    if not directory.is_dir():
        return found
    # the collector paused while thousands of parsed records pile up (``smctune.gc_pause``)
    with paused():
        for name in names_ending(directory, ".json"):
            data = _read_json(directory / name)
            trial_id = data.get("trial_id") if data and isinstance(data.get("trial_id"), str) else name[:-5]
            found[trial_id] = data
    return found


def read_records(run_dir: PathLike) -> dict[str, Optional[dict]]:
    """Every final record of a run: trial id -> record (None when unreadable)."""
    return _read_dir(RunDir(run_dir).results_dir)


def read_live(run_dir: PathLike) -> dict[str, dict]:
    """Every readable live record of a run: trial id -> live record."""
    return {tid: data for tid, data in _read_dir(RunDir(run_dir).live_dir).items() if data is not None}


def read_heartbeat(run_dir: PathLike) -> Optional[dict]:
    """The driver's last heartbeat; None when no driver wrote one (or it is unreadable)."""
    return _read_json(RunDir(run_dir).heartbeat_file)


def write_heartbeat(run_dir: PathLike, beat: dict) -> None:
    write_atomic(RunDir(run_dir).heartbeat_file, json.dumps(beat, indent=1))


def finished_ids(run_dir: PathLike, also: tuple = ()) -> set[str]:
    """Trials whose record says ``ok`` or ``collapsed`` (or one of ``also``, e.g. ``failed`` for a
    resume that keeps failures): a rerun of the sweep leaves them alone."""
    return set(finished_values(run_dir, also=also))


def finished_values(run_dir: PathLike, metric: str = "best", also: tuple = (),
                    ids: Optional[Iterable[str]] = None,
                    methods: Optional[dict] = None) -> dict[str, Optional[float]]:
    """The finished trials of ``finished_ids`` -> their value under ``metric`` (``best``/``final``
    of the last level; None without one, and always None for the ``also`` statuses): what the cell
    searcher and the threshold search are told. ``ids``: read only these trials' records (the
    driver's bookkeeping after a Tuner: reading every record after every round is quadratic).
    ``methods``: filled with each finished trial's method, from the same read."""
    run = RunDir(run_dir)
    records = (read_records(run_dir) if ids is None
               else {trial_id: _read_json(run.record_file(trial_id)) for trial_id in ids})
    done = {}
    for trial_id, record in records.items():
        status = record.get("status") if record else None
        if status not in FINISHED_STATUSES + tuple(also):
            continue
        levels = record.get("levels") or []
        value = levels[-1].get(metric) if levels and status in FINISHED_STATUSES else None
        finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        done[trial_id] = float(value) if finite else None
        if methods is not None:
            methods[trial_id] = record.get("method")
    return done


class FinishedTrials:
    """``finished_values`` kept current for a driver: every record is read once per metric, after
    that only the records ``keeper`` wrote since (a threshold search asks after every round, a
    stage after every Tuner: re-reading the whole run each time was quadratic in trials). Trials
    in ``redo`` (recorded finished, to be run again) are left out."""

    def __init__(self, run_dir: PathLike, keeper: "RecordKeeper", also: tuple = (),
                 redo: frozenset = frozenset()):
        self.run_dir, self.keeper, self.also, self.redo = run_dir, keeper, also, redo
        self._values: dict[str, dict] = {}   # metric -> finished trial id -> value
        self._seen: dict[str, int] = {}      # metric -> how much of keeper.written is in it
        self._methods: dict[str, str] = {}   # finished trial id -> its record's method

    def of_method(self, method: str, metric: str = "best") -> list[str]:
        """The finished trials whose record names ``method`` (less ``redo``), current as ``values``."""
        self.values(metric)
        return [trial_id for trial_id, name in self._methods.items()
                if name == method and trial_id not in self.redo and trial_id in self._values[metric]]

    def values(self, metric: str) -> Mapping[str, Optional[float]]:
        written = self.keeper.written
        if metric not in self._values:
            self._values[metric] = finished_values(self.run_dir, metric, also=self.also, methods=self._methods)
            self._seen[metric] = len(written)
        elif self._seen[metric] < len(written):
            fresh = written[self._seen[metric]:]
            self._seen[metric] = len(written)
            known = self._values[metric]
            for trial_id in fresh:   # a rerun that failed is no longer finished
                known.pop(trial_id, None)
            known.update(finished_values(self.run_dir, metric, also=self.also, ids=fresh,
                                         methods=self._methods))
        if not self.redo:   # a view, not a copy: callers ask once per trial or per round
            return MappingProxyType(self._values[metric])
        return {trial_id: value for trial_id, value in self._values[metric].items() if trial_id not in self.redo}


# ---------------------------------------------------------------------------------------- writing

class RecordKeeper:
    """Collects a trial's reports, keeps its live record current and writes its final record when
    the trial ends. ``live_every_s``: the least time between two progress writes of one trial.
    The in-memory state is updated before a file is written, so after a failed write the trial is
    still open (a live record failed) or closed (its final record failed) as the event said."""

    def __init__(self, run_dir: PathLike, chance: float, live_every_s: float = LIVE_EVERY_S):
        self.run = RunDir(run_dir)
        self.run.results_dir.mkdir(parents=True, exist_ok=True)
        self.chance = chance
        self.live_every_s = live_every_s
        self.open: dict[str, dict] = {}
        #: trial ids whose final record this keeper wrote, in order: what the driver re-reads after
        #: a Tuner instead of every record of the run
        self.written: list[str] = []
        self._live_written: dict[str, float] = {}

    def discard_live(self) -> None:
        """Remove live records a previous driver left (killed before it could end its trials):
        a new driver starts them again, or leaves them to their final records."""
        directory = self.run.live_dir
        if directory.is_dir():
            for path in directory.glob("*.json"):
                with contextlib.suppress(OSError):
                    path.unlink()

    def started(self, spec: TrialSpec) -> None:
        self._open(spec)
        self._write_live(spec.trial_id, LIVE_RUNNING)

    def _open(self, spec: TrialSpec) -> None:
        self.open[spec.trial_id] = {
            "trial_id": spec.trial_id, "task": spec.task, "method": spec.method, "seed": spec.seed,
            "model": spec.model.arch or None, "fold": spec.fold, "tuning": spec.tuning,
            "group": spec.group or None,
            "preset": spec.preset, "sparsity": spec.sparsity, "status": None, "error": None,
            "metric": None, "chance": self.chance, "levels": [], "history": [],
            "dense_key": spec.dense_key(), "cached": False, "wall_s": None, "mlflow_run_id": None,
            "tunables": spec.tunables, "prunable": spec.prunable, "retries": 0, "resumed_from": 0,
            "_t0": time.time(),
        }

    def restarted(self, trial_id: str) -> None:
        """Tune started a retried trial again (from its last checkpoint)."""
        if trial_id in self.open:
            self._write_live(trial_id, LIVE_RUNNING)

    def result(self, trial_id: str, metrics: dict) -> None:
        record = self.open.get(trial_id)
        if record is None:
            return
        metric = metrics["metric_name"]
        record["metric"] = metric
        record["cached"] = bool(metrics.get("cached"))
        record["resumed_from"] = max(record["resumed_from"], int(metrics.get("resumed_from") or 0))
        if metrics.get("collapsed"):
            record["collapse_reason"] = metrics["collapsed"]
        if record["history"] and metrics["global_step"] <= record["history"][-1]["global_step"] \
                and metrics.get("round") == record["history"][-1].get("round"):
            # a retried trial replays from its checkpoint: drop the rows it will report again
            record["history"] = [row for row in record["history"]
                                 if row["global_step"] < metrics["global_step"]]
        record["history"].append({key: metrics.get(key) for key in
                                  ("step", "global_step", metric, "loss", "train_loss", "sparsity",
                                   "sparsity_all", "round")})
        if metrics.get("costs"):   # time per phase and peak memory so far (smctune.train.costs)
            record["costs"] = metrics["costs"]
        if metrics.get("level_done"):
            record["levels"] = [lv for lv in record["levels"] if lv["round"] != metrics.get("round")
                                or lv["sparsity"] != metrics.get("level")]
            record["levels"].append({
                "sparsity": metrics.get("level") or 0.0,
                "achieved_sparsity": metrics.get("sparsity"),
                "achieved_sparsity_all": metrics.get("sparsity_all"),
                "final": metrics.get(metric), "best": metrics.get("best"),
                "step": metrics.get("step"), "round": metrics.get("round"),
                "diverged": bool(metrics.get("diverged")),
                "collapsed": metrics.get("collapsed") or None,
                **layer_summary(metrics.get("layerwise")),
                **({"details": metrics["details"]} if metrics.get("details") else {}),
            })
        if time.time() - self._live_written.get(trial_id, 0.0) >= self.live_every_s:
            self._write_live(trial_id, LIVE_RUNNING)

    def recovered(self, trial_id: str, error: str) -> None:
        if trial_id in self.open:
            self.open[trial_id]["retries"] += 1
            self.open[trial_id]["last_retry_error"] = error
            self._write_live(trial_id, LIVE_RETRYING)

    def attach(self, trial_id: str, key: str, value) -> None:
        if trial_id in self.open:
            self.open[trial_id][key] = value

    def finished(self, trial_id: str, status: str, error: Optional[str] = None) -> Optional[dict]:
        record = self.open.pop(trial_id, None)
        if record is None:
            return None
        if status == STATUS_OK and record.get("collapse_reason"):
            status = STATUS_COLLAPSED
        record["status"], record["error"] = status, error
        started = record.pop("_t0")
        record["ended_at"] = round(time.time(), 3)
        record["started_at"] = round(started, 3)
        record["wall_s"] = round(record["ended_at"] - started, 3)
        write_atomic(self.run.record_file(trial_id), json.dumps(record, indent=1, default=str))
        self.written.append(trial_id)
        self._live_written.pop(trial_id, None)
        with contextlib.suppress(OSError):
            self.run.live_file(trial_id).unlink(missing_ok=True)
        return record

    def write_skipped(self, spec: TrialSpec, status: str, error: str) -> None:
        """A trial that never ran (its dense baseline failed) still gets a record saying why."""
        self._open(spec)
        self.finished(spec.trial_id, status, error)

    def _write_live(self, trial_id: str, state: str) -> None:
        record = self.open[trial_id]
        last = record["history"][-1] if record["history"] else {}
        now = time.time()
        live = {**{key: record[key] for key in LIVE_IDENTITY}, "state": state,
                "started_at": round(record["_t0"], 3), "updated_at": round(now, 3),
                "step": last.get("step"), "round": last.get("round"), "retries": record["retries"],
                "error": record.get("last_retry_error")}
        self._live_written[trial_id] = now   # a failed write is not retried at every result
        write_atomic(self.run.live_file(trial_id), json.dumps(live))


def layer_summary(layerwise) -> dict:
    """Per-layer sparsity of a finished level, and the layers it emptied completely: layer collapse
    (a matrix with no weight left cuts the network) is SMC-Bench's explanation for methods that fall
    to chance, so the record names the collapsed layers instead of leaving them to the MLflow CSV."""
    if not layerwise:
        return {}
    layers = {name: round((numel - kept) / numel, 6) if numel else 0.0 for name, numel, kept in layerwise}
    return {"layers": layers, "layer_sizes": {name: int(numel) for name, numel, _ in layerwise},
            "collapsed_layers": [name for name, numel, kept in layerwise if numel and kept == 0]}
