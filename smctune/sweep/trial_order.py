"""Which planned trial to hand Ray Tune next: the one expected to run longest.

Why: a stage (a Tuner) ends when its last trial does, so the trials started last decide how long the
slots sit idle at the end. Started in plan order, a sweep's long trials (an LTH trial is one
fine-tune per IMP round; RigL's dense-gradient updates make its trials longer than OMP's) tend to
come last and run alone. Longest-first (Graham's LPT rule) leaves the short trials for the end,
which bounds the idle tail by the shortest trials instead of the longest.

Lengths are relative: a trial's planned *work* is its fine-tunes x training steps (the same preset
for the whole sweep), scaled by its method's seconds per unit of work, measured on this sweep's own
trials that ran to completion (the median: the first trial on each worker also pays its imports,
a trial stopped early is not a length). A method not started yet goes first, the most planned work
first, so every method is measured early; the others then go longest expected first.
Ties keep the caller's (round-robin) order.
"""
from __future__ import annotations

import heapq
import statistics
from collections import defaultdict
from typing import Mapping, Optional

from smctune.config.specs import TrialSpec
from smctune.sweep.estimate import fine_tune_steps, fine_tunes


def planned_work(trial: Mapping) -> float:
    """Fine-tunes x steps of a ``TrialSpec`` dict: what its length is proportional to, before any
    trial of its method has run."""
    spec = TrialSpec.from_dict(trial)
    return float(fine_tunes(spec) * fine_tune_steps(spec))


class TrialLengths:
    """Per method: seconds per unit of planned work, from finished trials."""

    def __init__(self):
        self._rates: dict[str, RunningMedian] = defaultdict(RunningMedian)
        self._median: dict[str, float] = {}
        self._started: set[str] = set()

    def started(self, method: str) -> None:
        self._started.add(method)

    def observe(self, method: str, work: float, seconds: Optional[float]) -> None:
        if seconds is None or not seconds > 0 or not work > 0:
            return
        rates = self._rates[method]
        rates.add(float(seconds) / work)
        self._median[method] = rates.median()

    def rate(self, method: str) -> Optional[float]:
        return self._median.get(method)

    def priority(self, method: str, work: float) -> tuple:
        """Sort key, larger first: methods not started yet (by planned work), then expected seconds
        (a started method not measured yet counts at the median rate of the measured ones)."""
        if method not in self._started:
            return (1, work)
        rate = self.rate(method)
        if rate is None:
            rate = statistics.median(self._median.values()) if self._median else 1.0
        return (0, work * rate)


class RunningMedian:
    """The median of a growing sequence in O(log n) per value (two heaps: the lower half as a
    max-heap, the upper half as a min-heap), where re-sorting every value at every trial's end
    would make a stage of n trials O(n^2 log n)."""

    def __init__(self):
        self._low: list[float] = []    # negated: a max-heap of the lower half
        self._high: list[float] = []   # a min-heap of the upper half

    def add(self, value: float) -> None:
        if self._low and value > -self._low[0]:
            heapq.heappush(self._high, value)
        else:
            heapq.heappush(self._low, -value)
        if len(self._low) > len(self._high) + 1:
            heapq.heappush(self._high, -heapq.heappop(self._low))
        elif len(self._high) > len(self._low):
            heapq.heappush(self._low, -heapq.heappop(self._high))

    def __len__(self) -> int:
        return len(self._low) + len(self._high)

    def median(self) -> float:
        """Like ``statistics.median``: the middle value, or the mean of the two middle ones."""
        if not self._low:
            raise ValueError("no values")
        if len(self._low) > len(self._high):
            return -self._low[0]
        return (-self._low[0] + self._high[0]) / 2
