"""Turn a run directory into the report: the text table, ``results.json``, figures, ``report.md`` and
a self-contained ``report.html``.

The numbers come from ``smctune.analysis`` (cells, failing sparsity) and ``smctune.similarity``
(layerwise profiles, mask overlap); ``figures.py`` draws, ``report_doc.py`` renders. matplotlib is
imported only when drawing, so ``smctune report`` needs neither Ray nor torch.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from .analysis import (FAILS_AT, NEVER, NO_DATA, NO_DENSE, CellStat, FailResult, Summary, load_run,
                       summarize_all)
from . import units
from .criterion import Criterion
from .errors import UserError
from .units import shown
from .figures import LINESTYLES, MARKERS, save_figure

SCHEMA_VERSION = 2
RESULTS_FILE = "results.json"
PLOT_FILE = "curves.png"
PLAN_FILE = "plan.json"
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
PAPER_LAYER_LEVELS = (0.36, 0.672, 0.832)   # the paper's layerwise figures 6-8

MARK_OK = "✓"
MARK_FAIL = "✗"
MARK_NOT_SIGNIFICANT = "≈"   # below the threshold, but not significantly (or untestable) under --alpha
MISSING = "—"
COLLAPSED_MARK = "†"


@dataclass(frozen=True)
class ReportOptions:
    metric: str = "best"
    criterion: Criterion = Criterion()
    compare_paper: bool = False
    layer_levels: Optional[tuple] = None    # None: the grid levels nearest PAPER_LAYER_LEVELS
    out_dir: Optional[Path] = None          # None: the run directory


@dataclass(frozen=True)
class ReportPaths:
    results_json: Path
    curves_png: Path          # the first architecture's plot when a sweep ran several
    table: str
    summary: Summary          # likewise the first; ``summaries`` holds every one
    summaries: tuple = ()
    plots: tuple = ()         # the curves, one per architecture
    figures: tuple = ()       # every PNG written (curves included)
    markdown: Optional[Path] = None
    html: Optional[Path] = None

    @property
    def plot(self) -> Path:
        return self.curves_png

    @property
    def files(self) -> tuple:
        return tuple(p for p in (self.results_json, self.markdown, self.html, *self.figures) if p)


@dataclass(frozen=True)
class ArchitectureFacts:
    """What the report adds to one architecture's ``Summary``: layer and mask analysis, the paper."""

    similarities: tuple = ()     # similarity.PairSimilarity
    embedding: dict = field(default_factory=dict)   # (method, level) -> reason
    paper: object = None         # paper_reference.PaperReference or None


@dataclass(frozen=True)
class RunFacts:
    """Run-level facts for results.json: what ran where, at what cost, and what is missing."""

    environment: Optional[dict] = None
    sweep: Optional[dict] = None
    compute: dict = field(default_factory=dict)
    completeness: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# text

def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _stat_text(stat: CellStat) -> str:
    text = _pct(stat.mean)
    if stat.n > 1:
        text += f"±{_pct(stat.std)}"
    return text


def cell_mark(sparsity: float, stat: Optional[CellStat], fail: FailResult) -> Optional[str]:
    """The mark the method's failing-sparsity analysis gives this level (None: no mark)."""
    if stat is None or stat.mean is None or fail.threshold is None:
        return None
    if sparsity in fail.failing_levels:
        return MARK_FAIL
    if sparsity in fail.not_significant or sparsity in fail.untestable:
        return MARK_NOT_SIGNIFICANT
    return MARK_OK


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
    text = _stat_text(stat)
    if stat.some_collapsed:
        text += COLLAPSED_MARK
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
        dense = f"dense {_stat_text(summary.dense)} ({seeds})"
    if summary.folds:
        dense += f", mean of {len(summary.folds)} fold" + ("s" if len(summary.folds) != 1 else "")
    chance = shown(summary.metric_name, summary.chance) if summary.chance is not None else "unknown"
    trials = f"{summary.trials_ok} ok, {summary.trials_failed} failed"
    if summary.trials_killed:
        trials += f", {summary.trials_killed} killed"
    if summary.trials_collapsed:
        trials += f", {summary.trials_collapsed} collapsed"
    marks = f"{MARK_FAIL} = fails"
    if summary.criterion.alpha:
        marks += f", {MARK_NOT_SIGNIFICANT} = below the threshold but not significant or untestable"
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
        out.append(f"{COLLAPSED_MARK} a trial of this cell collapsed and stopped early (at chance for "
                   "several evaluations, loss not finite, or an empty layer): its value is where it stopped")
    out += collapse_lines(summary)
    if dense_at_chance(summary):
        out.append(f"! dense is at chance level ({shown(summary.metric_name, dense_mean)} vs "
                   f"{shown(summary.metric_name, summary.chance)}): "
                   "the ✓/✗ marks are noise; a smoke run checks the pipeline, use --preset small or "
                   "paper for a real answer")
    return "\n".join(out)


