"""``smctune status <run>``: where every trial of a sweep stands, from the run directory alone.

Three sources, all plain files (no Ray connection, no torch, no ray import):

- ``sweep.json`` re-planned with ``plan_trials``: every trial the sweep is meant to run;
- ``results/<trial_id>.json``: trials that ended (``ok``, ``collapsed``, ``failed``, ``killed``);
- Ray Tune's experiment state, ``ray/stage1`` and ``ray/stage2``: the newest
  ``experiment_state-<session>.json`` of each stage (the file Tune itself resumes from). Its
  ``trial_data`` is a list of ``[trial_json, run_metadata_json]`` pairs, both JSON *strings*:
  the first holds ``status`` (PENDING, RUNNING, PAUSED, TERMINATED, ERROR), ``config["trial"]``
  (our ``TrialSpec`` dict, which gives the trial id), ``custom_trial_name`` and
  ``placement_group_factory`` (a hex-encoded pickle whose state has ``_bundles``, e.g.
  ``[{"CPU": 1.0}]``); the second holds ``num_failures``, ``start_time`` and ``last_result``.

Tune writes that file on the driver and copies it into the run directory every few seconds to
minutes, so it lags; a record always wins over it, and a file caught half-written is read again
and, if still broken, its trials are reported ``unknown`` rather than failing the command.
"""
from __future__ import annotations

import io
import json
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .config import SweepSpec, TrialSpec, row_label, sweep_search_space
from .errors import UserError

STATES = ("finished", "running", "pending", "failed", "collapsed", "killed", "unknown")
CELL = {"finished": "done", "running": "run", "pending": "pend", "failed": "FAIL",
        "collapsed": "coll", "killed": "kill", "unknown": "?"}
WAITING_FOR_STAGE1 = "waiting for stage 1 (dense baseline)"
STALE_AFTER_S = 15 * 60   # Tune syncs its state at least every 5 min while a sweep runs
LIST_AT_MOST = 10


@dataclass
class RayTrial:
    """One trial as Tune's experiment state describes it."""

    status: str
    resources: dict = field(default_factory=dict)   # {"cpu": 1.0, "gpu": 0.0[, "memory_gb": ..]}
    num_failures: int = 0
    max_failures: int = 0
    step: Optional[int] = None
    round: Optional[int] = None


@dataclass
class RayStage:
    path: Optional[Path]          # the newest experiment_state-*.json, None when the stage has none
    mtime: float = 0.0
    readable: bool = True
    trials: dict = field(default_factory=dict)   # smctune trial id -> RayTrial


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
    stages: dict          # 1|2 -> RayStage
    now: float

    def counts(self) -> dict:
        counts = dict.fromkeys(STATES, 0)
        for trial in self.trials:
            counts[trial.state] += 1
        return counts


# ---------------------------------------------------------------------------------------- reading

def read_status(run_dir, now: Optional[float] = None) -> RunStatus:
    """Every planned trial of the run, with its state and why (see the module docstring)."""
    from .sweep import plan_trials, stage_of  # torch- and ray-free at import

    run_dir = Path(run_dir)
    spec = _read_spec(run_dir)
    space = sweep_search_space(spec)
    planned = plan_trials(spec, space)
    preset_resources = _trial_resources(spec, space)
    records = _read_records(run_dir / "results")
    stages = {stage: read_ray_stage(run_dir / "ray" / f"stage{stage}") for stage in (1, 2)}
    if stages[1].path and stages[2].path and stages[1].path.name > stages[2].path.name:
        # a rerun of the sweep is in stage 1 again: the stage-2 state is the previous run's
        stages[2] = RayStage(path=None)

    trials = []
    for t in planned:
        trials.append(TrialStatus(
            trial_id=t.trial_id, method=row_label(t.method, t.group), sparsity=t.sparsity, seed=t.seed,
            arch=t.model.arch, fold=t.fold, stage=stage_of(t), resources=dict(preset_resources),
            max_steps=t.train.max_steps, rounds=len(t.levels)))
    known = {t.trial_id for t in trials}
    for trial_id, (record, _) in sorted(records.items()):   # records the plan does not know
        if trial_id not in known and isinstance(record, dict):
            sparsity = record.get("sparsity")
            trials.append(TrialStatus(
                trial_id=trial_id, method=row_label(str(record.get("method") or "?"),
                                                    str(record.get("group") or "")),
                sparsity=float(sparsity) if _int(sparsity, None) is not None else None,
                seed=_int(record.get("seed")), arch=str(record.get("model") or ""),
                fold=_int(record.get("fold"), None), stage=0, resources=dict(preset_resources)))

    for trial in trials:
        _settle(trial, records, stages.get(trial.stage))
    _explain_waiting(trials, stages, spec)
    return RunStatus(run_dir=run_dir, spec=spec, trials=trials, stages=stages,
                     now=time.time() if now is None else now)


