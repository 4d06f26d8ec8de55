"""Argument checks shared by the schedules: one-line ``UserError``s instead of TypeErrors deep inside."""
from __future__ import annotations

import math
import numbers

from ..errors import UserError


def real(value, what: str) -> float:
    """A finite real number (bools are rejected: ``True`` is not a sparsity)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise UserError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def integer(value, what: str) -> int:
    """A whole number of steps or rounds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"{what} must be an integer, got {value!r}")
    return int(value)
