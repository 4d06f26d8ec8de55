"""The answer of a sweep: where each method stops matching dense (its *failing sparsity*), per
architecture, in one ``Summary`` that the tables, ``results.json``, the figures and the document read.

Pure computation: no plotting, no torch, no ray. Definitions (the report states them too):

* A *cell* is (method, grid sparsity). Its value is the mean over seeds of the level metric (``best``
  over evaluations or ``final``) of the trials with ``status`` ``ok`` or ``collapsed`` (stopped early
  because the network collapsed: a result, at the value where it stopped); failed and killed trials are
  counted in ``status_counts`` but never enter the mean. ``std`` is the sample standard deviation
  (ddof=1); 0.0 for a single seed, ``None`` without values (``smctune.report.cell_stats``).
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

from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

from smctune.catalog.registry import TASKS
from smctune.report.cell_stats import CellStat, cells, check_metric, collapsed_layers, dense_baseline
from smctune.report.criterion import Criterion
from smctune.report.load import STATUSES, RunResults, trials_of
from smctune.rundir.records import FINISHED_STATUSES


METRIC_KIND_LABELS = {"best": "best over evaluations", "final": "final evaluation"}

# outcomes of failing_sparsity
FAILS_AT = "fails_at"
NEVER = "never"
NO_DENSE = "no_dense"
NO_DATA = "no_data"

# a level's verdict (``FailResult.verdict``), as results.json spells it
VERDICT_OK = "ok"
VERDICT_FAILS = "fails"
VERDICT_NOT_SIGNIFICANT = "not_significant"


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

    def verdict(self, sparsity: float, stat: Optional[CellStat]) -> Optional[str]:
        """What this analysis says of one level: ``VERDICT_FAILS``, ``VERDICT_NOT_SIGNIFICANT`` (below
        the threshold, but not significantly or untestable under ``--alpha``), ``VERDICT_OK``; None
        when the level has no value or there is no threshold to compare with."""
        if stat is None or stat.mean is None or self.threshold is None:
            return None
        if sparsity in self.failing_levels:
            return VERDICT_FAILS
        if sparsity in self.not_significant or sparsity in self.untestable:
            return VERDICT_NOT_SIGNIFICANT
        return VERDICT_OK


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
    """One architecture's results, computed once: everything the report shows is read from here."""

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
    check_metric(metric)
    spec = run.spec
    grid = tuple(sorted(spec.sparsities))
    trials = trials_of(run, model)
    dense = dense_baseline(run, metric, model)
    methods = tuple(
        MethodSummary(name, table, failing_sparsity(table, dense, criterion))
        for name, table in cells(run, metric, model).items()
    )
    task_entry = TASKS.get(spec.task)
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
        failures=tuple((t.trial_id, t.status, t.error) for t in trials if t.status not in FINISHED_STATUSES),
        model=model, folds=tuple(spec.folds), collapsed=collapsed_layers(run, model),
        groups=tuple(spec.prune_only),
    )


def summarize_all(run: RunResults, metric: str = "best", criterion: Criterion = Criterion()) -> list:
    """One ``Summary`` per architecture the sweep ran (one for single-architecture tasks)."""
    models = tuple(run.spec.models) or tuple(dict.fromkeys(t.model for t in run.trials if t.model))
    if len(models) <= 1:
        return [summarize(run, metric, criterion, models[0] if models else None)]
    return [summarize(run, metric, criterion, model) for model in models]

