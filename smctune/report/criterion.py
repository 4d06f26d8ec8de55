"""When a sparse level counts as no longer matching dense: a tolerance, optionally a significance test.

* ``--tolerance 1`` (the default) is absolute, in points of the metric (metrics are stored as
  fractions, so 1 point is 0.01); ``--tolerance 2%`` is relative to the dense mean (a level fails
  below ``dense * 0.98``). Absolute is the paper's reading of its figures; relative makes tasks with
  very different dense scores (SVAMP ~41 vs MAWPS ~88) comparable.
* ``--alpha 0.05`` additionally asks that the level be *significantly* below the threshold across
  seeds: a one-sided Welch t-test of the level's per-seed values against the dense per-seed values
  moved to the threshold (``dense - tol`` or ``dense * (1 - r)``), H1: level mean below it. Welch
  because sparse levels are often far noisier than dense (one collapsed seed). With fewer than two
  values on either side nothing can be tested, so such a level never counts as failing under
  ``--alpha``; the report lists it as untestable rather than hiding it.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

from smctune.errors import UserError

COMPARE_EPS = 1e-9    # float slack so "exactly dense - tolerance" never fails by rounding
TOLERANCE_FORMS = "points (e.g. 1 or 0.5) or percent of dense (e.g. 2%)"


@dataclass(frozen=True)
class Tolerance:
    value: float = 1.0        # points, or percent of the dense mean when relative
    relative: bool = False

    def threshold(self, dense_mean: float) -> float:
        if self.relative:
            return dense_mean * (1.0 - self.value / 100.0)
        return dense_mean - self.value / 100.0

    @property
    def label(self) -> str:
        return f"{self.value:g}% of dense" if self.relative else f"{self.value:g} pt"

    def as_dict(self) -> dict:
        return {"value": self.value, "unit": "percent_of_dense" if self.relative else "points"}


def parse_tolerance(text: str) -> Tolerance:
    raw = str(text).strip()
    relative = raw.endswith("%")
    number = raw[:-1].strip() if relative else raw
    try:
        value = float(number)
    except ValueError:
        raise UserError(f"--tolerance '{text}' is not {TOLERANCE_FORMS}") from None
    if not math.isfinite(value) or value < 0 or (relative and value >= 100):
        raise UserError(f"--tolerance '{text}' is out of range: {TOLERANCE_FORMS}, not negative"
                        + (", below 100%" if relative else ""))
    return Tolerance(value, relative)


def parse_alpha(value: Optional[float]) -> Optional[float]:
    if value is not None and not 0 < value < 1:
        raise UserError(f"--alpha must be a significance level in (0, 1), e.g. 0.05; got {value}")
    return value


@dataclass(frozen=True)
class Criterion:
    tolerance: Tolerance = Tolerance()
    alpha: Optional[float] = None       # None: no significance test

    def threshold(self, dense_mean: float) -> float:
        return self.tolerance.threshold(dense_mean)

    def below(self, mean: Optional[float], dense_mean: Optional[float]) -> Optional[bool]:
        """The tolerance test alone: None when either side is unknown."""
        if mean is None or dense_mean is None:
            return None
        return mean < self.threshold(dense_mean) - COMPARE_EPS

    def p_value(self, values: Sequence[float], dense_values: Sequence[float]) -> Optional[float]:
        """One-sided Welch p of "level mean < threshold": each dense seed's value is moved to its own
        threshold; None when a side has fewer than 2 values."""
        return welch_p_below(values, [self.threshold(v) for v in dense_values])

    @property
    def label(self) -> str:
        text = f"tolerance {self.tolerance.label}"
        return text + (f", Welch one-sided p < {self.alpha:g} across seeds" if self.alpha else "")

    def as_dict(self) -> dict:
        return {"tolerance": self.tolerance.as_dict(), "alpha": self.alpha,
                "test": "welch_one_sided" if self.alpha else None,
                "rule": ("first grid level whose mean is below the threshold"
                         + (" and significantly so across seeds" if self.alpha else ""))}


def welch_p_below(sample: Sequence[float], reference: Sequence[float]) -> Optional[float]:
    """P-value of the one-sided Welch t-test, H1: mean(sample) < mean(reference) (scipy's
    ``ttest_ind``); None below two values a side. With no spread on either side scipy has no answer,
    but the comparison of means is then exact."""
    a, b = [float(v) for v in sample], [float(v) for v in reference]
    if len(a) < 2 or len(b) < 2:
        return None
    if statistics.variance(a) == 0 and statistics.variance(b) == 0:
        return 0.0 if statistics.fmean(a) < statistics.fmean(b) - COMPARE_EPS else 1.0
    from scipy.stats import ttest_ind

    return float(ttest_ind(a, b, equal_var=False, alternative="less").pvalue)
