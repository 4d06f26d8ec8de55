"""How a metric is shown. Inside smctune every metric is a fraction in [0, 1] (the collapse rule, the
criterion and the cache compare fractions); people read accuracy as a percentage and BLEU in points
(BLEU / 100 inside), so only the suffix and the axis label differ."""
from __future__ import annotations

POINTS = frozenset({"bleu"})   # metrics read in points, not percent


def suffix(metric: str) -> str:
    return "" if metric in POINTS else "%"


def label(metric: str) -> str:
    """Axis and column label, e.g. ``accuracy (%)`` or ``bleu (points)``."""
    return f"{metric} ({'points' if metric in POINTS else '%'})"


def shown(metric: str, value: float, digits: int = 1) -> str:
    """``value`` (a fraction) as people read ``metric``: ``38.0%`` or ``12.3``."""
    return f"{100 * value:.{digits}f}{suffix(metric)}"
