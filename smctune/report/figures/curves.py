"""The curves figure (the paper's figures 1-4): the metric against sparsity, one line per method,
with dense, its tolerance band and chance as reference lines, so "where does each method fall below
dense" can be read off one picture.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

from smctune import units
from smctune.report.analysis import FAILS_AT, NEVER, NO_DATA, NO_DENSE, Summary
from smctune.report.figures import style
from smctune.report.tables import format_fail, format_stat


def plot_curves(summary: Summary, path: Union[str, Path], paper=None) -> Path:
    """PNG of metric (%) vs sparsity: one line per method (distinct marker and line style), dense as a
    solid horizontal line with its tolerance band, chance as a dotted line; with ``paper`` (a
    ``PaperReference``) the paper's dense as a dash-dot line and its approximate points as hollow
    markers of the method's shape."""
    grid = list(summary.grid)
    with style.new_figure(8.0, 5.6) as (plt, fig):
        ax = fig.add_subplot()
        dense_mean = summary.dense.mean if summary.dense is not None else None
        if dense_mean is not None:
            low = 100 * summary.criterion.threshold(dense_mean)
            ax.axhspan(low, 100 * dense_mean, color="0.85", zorder=0,
                       label=f"dense − tolerance ({summary.criterion.tolerance.label})")
            ax.axhline(100 * dense_mean, color="black", linewidth=1.6, zorder=1,
                       label=f"dense {format_stat(summary.dense)}")
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
                        color=cmap(i % 10), marker=style.MARKERS[i % len(style.MARKERS)],
                        linestyle=style.LINESTYLES[i % len(style.LINESTYLES)], linewidth=1.6, markersize=6,
                        capsize=3, elinewidth=0.9, zorder=3)
            paper_points = sorted((paper.curves if paper is not None else {}).get(method.name, {}).items())
            if paper_points:
                ax.plot([x for x, _ in paper_points], [100 * y for _, y in paper_points],
                        marker=style.MARKERS[i % len(style.MARKERS)], markersize=9, markerfacecolor="none",
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
        return style.save_figure(fig, path)


_LEGEND = {NO_DATA: "{name} (no data)", NO_DENSE: "{name} (failing sparsity unknown: no dense)",
           NEVER: "{name} — fails: {fails}", FAILS_AT: "{name} — fails at {fails}"}


def _plot_label(method) -> str:
    return _LEGEND[method.fail.outcome].format(name=method.name, fails=format_fail(method.fail))