def _read_spec(run_dir: Path) -> SweepSpec:
    path = run_dir / "sweep.json"
    if not path.is_file():
        raise UserError(f"{run_dir} has no sweep.json: not a smctune run directory")
    try:
        return SweepSpec.from_json(path.read_text())
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise UserError(f"{path}: unreadable sweep spec ({err})") from None


def _trial_resources(spec: SweepSpec, space) -> dict:
    """What the sweep's trials ask for: the preset's resources with ``--gpus-per-trial`` applied,
    by the rule the sweep itself uses (``sweep.trial_resources``)."""
    from .sweep import trial_resources

    try:
        res = trial_resources(spec, space)
    except UserError:
        return {}
    out = {"cpu": float(res.cpu), "gpu": float(res.gpu)}
    if res.memory_gb:
        out["memory_gb"] = float(res.memory_gb)
    return out


def _read_records(directory: Path) -> dict:
    """trial id -> (record, or ``None`` when unreadable; its mtime). Records are written atomically (``.json.tmp`` then rename), so a broken one is damage, not a
    write in progress; it is reported, never fatal."""
    records: dict = {}
    if not directory.is_dir():
        return records
    for path in directory.glob("*.json"):
        try:
            mtime = path.stat().st_mtime
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record, mtime = None, 0.0
        if not isinstance(record, dict):
            record = None
        trial_id = record.get("trial_id") if record and isinstance(record.get("trial_id"), str) \
            else path.stem
        records[trial_id] = (record, mtime)
    return records


def read_ray_stage(stage_dir: Path, attempts: int = 3, pause_s: float = 0.2) -> RayStage:
    """The newest ``experiment_state-*.json`` under ``stage_dir`` (Tune picks it the same way: the
    largest name, the session timestamp sorting in time order), parsed into per-trial facts."""
    files = sorted(stage_dir.glob("experiment_state-*.json")) if stage_dir.is_dir() else []
    if not files:
        return RayStage(path=None)
    path = files[-1]
    data = None
    for attempt in range(attempts):
        try:
            mtime = path.stat().st_mtime
            data = json.loads(path.read_text())
            break
        except (OSError, ValueError):
            if attempt + 1 < attempts:
                time.sleep(pause_s)   # Tune may be copying the file in right now
    stage = RayStage(path=path, mtime=mtime if data is not None else 0.0)
    if not isinstance(data, dict) or not isinstance(data.get("trial_data"), list):
        stage.readable = False
        return stage
    for entry in data["trial_data"]:
        parsed = _ray_trial(entry)
        if parsed is not None:
            stage.trials[parsed[0]] = parsed[1]
    return stage


def _ray_trial(entry) -> Optional[tuple]:
    """``[trial_json, run_metadata_json]`` -> (smctune trial id, RayTrial); None when unusable."""
    try:
        state = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
        meta = json.loads(entry[1]) if isinstance(entry[1], str) else entry[1]
    except (ValueError, TypeError, IndexError, KeyError):
        return None
    if not isinstance(state, dict):
        return None
    meta = meta if isinstance(meta, dict) else {}
    trial_id = _smctune_id(state)
    if trial_id is None:
        return None
    last = meta.get("last_result") if isinstance(meta.get("last_result"), dict) else {}
    return trial_id, RayTrial(
        status=str(state.get("status") or "UNKNOWN"),
        resources=_bundle_resources(state.get("placement_group_factory")),
        num_failures=_int(meta.get("num_failures")),
        max_failures=_int(state.get("max_failures")),
        step=_int(last.get("step"), None), round=_int(last.get("round"), None))


