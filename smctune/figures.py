"""The report's extra figures: layerwise sparsity, a method × sparsity heatmap, a method similarity matrix.

Reports get printed in greyscale, so no figure relies on colour alone: lines differ by marker and line
style, matrix cells carry their number, failing cells are hatched and missing ones say "—".
matplotlib is imported inside the functions (Agg backend) so importing this module stays cheap.
"""
from __future__ import annotations

import math
import os
import re
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence, Union

from .errors import UserError

PathLike = Union[str, Path]

MISSING = "—"
MARK_FAIL = "✗"
NO_DATA = "no data"

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h")
# No plain "--" style: dashed is the target-sparsity line of the layerwise figure.
LINESTYLES = ("-", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (10, 3)), (0, (1, 1, 1, 1, 6, 1)),
               (0, (1, 2, 4, 2)), (0, (4, 1)), (0, (3, 1, 1, 1)), (0, (8, 2, 2, 2)))
_TARGET_DASHES = (0, (6, 4))
_MISSING_GREY = "0.88"
_EMPTY_TOLERANCE = 1e-9
_NAME_WIDTH = 28          # long method names wrap at this many characters
_BAR_GAP, _BAR_WIDTH = 0.15, 0.18     # inches: the colour bar beside a matrix

# --------------------------------------------------------------------------------------------------
# saving


