"""From a run directory to the numbers the report shows: per-cell seed statistics and failing sparsities.

Pure computation: no plotting, no torch, no ray. ``report.py`` formats what ``summarize`` returns.

Definitions (the report states them too):

* A *cell* is (method, grid sparsity). Its value is the mean over seeds of the level metric (``best``
  over evaluations or ``final``) of the trials with ``status`` ``ok`` or ``collapsed`` (stopped early
  because the network collapsed: a result, at the value where it stopped); failed and killed trials are
  counted in ``status_counts`` but never enter the mean. ``std`` is the sample standard deviation
  (ddof=1); 0.0 for a single seed, ``None`` without values.
* With cross-validation folds, a seed's value is first averaged over its folds (macro mean; SMC-Bench
  micro-averages correct answers over folds, which differs only when folds differ in size), so ``n``
  and ``std`` still count seeds; ``by_fold`` keeps each fold's mean over seeds.
* A sweep over several architectures (``--model``) is summarized once per architecture: trials of
  another architecture never enter a cell or the dense baseline.
* A level value that is missing, ``null`` or not finite counts as no value (the cell shows "—").
* A trial level is matched to a grid column when ``|level.sparsity - grid| <= 1e-4`` (LTH reports one
  level per IMP round, each landing in its own column; rounds off the grid are ignored).
* The dense baseline is the mean/std over seeds of the dense trials' level value.
* A level *fails* when its mean is strictly below the criterion's threshold (``dense - tolerance``,
  or ``dense * (1 - r)`` for a relative tolerance; exactly the threshold still matches) and, with
  ``--alpha``, significantly so across seeds (``criterion.py``). The *failing sparsity* of a method
  is the lowest grid sparsity that fails; a failing level followed by a passing one is non-monotone.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

from .config import SweepSpec, row_label
from .criterion import Criterion
from .errors import UserError

METRIC_KINDS = ("best", "final")
METRIC_KIND_LABELS = {"best": "best over evaluations", "final": "final evaluation"}
STATUSES = ("ok", "collapsed", "failed", "killed")
RESULT_STATUSES = ("ok", "collapsed")   # statuses whose levels are measurements
LEVEL_TOL = 1e-4      # matching a trial level to a grid sparsity
DENSE = "dense"

# outcomes of failing_sparsity
FAILS_AT = "fails_at"
NEVER = "never"
NO_DENSE = "no_dense"
NO_DATA = "no_data"


# --------------------------------------------------------------------------------------------------
# loading

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


def load_run(run_dir: Union[str, Path]) -> RunResults:
    """Read ``sweep.json`` and every ``results/*.json`` of a run directory (sorted by file name)."""
    root = Path(run_dir)
    sweep_file = root / "sweep.json"
    if not root.is_dir() or not sweep_file.is_file():
        raise UserError(f"not a smctune run directory: {root} (no sweep.json)")
    try:
        spec = SweepSpec.from_json(sweep_file.read_text())
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise UserError(f"malformed {sweep_file}: {_one_line(err)}") from None
    trials = []
    results_dir = root / "results"
    if results_dir.is_dir():
        for path in sorted(results_dir.glob("*.json")):
            trial = _load_trial(path)
            if trial.task != spec.task:
                raise UserError(f"{path}: trial is for task '{trial.task}', but the run is for '{spec.task}'")
            trials.append(trial)
    return RunResults(run_dir=root, spec=spec, trials=trials)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _load_trial(path: Path) -> TrialResult:
    def bad(why: str):
        return UserError(f"malformed trial result {path}: {why}")

    try:
        data = json.loads(path.read_text())
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
        if not _is_number(level.get("sparsity")):
            raise bad(f"levels[{i}].sparsity is missing or not a number")
        for kind in METRIC_KINDS:
            value = level.get(kind)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise bad(f"levels[{i}].{kind} is not a number: {value!r}")
    target = data.get("sparsity")
    if target is not None and not _is_number(target):
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
        chance=float(chance) if _is_number(chance) else None,
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
        started_at=data.get("started_at") if _is_number(data.get("started_at")) else None,
        ended_at=data.get("ended_at") if _is_number(data.get("ended_at")) else None,
        group=group,
    )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------------------------------
# cells

@dataclass(frozen=True)
class CellStat:
    """Seed statistics of one (method, sparsity) cell; ``values`` holds the ok trials' values only."""

    mean: Optional[float]
    std: Optional[float]
    n: int
    values: tuple
    status_counts: dict
    by_fold: dict = field(default_factory=dict)   # fold -> mean over seeds (folded tasks only)
    missing_folds: bool = False   # some seed's mean lacks a fold the sweep ran (or another seed has)
    tuning: int = 0               # searched cells: the tuning shown (the best mean)...
    tunings: int = 1              # ...of this many with a value
    achieved: Optional[float] = None   # mean sparsity the shown tuning's trials reached
    tunables: dict = field(default_factory=dict)   # the shown tuning's hyperparameters

    @property
    def all_failed(self) -> bool:
        """Trials ran for this cell, and none of them gave a result."""
        return sum(self.status_counts.values()) > 0 and not any(self.status_counts.get(s)
                                                                  for s in RESULT_STATUSES)

    @property
    def some_failed(self) -> bool:
        return any(self.status_counts.get(s) for s in STATUSES if s not in RESULT_STATUSES)

    @property
    def some_collapsed(self) -> bool:
        return bool(self.status_counts.get("collapsed"))


def cell_stat(values, status_counts: Optional[Mapping[str, int]] = None) -> CellStat:
    values = tuple(float(v) for v in values)
    counts = {k: v for k, v in (status_counts or {}).items() if v}
    n = len(values)
    if n == 0:
        return CellStat(None, None, 0, values, counts)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return CellStat(mean, std, n, values, counts)


def folded_stat(points, status_counts: Optional[Mapping[str, int]] = None,
                expected_folds: tuple = ()) -> CellStat:
    """``CellStat`` from ``(seed, fold, value)`` points: each seed's folds are averaged first.
    ``missing_folds`` says a seed's mean covers fewer folds than ``expected_folds`` (or than the
    folds any seed of the cell has), so the report can mark the cell."""
    points = list(points)
    if not any(fold is not None for _, fold, _ in points):
        return cell_stat([value for _, _, value in points], status_counts)
    per_seed: dict = {}
    per_fold: dict = {}
    for seed, fold, value in points:
        per_seed.setdefault(seed, []).append(float(value))
        per_fold.setdefault(fold, []).append(float(value))
    stat = cell_stat([math.fsum(v) / len(v) for v in per_seed.values()], status_counts)
    by_fold = {fold: math.fsum(v) / len(v)
               for fold, v in sorted(per_fold.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))}
    wanted = set(expected_folds) | set(per_fold)
    seed_folds: dict = {}
    for seed, fold, _ in points:
        seed_folds.setdefault(seed, set()).add(fold)
    missing = any(folds != wanted for folds in seed_folds.values())
    return CellStat(stat.mean, stat.std, stat.n, stat.values, stat.status_counts, by_fold, missing)


def _best_tuning(points, counts: Mapping[str, int], folds: tuple) -> CellStat:
    """A cell's statistic: with several tunings (``--trials-per-cell``), the tuning with the best mean
    over its seeds and folds. Choosing on the same dev set the cell is reported on is optimistic,
    which the report says; with one tuning this is the plain cell statistic."""
    by_tuning: dict = {}
    for seed, fold, value, tuning in points:
        by_tuning.setdefault(tuning, []).append((seed, fold, value))
    if len(by_tuning) <= 1:
        tuning = next(iter(by_tuning), 0)
        return dataclasses.replace(folded_stat(by_tuning.get(tuning, []), counts, folds), tuning=tuning)
    stats = {tuning: folded_stat(pts, counts, folds) for tuning, pts in sorted(by_tuning.items())}
    best = max(stats, key=lambda t: stats[t].mean)
    return dataclasses.replace(stats[best], tuning=best, tunings=len(stats))


def _check_metric(metric: str) -> None:
    if metric not in METRIC_KINDS:
        raise UserError(f"unknown metric '{metric}' (valid: {', '.join(METRIC_KINDS)})")


def match_grid(sparsity: float, grid) -> Optional[float]:
    for g in grid:
        if abs(sparsity - g) <= LEVEL_TOL:
            return g
    return None


_TARGET = re.compile(r"-s(\d+(?:\.\d+)?)-seed")
_LTH_TO = re.compile(r"-to(\d+(?:\.\d+)?)-seed")


def _lth_ladder(rounds: int = 40) -> tuple:
    return tuple(round(1 - 0.8**k, 6) for k in range(1, rounds + 1))


def _intended_cells(trial: TrialResult, grid) -> set:
    """Grid cells a trial was meant to fill: the levels it reported, plus its target from the trial id
    (so a trial that failed before reaching any level is still counted in its cell)."""
    cells = {g for g in (match_grid(float(lv["sparsity"]), grid) for lv in trial.levels) if g is not None}
    if trial.sparsity is not None:
        g = match_grid(trial.sparsity, grid)
        if g is not None:
            cells.add(g)
    match = _TARGET.search(trial.trial_id)
    if match:
        g = match_grid(float(match.group(1)), grid)
        if g is not None:
            cells.add(g)
    match = _LTH_TO.search(trial.trial_id)
    if match:
        top = float(match.group(1))
        for rung in _lth_ladder():
            if rung > top + LEVEL_TOL:
                break
            g = match_grid(rung, grid)
            if g is not None:
                cells.add(g)
    return cells


def trials_of(run: RunResults, model: Optional[str]) -> list:
    """The run's trials of one architecture (every trial when ``model`` is None)."""
    return [t for t in run.trials if model is None or t.model == model]


def cells(run: RunResults, metric: str = "best", model: Optional[str] = None) -> dict:
    """``{method: {grid sparsity: CellStat}}`` for every non-dense method, every grid sparsity present.

    Methods come from the sweep spec plus any method found in the results, in registry order.
    """
    _check_metric(metric)
    grid = tuple(sorted(run.spec.sparsities))
    trials = trials_of(run, model)
    methods = _method_order(set(planned_rows(run.spec)) | {t.method for t in trials},
                            tuple(run.spec.prune_only))
    table = {}
    for method in methods:
        if method == DENSE:
            continue
        values = {g: [] for g in grid}
        counts = {g: {} for g in grid}
        reached = {g: [] for g in grid}
        for trial in trials:
            if trial.method != method:
                continue
            if trial.status in RESULT_STATUSES:
                for level in trial.levels:
                    g = match_grid(float(level["sparsity"]), grid)
                    if g is None:
                        continue
                    status = "collapsed" if trial.status == "collapsed" and level.get("collapsed") else "ok"
                    counts[g][status] = counts[g].get(status, 0) + 1
                    if _is_number(level.get(metric)):
                        values[g].append((trial.seed, trial.fold, level[metric], trial.tuning))
                        reached[g].append((trial.tuning, level.get("achieved_sparsity"), trial.tunables))
            else:
                for g in _intended_cells(trial, grid):
                    counts[g][trial.status] = counts[g].get(trial.status, 0) + 1
        table[method] = {g: _with_reached(_best_tuning(values[g], counts[g], tuple(run.spec.folds)), reached[g])
                         for g in grid}
    return table


def _with_reached(stat: CellStat, reached: list) -> CellStat:
    """The shown tuning's mean achieved sparsity and its hyperparameters."""
    mine = [(value, tunables) for tuning, value, tunables in reached if tuning == stat.tuning]
    numbers = [float(value) for value, _ in mine if _is_number(value)]
    achieved = math.fsum(numbers) / len(numbers) if numbers else None
    return dataclasses.replace(stat, achieved=achieved, tunables=dict(mine[0][1]) if mine else {})


def dense_baseline(run: RunResults, metric: str = "best", model: Optional[str] = None) -> Optional[CellStat]:
    """Mean/std over seeds of the dense trials' value; ``None`` when the run has no dense trial at all."""
    _check_metric(metric)
    dense = [t for t in trials_of(run, model) if t.method == DENSE]
    if not dense:
        return None
    values, counts = [], {}
    for trial in dense:
        counts[trial.status] = counts.get(trial.status, 0) + 1
        if trial.status not in RESULT_STATUSES or not trial.levels:
            continue
        level = min(trial.levels, key=lambda lv: abs(float(lv["sparsity"])))
        if _is_number(level.get(metric)):
            values.append((trial.seed, trial.fold, level[metric]))
    return folded_stat(values, counts, tuple(run.spec.folds))


def collapsed_layers(run: RunResults, model: Optional[str] = None) -> dict:
    """``{(method, grid sparsity): sorted layer names}`` that some ok trial left 100 % pruned."""
    grid = tuple(sorted(run.spec.sparsities))
    found: dict = {}
    for trial in trials_of(run, model):
        if trial.status not in RESULT_STATUSES:
            continue
        for level in trial.levels:
            g = match_grid(float(level["sparsity"]), grid)
            names = level.get("collapsed_layers") or []
            if g is not None and names:
                found.setdefault((trial.method, g), set()).update(names)
    return {key: sorted(names) for key, names in found.items()}


def planned_rows(spec: SweepSpec) -> list:
    """The report rows a sweep plans: its methods, or with ``--prune-only`` one ``method[group]``
    row per method and group (dense stays one row)."""
    if not spec.prune_only:
        return list(spec.methods)
    return [m if m == DENSE else row_label(m, group) for m in spec.methods
            for group in (("",) if m == DENSE else spec.prune_only)]


def _method_order(names, groups: tuple = ()) -> list:
    """Rows in registry order of their method, a method's ``[group]`` rows in ``--prune-only``
    order; names the registry does not know last, sorted."""
    from .registry import METHODS, PAPER_METHODS

    order = [DENSE] + list(METHODS) + [m for m in PAPER_METHODS if m not in METHODS]
    rows = [row_label(m, g) for m in order for g in ("",) + tuple(groups)]
    known = [r for r in rows if r in names]
    return list(dict.fromkeys(known)) + sorted(set(names) - set(rows))


# --------------------------------------------------------------------------------------------------
# failing sparsity

@dataclass(frozen=True)
class FailResult:
    """Where a method stops matching dense.

    outcome:  ``fails_at`` (``fails_at`` holds the sparsity), ``never`` (no measured level fails),
              ``no_dense`` (no dense baseline: unknown), ``no_data`` (no level has a value).
    missing:  grid levels without a value (they are skipped when scanning).
    missing_below: a level below ``fails_at`` (or, for ``never``, any level) is missing, so the true
              failing sparsity could be lower (or exist at all).
    With a significance test (``Criterion.alpha``): ``p_values`` per tested level below the
    threshold, ``not_significant`` the levels below it with p >= alpha, ``untestable`` those with
    fewer than two seeds on a side; neither counts as failing.
    """

    outcome: str
    fails_at: Optional[float] = None
    fails_at_first_level: bool = False
    non_monotone: bool = False
    threshold: Optional[float] = None
    failing_levels: tuple = ()
    missing: tuple = ()
    missing_below: bool = False
    p_values: dict = field(default_factory=dict)
    not_significant: tuple = ()
    untestable: tuple = ()


CurveValue = Union[None, float, CellStat]


def _mean_and_values(value: CurveValue) -> tuple:
    if isinstance(value, CellStat):
        return value.mean, value.values
    return (None, ()) if value is None else (float(value), (float(value),))


def failing_sparsity(curve: Mapping[float, CurveValue], dense: CurveValue,
                     criterion: Criterion = Criterion()) -> FailResult:
    """First sparsity (increasing) that fails ``criterion`` against ``dense``.

    ``curve`` maps every grid sparsity of the method to its value (a float, a ``CellStat`` or None
    for a missing level); include missing levels so "first level" refers to the grid's first level.
    The significance test needs per-seed values, so floats count as one seed.
    """
    dense_mean, dense_values = _mean_and_values(dense)
    points = []
    for sparsity in sorted(curve):
        mean, values = _mean_and_values(curve[sparsity])
        points.append((float(sparsity), mean, values))
    missing = tuple(s for s, mean, _ in points if mean is None)
    measured = [(s, mean, values) for s, mean, values in points if mean is not None]
    if not measured:
        threshold = None if dense_mean is None else criterion.threshold(dense_mean)
        return FailResult(NO_DATA, threshold=threshold, missing=missing)
    if dense_mean is None:
        return FailResult(NO_DENSE, missing=missing)
    threshold = criterion.threshold(dense_mean)
    below = [(s, values) for s, mean, values in measured if criterion.below(mean, dense_mean)]
    p_values = {s: criterion.p_value(values, dense_values) for s, values in below} if criterion.alpha else {}
    untestable = tuple(s for s, p in p_values.items() if p is None)
    not_significant = tuple(s for s, p in p_values.items() if p is not None and p >= criterion.alpha)
    failing = tuple(s for s, _ in below if s not in untestable and s not in not_significant)
    extra = dict(missing=missing, p_values=p_values, untestable=untestable, not_significant=not_significant)
    if not failing:
        return FailResult(NEVER, threshold=threshold, missing_below=bool(missing), **extra)
    first = failing[0]
    recovered = any(s > first and s not in failing for s, _, _ in measured)
    return FailResult(
        FAILS_AT,
        fails_at=first,
        fails_at_first_level=(first == points[0][0]),
        non_monotone=recovered,
        threshold=threshold,
        failing_levels=failing,
        missing_below=any(s < first for s in missing),
        **extra,
    )


# --------------------------------------------------------------------------------------------------
# summary

@dataclass(frozen=True)
class MethodSummary:
    name: str
    cells: dict          # grid sparsity -> CellStat
    fail: FailResult


@dataclass(frozen=True)
class Summary:
    """Everything ``report.py`` needs, computed once."""

    task: str
    preset: str
    name: str
    run_dir: str
    metric: str                # "best" | "final"
    metric_name: str           # what the task measures, e.g. "accuracy"
    criterion: Criterion
    grid: tuple
    seeds: tuple
    dense: Optional[CellStat]
    chance: Optional[float]
    methods: tuple             # MethodSummary, registry order, dense excluded
    trials_ok: int
    trials_failed: int
    trials_killed: int
    failures: tuple            # (trial_id, status, error) of every failed or killed trial
    trials_collapsed: int = 0
    model: Optional[str] = None   # the architecture summarized (sweeps over several: one Summary each)
    folds: tuple = ()
    collapsed: dict = field(default_factory=dict)   # (method, sparsity) -> layers left 100 % pruned
    groups: tuple = ()            # --prune-only: each method[group] row pruned only that group

    @property
    def metric_label(self) -> str:
        return METRIC_KIND_LABELS[self.metric]


def summarize(run: RunResults, metric: str = "best", criterion: Criterion = Criterion(),
              model: Optional[str] = None) -> Summary:
    """One architecture's summary (``model``; every trial when None)."""
    _check_metric(metric)
    spec = run.spec
    grid = tuple(sorted(spec.sparsities))
    trials = trials_of(run, model)
    dense = dense_baseline(run, metric, model)
    methods = tuple(
        MethodSummary(name, table, failing_sparsity(table, dense, criterion))
        for name, table in cells(run, metric, model).items()
    )
    task_entry = _task_entry(spec.task)
    chance = next((t.chance for t in trials if t.chance is not None), None)
    if chance is None and task_entry is not None:
        chance = task_entry.chance
    metric_name = next((t.metric for t in trials if t.metric), "") or (
        task_entry.metric if task_entry is not None else "metric")
    count = {s: sum(1 for t in trials if t.status == s) for s in STATUSES}
    return Summary(
        task=spec.task, preset=spec.preset, name=spec.name, run_dir=str(run.run_dir),
        metric=metric, metric_name=metric_name, criterion=criterion, grid=grid,
        seeds=tuple(spec.seeds), dense=dense, chance=chance, methods=methods,
        trials_ok=count["ok"], trials_failed=count["failed"], trials_killed=count["killed"],
        trials_collapsed=count["collapsed"],
        failures=tuple((t.trial_id, t.status, t.error) for t in trials if t.status not in RESULT_STATUSES),
        model=model, folds=tuple(spec.folds), collapsed=collapsed_layers(run, model),
        groups=tuple(spec.prune_only),
    )


def summarize_all(run: RunResults, metric: str = "best", criterion: Criterion = Criterion()) -> list:
    """One ``Summary`` per architecture the sweep ran (one for single-architecture tasks)."""
    models = tuple(run.spec.models) or tuple(dict.fromkeys(t.model for t in run.trials if t.model))
    if len(models) <= 1:
        return [summarize(run, metric, criterion, models[0] if models else None)]
    return [summarize(run, metric, criterion, model) for model in models]


def _task_entry(task: str):
    from .registry import TASKS

    return TASKS.get(task)
