"""Per-trial result files in the run directory: ``results/<trial_id>.json``.

These files are the sweep's source of truth for ``smctune report`` (which must work without Ray or
MLflow running) and for skipping finished trials when a sweep with the same name is run again. Each
file is written atomically when its trial ends, so an interrupted sweep never leaves a half record.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Optional

from .config import TrialSpec

STATUS_OK, STATUS_FAILED, STATUS_KILLED = "ok", "failed", "killed"
# A trial stopped early because its network collapsed (``smctune.collapse``): a result, not an error.
STATUS_COLLAPSED = "collapsed"
FINISHED_STATUSES = (STATUS_OK, STATUS_COLLAPSED)


def finished_ids(run_dir: str | os.PathLike, also: tuple = ()) -> set[str]:
    """Trials whose record says ``ok`` or ``collapsed`` (or one of ``also``, e.g. ``failed`` for a
    resume that keeps failures): a rerun of the sweep leaves them alone."""
    return set(finished_values(run_dir, also=also))


def finished_values(run_dir: str | os.PathLike, metric: str = "best",
                    also: tuple = ()) -> dict[str, Optional[float]]:
    """The finished trials of ``finished_ids`` -> their value under ``metric`` (``best``/``final``
    of the last level; None without one, and always None for the ``also`` statuses): what the cell
    searcher and the threshold search are told."""
    done = {}
    for path in sorted(Path(run_dir, "results").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        status = record.get("status")
        if status not in FINISHED_STATUSES + tuple(also):
            continue
        levels = record.get("levels") or []
        value = levels[-1].get(metric) if levels and status in FINISHED_STATUSES else None
        finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        done[record["trial_id"]] = float(value) if finite else None
    return done


class RecordKeeper:
    """Collects a trial's reports and writes its record when the trial ends."""

    def __init__(self, run_dir: str | os.PathLike, chance: float):
        self.directory = Path(run_dir, "results")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.chance = chance
        self.open: dict[str, dict] = {}

    def started(self, spec: TrialSpec) -> None:
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

    def recovered(self, trial_id: str, error: str) -> None:
        if trial_id in self.open:
            self.open[trial_id]["retries"] += 1
            self.open[trial_id]["last_retry_error"] = error

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
        path = self.directory / f"{trial_id}.json"
        staging = path.with_suffix(".json.tmp")
        staging.write_text(json.dumps(record, indent=1, default=str))
        staging.replace(path)
        return record

    def write_skipped(self, spec: TrialSpec, status: str, error: str) -> None:
        """A trial that never ran (its dense baseline failed) still gets a record saying why."""
        self.started(spec)
        self.finished(spec.trial_id, status, error)


def layer_summary(layerwise) -> dict:
    """Per-layer sparsity of a finished level, and the layers it emptied completely: layer collapse
    (a matrix with no weight left cuts the network) is SMC-Bench's explanation for methods that fall
    to chance, so the record names the collapsed layers instead of leaving them to the MLflow CSV."""
    if not layerwise:
        return {}
    layers = {name: round((numel - kept) / numel, 6) if numel else 0.0 for name, numel, kept in layerwise}
    return {"layers": layers, "layer_sizes": {name: int(numel) for name, numel, _ in layerwise},
            "collapsed_layers": [name for name, numel, kept in layerwise if numel and kept == 0]}
