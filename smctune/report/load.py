"""Read a run directory back: the resolved sweep (``sweep.json``) and one record per trial (``results/``).

The records are the sweep's source of truth, written by trials that may have crashed halfway or by an
older smctune, so every field is checked here once and a bad file is named in a one-line error; the
rest of the report can then trust a ``TrialResult``. Nothing here needs Ray or torch: a report runs on
a laptop from a copied run directory.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Union

from smctune.config.recorded import read_sweep_spec
from smctune.config.specs import SweepSpec, row_label
from smctune.errors import UserError
from smctune.gc_pause import paused
from smctune.rundir.layout import RunDir, names_ending
from smctune.rundir.records import FINISHED_STATUSES, STATUS_FAILED, STATUS_KILLED
from smctune.tracking.source import relocated

METRIC_KINDS = ("best", "final")
STATUSES = FINISHED_STATUSES + (STATUS_FAILED, STATUS_KILLED)   # FINISHED_STATUSES: levels are measurements
DENSE = "dense"


@dataclass(frozen=True)
class TrialResult:
    """One ``results/<trial_id>.json`` as written by the sweep."""

    trial_id: str
    task: str
    method: str
    seed: Optional[int]
    preset: str
    status: str
    error: Optional[str]
    metric: str
    chance: Optional[float]
    levels: tuple
    sparsity: Optional[float] = None   # the trial's target (None for dense and LTH)
    history: tuple = ()
    dense_key: Optional[str] = None
    wall_s: Optional[float] = None
    mlflow_run_id: Optional[str] = None
    path: str = ""
    model: Optional[str] = None        # architecture (``--model``), None for single-architecture tasks
    fold: Optional[int] = None
    tuning: int = 0                    # tuning of a searched cell (``--trials-per-cell``)
    tunables: dict = field(default_factory=dict)   # the method hyperparameters the trial ran with
    started_at: Optional[float] = None  # unix time the driver saw the trial start / end
    ended_at: Optional[float] = None
    group: Optional[str] = None        # --prune-only: the groups pruned alone (``method`` is then
                                       # the report row ``method[group]``)


@dataclass
class RunResults:
    run_dir: Path
    spec: SweepSpec
    trials: list = field(default_factory=list)

    @property
    def files(self) -> RunDir:
        return RunDir(self.run_dir)


def load_run(run_dir: Union[str, Path], trial_ids: Optional[Iterable[str]] = None) -> RunResults:
    """Read ``sweep.json`` and every ``results/*.json`` of a run directory (sorted by file name), or
    only the records of ``trial_ids`` (those that exist)."""
    layout = RunDir(run_dir)
    sweep_file = layout.sweep_file
    if not layout.root.is_dir() or not sweep_file.is_file():
        raise UserError(f"not a smctune run directory: {layout.root} (no {sweep_file.name})")
    spec = relocated(read_sweep_spec(sweep_file), layout.root)   # it may have been moved or copied
    trials = []
    if trial_ids is not None:
        paths = [layout.record_file(trial_id) for trial_id in sorted(set(trial_ids))]
        paths = [path for path in paths if path.is_file()]
    elif layout.results_dir.is_dir():
        paths = [layout.results_dir / name for name in names_ending(layout.results_dir, ".json")]
    else:
        paths = []
    with paused():   # thousands of parsed records pile up: see smctune.gc_pause
        for path in paths:
            trial = _load_trial(path)
            if trial.task != spec.task:
                raise UserError(f"{path}: trial is for task '{trial.task}', but the run is for '{spec.task}'")
            trials.append(trial)
    return RunResults(run_dir=layout.root, spec=spec, trials=trials)


def trials_of(run: RunResults, model: Optional[str]) -> list:
    """The run's trials of one architecture (every trial when ``model`` is None)."""
    return [t for t in run.trials if model is None or t.model == model]


def is_number(value) -> bool:
    """A finite int or float that is not a bool: what a record's numeric field must be to count."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _load_trial(path: Path) -> TrialResult:
    def bad(why: str):
        return UserError(f"malformed trial result {path}: {why}")

    try:
        data = json.loads(path.read_bytes())   # bytes: json decodes UTF-8 faster than a text file does
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise bad(_one_line(err)) from None
    if not isinstance(data, dict):
        raise bad(f"expected a JSON object, got {type(data).__name__}")
    for key in ("trial_id", "method", "status"):
        if not isinstance(data.get(key), str):
            raise bad(f"missing or non-string '{key}'")
    if data["status"] not in STATUSES:
        raise bad(f"unknown status '{data['status']}' (valid: {', '.join(STATUSES)})")
    levels = data.get("levels") or []
    if not isinstance(levels, list):
        raise bad("'levels' is not a list")
    for i, level in enumerate(levels):
        if not isinstance(level, dict):
            raise bad(f"levels[{i}] is not an object")
        if not is_number(level.get("sparsity")):
            raise bad(f"levels[{i}].sparsity is missing or not a number")
        for kind in METRIC_KINDS:
            value = level.get(kind)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise bad(f"levels[{i}].{kind} is not a number: {value!r}")
    target = data.get("sparsity")
    if target is not None and not is_number(target):
        raise bad(f"'sparsity' is not a number: {target!r}")
    history = data.get("history") or []
    group = data.get("group") if isinstance(data.get("group"), str) and data.get("group") else None
    chance = data.get("chance")
    seed = data.get("seed")
    fold = data.get("fold")
    model = data.get("model")
    return TrialResult(
        trial_id=data["trial_id"],
        task=str(data.get("task", "")),
        method=row_label(data["method"], group or ""),   # a sensitivity row is its own curve
        seed=seed if isinstance(seed, int) else None,
        preset=str(data.get("preset", "")),
        status=data["status"],
        error=data.get("error"),
        metric=str(data.get("metric") or ""),
        chance=float(chance) if is_number(chance) else None,
        levels=tuple(levels),
        sparsity=None if target is None else float(target),
        history=tuple(history) if isinstance(history, list) else (),
        dense_key=data.get("dense_key"),
        wall_s=data.get("wall_s"),
        mlflow_run_id=data.get("mlflow_run_id"),
        path=str(path),
        model=model if isinstance(model, str) and model else None,
        fold=fold if isinstance(fold, int) and not isinstance(fold, bool) else None,
        tuning=int(data.get("tuning") or 0),
        tunables=data["tunables"] if isinstance(data.get("tunables"), dict) else {},
        started_at=data.get("started_at") if is_number(data.get("started_at")) else None,
        ended_at=data.get("ended_at") if is_number(data.get("ended_at")) else None,
        group=group,
    )
