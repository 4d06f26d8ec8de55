"""The matrix figures: method x sparsity (the heatmap: the whole sweep at a glance) and method x
method (which methods prune alike: mask overlap, layerwise correlation). Every cell carries its
number, so neither needs colour to be read.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from smctune.report.figures import style
from smctune.report.marks import MARK_FAIL, MISSING

_MISSING_GREY = "0.88"
_BAR_GAP, _BAR_WIDTH = 0.15, 0.18     # inches: the colour bar beside a matrix


def _grid_key(method: str, sparsity: float) -> tuple[str, float]:
    """Sparsities computed along different paths differ in the last bits; lookups must not care."""
    return method, round(float(sparsity), 9)


def _by_grid_key(mapping: Mapping[tuple[str, float], object]) -> dict[tuple[str, float], object]:
    return {_grid_key(m, s): v for (m, s), v in mapping.items()}


def _matrix_size(rows: int, cols: int, cell_w: float, cell_h: float) -> tuple[float, float]:
    """Inches for the cells and the colour bar only: tick labels and title fall outside the figure and
    the tight bounding box at save time takes them in, so long method names cannot squeeze the cells
    below the size their numbers need. Capped so a huge sweep still opens in a viewer."""
    return style.clamp(cell_w * cols, 1.0, 22.0) + _BAR_GAP + _BAR_WIDTH, style.clamp(cell_h * rows, 1.6, 20.0)


def _matrix_axes(fig) -> tuple[object, object]:
    """(cells axes, colour bar axes) filling the figure, see ``_matrix_size``."""
    width, _ = fig.get_size_inches()
    cells = width - _BAR_GAP - _BAR_WIDTH
    ax = fig.add_axes((0.0, 0.0, cells / width, 1.0))
    bar = fig.add_axes(((cells + _BAR_GAP) / width, 0.0, _BAR_WIDTH / width, 1.0))
    return ax, bar


def _draw_matrix(ax, plt, data: list[list[float]], cmap_name: str, vmin: float, vmax: float):
    """imshow with NaN cells light grey and thin white lines between cells, so a row reads as a row."""
    cmap = plt.get_cmap(cmap_name).with_extremes(bad=_MISSING_GREY)
    image = ax.imshow(np.ma.masked_invalid(np.array(data, dtype=float)), cmap=cmap, vmin=vmin, vmax=vmax,
                      aspect="auto", interpolation="nearest")
    rows, cols = len(data), len(data[0])
    ax.set_xticks([c - 0.5 for c in range(1, cols)], minor=True)
    ax.set_yticks([r - 0.5 for r in range(1, rows)], minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    ax.tick_params(which="major", length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    return image


def _text_colour(rgba) -> str:
    """Black on light cells, white on dark ones: the number must stay legible whatever the colour."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def _cell_text(ax, image, row: int, col: int, value: float, text: str, boxed: bool = False) -> str:
    """Write ``text`` centred in a cell; returns the colour used so hatching can match it."""
    if math.isnan(value):
        colour, face = "black", _MISSING_GREY
    else:
        face = image.cmap(image.norm(value))
        colour = _text_colour(face)
    bbox = dict(facecolor=face, edgecolor="none", pad=1.2) if boxed else None
    ax.text(col, row, text, ha="center", va="center", fontsize=8, color=colour, bbox=bbox, zorder=4)
    return colour


def _set_matrix_ticks(ax, x_labels: Sequence[str], y_labels: Sequence[str], rotate_x: bool) -> None:
    ax.set_xticks(range(len(x_labels)))
    ax.set_xticklabels(x_labels, rotation=45 if rotate_x else 0, ha="right" if rotate_x else "center",
                       rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(len(y_labels)))
    ax.set_yticklabels(y_labels, fontsize=8)


# ------------------------------------------------------------------------------------------ method × sparsity