def collapse_lines(summary: Summary, shown: int = 3) -> list:
    """``⊘`` lines naming the cells whose mask emptied whole layers (layer collapse)."""
    lines = []
    for (method, sparsity), names in sorted(summary.collapsed.items()):
        more = f", +{len(names) - shown} more" if len(names) > shown else ""
        lines.append(f"⊘ {method} at {sparsity:.3f}: {len(names)} layer{'s' if len(names) != 1 else ''} "
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
            if not layers or (sparsity is not None and abs(float(level["sparsity"]) - sparsity) > 1e-4):
                continue
            width = max(len(name) for name in layers)
            collapsed = level.get("collapsed_layers") or []
            head = (f"{trial.trial_id} · level {float(level['sparsity']):.3f} · "
                    f"{len(collapsed)} of {len(layers)} layers 100 % pruned")
            rows = [f"  {name.ljust(width)}  {100 * value:6.2f}%" + ("  COLLAPSED" if name in collapsed else "")
                    for name, value in layers.items()]
            blocks.append("\n".join([head] + rows))
    return "\n\n".join(blocks) or "no finished pruned level with per-layer sparsity matches"


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
            if not layers or (sparsity is not None and abs(float(level["sparsity"]) - sparsity) > 1e-4):
                continue
            cells = []
            for patterns in compiled.values():
                members = [name for name in layers if any(p.search(name) for p in patterns)]
                total = sum(sizes.get(name, 0) for name in members)
                pruned = sum(sizes.get(name, 0) * float(layers[name]) for name in members)
                cells.append(f"{100 * pruned / total:.2f}%" if total else "-")
            rows.append([trial.trial_id, f"{float(level['sparsity']):.3f}"] + cells)
    if not rows:
        return "no finished pruned level with per-layer sparsity matches"
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
                      for row in [header] + rows)


# --------------------------------------------------------------------------------------------------
# results.json

def _key(sparsity: float) -> str:
    return repr(round(float(sparsity), 6))


def _stat_json(stat: Optional[CellStat]) -> Optional[dict]:
    if stat is None:
        return None
    data = {"mean": stat.mean, "std": stat.std, "n": stat.n, "values": list(stat.values),
            "status_counts": dict(stat.status_counts)}
    if stat.by_fold:
        data["folds"] = {str(fold): value for fold, value in stat.by_fold.items()}
    if stat.tunings > 1:
        data["tuning"], data["tunings"] = stat.tuning, stat.tunings
    return data


def results_dict(summary: Summary, facts: ArchitectureFacts = ArchitectureFacts()) -> dict:
    """One architecture's results (schema ``SCHEMA_VERSION``, documented in the README)."""
    methods = {}
    for method in summary.methods:
        fail = method.fail
        per_level = {}
        for s in summary.grid:
            stat = method.cells.get(s)
            entry = _stat_json(stat) or {"mean": None, "std": None, "n": 0, "values": [], "status_counts": {}}
            per_level[_key(s)] = {
                "sparsity": s, **entry,
                "achieved_sparsity": stat.achieved if stat is not None else None,
                "tunables": stat.tunables if stat is not None else {},
                "p_value": fail.p_values.get(s),
                "mark": {MARK_OK: "ok", MARK_FAIL: "fails", MARK_NOT_SIGNIFICANT: "not_significant",
                         None: None}[cell_mark(s, stat, fail)],
                "collapsed_layers": summary.collapsed.get((method.name, s), []),
                "embedding_collapse": facts.embedding.get((method.name, s)),
            }
        methods[method.name] = {
            "levels": per_level,
            "failing_sparsity": fail.fails_at,
            "outcome": fail.outcome,
            "fails_at_first_level": fail.fails_at_first_level,
            "non_monotone": fail.non_monotone,
            "missing_levels": list(fail.missing),
            "missing_below": fail.missing_below,
            "threshold": fail.threshold,
            "not_significant": list(fail.not_significant),
            "untestable": list(fail.untestable),
            "fails_at_text": format_fail(fail),
        }
    paper = facts.paper
    return {
        "schema_version": SCHEMA_VERSION,
        "task": summary.task,
        "preset": summary.preset,
        "name": summary.name,
        "metric": summary.metric,
        "metric_name": summary.metric_name,
        "criterion": summary.criterion.as_dict(),
        "grid": list(summary.grid),
        "seeds": list(summary.seeds),
        "model": summary.model,
        "folds": list(summary.folds),
        "dense": _stat_json(summary.dense),
        "chance": summary.chance,
        "methods": methods,
        "method_order": [m.name for m in summary.methods],
        "trials": {"ok": summary.trials_ok, "collapsed": summary.trials_collapsed,
                   "failed": summary.trials_failed,
                   "killed": summary.trials_killed,
                   "failures": [{"trial_id": t, "status": s, "error": e} for t, s, e in summary.failures]},
        "similarity": [dataclasses.asdict(p) for p in facts.similarities],
        "paper": None if paper is None else {"dense": paper.dense, "curves": {
            m: {_key(k): v for k, v in pts.items()} for m, pts in paper.curves.items()},
            "citation": paper.citation},
    }