def save_figure(fig, path: PathLike) -> Path:
    """Write ``fig`` as PNG atomically, so a crash or a concurrent reader never sees half a file.

    The figure stays open: the caller owns it. Any OSError becomes a one-line UserError because an
    unwritable output directory is something the user fixes, not a bug. The temporary file is opened
    normally (not ``mkstemp``, whose 0600 mode would survive the rename) so the PNG gets the umask's
    permissions like any other output; the pid keeps two processes' temporaries apart.
    """
    path = Path(path)
    tmp: Optional[Path] = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fig.savefig(tmp, format="png", bbox_inches="tight")
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise UserError(_one_line(f"cannot write {path}: {err.strerror or err}")) from None
    finally:
        if tmp is not None:
            _remove_quietly(tmp)
    return path


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def load_pyplot():
    """Headless on purpose: reports are drawn on clusters and in CI without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def _figure(width: float, height: float) -> Iterator[tuple[object, object]]:
    """(pyplot, figure), the figure closed on the way out even when drawing fails: pyplot keeps every
    open figure alive, and a report draws many."""
    plt = load_pyplot()
    fig = plt.figure(figsize=(width, height), dpi=120)
    try:
        yield plt, fig
    finally:
        plt.close(fig)


def _no_data(path: PathLike, title: str, detail: str = "") -> Path:
    """A placeholder figure, so the report links to a file that exists and says why it is empty."""
    with _figure(6.0, 2.6) as (_plt, fig):
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.set_title(title)
        text = NO_DATA + (f"\n({detail})" if detail else "")
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=14, color="0.25", transform=ax.transAxes)
        return save_figure(fig, path)


# --------------------------------------------------------------------------------------------------
# values


def _present(value) -> bool:
    """None and NaN both mean "not measured"; NaN would otherwise print as "nan" or break colour scales."""
    if value is None or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _grid_key(method: str, sparsity: float) -> tuple[str, float]:
    """Sparsities computed along different paths differ in the last bits; lookups must not care."""
    return method, round(float(sparsity), 9)


def _by_grid_key(mapping: Mapping[tuple[str, float], object]) -> dict[tuple[str, float], object]:
    return {_grid_key(m, s): v for (m, s), v in mapping.items()}


def _wrap(name: str) -> str:
    return textwrap.fill(name, _NAME_WIDTH) if len(name) > _NAME_WIDTH else name


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


# --------------------------------------------------------------------------------------------------
# layer names

_ROOTS = frozenset({"module", "model", "base_model", "encoder", "bert", "roberta", "deberta", "transformer",
                    "backbone"})
_BLOCKS = frozenset({"layer", "layers", "block", "blocks", "h"})
_PHRASES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("attention", "self", "query"), "q"),
    (("attention", "self", "key"), "k"),
    (("attention", "self", "value"), "v"),
    (("attention", "output", "dense"), "attn out"),
    (("intermediate", "dense"), "ffn in"),
    (("output", "dense"), "ffn out"),
    (("embeddings", "word_embeddings"), "word emb"),
    (("embeddings", "position_embeddings"), "pos emb"),
    (("embeddings", "token_type_embeddings"), "type emb"),
    (("self_attn", "q_proj"), "q"),
    (("self_attn", "k_proj"), "k"),
    (("self_attn", "v_proj"), "v"),
    (("self_attn", "o_proj"), "attn out"),
    (("self_attn", "out_proj"), "attn out"),
    (("mlp", "gate_proj"), "gate"),
    (("mlp", "up_proj"), "up"),
    (("mlp", "down_proj"), "down"),
)
_RNN_WEIGHT = re.compile(r"weight_(ih|hh)_l(\d+)(_reverse)?")


def short_layer_name(name: str) -> str:
    """A tick label short enough for dozens of layers side by side: ``L3 q`` for
    ``encoder.layer.3.attention.self.query.weight``.

    Wrapper prefixes (``encoder.``, ``roberta.``, ...) and the ``.weight`` suffix say nothing that tells
    two layers apart; known transformer/LSTM parts get abbreviations. Parts it does not know keep
    their dotted spelling, so an unknown name comes back unchanged (bar a trailing ``.weight``).
    """
    parts = _strip_roots(name.split("."))
    groups: list[tuple[str, bool]] = []      # (text, abbreviated?)
    i = 0
    while i < len(parts):
        text, used = _abbreviate(parts, i)
        groups.append((text, used > 0))
        i += max(used, 1)
    return _join_groups(groups)


def _strip_roots(parts: list[str]) -> list[str]:
    if len(parts) > 1 and parts[-1] == "weight":
        parts = parts[:-1]
    while len(parts) > 1 and parts[0] in _ROOTS:
        parts = parts[1:]
    return parts


def _abbreviate(parts: list[str], i: int) -> tuple[str, int]:
    """The abbreviation starting at ``parts[i]`` and how many parts it covers; (the part, 0) if none."""
    if parts[i] in _BLOCKS and i + 1 < len(parts) and parts[i + 1].isdigit():
        return f"L{parts[i + 1]}", 2
    for phrase, short in _PHRASES:
        if tuple(parts[i:i + len(phrase)]) == phrase:
            return short, len(phrase)
    rnn = _RNN_WEIGHT.fullmatch(parts[i])
    if rnn:
        return f"{rnn.group(1)} l{rnn.group(2)}" + (" rev" if rnn.group(3) else ""), 1
    return parts[i], 0


def _join_groups(groups: list[tuple[str, bool]]) -> str:
    """Abbreviations are separated by spaces; runs of unknown parts keep their dots between them."""
    words: list[str] = []
    previous_raw = False
    for text, abbreviated in groups:
        if not abbreviated and previous_raw:
            words[-1] += "." + text
        else:
            words.append(text)
        previous_raw = not abbreviated
    return " ".join(words)


def _tick_labels(layers: Sequence[str]) -> list[str]:
    """Short names, except where two layers would share one: those keep their full names."""
    short = [short_layer_name(layer) for layer in layers]
    counts: dict[str, int] = {}
    for label in short:
        counts[label] = counts.get(label, 0) + 1
    return [label if counts[label] == 1 else layer for label, layer in zip(short, layers)]


# --------------------------------------------------------------------------------------------------
# layerwise sparsity


def plot_layerwise(profiles: Mapping[str, Mapping[str, float]], sparsity: float, path: PathLike,
                   title: str) -> Path:
    """PNG of the fraction pruned per layer at one target sparsity, one line per method, as in the
    SMC-Bench paper: shows whether a method spreads sparsity evenly or empties some layers."""
    layers = _layer_order(profiles)
    series = {method: [_value_or_nan(profile.get(layer)) for layer in layers]
              for method, profile in profiles.items()}
    if not any(not math.isnan(v) for ys in series.values() for v in ys):
        return _no_data(path, title)
    width = _clamp(1.5 + 0.26 * len(layers), 6.0, 24.0)
    with _figure(width, 4.8) as (plt, fig):
        ax = fig.add_subplot()
        _draw_layer_lines(ax, plt, series)
        ax.axhline(sparsity, color="black", linestyle=_TARGET_DASHES, linewidth=1.3, zorder=2,
                   label=f"target sparsity {sparsity:.3f}")
        collapsed = _mark_empty_layers(ax, series)
        _layer_axes(ax, layers, width)
        ax.set_title(title, pad=34 if collapsed else 6)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, frameon=False)
        fig.tight_layout()
        return save_figure(fig, path)


def _layer_order(profiles: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Model order comes from the first profile; layers only others prune go at the end."""
    order: dict[str, None] = {}
    for profile in profiles.values():
        order.update((layer, None) for layer in profile if layer not in order)
    return list(order)