def plot_heatmap(methods: Sequence[str], grid: Sequence[float],
                 values: Mapping[tuple[str, float], Optional[float]],
                 failing: Mapping[tuple[str, float], bool], path: style.PathLike, title: str,
                 metric_label: str) -> Path:
    """PNG of the metric per method (rows) and sparsity (columns): the whole sweep at a glance, where
    the curves figure gets crowded once there are many methods."""
    by_key = _by_grid_key(values)
    fails = _by_grid_key(failing)
    data = [[style.value_or_nan(by_key.get(_grid_key(m, s))) for s in grid] for m in methods]
    present = [v for row in data for v in row if not math.isnan(v)]
    if not present:
        return style.no_data(path, title)
    with style.new_figure(*_matrix_size(len(methods), len(grid), 0.85, 0.42)) as (plt, fig):
        ax, bar_ax = _matrix_axes(fig)
        # the sweep's own range, not 0..1: accuracies a few points apart must look different
        low, high = min(present), max(present)
        if high - low < 1e-6:
            low, high = low - 0.005, high + 0.005
        image = _draw_matrix(ax, plt, data, "cividis", low, high)
        any_fail = _fill_heatmap(ax, image, methods, grid, data, fails)
        _set_matrix_ticks(ax, [f"{s:.3f}" for s in grid], [style.wrap(m) for m in methods], len(grid) > 4)
        ax.set_xlabel("sparsity" + _heatmap_key(any_fail, len(present) < len(methods) * len(grid)))
        ax.set_ylabel("method")
        ax.set_title(title)
        bar = fig.colorbar(image, cax=bar_ax)
        bar.set_label(metric_label)
        bar.ax.yaxis.set_major_formatter(_percent_formatter())
        return style.save_figure(fig, path)


def _fill_heatmap(ax, image, methods: Sequence[str], grid: Sequence[float], data: list[list[float]],
                  fails: Mapping[tuple[str, float], object]) -> bool:
    """Numbers in every cell, failing ones hatched and marked; True if any cell is failing."""
    from matplotlib.patches import Rectangle

    any_fail = False
    for r, method in enumerate(methods):
        for c, sparsity in enumerate(grid):
            value = data[r][c]
            if math.isnan(value):
                _cell_text(ax, image, r, c, value, MISSING)
                continue
            fail = bool(fails.get(_grid_key(method, sparsity), False))
            text = f"{100 * value:.1f}" + (f" {MARK_FAIL}" if fail else "")
            colour = _cell_text(ax, image, r, c, value, text, boxed=fail)
            if fail:
                any_fail = True
                ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, hatch="//", edgecolor=colour,
                                       linewidth=0.8, zorder=3))
    return any_fail


def _heatmap_key(any_fail: bool, any_missing: bool) -> str:
    """A second x-label line explaining the marks actually shown (a legend would need colour patches)."""
    notes = []
    if any_fail:
        notes.append(f"hatched {MARK_FAIL} = failing")
    if any_missing:
        notes.append(f"{MISSING} = no value")
    return ("\n" + ", ".join(notes)) if notes else ""


def _percent_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _pos: f"{100 * x:.1f}%")


# ------------------------------------------------------------------------------------------ method × method


def plot_similarity(methods: Sequence[str], values: Mapping[tuple[str, str], Optional[float]],
                    path: style.PathLike, title: str, label: str) -> Path:
    """PNG of a symmetric method × method matrix (mask overlap, layerwise correlation, ...): which
    methods prune alike. The scale is fixed so two figures of the same kind compare by eye."""
    data = [[1.0 if a == b else _pair_value(values, a, b) for b in methods] for a in methods]
    off_diagonal = [data[i][j] for i in range(len(methods)) for j in range(len(methods))
                    if i != j and not math.isnan(data[i][j])]
    if not off_diagonal:
        return style.no_data(path, title, "needs two methods" if len(methods) < 2 else "")
    vmin = 0.0 if min(off_diagonal) >= 0 else -1.0
    with style.new_figure(*_matrix_size(len(methods), len(methods), 0.8, 0.8)) as (plt, fig):
        ax, bar_ax = _matrix_axes(fig)
        image = _draw_matrix(ax, plt, data, "cividis", vmin, 1.0)
        for r in range(len(methods)):
            for c in range(len(methods)):
                value = data[r][c]
                _cell_text(ax, image, r, c, value, MISSING if math.isnan(value) else f"{value:.2f}")
        names = [style.wrap(m) for m in methods]
        _set_matrix_ticks(ax, names, names, rotate_x=True)
        ax.set_title(title)
        fig.colorbar(image, cax=bar_ax).set_label(label)
        return style.save_figure(fig, path)


def _pair_value(values: Mapping[tuple[str, str], Optional[float]], a: str, b: str) -> float:
    """Pairs are unordered: whichever order the caller stored wins, the first present one if both."""
    for key in ((a, b), (b, a)):
        value = values.get(key)
        if style.present(value):
            return float(value)
    return math.nan
