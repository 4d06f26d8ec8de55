"""The layerwise figure (the paper's figures 6-8): the fraction pruned per layer at one sparsity, one
line per method, with short layer names a reader can still match to the model.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

from smctune.report.figures import style

_TARGET_DASHES = (0, (6, 4))
_EMPTY_TOLERANCE = 1e-9

def plot_layerwise(profiles: Mapping[str, Mapping[str, float]], sparsity: float, path: style.PathLike,
                   title: str) -> Path:
    """PNG of the fraction pruned per layer at one target sparsity, one line per method, as in the
    SMC-Bench paper: shows whether a method spreads sparsity evenly or empties some layers."""
    layers = _layer_order(profiles)
    series = {method: [style.value_or_nan(profile.get(layer)) for layer in layers]
              for method, profile in profiles.items()}
    if not any(not math.isnan(v) for ys in series.values() for v in ys):
        return style.no_data(path, title)
    width = style.clamp(1.5 + 0.26 * len(layers), 6.0, 24.0)
    with style.new_figure(width, 4.8) as (plt, fig):
        ax = fig.add_subplot()
        _draw_layer_lines(ax, plt, series)
        ax.axhline(sparsity, color="black", linestyle=_TARGET_DASHES, linewidth=1.3, zorder=2,
                   label=f"target sparsity {sparsity:.3f}")
        collapsed = _mark_empty_layers(ax, series)
        _layer_axes(ax, layers, width)
        ax.set_title(title, pad=34 if collapsed else 6)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, frameon=False)
        fig.tight_layout()
        return style.save_figure(fig, path)


def _layer_order(profiles: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Model order comes from the first profile; layers only others prune go at the end."""
    order: dict[str, None] = {}
    for profile in profiles.values():
        order.update((layer, None) for layer in profile if layer not in order)
    return list(order)


def _draw_layer_lines(ax, plt, series: Mapping[str, list[float]]) -> None:
    cmap = plt.get_cmap("tab10")
    for i, (method, ys) in enumerate(series.items()):
        ax.plot(range(len(ys)), ys, label=style.wrap(method), color=cmap(i % 10),
                marker=style.MARKERS[i % len(style.MARKERS)],
                linestyle=style.LINESTYLES[i % len(style.LINESTYLES)], linewidth=1.4, markersize=5.5, zorder=3)


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


# ------------------------------------------------------------------------------------------ layer names

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
    counts = Counter(short)
    return [label if counts[label] == 1 else layer for label, layer in zip(short, layers)]