def _value_or_nan(value) -> float:
    return float(value) if _present(value) else math.nan


def _draw_layer_lines(ax, plt, series: Mapping[str, list[float]]) -> None:
    cmap = plt.get_cmap("tab10")
    for i, (method, ys) in enumerate(series.items()):
        ax.plot(range(len(ys)), ys, label=_wrap(method), color=cmap(i % 10),
                marker=MARKERS[i % len(MARKERS)], linestyle=LINESTYLES[i % len(LINESTYLES)],
                linewidth=1.4, markersize=5.5, zorder=3)


def _mark_empty_layers(ax, series: Mapping[str, list[float]]) -> bool:
    """A 100 %-pruned layer cuts the network; a black × on the point and "empty" above the axes make
    that visible even where several lines overlap at 1.0. True if any layer is empty."""
    empty_points = [(x, y) for ys in series.values() for x, y in enumerate(ys)
                    if not math.isnan(y) and y >= 1.0 - _EMPTY_TOLERANCE]
    if not empty_points:
        return False
    ax.plot([x for x, _ in empty_points], [y for _, y in empty_points], linestyle="none", marker="x",
            markersize=10, markeredgewidth=1.8, color="black", zorder=5, label="layer 100 % pruned (empty)")
    for x in sorted({x for x, _ in empty_points}):
        ax.text(x, 1.01, "empty", transform=ax.get_xaxis_transform(), rotation=90, ha="center",
                va="bottom", fontsize=6.5, color="black")
    return True


def _layer_axes(ax, layers: Sequence[str], width: float) -> None:
    """Every layer gets a tick label unless they would overlap; then every k-th one does."""
    step = max(1, math.ceil(len(layers) / max(1, int((width - 1.0) / 0.16))))
    ticks = list(range(0, len(layers), step))
    labels = _tick_labels(layers)
    ax.set_xticks(ticks)
    ax.set_xticklabels([labels[i] for i in ticks], rotation=60, ha="right", rotation_mode="anchor",
                       fontsize=7)
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel("layer (model order)" + (f", 1 in {step} labelled" if step > 1 else ""))
    ax.set_ylabel("fraction pruned")
    ax.grid(True, color="0.9", linewidth=0.8, zorder=0)


# --------------------------------------------------------------------------------------------------
# matrices (shared by the heatmap and the similarity figure)


def _matrix_size(rows: int, cols: int, cell_w: float, cell_h: float) -> tuple[float, float]:
    """Inches for the cells and the colour bar only: tick labels and title fall outside the figure and
    the tight bounding box at save time takes them in, so long method names cannot squeeze the cells
    below the size their numbers need. Capped so a huge sweep still opens in a viewer."""
    return _clamp(cell_w * cols, 1.0, 22.0) + _BAR_GAP + _BAR_WIDTH, _clamp(cell_h * rows, 1.6, 20.0)


def _matrix_axes(fig) -> tuple[object, object]:
    """(cells axes, colour bar axes) filling the figure, see ``_matrix_size``."""
    width, _ = fig.get_size_inches()
    cells = width - _BAR_GAP - _BAR_WIDTH
    ax = fig.add_axes((0.0, 0.0, cells / width, 1.0))
    bar = fig.add_axes(((cells + _BAR_GAP) / width, 0.0, _BAR_WIDTH / width, 1.0))
    return ax, bar


