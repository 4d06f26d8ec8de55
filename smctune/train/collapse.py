"""When a trial is a *collapsed* result: stop it early and record it as such, not as an error.

Generic early stopping (ASHA, median rules) compares trials and would stop high-sparsity trials for
being worse than low-sparsity ones, which is the very signal a sparsity sweep measures. This rule is
absolute and per trial: a pruned network whose metric sits at the task's chance level for several
evaluations late in training, whose loss stopped being finite, or (where the search space says the
architecture cannot route around it) whose mask empties a matrix the input must pass through, has
collapsed; training it
to the end would only spend GPU hours on a known answer. Torch-free so the driver can import it.
"""
from __future__ import annotations

import math
import re
from typing import Optional, Sequence

from smctune.config.settings import StopSettings

LOSS_NOT_FINITE = "loss not finite"


def at_chance_reason(stop: StopSettings, history: Sequence[dict], metric: str, chance: float,
                     max_steps: int) -> Optional[str]:
    """``chance_evals`` consecutive evaluations, each after ``after_fraction`` of the steps, with the
    metric at most ``chance + chance_margin``; None otherwise (and always when the rule is off)."""
    if stop.chance_evals < 1:
        return None
    start = stop.after_fraction * max_steps
    streak = 0
    for row in history:
        value = row.get(metric)
        late = row.get("step", 0) >= start
        low = isinstance(value, (int, float)) and math.isfinite(value) and value <= chance + stop.chance_margin
        streak = streak + 1 if late and low else 0
    if streak >= stop.chance_evals:
        return (f"{metric} at chance ({100 * chance:.1f} % + {100 * stop.chance_margin:g} pt) for "
                f"{streak} evaluations")
    return None


def empty_layer_reason(stop: StopSettings, layerwise: Sequence) -> Optional[str]:
    """The first masked matrix named by ``stop.empty_layers`` with no weight left. Only those count:
    an empty matrix that a residual path bypasses (or a token-type embedding) is layer collapse worth
    reporting (``smctune layers``, the report's ⊘ lines) but not a dead network."""
    if not stop.empty_layers:
        return None
    patterns = [re.compile(p) for p in stop.empty_layers]
    empty = [stat.name for stat in layerwise
             if stat.numel and stat.kept == 0 and any(p.search(stat.name) for p in patterns)]
    if not empty:
        return None
    more = f" and {len(empty) - 1} more" if len(empty) > 1 else ""
    return f"layer {empty[0]}{more} 100 % pruned"

