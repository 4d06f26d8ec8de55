"""``smctune status <run>``: where every trial of a sweep stands, from the run directory alone.

Four sources, all written by smctune itself (``rundir.records``); no Ray connection, no torch, no
ray import, nothing of Tune's own state:

- ``sweep.json`` re-planned with ``plan_trials``: every trial the sweep is meant to run, and the
  resources each asks for (the preset's, with ``--gpus-per-trial``);
- ``results/<trial_id>.json``: trials that ended (``ok``, ``collapsed``, ``failed``, ``killed``);
- ``live/<trial_id>.json``: trials that started and have not ended (running, or waiting to be
  retried from their last checkpoint), with the step and round they reached;
- ``driver.json``: the driver's heartbeat, which says whether anything still runs them.

A final record wins over a live one, unless the live record is newer (a later session retrying a
failed or killed trial). A live record whose driver is gone is a trial that was killed with it.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from smctune.config.search_space import trial_resources
from smctune.config.specs import SweepSpec, row_label
from smctune.errors import UserError
from smctune.rundir.layout import RunDir
from smctune.rundir.records import LIVE_RETRYING, read_heartbeat, read_live, read_records
from smctune.sweep.plan import plan_trials, stage_of
from smctune.sweep.request import read_recorded_spec, recorded_search_space
from smctune.sweep.status_format import format_resources


STATES = ("finished", "running", "pending", "failed", "collapsed", "killed", "unknown")
WAITING_FOR_STAGE1 = "waiting for stage 1 (dense baseline)"
STALE_BEATS = 4           # heartbeats missed before a driver counts as gone


@dataclass
class DriverStatus:
    """The driver as its heartbeat describes it."""

    seen: bool = False                # a driver has written a heartbeat
    alive: bool = False               # ... recently, and has not ended
    ended: str = ""                   # how it ended ("finished", "interrupted", ...), "" if it did not say
    gone: bool = False                # its pid no longer exists (on this host)
    pid: Optional[int] = None
    host: str = ""
    stage: Optional[str] = None
    updated_at: float = 0.0
    ended_at: Optional[float] = None


@dataclass
class TrialStatus:
    trial_id: str
    method: str
    sparsity: Optional[float]
    seed: int
    arch: str = ""
    fold: Optional[int] = None
    stage: int = 1
    state: str = "pending"
    detail: str = ""
    resources: dict = field(default_factory=dict)
    max_steps: int = 0
    rounds: int = 0


@dataclass
class RunStatus:
    run_dir: Path
    spec: SweepSpec
    trials: list
    driver: DriverStatus
    now: float

    def counts(self) -> dict:
        counts = dict.fromkeys(STATES, 0)
        for trial in self.trials:
            counts[trial.state] += 1
        return counts


# ---------------------------------------------------------------------------------------- reading

def read_status(run_dir, now: Optional[float] = None) -> RunStatus:
    """Every planned trial of the run, with its state and why (see the module docstring)."""
    run = RunDir(run_dir)
    now = time.time() if now is None else now
    spec = read_recorded_spec(run.root)
    space = recorded_search_space(run.root, spec)
    resources = _trial_resources(spec, space)
    records, live = read_records(run.root), read_live(run.root)
    damaged = sorted(trial_id for trial_id, data in records.items() if not isinstance(data, dict))
    if damaged:   # written atomically: a record that does not parse was damaged after the fact
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise UserError(f"damaged trial record {run.record_file(damaged[0])}{more}: not a JSON object; "
                        "move it away and `smctune resume` runs that trial again")
    driver = read_driver(run.root, now)

    trials = [TrialStatus(trial_id=t.trial_id, method=row_label(t.method, t.group), sparsity=t.sparsity,
                          seed=t.seed, arch=t.model.arch, fold=t.fold, stage=stage_of(t),
                          resources=dict(resources), max_steps=t.train.max_steps, rounds=len(t.levels))
              for t in plan_trials(spec, space)]
    known = {t.trial_id for t in trials}
    for trial_id, data in sorted({**live, **records}.items()):   # tunings, trials of an older plan
        if trial_id not in known and isinstance(data, dict):
            trials.append(_unplanned(trial_id, data, resources))

    for trial in trials:
        _settle(trial, records, live.get(trial.trial_id), driver, spec.max_failures)
    _explain_waiting(trials, driver, spec)
    return RunStatus(run_dir=run.root, spec=spec, trials=trials, driver=driver, now=now)


def _trial_resources(spec: SweepSpec, space) -> dict:
    """What the sweep's trials ask for: the preset's resources with ``--gpus-per-trial`` applied,
    by the rule the sweep itself uses (``trial_resources``)."""
    try:
        res = trial_resources(spec, space)
    except UserError:
        return {}
    out = {"cpu": float(res.cpu), "gpu": float(res.gpu)}
    if res.memory_gb:
        out["memory_gb"] = float(res.memory_gb)
    return out


def _unplanned(trial_id: str, data: dict, resources: dict) -> TrialStatus:
    """A trial the plan does not name (a tuning of a searched cell, or a trial of an older plan),
    from what its record says of it."""
    sparsity = data.get("sparsity")
    return TrialStatus(
        trial_id=trial_id, method=row_label(str(data.get("method") or "?"), str(data.get("group") or "")),
        sparsity=float(sparsity) if _int(sparsity, None) is not None else None,
        seed=_int(data.get("seed")), arch=str(data.get("model") or ""),
        fold=_int(data.get("fold"), None), stage=0, resources=dict(resources))


def read_driver(run_dir, now: float) -> DriverStatus:
    """The heartbeat, and whether its driver still runs: it has not ended, its pid exists (checked
    on the driver's host only) and it wrote within ``STALE_BEATS`` heartbeat intervals."""
    beat = read_heartbeat(run_dir)
    if beat is None:
        return DriverStatus()
    every = _number(beat.get("every_s")) or 30.0
    driver = DriverStatus(seen=True, pid=_int(beat.get("pid"), None), host=str(beat.get("host") or "?"),
                          stage=beat.get("stage"), updated_at=_number(beat.get("updated_at")) or 0.0,
                          ended_at=_number(beat.get("ended_at")))
    driver.gone = driver.host == socket.gethostname() and driver.pid is not None \
        and not _pid_exists(driver.pid)
    if driver.ended_at is not None:
        driver.ended = str(beat.get("ended") or "ended")
    driver.alive = driver.ended_at is None and not driver.gone \
        and now - driver.updated_at <= STALE_BEATS * every
    return driver


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True   # exists, owned by someone else (or cannot tell: assume it runs)
    return True


def _int(value, default=0):
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _number(value) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ---------------------------------------------------------------------------------------- deciding

def _settle(trial: TrialStatus, records: dict, live: Optional[dict], driver: DriverStatus,
            max_failures: int) -> None:
    """A final record decides, unless it is a failed/killed one that a newer session is retrying."""
    record = records.get(trial.trial_id)
    status = record.get("status") if isinstance(record, dict) else None
    ended_at = _number(record.get("ended_at")) if isinstance(record, dict) else None
    retried = status in ("failed", "killed") and live is not None and ended_at is not None \
        and (_number(live.get("started_at")) or 0.0) > ended_at
    if status in ("ok", "collapsed") or (status in ("failed", "killed") and not retried):
        _from_record(trial, record)
        return
    if live is not None:
        _from_live(trial, live, driver, max_failures)
        if retried:
            trial.detail = (trial.detail + f"; last attempt {status}").lstrip("; ")
        return
    if trial.trial_id in records:
        trial.state = "unknown"
        trial.detail = "record unreadable" if record is None else f"record status {status!r}"
        return
    trial.state, trial.detail = "pending", ""   # not started: _explain_waiting says why


def _from_record(trial: TrialStatus, record: dict) -> None:
    status = record.get("status")
    levels = [lv for lv in record.get("levels") or [] if isinstance(lv, dict)]
    emptied = [name for lv in levels for name in (lv.get("collapsed_layers") or [])]
    if status == "collapsed" or (status == "ok" and (emptied or any(lv.get("collapsed") for lv in levels))):
        trial.state = "collapsed"
        reason = record.get("collapse_reason") or next(
            (lv.get("collapsed") for lv in levels if isinstance(lv.get("collapsed"), str)), "")
        layers = ""
        if emptied:
            unique = list(dict.fromkeys(emptied))
            layers = f"{len(unique)} layer{'s' if len(unique) != 1 else ''} emptied ({unique[0]}" + \
                (", ..." if len(unique) > 1 else "") + ")"
        trial.detail = "; ".join(part for part in (reason, layers) if part)
    elif status == "ok":
        trial.state = "finished"
    else:
        trial.state = status
        trial.detail = str(record.get("error") or "")


def _from_live(trial: TrialStatus, live: dict, driver: DriverStatus, max_failures: int) -> None:
    retries = _int(live.get("retries"))
    retry = f"retry {retries}/{max_failures}" if retries else ""
    if not driver.alive:
        trial.state = "killed"
        trial.detail = "its driver stopped before the trial ended (no record)"
    elif live.get("state") == LIVE_RETRYING:
        trial.state = "pending"
        trial.detail = f"{retry} from its last checkpoint" if retry else "to be retried"
    else:
        trial.state = "running"
        progress = []
        step, round_ = _int(live.get("step"), None), _int(live.get("round"), None)
        if trial.rounds and round_ is not None:
            progress.append(f"round {round_}/{trial.rounds}")
        if step is not None:
            progress.append(f"step {step}/{trial.max_steps}" if trial.max_steps else f"step {step}")
        trial.detail = ", ".join(progress + ([retry] if retry else [])) or "started"


def _explain_waiting(trials: list, driver: DriverStatus, spec: SweepSpec) -> None:
    """Why each pending trial waits: stage 1 first, no driver, --max-concurrent, or free resources."""
    stage1_open = any(t.stage == 1 and t.state in ("pending", "running", "unknown") for t in trials)
    dense_failed = {(t.arch, t.seed, t.fold) for t in trials
                    if t.method == "dense" and t.state in ("failed", "killed")}
    running = {stage: sum(1 for t in trials if t.stage == stage and t.state == "running")
               for stage in (1, 2)}
    for trial in trials:
        if trial.state != "pending":
            continue
        need = format_resources(trial.resources)
        if trial.detail:                       # a retry: it holds its place in Tune's queue
            trial.detail += f", needs {need}" if need else ""
        elif trial.stage == 2 and stage1_open:
            trial.detail = WAITING_FOR_STAGE1
        elif trial.stage == 2 and (trial.arch, trial.seed, trial.fold) in dense_failed:
            trial.detail = "its dense baseline failed: stage 2 will record it failed"
        elif not driver.seen:
            trial.detail = "not started (run the sweep)"
        elif not driver.alive:
            trial.detail = "not run: no driver runs the sweep (resume it)"
        elif spec.max_concurrent and running.get(trial.stage, 0) >= spec.max_concurrent:
            trial.detail = f"--max-concurrent {spec.max_concurrent} reached; needs {need}"
        else:
            trial.detail = f"waiting for {need}" if need else "waiting for resources"