def _smctune_id(state: dict) -> Optional[str]:
    """Our trial id from ``config["trial"]`` (the TrialSpec dict); Tune's trial name (which the
    sweep sets to the same id) when the spec cannot be rebuilt (a run from another version)."""
    config = state.get("config")
    if isinstance(config, dict) and isinstance(config.get("trial"), dict):
        try:
            return TrialSpec.from_dict(config["trial"]).trial_id
        except (UserError, TypeError, ValueError):
            pass
    for key in ("custom_trial_name", "custom_dirname", "relative_logdir"):
        if isinstance(state.get(key), str) and state[key]:
            return state[key]
    return None


def _int(value, default=0):
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


class _PlacementGroupFactory:
    """Stand-in for Ray's class while unpickling: keeps the pickled state, runs nothing."""

    def __setstate__(self, state):
        self.state = state


class _ResourceUnpickler(pickle.Unpickler):
    """Unpickles only a ``PlacementGroupFactory`` of plain containers; any other global is refused,
    so reading a run directory can never execute code from it."""

    def find_class(self, module, name):
        if name == "PlacementGroupFactory" and module.startswith("ray."):
            return _PlacementGroupFactory
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def _bundle_resources(hex_pickle) -> dict:
    """``placement_group_factory`` (hex of a cloudpickle) -> {"cpu", "gpu"[, "memory_gb"]} summed
    over its bundles; {} when it cannot be read."""
    if not isinstance(hex_pickle, str):
        return {}
    try:
        obj = _ResourceUnpickler(io.BytesIO(bytes.fromhex(hex_pickle))).load()
        bundles = obj.state["_bundles"]
        totals = {"cpu": 0.0, "gpu": 0.0}
        for bundle in bundles:
            for key, value in bundle.items():
                name = {"CPU": "cpu", "GPU": "gpu", "memory": "memory_gb"}.get(key, key)
                amount = float(value) / 1024**3 if key == "memory" else float(value)
                totals[name] = totals.get(name, 0.0) + amount
        return totals
    except Exception:  # noqa: BLE001 - any odd pickle: fall back to the search space's resources
        return {}


# ---------------------------------------------------------------------------------------- deciding

def _settle(trial: TrialStatus, records: dict, stage: Optional[RayStage]) -> None:
    """A record decides, unless it is a failed/killed one that a newer Ray session is retrying."""
    record, record_mtime = records.get(trial.trial_id, (None, 0.0))
    ray = stage.trials.get(trial.trial_id) if stage else None
    if ray and ray.resources:
        trial.resources = dict(ray.resources)
    status = record.get("status") if isinstance(record, dict) else None
    retried = status in ("failed", "killed") and ray is not None \
        and ray.status in ("PENDING", "RUNNING", "PAUSED") and stage.mtime > record_mtime
    if status in ("ok", "collapsed") or (status in ("failed", "killed") and not retried):
        _from_record(trial, record)
        return
    if ray is not None:
        _from_ray(trial, ray)
        if retried:
            trial.detail = (trial.detail + f"; last attempt {status}").lstrip("; ")
        return
    if trial.trial_id in records:
        trial.state = "unknown"
        trial.detail = "record unreadable" if record is None else f"record status {status!r}"
        return
    if stage is not None and stage.path is not None and not stage.readable:
        trial.state, trial.detail = "unknown", "Ray state unreadable (being written?); try again"
        return
    trial.state, trial.detail = "pending", ""   # not known to Ray: _explain_waiting says why


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