def _write_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None


def results_document(summaries, arch_facts=None, run_facts: RunFacts = RunFacts()) -> dict:
    """results.json: one architecture's results at the top level, or (a sweep over several) the
    common fields once and one results object per architecture under ``by_model``; then the
    run-level facts (environment, resolved sweep settings, compute, completeness)."""
    summaries = [summaries] if isinstance(summaries, Summary) else list(summaries)
    arch_facts = list(arch_facts or [ArchitectureFacts()] * len(summaries))
    if len(summaries) == 1:
        data = results_dict(summaries[0], arch_facts[0])
    else:
        first = summaries[0]
        data = {"schema_version": SCHEMA_VERSION, "task": first.task, "preset": first.preset,
                "name": first.name, "models": [s.model for s in summaries],
                "by_model": {s.model: results_dict(s, f) for s, f in zip(summaries, arch_facts)}}
    data.update(environment=run_facts.environment, sweep=run_facts.sweep, compute=run_facts.compute,
                completeness=run_facts.completeness)
    return data


def write_results_json(summaries, path: Union[str, Path], arch_facts=None,
                       run_facts: RunFacts = RunFacts()) -> Path:
    path = Path(path)
    text = json.dumps(results_document(summaries, arch_facts, run_facts), indent=2, ensure_ascii=False,
                      allow_nan=False) + "\n"
    _write_atomic(path, text.encode())
    return path


# --------------------------------------------------------------------------------------------------
# plot

