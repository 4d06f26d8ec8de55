"""What every report figure shares: a headless pyplot, one figure size unit, markers and line styles,
the atomic save, the "no data" placeholder.

Reports get printed in greyscale, so no figure relies on colour alone: lines differ by marker and line
style, matrix cells carry their number, failing cells are hatched and missing ones say "—".
matplotlib is imported inside the functions, so importing a figure module (and ``smctune report``'s
table-only paths) never loads it.
"""
from __future__ import annotations

import math
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

from smctune.rundir.layout import atomic_path

PathLike = Union[str, Path]

NO_DATA = "no data"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h")
# No plain "--" style: dashed is the target-sparsity line of the layerwise figure.
LINESTYLES = ("-", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (10, 3)), (0, (1, 1, 1, 1, 6, 1)),
              (0, (1, 2, 4, 2)), (0, (4, 1)), (0, (3, 1, 1, 1)), (0, (8, 2, 2, 2)))
DPI = 120
_NAME_WIDTH = 28          # long method names wrap at this many characters


def load_pyplot():
    """Headless on purpose: reports are drawn on clusters and in CI without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def new_figure(width: float, height: float) -> Iterator[tuple[object, object]]:
    """(pyplot, figure), the figure closed on the way out even when drawing fails: pyplot keeps every
    open figure alive, and a report draws many."""
    plt = load_pyplot()
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    try:
        yield plt, fig
    finally:
        plt.close(fig)


def save_figure(fig, path: PathLike) -> Path:
    """Write ``fig`` as PNG through the run directory's one atomic writer (a concurrent reader never
    sees half a file; an unwritable directory is a one-line ``UserError``). The caller keeps the
    figure open and owns it."""
    with atomic_path(path) as staging:
        fig.savefig(staging, format="png", bbox_inches="tight")
    return Path(path)


def no_data(path: PathLike, title: str, detail: str = "") -> Path:
    """A placeholder figure, so the report links to a file that exists and says why it is empty."""
    with new_figure(6.0, 2.6) as (_plt, fig):
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.set_title(title)
        text = NO_DATA + (f"\n({detail})" if detail else "")
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=14, color="0.25", transform=ax.transAxes)
        return save_figure(fig, path)


def present(value) -> bool:
    """None and NaN both mean "not measured"; NaN would otherwise print as "nan" or break colour scales."""
    if value is None or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def value_or_nan(value) -> float:
    return float(value) if present(value) else math.nan


def wrap(name: str) -> str:
    """Long method names wrap, so a legend or a tick label cannot squeeze the plot."""
    return textwrap.fill(name, _NAME_WIDTH) if len(name) > _NAME_WIDTH else name


def clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))