def _from_ray(trial: TrialStatus, ray: RayTrial) -> None:
    retry = f"retry {ray.num_failures}/{ray.max_failures}" if ray.num_failures else ""
    if ray.status == "RUNNING":
        trial.state = "running"
        progress = []
        if trial.rounds and ray.round is not None:
            progress.append(f"round {ray.round}/{trial.rounds}")
        if ray.step is not None:
            progress.append(f"step {ray.step}/{trial.max_steps}" if trial.max_steps else f"step {ray.step}")
        trial.detail = ", ".join(progress + ([retry] if retry else [])) or "started"
    elif ray.status in ("PENDING", "PAUSED"):
        trial.state = "pending"
        trial.detail = "paused by Tune" if ray.status == "PAUSED" else \
            (f"{retry} from its last checkpoint" if retry else "")
        trial.detail = trial.detail or "queued in Ray"
    elif ray.status == "ERROR":
        trial.state, trial.detail = "failed", "Ray: ERROR (no record yet)"
    elif ray.status == "TERMINATED":
        trial.state, trial.detail = "unknown", "Ray: TERMINATED, but no record (sweep stopped?)"
    else:
        trial.state, trial.detail = "unknown", f"Ray: {ray.status}"


def _explain_waiting(trials: list, stages: dict, spec: SweepSpec) -> None:
    """Why each pending trial waits: stage 1 first, --max-concurrent, or free resources."""
    stage1_open = any(t.stage == 1 and t.state in ("pending", "running", "unknown") for t in trials)
    dense_failed = {(t.arch, t.seed, t.fold) for t in trials
                    if t.method == "dense" and t.state in ("failed", "killed")}
    running = {stage: sum(1 for t in trials if t.stage == stage and t.state == "running")
               for stage in (1, 2)}
    for trial in trials:
        if trial.state != "pending":
            continue
        known = trial.trial_id in stages.get(trial.stage, RayStage(None)).trials
        if trial.stage == 2 and not known and stage1_open:
            trial.detail = WAITING_FOR_STAGE1
            continue
        if trial.stage == 2 and not known and (trial.arch, trial.seed, trial.fold) in dense_failed:
            trial.detail = "its dense baseline failed: stage 2 will record it failed"
            continue
        if not known:
            if stages.get(trial.stage, RayStage(None)).path is None:
                trial.detail = "not started (run the sweep)"
            elif spec.max_concurrent:   # Tune creates trials only as --max-concurrent slots free
                trial.detail = f"--max-concurrent {spec.max_concurrent}: queued when a slot frees"
            else:
                trial.detail = "not yet queued in Ray"
            continue
        need = format_resources(trial.resources)
        if trial.detail == "queued in Ray":
            if spec.max_concurrent and running.get(trial.stage, 0) >= spec.max_concurrent:
                trial.detail = f"--max-concurrent {spec.max_concurrent} reached; needs {need}"
            else:
                trial.detail = f"waiting for {need}" if need else "waiting for resources"
        elif need and "paused" not in trial.detail:
            trial.detail += f", needs {need}"


# ---------------------------------------------------------------------------------------- output

def format_resources(resources: dict) -> str:
    if not resources:
        return ""
    parts = [f"cpu {resources.get('cpu', 0):g}"]
    if resources.get("gpu"):
        parts.append(f"gpu {resources['gpu']:g}")
    if resources.get("memory_gb"):
        parts.append(f"mem {resources['memory_gb']:g} GB")
    parts += [f"{k} {v:g}" for k, v in sorted(resources.items())
              if k not in ("cpu", "gpu", "memory_gb") and isinstance(v, (int, float))]
    return ", ".join(parts)


def _level(sparsity: Optional[float]) -> str:
    if sparsity is None:
        return "dense"
    text = f"{sparsity:.4f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def summary_line(status: RunStatus) -> str:
    counts = status.counts()
    needs = list(dict.fromkeys(format_resources(t.resources) for t in status.trials
                               if t.state == "pending" and t.resources))
    pending = f"{counts['pending']} pending"
    if counts["pending"] and needs:
        pending += f" ({' or '.join(needs)} each)"
    parts = [f"{counts['finished']} finished", f"{counts['running']} running", pending,
             f"{counts['failed']} failed", f"{counts['collapsed']} collapsed"]
    parts += [f"{counts[s]} {s}" for s in ("killed", "unknown") if counts[s]]
    return ", ".join(parts)