def plot_curves(summary: Summary, path: Union[str, Path], paper=None) -> Path:
    """PNG of metric (%) vs sparsity: one line per method (distinct marker and line style), dense as a
    solid horizontal line with its tolerance band, chance as a dotted line; with ``paper`` (a
    ``PaperReference``) the paper's dense as a dash-dot line and its approximate points as hollow
    markers of the method's shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    grid = list(summary.grid)
    fig, ax = plt.subplots(figsize=(8.0, 5.6), dpi=120)
    try:
        dense_mean = summary.dense.mean if summary.dense is not None else None
        if dense_mean is not None:
            low = 100 * summary.criterion.threshold(dense_mean)
            ax.axhspan(low, 100 * dense_mean, color="0.85", zorder=0,
                       label=f"dense − tolerance ({summary.criterion.tolerance.label})")
            ax.axhline(100 * dense_mean, color="black", linewidth=1.6, zorder=1,
                       label=f"dense {_stat_text(summary.dense)}")
        if summary.chance is not None:
            ax.axhline(100 * summary.chance, color="0.35", linestyle=":", linewidth=1.6, zorder=1,
                       label=f"chance {100 * summary.chance:.1f}%")
        if paper is not None and paper.dense is not None:
            ax.axhline(100 * paper.dense, color="0.25", linestyle="-.", linewidth=1.2, zorder=1,
                       label=f"paper dense ≈{100 * paper.dense:.1f}% (approximate)")
        cmap = plt.get_cmap("tab10")
        circles = False
        for i, method in enumerate(summary.methods):
            # missing levels are left out (the line joins the measured ones; the table shows the gaps)
            points = [(s, method.cells[s]) for s in grid
                      if method.cells.get(s) is not None and method.cells[s].mean is not None]
            xs = [s for s, _ in points]
            ys = [100 * st.mean for _, st in points]
            errs = [100 * (st.std or 0.0) for _, st in points]
            ax.errorbar(xs, ys, yerr=errs if any(errs) else None, label=_plot_label(method),
                        color=cmap(i % 10), marker=MARKERS[i % len(MARKERS)],
                        linestyle=LINESTYLES[i % len(LINESTYLES)], linewidth=1.6, markersize=6,
                        capsize=3, elinewidth=0.9, zorder=3)
            paper_points = sorted((paper.curves if paper is not None else {}).get(method.name, {}).items())
            if paper_points:
                ax.plot([x for x, _ in paper_points], [100 * y for _, y in paper_points],
                        marker=MARKERS[i % len(MARKERS)], markersize=9, markerfacecolor="none",
                        markeredgecolor=cmap(i % 10), markeredgewidth=1.3, linestyle="none", zorder=4,
                        label=f"{method.name}: paper ≈ (read from its figure)")
            fail = method.fail
            if fail.outcome == FAILS_AT:
                circles = True
                ax.plot([fail.fails_at], [100 * method.cells[fail.fails_at].mean], marker="o", markersize=13,
                        markerfacecolor="none", markeredgecolor=cmap(i % 10), markeredgewidth=1.4,
                        linestyle="none", zorder=4)
        ax.set_xticks(grid)
        ax.set_xticklabels([f"{s:.3f}" for s in grid], rotation=45 if len(grid) > 5 else 0,
                           ha="right" if len(grid) > 5 else "center")
        if grid:
            pad = max(0.02, 0.04 * (grid[-1] - grid[0]))
            ax.set_xlim(grid[0] - pad, grid[-1] + pad)
        ax.set_xlabel("sparsity (fraction of pruned weights)")
        ax.set_ylabel(f"{units.label(summary.metric_name)}, {summary.metric_label}")
        model = f" · {summary.model}" if summary.model else ""
        ax.set_title(f"{summary.task}{model} · preset {summary.preset}  ({summary.name})")
        ax.grid(True, color="0.9", linewidth=0.8, zorder=0)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8.5, frameon=False)
        notes = []
        if circles:
            notes.append("big circle: failing sparsity (first level that fails)")
        if paper is not None:
            notes.append(f"paper values {paper.citation}")
        if notes:
            fig.text(0.01, 0.01, "; ".join(notes), fontsize=7, color="0.3", wrap=True)
        fig.tight_layout()
        save_figure(fig, path)
    finally:
        plt.close(fig)
    return path


def _plot_label(method) -> str:
    fail = method.fail
    if fail.outcome == NO_DATA:
        return f"{method.name} (no data)"
    if fail.outcome == NO_DENSE:
        return f"{method.name} (failing sparsity unknown: no dense)"
    if fail.outcome == NEVER:
        return f"{method.name} — fails: {format_fail(fail)}"
    return f"{method.name} — fails at {format_fail(fail)}"


# --------------------------------------------------------------------------------------------------
# entry point

def write_report(run_dir: Union[str, Path], options: ReportOptions = ReportOptions()) -> ReportPaths:
    """Write results.json, the figures, report.md and report.html (into ``options.out_dir`` or the
    run directory); return their paths and the text table. Works on partial runs."""
    from . import report_build, report_doc

    run = load_run(run_dir)
    summaries = summarize_all(run, metric=options.metric, criterion=options.criterion)
    out = Path(options.out_dir or run_dir)
    several = len(summaries) > 1
    facts, drawn = [], []
    for summary in summaries:
        suffix = f"-{summary.model}" if several else ""
        paper = report_build.paper_for(summary, options.compare_paper)
        head = report_build.draw_summary(summary, paper, out, suffix)
        facts.append(report_build.architecture_facts(run, summary, paper))
        drawn.append(report_build.draw_layers(run, summary, facts[-1], head, out, suffix,
                                              options.layer_levels))
    run_facts = report_build.run_facts(run)
    results = write_results_json(summaries, out / RESULTS_FILE, facts, run_facts)
    table = "\n\n".join(format_table(s) for s in summaries)
    title = f"smctune report: {summaries[0].task} · preset {summaries[0].preset} · run {summaries[0].name}"
    blocks = report_build.blocks(summaries, facts, drawn, run_facts, table, options.criterion)
    markdown = out / MARKDOWN_FILE
    _write_atomic(markdown, report_doc.to_markdown(title, blocks, out).encode())
    html = out / HTML_FILE
    _write_atomic(html, report_doc.to_html(title, blocks).encode())
    plots = tuple(d.curves for d in drawn)
    return ReportPaths(results_json=results, curves_png=plots[0], table=table, summary=summaries[0],
                       summaries=tuple(summaries), plots=plots,
                       figures=tuple(p for d in drawn for p in d.paths), markdown=markdown, html=html)
