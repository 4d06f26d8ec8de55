"""Every PNG a report writes, in one table: its file name, where the document shows it, what draws it.

``FIGURES`` is the list a newcomer reads to find a figure; each entry's drawer turns one architecture's
``Summary`` and facts into the arguments of a plotting function (``curves``, ``layerwise``,
``matrices``), which know nothing of runs. A sweep over several architectures (``--model``) gets each
figure once per architecture, ``-<model>`` after the stem; per-level figures add ``-s<level>``, drawn at
the grid levels nearest the paper's layerwise figures (or ``--layers-at``) that have per-layer data.
Adding a figure is one drawer and one entry here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from smctune import units
from smctune.report.analysis import VERDICT_FAILS, Summary
from smctune.report.facts import ArchitectureFacts
from smctune.report.figures.curves import plot_curves
from smctune.report.figures.layerwise import plot_layerwise
from smctune.report.figures.matrices import plot_heatmap, plot_similarity
from smctune.report.load import RunResults
from smctune.report.marks import MARK_FAIL
from smctune.report.similarity import layer_profiles
from smctune.rundir.layout import RunDir

PAPER_LAYER_LEVELS = (0.36, 0.672, 0.832)   # the paper's layerwise figures 6-8
ANSWER, LAYERS = "answer", "layers"         # the document's sections that show figures


@dataclass(frozen=True)
class Context:
    """What the drawers of one architecture read."""

    run: RunResults
    summary: Summary
    facts: ArchitectureFacts
    profiles: dict            # similarity.layer_profiles: (method, level) -> {layer: sparsity}

    @property
    def where(self) -> str:
        return self.summary.task + (f" ({self.summary.model})" if self.summary.model else "")

    @property
    def title(self) -> str:
        return self.summary.task + (f" · {self.summary.model}" if self.summary.model else "")


Drawer = Callable[[Context, Optional[float], Path], Optional[str]]   # -> caption; None: nothing to draw


@dataclass(frozen=True)
class FigureKind:
    stem: str
    per_level: bool           # one figure per layer level
    section: str              # ANSWER or LAYERS
    draw: Drawer

    def file_name(self, arch: str = "", level: Optional[float] = None) -> str:
        return f"{self.stem}{arch}" + (f"-s{level:.3f}" if self.per_level else "") + ".png"


@dataclass(frozen=True)
class Drawn:
    kind: str
    path: Path
    caption: str
    level: Optional[float] = None

    @property
    def section(self) -> str:
        return FIGURES[self.kind].section


# ------------------------------------------------------------------------------------------ drawers

def _curves(ctx: Context, _level, path: Path) -> str:
    plot_curves(ctx.summary, path, paper=ctx.facts.paper)
    paper = f"; paper values: {ctx.facts.paper.citation}" if ctx.facts.paper else ""
    return (f"{ctx.where}: {ctx.summary.metric_name} vs sparsity, every method, dense (solid) and chance "
            f"(dotted){paper}")


def _heatmap(ctx: Context, _level, path: Path) -> Optional[str]:
    summary = ctx.summary
    if not summary.methods:
        return None
    values = {(m.name, s): (m.cells[s].mean if m.cells.get(s) is not None else None)
              for m in summary.methods for s in summary.grid}
    failing = {(m.name, s): m.fail.verdict(s, m.cells.get(s)) == VERDICT_FAILS
               for m in summary.methods for s in summary.grid}
    plot_heatmap([m.name for m in summary.methods], summary.grid, values, failing, path,
                 f"{ctx.title}: {summary.metric_name} by method and sparsity", units.label(summary.metric_name))
    return f"{ctx.where}: method × sparsity (hatched {MARK_FAIL}: fails)"


def _layerwise(ctx: Context, level: float, path: Path) -> str:
    at_level = {method: layers for (method, lv), layers in ctx.profiles.items() if lv == level}
    plot_layerwise(at_level, level, path, f"{ctx.title}: layerwise sparsity at {level:.3f}")
    return f"{ctx.where}: layerwise sparsity at {level:.3f} (dashed: target)"


def _similarity(attr: str, label: str) -> Drawer:
    """A method × method matrix of one ``PairSimilarity`` measure; None when no pair measured it."""
    def draw(ctx: Context, level: float, path: Path) -> Optional[str]:
        pairs = [p for p in ctx.facts.similarities if p.sparsity == level]
        values = {(p.method_a, p.method_b): getattr(p, attr) for p in pairs}
        if all(v is None for v in values.values()):
            return None
        methods = list(dict.fromkeys([p.method_a for p in pairs] + [p.method_b for p in pairs]))
        plot_similarity(methods, values, path, f"{ctx.title}: {label} at {level:.3f}", label)
        return f"{ctx.where}: {label} between methods at {level:.3f}"
    return draw


FIGURES = {
    "curves": FigureKind(RunDir("").curves_png.stem, False, ANSWER, _curves),       # the paper's figs 1-4
    "heatmap": FigureKind("heatmap", False, ANSWER, _heatmap),
    "layerwise": FigureKind("layerwise", True, LAYERS, _layerwise),                 # the paper's figs 6-8
    "similarity-jaccard": FigureKind("similarity-jaccard", True, LAYERS,
                                     _similarity("jaccard", "mask Jaccard (kept weights)")),
    "similarity-layers": FigureKind("similarity-layers", True, LAYERS,
                                    _similarity("layer_correlation", "layerwise sparsity correlation (r)")),
}


# ------------------------------------------------------------------------------------------ drawing

def layer_levels(profiles: dict, wanted: Optional[tuple]) -> tuple:
    """The grid levels nearest each wanted sparsity (the paper's 0.36/0.672/0.832 by default) that
    have per-layer data."""
    present = sorted({level for _, level in profiles})
    if not present:
        return ()
    return tuple(dict.fromkeys(min(present, key=lambda g: abs(g - target))
                               for target in wanted or PAPER_LAYER_LEVELS))


def draw_figures(run: RunResults, summary: Summary, facts: ArchitectureFacts, out: Path, arch: str = "",
                 wanted_levels: Optional[tuple] = None) -> tuple:
    """Every figure of one architecture, into ``out``: ``Drawn`` in ``FIGURES`` order. ``arch`` is the
    file-name suffix (``-<model>``) when the sweep ran several architectures."""
    ctx = Context(run, summary, facts, layer_profiles(run, summary.model))
    levels = layer_levels(ctx.profiles, wanted_levels)
    drawn = []
    for kind, figure in FIGURES.items():
        for level in levels if figure.per_level else (None,):
            path = Path(out) / figure.file_name(arch, level)
            caption = figure.draw(ctx, level, path)
            if caption is not None:
                drawn.append(Drawn(kind, path, caption, level))
    return tuple(drawn)
