"""The report as text: the method x sparsity table printed by ``smctune report`` and embedded in
``report.md``, and the per-layer tables of ``smctune layers``.

Fixed-width plain text on purpose: it reads the same in a terminal, a CI log and an e-mail.
"""
from __future__ import annotations

import re
from typing import Optional

from smctune import units
from smctune.report.analysis import (FAILS_AT, NEVER, NO_DATA, NO_DENSE, VERDICT_FAILS, VERDICT_NOT_SIGNIFICANT,
                                     VERDICT_OK, FailResult, Summary)
from smctune.report.cell_stats import LEVEL_TOL, CellStat
from smctune.report.marks import COLLAPSED, LAYER_COLLAPSE, MARK_FAIL, MARKS, MISSING

NO_LAYERS = "no finished pruned level with per-layer sparsity matches"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def format_stat(stat: CellStat) -> str:
    """``77.3±1.2``: the mean in points, with the spread over seeds when there are several."""
    text = _pct(stat.mean)
    if stat.n > 1:
        text += f"±{_pct(stat.std)}"
    return text


def cell_mark(sparsity: float, stat: Optional[CellStat], fail: FailResult) -> Optional[str]:
    """The mark the method's failing-sparsity analysis gives this level (None: no mark)."""
    return MARKS.get(fail.verdict(sparsity, stat))


def format_cell(stat: Optional[CellStat], mark: Optional[str], expected_n: int = 0) -> str:
    """``77.3±1.2 ✓``, ``70.1 ✗``, ``failed``/``killed`` (every trial of the cell), ``—`` (no value).

    A ``*`` before the mark means fewer ok seeds than the sweep asked for (``expected_n``): some
    failed or were killed (excluded from the mean) or have not reported.
    """
    if stat is None:
        return MISSING
    if stat.mean is None:
        if stat.all_failed:
            return "killed" if set(stat.status_counts) == {"killed"} else "failed"
        return MISSING
    text = format_stat(stat)
    if stat.some_collapsed:
        text += COLLAPSED
    if _short(stat, expected_n):
        text += "*"
    return text + (f" {mark}" if mark else "")


def _short(stat: CellStat, expected_n: int) -> bool:
    return stat.mean is not None and (stat.some_failed or stat.n < expected_n or stat.missing_folds)


def format_fail(fail: FailResult) -> str:
    """The "fails at" column: ``0.590``, ``first level (0.200)``, ``never``, with qualifiers."""
    if fail.outcome == NO_DENSE:
        return "unknown (no dense)"
    if fail.outcome == NO_DATA:
        return f"{MISSING} (no data)"
    if fail.outcome == NEVER:
        return "never (levels missing)" if fail.missing_below else "never"
    assert fail.outcome == FAILS_AT
    if fail.fails_at_first_level:
        text = f"first level ({fail.fails_at:.3f})"
    else:
        text = f"{fail.fails_at:.3f}"
        if fail.missing_below:
            text += " (levels missing below)"
    if fail.non_monotone:
        text += " (non-monotone)"
    return text


def footer(summary: Summary) -> str:
    """The one line under the table."""
    if summary.dense is None:
        dense = "dense: none (failing sparsity unknown)"
    elif summary.dense.mean is None:
        dense = "dense: every trial failed (failing sparsity unknown)"
    else:
        seeds = f"{summary.dense.n} seed" + ("s" if summary.dense.n != 1 else "")
        dense = f"dense {format_stat(summary.dense)} ({seeds})"
    if summary.folds:
        dense += f", mean of {len(summary.folds)} fold" + ("s" if len(summary.folds) != 1 else "")
    chance = units.shown(summary.metric_name, summary.chance) if summary.chance is not None else "unknown"
    trials = f"{summary.trials_ok} ok, {summary.trials_failed} failed"
    if summary.trials_killed:
        trials += f", {summary.trials_killed} killed"
    if summary.trials_collapsed:
        trials += f", {summary.trials_collapsed} collapsed"
    marks = f"{MARK_FAIL} = fails"
    if summary.criterion.alpha:
        marks += f", {MARKS[VERDICT_NOT_SIGNIFICANT]} = below the threshold but not significant or untestable"
    return (f"{dense} | {summary.criterion.label} ({marks}) | "
            f"metric: {summary.metric_name}, {summary.metric_label} | chance {chance} | trials: {trials}")


