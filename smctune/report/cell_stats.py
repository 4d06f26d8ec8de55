"""The numbers in the report's cells: seed statistics per (method, grid sparsity) and the dense baseline.

The rules (seed and fold averaging, which statuses count, how a level finds its grid column) are
stated once in ``smctune.report.analysis``'s docstring; this module implements them, so the table, the
figures and ``results.json`` all read the same ``CellStat``.
"""
from __future__ import annotations

import dataclasses
import re
import statistics
from dataclasses import dataclass, field
from typing import Mapping, Optional

from smctune.catalog.registry import METHODS, PAPER_METHODS
from smctune.config.settings import paper_grid
from smctune.config.specs import SweepSpec, row_label
from smctune.errors import UserError
from smctune.report.load import DENSE, METRIC_KINDS, STATUSES, RunResults, TrialResult, is_number, trials_of
from smctune.rundir.records import FINISHED_STATUSES, STATUS_COLLAPSED

LEVEL_TOL = 1e-4      # matching a trial level to a grid sparsity


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
                                                                  for s in FINISHED_STATUSES)

    @property
    def some_failed(self) -> bool:
        return any(self.status_counts.get(s) for s in STATUSES if s not in FINISHED_STATUSES)

    @property
    def some_collapsed(self) -> bool:
        return bool(self.status_counts.get(STATUS_COLLAPSED))


def cell_stat(values, status_counts: Optional[Mapping[str, int]] = None) -> CellStat:
    """Mean and sample standard deviation (ddof=1; 0.0 for one seed, None without values)."""
    values = tuple(float(v) for v in values)
    counts = {k: v for k, v in (status_counts or {}).items() if v}
    if not values:
        return CellStat(None, None, 0, values, counts)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return CellStat(statistics.fmean(values), std, len(values), values, counts)


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
    seed_folds: dict = {}
    for seed, fold, value in points:
        per_seed.setdefault(seed, []).append(float(value))
        per_fold.setdefault(fold, []).append(float(value))
        seed_folds.setdefault(seed, set()).add(fold)
    stat = cell_stat([statistics.fmean(v) for v in per_seed.values()], status_counts)
    by_fold = {fold: statistics.fmean(v)
               for fold, v in sorted(per_fold.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))}
    wanted = set(expected_folds) | set(per_fold)
    missing = any(folds != wanted for folds in seed_folds.values())
    return dataclasses.replace(stat, by_fold=by_fold, missing_folds=missing)


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


def check_metric(metric: str) -> None:
    if metric not in METRIC_KINDS:
        raise UserError(f"unknown metric '{metric}' (valid: {', '.join(METRIC_KINDS)})")


def match_grid(sparsity: float, grid) -> Optional[float]:
    for g in grid:
        if abs(sparsity - g) <= LEVEL_TOL:
            return g
    return None


_TARGET = re.compile(r"-s(\d+(?:\.\d+)?)-seed")
_LTH_TO = re.compile(r"-to(\d+(?:\.\d+)?)-seed")
_LTH_ROUNDS = 40      # more IMP rounds than any grid reaches (1 - 0.8**40 > 0.9998)


def _intended_cells(trial: TrialResult, grid) -> set:
    """Grid cells a trial was meant to fill: the levels it reported, plus its target from the trial id
    (so a trial that failed before reaching any level is still counted in its cell)."""
    targets = [float(lv["sparsity"]) for lv in trial.levels]
    if trial.sparsity is not None:
        targets.append(trial.sparsity)
    match = _TARGET.search(trial.trial_id)
    if match:
        targets.append(float(match.group(1)))
    match = _LTH_TO.search(trial.trial_id)
    if match:   # an LTH trial climbs the IMP ladder up to its top level, one round per rung
        top = float(match.group(1))
        targets += [rung for rung in paper_grid(_LTH_ROUNDS) if rung <= top + LEVEL_TOL]
    return {g for g in (match_grid(t, grid) for t in targets) if g is not None}


def cells(run: RunResults, metric: str = "best", model: Optional[str] = None) -> dict:
    """``{method: {grid sparsity: CellStat}}`` for every non-dense method, every grid sparsity present.

    Methods come from the sweep spec plus any method found in the results, in registry order.
    """
    check_metric(metric)
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
            if trial.status in FINISHED_STATUSES:
                for level in trial.levels:
                    g = match_grid(float(level["sparsity"]), grid)
                    if g is None:
                        continue
                    status = STATUS_COLLAPSED if trial.status == STATUS_COLLAPSED and level.get("collapsed") else "ok"
                    counts[g][status] = counts[g].get(status, 0) + 1
                    if is_number(level.get(metric)):
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
    numbers = [float(value) for value, _ in mine if is_number(value)]
    achieved = statistics.fmean(numbers) if numbers else None
    return dataclasses.replace(stat, achieved=achieved, tunables=dict(mine[0][1]) if mine else {})


def dense_baseline(run: RunResults, metric: str = "best", model: Optional[str] = None) -> Optional[CellStat]:
    """Mean/std over seeds of the dense trials' value; ``None`` when the run has no dense trial at all."""
    check_metric(metric)
    dense = [t for t in trials_of(run, model) if t.method == DENSE]
    if not dense:
        return None
    values, counts = [], {}
    for trial in dense:
        counts[trial.status] = counts.get(trial.status, 0) + 1
        if trial.status not in FINISHED_STATUSES or not trial.levels:
            continue
        level = min(trial.levels, key=lambda lv: abs(float(lv["sparsity"])))
        if is_number(level.get(metric)):
            values.append((trial.seed, trial.fold, level[metric]))
    return folded_stat(values, counts, tuple(run.spec.folds))


def collapsed_layers(run: RunResults, model: Optional[str] = None) -> dict:
    """``{(method, grid sparsity): sorted layer names}`` that some ok trial left 100 % pruned."""
    grid = tuple(sorted(run.spec.sparsities))
    found: dict = {}
    for trial in trials_of(run, model):
        if trial.status not in FINISHED_STATUSES:
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
    order = [DENSE] + list(METHODS) + [m for m in PAPER_METHODS if m not in METHODS]
    rows = [row_label(m, g) for m in order for g in ("",) + tuple(groups)]
    known = [r for r in rows if r in names]
    return list(dict.fromkeys(known)) + sorted(set(names) - set(rows))