def _draw_matrix(ax, plt, data: list[list[float]], cmap_name: str, vmin: float, vmax: float):
    """imshow with NaN cells light grey and thin white lines between cells, so a row reads as a row."""
    import numpy as np

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


# --------------------------------------------------------------------------------------------------
# method × sparsity heatmap


def plot_heatmap(methods: Sequence[str], grid: Sequence[float],
                 values: Mapping[tuple[str, float], Optional[float]],
                 failing: Mapping[tuple[str, float], bool], path: PathLike, title: str,
                 metric_label: str) -> Path:
    """PNG of the metric per method (rows) and sparsity (columns): the whole sweep at a glance, where
    the curves figure gets crowded once there are many methods."""
    by_key = _by_grid_key(values)
    fails = _by_grid_key(failing)
    data = [[_value_or_nan(by_key.get(_grid_key(m, s))) for s in grid] for m in methods]
    present = [v for row in data for v in row if not math.isnan(v)]
    if not present:
        return _no_data(path, title)
    with _figure(*_matrix_size(len(methods), len(grid), 0.85, 0.42)) as (plt, fig):
        ax, bar_ax = _matrix_axes(fig)
        # the sweep's own range, not 0..1: accuracies a few points apart must look different
        low, high = min(present), max(present)
        if high - low < 1e-6:
            low, high = low - 0.005, high + 0.005
        image = _draw_matrix(ax, plt, data, "cividis", low, high)
        any_fail = _fill_heatmap(ax, image, methods, grid, data, fails)
        _set_matrix_ticks(ax, [f"{s:.3f}" for s in grid], [_wrap(m) for m in methods], len(grid) > 4)
        ax.set_xlabel("sparsity" + _heatmap_key(any_fail, len(present) < len(methods) * len(grid)))
        ax.set_ylabel("method")
        ax.set_title(title)
        bar = fig.colorbar(image, cax=bar_ax)
        bar.set_label(metric_label)
        bar.ax.yaxis.set_major_formatter(_percent_formatter())
        return save_figure(fig, path)


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


# --------------------------------------------------------------------------------------------------
# method × method similarity


def plot_similarity(methods: Sequence[str], values: Mapping[tuple[str, str], Optional[float]],
                    path: PathLike, title: str, label: str) -> Path:
    """PNG of a symmetric method × method matrix (mask overlap, layerwise correlation, ...): which
    methods prune alike. The scale is fixed so two figures of the same kind compare by eye."""
    data = [[1.0 if a == b else _pair_value(values, a, b) for b in methods] for a in methods]
    off_diagonal = [data[i][j] for i in range(len(methods)) for j in range(len(methods))
                    if i != j and not math.isnan(data[i][j])]
    if not off_diagonal:
        return _no_data(path, title, "needs two methods" if len(methods) < 2 else "")
    vmin = 0.0 if min(off_diagonal) >= 0 else -1.0
    with _figure(*_matrix_size(len(methods), len(methods), 0.8, 0.8)) as (plt, fig):
        ax, bar_ax = _matrix_axes(fig)
        image = _draw_matrix(ax, plt, data, "cividis", vmin, 1.0)
        for r in range(len(methods)):
            for c in range(len(methods)):
                value = data[r][c]
                _cell_text(ax, image, r, c, value, MISSING if math.isnan(value) else f"{value:.2f}")
        names = [_wrap(m) for m in methods]
        _set_matrix_ticks(ax, names, names, rotate_x=True)
        ax.set_title(title)
        fig.colorbar(image, cax=bar_ax).set_label(label)
        return save_figure(fig, path)


def _pair_value(values: Mapping[tuple[str, str], Optional[float]], a: str, b: str) -> float:
    """Pairs are unordered: whichever order the caller stored wins, the first present one if both."""
    for key in ((a, b), (b, a)):
        value = values.get(key)
        if _present(value):
            return float(value)
    return math.nan