def format_table(summary: Summary) -> str:
    """Fixed-width table: dense row first, then one row per method; a column per grid sparsity."""
    dense_mean = summary.dense.mean if summary.dense is not None else None
    n_seeds = len(summary.seeds)
    header = ["method", "dense"] + [f"{s:.3f}" for s in summary.grid] + ["fails at"]
    rows = []
    if summary.dense is not None:
        rows.append(["dense", format_cell(summary.dense, None, n_seeds)] + [""] * len(summary.grid) + [""])
    for method in summary.methods:
        rows.append([method.name, ""]
                    + [format_cell(method.cells.get(s), cell_mark(s, method.cells.get(s), method.fail), n_seeds)
                       for s in summary.grid]
                    + [format_fail(method.fail)])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        parts = [cells[0].ljust(widths[0])]
        parts += [c.rjust(w) for c, w in zip(cells[1:-1], widths[1:-1])]
        parts.append(cells[-1].ljust(widths[-1]))
        return "  ".join(parts).rstrip()

    model = f" · model {summary.model}" if summary.model else ""
    title = (f"{summary.task}{model} · preset {summary.preset} · run {summary.name} · "
             f"{units.label(summary.metric_name)} by sparsity")
    out = [title]
    if summary.groups:
        out.append(f"module sensitivity: each method[group] row prunes only that group "
                   f"({', '.join(summary.groups)}); sparsity is over the group's weights")
    out += [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    if not summary.methods:
        out.append("(no sparse methods in this run)")
    out.append("")
    out.append(footer(summary))
    stats = [s for m in summary.methods for s in m.cells.values()]
    if summary.dense is not None:
        stats.append(summary.dense)
    if any(_short(stat, n_seeds) for stat in stats):
        folds = " or folds" if summary.folds else ""
        out.append(f"* fewer than the sweep's {n_seeds} seed(s){folds} are ok in this cell "
                   "(failed, killed or not reported; excluded from the mean)")
    if any(stat.tunings > 1 for stat in stats):
        out.append("searched cells (--trials-per-cell) show their best tuning, chosen on the same dev "
                   "set: an optimistic value; results.json names the tuning")
    if summary.trials_collapsed:
        out.append(f"{COLLAPSED} a trial of this cell collapsed and stopped early (at chance for "
                   "several evaluations, loss not finite, or an empty layer): its value is where it stopped")
    out += collapse_lines(summary)
    if dense_at_chance(summary):
        out.append(f"! dense is at chance level ({units.shown(summary.metric_name, dense_mean)} vs "
                   f"{units.shown(summary.metric_name, summary.chance)}): "
                   f"the {MARKS[VERDICT_OK]}/{MARKS[VERDICT_FAILS]} marks are noise; a smoke run checks the "
                   "pipeline, use --preset small or paper for a real answer")
    return "\n".join(out)


def collapse_lines(summary: Summary, shown: int = 3) -> list:
    """``⊘`` lines naming the cells whose mask emptied whole layers (layer collapse)."""
    lines = []
    for (method, sparsity), names in sorted(summary.collapsed.items()):
        more = f", +{len(names) - shown} more" if len(names) > shown else ""
        plural = "s" if len(names) != 1 else ""
        lines.append(f"{LAYER_COLLAPSE} {method} at {sparsity:.3f}: {len(names)} layer{plural} "
                     f"100 % pruned ({', '.join(names[:shown])}{more})")
    return lines


def dense_at_chance(summary: Summary) -> bool:
    """A baseline that never left chance (smoke's random-weight models) makes every comparison noise."""
    if summary.dense is None or summary.dense.mean is None or summary.chance is None:
        return False
    return summary.criterion.threshold(summary.dense.mean) <= summary.chance


def format_layers(run, method: Optional[str] = None, sparsity: Optional[float] = None) -> str:
    """Per-layer sparsity of every finished level (of ``method``, at ``sparsity``), one block per
    trial level; ``COLLAPSED`` marks a layer with no weight left."""
    blocks = []
    for trial in run.trials:
        if method and trial.method != method:
            continue
        for level in trial.levels:
            layers = level.get("layers") or {}
            if not layers or (sparsity is not None and abs(float(level["sparsity"]) - sparsity) > LEVEL_TOL):
                continue
            width = max(len(name) for name in layers)
            collapsed = level.get("collapsed_layers") or []
            head = (f"{trial.trial_id} · level {float(level['sparsity']):.3f} · "
                    f"{len(collapsed)} of {len(layers)} layers 100 % pruned")
            rows = [f"  {name.ljust(width)}  {100 * value:6.2f}%" + ("  COLLAPSED" if name in collapsed else "")
                    for name, value in layers.items()]
            blocks.append("\n".join([head] + rows))
    return "\n\n".join(blocks) or NO_LAYERS


def format_layer_groups(run, groups: dict, method: Optional[str] = None,
                        sparsity: Optional[float] = None) -> str:
    """Sparsity of each prunable group (the search space's ``prunable.groups``: q, k, v, o, ffn ...)
    of every finished level, weighted by layer size: where a method put its pruning, one row per
    trial level; ``-`` for a group none of whose layers the mask covers."""
    compiled = {name: [re.compile(pattern) for pattern in patterns] for name, patterns in groups.items()}
    header = ["trial", "level"] + list(compiled)
    rows = []
    for trial in run.trials:
        if method and trial.method != method:
            continue
        for level in trial.levels:
            layers, sizes = level.get("layers") or {}, level.get("layer_sizes") or {}
            if not layers or (sparsity is not None and abs(float(level["sparsity"]) - sparsity) > LEVEL_TOL):
                continue
            cells = []
            for patterns in compiled.values():
                members = [name for name in layers if any(p.search(name) for p in patterns)]
                total = sum(sizes.get(name, 0) for name in members)
                pruned = sum(sizes.get(name, 0) * float(layers[name]) for name in members)
                cells.append(f"{100 * pruned / total:.2f}%" if total else "-")
            rows.append([trial.trial_id, f"{float(level['sparsity']):.3f}"] + cells)
    if not rows:
        return NO_LAYERS
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
                      for row in [header] + rows)