def format_table(status: RunStatus) -> str:
    """One row per (architecture, seed, fold, method), one column per sparsity level."""
    spec = status.spec
    keys = []
    if spec.models or any(t.arch for t in status.trials):
        keys.append(("model", lambda t: t.arch or "-"))
    if len(spec.seeds) > 1:
        keys.append(("seed", lambda t: str(t.seed)))
    if spec.folds or any(t.fold is not None for t in status.trials):
        keys.append(("fold", lambda t: "-" if t.fold is None else str(t.fold)))
    keys.append(("method", lambda t: t.method))
    levels = sorted({t.sparsity for t in status.trials if t.sparsity is not None})
    columns = ([None] if any(t.sparsity is None for t in status.trials) else []) + levels
    rows: dict = {}
    for trial in status.trials:
        row = rows.setdefault(tuple(get(trial) for _, get in keys), {})
        row[trial.sparsity] = CELL[trial.state]
    header = [name for name, _ in keys] + [_level(c) for c in columns]
    body = [list(label) + [cells.get(c, "") for c in columns] for label, cells in rows.items()]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip()
             for r in [header, ["-" * w for w in widths], *body]]
    return "\n".join(lines)


def format_status(status: RunStatus) -> str:
    spec = status.spec
    lines = [f"run {spec.name} · {spec.task} · preset {spec.preset} · {len(status.trials)} trials"]
    ray_notes = []
    open_trials = any(t.state in ("running", "pending", "unknown") for t in status.trials)
    for number, stage in sorted(status.stages.items()):
        if stage.path is None or not open_trials:
            continue
        if not stage.readable:
            ray_notes.append(f"stage {number} unreadable")
        else:
            ray_notes.append(f"stage {number} {_age(status.now - stage.mtime)} old")
    if ray_notes:
        lines.append("ray state: " + ", ".join(ray_notes))
    lines += ["", format_table(status), "",
              "done finished · run running · pend pending · coll collapsed · FAIL failed · kill killed",
              "", summary_line(status)]
    details = _detail_lines(status)
    if details:
        lines += [""] + details
    stale = [n for n, stage in status.stages.items() if stage.path is not None and stage.readable
             and status.now - stage.mtime > STALE_AFTER_S
             and any(t.stage == n and t.state in ("running", "pending") and
                     t.trial_id in stage.trials for t in status.trials)]
    if stale:
        lines.append(f"note: Ray state of stage {stale[0]} not updated for "
                     f"{_age(status.now - status.stages[stale[0]].mtime)}: if the sweep is not "
                     "running, rerun it to continue")
    return "\n".join(lines)


def _detail_lines(status: RunStatus) -> list:
    """Running, failed, killed, collapsed and unknown trials one per line; pending grouped by why."""
    lines = []
    width = max((len(t.trial_id) for t in status.trials), default=0)
    for state in ("running", "failed", "killed", "collapsed", "unknown"):
        chosen = [t for t in status.trials if t.state == state]
        for trial in chosen[:LIST_AT_MOST]:
            lines.append(f"{state:<9}  {trial.trial_id:<{width}}  {_short(trial.detail)}".rstrip())
        if len(chosen) > LIST_AT_MOST:
            lines.append(f"{state:<9}  ... and {len(chosen) - LIST_AT_MOST} more")
    groups: dict = {}
    for trial in status.trials:
        if trial.state == "pending":
            groups.setdefault((trial.stage, trial.detail), []).append(trial)
    for (stage, detail), chosen in sorted(groups.items(), key=lambda item: item[0][0]):
        where = f" (stage {stage})" if stage else ""
        lines.append(f"{'pending':<9}  {len(chosen):>3} trial{'s' if len(chosen) != 1 else ' '}"
                     f"{where}: {detail or 'waiting'}")
    return lines


def _short(text: str, limit: int = 90) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
