"""Adaptive threshold search: find a method's first failing grid sparsity with fewer trials than the grid.

Pure Python (no torch, no ray): an ask/tell state machine the sweep driver feeds with finished trials.

One ``ThresholdSearch`` follows one curve (a method at one seed, or the seed mean of a method when the
driver runs every seed of a proposed level and tells the mean). The driver runs dense first, builds the
search with the dense value, then loops::

    search = ThresholdSearch(grid, dense=0.62, tolerance=0.01)
    while not search.done:
        for level in search.next_levels():          # start these trials (may be empty: wait)
            start_trial(level)
        level, value = wait_for_any_trial()         # value None: the trial failed (see below)
        search.tell(level, value)
    search.result().fails_at

``threshold_multi.MultiSearch`` holds many curves and hands out trials round-robin to keep a cluster
full.

Definitions (the same as ``smctune.report.analysis``):

* A level *fails* when its value is strictly below ``dense - tolerance`` (with the float slack
  ``criterion.COMPARE_EPS``, so exactly ``dense - tolerance`` passes).
* The *grid answer* is the first grid level (ascending) that fails, or "never" (``None``) when no level
  fails: what the full grid would report.
* A told value of ``None`` (or NaN/inf) is a trial without a value (crashed, diverged) and counts as
  failing; its level is listed in ``failed_trials`` so the driver can retry or report it. (The report of
  a full-grid run instead skips a level without a value; a driver that prefers that retries the trial
  and only tells a value.) A trial stopped as ``collapsed`` is a result: tell the value it stopped at.
  A trial that was cancelled or preempted is withdrawn with ``cancel`` and may be proposed again.

The search (``parallel=1``):

1. **Bisection** on the ordered grid. The bracket is (``p``, ``f``): ``p`` the highest measured passing
   level below ``f``, ``f`` the lowest measured failing level (both start outside the grid). The probe is
   the bracket's midpoint ``p + (f - p) // 2`` (grid indices, ``p = -1`` and ``f = n`` initially), i.e.
   the lower middle level. With ``parallel=k`` up to ``k`` probes run at once and split the bracket into
   ``k + 1`` parts (k-ary search; probes still running count as split points for new ones).
2. **Verification** when the bracket closes (``f`` is right above ``p`` on the grid): the ``verify``
   levels just below ``p`` (default one: ``p - 1``) are measured if they were not already; with
   ``verify_above`` also that many levels just above ``f``. A verified level that contradicts the
   bisection (a failure below ``p``, a pass above ``f``) is non-monotonicity.
3. **Scan** once any measured pair is non-monotone (a level passes above a measured failing level, at
   any time: bisection, verification, or a stale parallel probe): every level below the lowest failing
   level is measured, ascending, stopping at the first failure.

Guarantees (``n`` grid levels):

* **Monotone curves** (once a level fails every higher level fails; values need not be monotone, only
  pass/fail): ``fails_at`` is exactly the grid answer, for any ``parallel`` and completion order. With
  ``parallel=1`` it takes at most ``ceil(log2(n + 1)) + verify + verify_above`` trials; with the
  defaults in fact at most 4 on 8 or 10 levels (32 of 72 over the 9 outcomes of 8 levels, 42 of 110
  over the 11 of 10 levels).
* **Non-monotonicity seen** (a measured passing level above a measured failing one): ``non_monotone``
  is True, ``evidence`` lists the pairs, and ``fails_at`` is *still* exactly the grid answer, because the
  scan measures every level below it (``certified`` is True).
* **Non-monotonicity not seen**: the measured points are consistent with a monotone curve and
  ``fails_at`` is the lowest measured failing level. It differs from the grid answer only if some
  unmeasured level below it fails; ``certified`` is True when no level below ``fails_at`` (for "never":
  no level at all) is unmeasured, and then the answer is exact whatever the curve.

LTH and iterative oBERT (schedule ``imp``) are not searched: one trial prunes through all levels in its
IMP rounds and reports each, so the driver runs it as one trial and takes the failing level from its
rounds (``Schedule.searchable`` in ``smctune.train.schedules`` says which trials to search).

The simulation helpers at the end (``logistic_curve``, ``run_search``, ``grid_answer``) give the tests
and ``benchmarks/bench_threshold.py`` a trainable with a known response surface.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence, Union

from smctune.errors import UserError
from smctune.report.cell_stats import LEVEL_TOL
from smctune.report.criterion import COMPARE_EPS

# phases (``ThresholdSearch.phase``)
BISECT = "bisect"
VERIFY = "verify"
SCAN = "scan"
DONE = "done"


def _fmt(level: float) -> str:
    return f"{level:.4g}"


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class ThresholdResult:
    """What one search found.

    fails_at:      first failing grid level, ``None`` = no level fails (as far as measured; see
                   ``certified``)
    grid:          the curve's grid levels, ascending
    measured:      {level: value} of every told trial (``None`` for a failed trial), ascending
    trials_used:   number of told trials (cancelled ones are not counted)
    grid_size:     trials the full grid would have run for this curve
    non_monotone:  a measured level passes above a measured failing level
    evidence:      those pairs, ``(failing level, passing level)``, ascending
    certified:     every level below ``fails_at`` (for ``None``: every level) was measured, so the answer
                   equals the full grid's whatever the curve's shape
    failed_trials: levels whose trial was told ``None`` (counted as failing)
    threshold:     ``dense - tolerance``
    done:          the search has finished (``result()`` may be called earlier for progress)
    """

    fails_at: Optional[float]
    grid: tuple
    measured: dict
    trials_used: int
    grid_size: int
    non_monotone: bool
    evidence: tuple
    certified: bool
    failed_trials: tuple
    threshold: float
    done: bool

    @property
    def ratio(self) -> float:
        return self.trials_used / self.grid_size

    @property
    def fails_at_first_level(self) -> bool:
        return self.fails_at is not None and self.fails_at == self.grid[0]


class ThresholdSearch:
    """Ask/tell search for the first failing level of one curve (see the module docstring).

    grid:         the method's sparsities, strictly ascending (a grid level is matched within
                  ``cell_stats.LEVEL_TOL``)
    dense:        the dense baseline value the curve is compared with
    tolerance:    a level fails when ``value < dense - tolerance`` (strictly)
    parallel:     at most this many of the curve's trials run at once (k-ary search for k > 1)
    verify:       levels just below the last passing level to confirm when the bracket closes (0: off)
    verify_above: levels just above the first failing level to confirm (0: off)
    """

    def __init__(self, grid: Sequence[float], dense: float, tolerance: float = 0.01, *,
                 parallel: int = 1, verify: int = 1, verify_above: int = 0):
        grid = tuple(grid)
        if not grid:
            raise UserError("threshold search needs at least one sparsity level, got an empty grid")
        if not all(_finite_number(s) for s in grid):
            raise UserError(f"threshold search grid must be finite numbers, got {list(grid)}")
        if any(b - a <= LEVEL_TOL for a, b in zip(grid, grid[1:])):
            raise UserError("threshold search grid must be strictly ascending (levels more than "
                            f"{LEVEL_TOL} apart), got {', '.join(_fmt(s) for s in grid)}")
        if not _finite_number(dense):
            raise UserError(f"threshold search needs a finite dense value, got {dense!r}")
        if not _finite_number(tolerance) or tolerance < 0:
            raise UserError(f"tolerance must be a non-negative number, got {tolerance!r}")
        for name, value, low in (("parallel", parallel, 1), ("verify", verify, 0),
                                 ("verify_above", verify_above, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"{name} must be an integer >= {low}, got {value!r}")
        self._grid = tuple(float(s) for s in grid)
        self._dense = float(dense)
        self._tolerance = float(tolerance)
        self._threshold = self._dense - self._tolerance
        self._parallel = parallel
        self._verify = verify
        self._verify_above = verify_above
        self._values: dict = {}      # grid index -> value (None: failed trial)
        self._pending: list = []     # grid indices proposed and not told, in proposal order

    # ---------------------------------------------------------------------------------------------
    # read-only state

    @property
    def grid(self) -> tuple:
        return self._grid

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def pending(self) -> tuple:
        """Levels proposed by ``next_levels`` and not told or cancelled yet."""
        return tuple(self._grid[i] for i in self._pending)

    @property
    def done(self) -> bool:
        return self.phase == DONE

    @property
    def phase(self) -> str:
        """``bisect``, ``verify``, ``scan`` (non-monotonicity seen) or ``done``."""
        phase, wanted = self._plan()
        if not wanted and not self._pending:
            return DONE
        return phase

    def fails(self, value: Optional[float]) -> bool:
        """The level test: ``None``/non-finite (a failed trial) or strictly below ``dense - tolerance``."""
        return value is None or value < self._threshold - COMPARE_EPS

    # ---------------------------------------------------------------------------------------------
    # ask / tell

    def next_levels(self, max_levels: Optional[int] = None) -> list:
        """Levels to start now (ascending), at most ``parallel`` minus the pending ones (and at most
        ``max_levels``). They become pending until ``tell`` or ``cancel``. ``[]`` means wait for a
        pending trial, or the search is ``done``."""
        slots = self._parallel - len(self._pending)
        if max_levels is not None:
            if isinstance(max_levels, bool) or not isinstance(max_levels, int) or max_levels < 0:
                raise UserError(f"max_levels must be a non-negative integer, got {max_levels!r}")
            slots = min(slots, max_levels)
        if slots <= 0:
            return []
        phase, wanted = self._plan()
        if phase == BISECT:
            chosen = self._split(slots)
        else:
            chosen = [i for i in wanted if i not in self._pending][:slots]
        self._pending.extend(chosen)
        return [self._grid[i] for i in sorted(chosen)]

    def tell(self, level: float, value: Optional[float]) -> None:
        """Record the result of a pending level. ``value`` None (or NaN/inf) = the trial failed."""
        index = self._pending_index(level, "tell")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UserError(f"value for level {_fmt(level)} must be a number or None, got {value!r}")
        self._pending.remove(index)
        self._values[index] = float(value) if value is not None and math.isfinite(value) else None

    def cancel(self, level: float) -> None:
        """Withdraw a pending level (its trial was killed or will not run); it may be proposed again."""
        self._pending.remove(self._pending_index(level, "cancel"))

    def _pending_index(self, level, verb: str) -> int:
        if not _finite_number(level):
            raise UserError(f"cannot {verb} level {level!r}: not a number")
        index = next((i for i, s in enumerate(self._grid) if abs(s - level) <= LEVEL_TOL), None)
        if index is None:
            raise UserError(f"cannot {verb} level {_fmt(level)}: not on the grid "
                            f"({', '.join(_fmt(s) for s in self._grid)})")
        if index not in self._pending:
            pending = ", ".join(_fmt(s) for s in sorted(self.pending)) or "none"
            why = "already told" if index in self._values else "not proposed"
            raise UserError(f"cannot {verb} level {_fmt(level)}: {why} (pending: {pending})")
        return index

    # ---------------------------------------------------------------------------------------------
    # the rule

    def _state(self):
        """(lowest failing index or n, highest passing index below it or -1, evidence index pairs)."""
        failing = sorted(i for i, v in self._values.items() if self.fails(v))
        passing = sorted(i for i, v in self._values.items() if not self.fails(v))
        first_fail = failing[0] if failing else len(self._grid)
        last_pass = max((i for i in passing if i < first_fail), default=-1)
        evidence = [(i, j) for i in failing for j in passing if j > i]
        return first_fail, last_pass, evidence

    def _plan(self):
        """(phase, grid indices still to measure in this phase: not measured, possibly pending)."""
        n = len(self._grid)
        first_fail, last_pass, evidence = self._state()
        if evidence:
            return SCAN, [i for i in range(first_fail) if i not in self._values]
        if first_fail - last_pass > 1:
            return BISECT, list(range(last_pass + 1, first_fail))
        below = range(last_pass - 1, max(last_pass - 1 - self._verify, -1), -1)
        above = range(first_fail + 1, min(first_fail + 1 + self._verify_above, n))
        return VERIFY, [i for i in (*below, *above) if i not in self._values]

    def _split(self, slots: int) -> list:
        """New probes inside the bracket: pending probes are split points; each new probe goes to the
        segment with the most outcomes per part, placed evenly (one probe: the lower midpoint)."""
        first_fail, last_pass, _ = self._state()
        anchors = [last_pass] + sorted(i for i in self._pending if last_pass < i < first_fail) + [first_fail]
        segments = [(a, b) for a, b in zip(anchors, anchors[1:]) if b - a > 1]
        counts = [0] * len(segments)
        for _ in range(slots):
            best = None
            for k, (a, b) in enumerate(segments):
                if counts[k] < b - a - 1:
                    score = (b - a) / (counts[k] + 1)   # outcomes per part after one more probe
                    if best is None or score > best[0]:
                        best = (score, k)
            if best is None:
                break
            counts[best[1]] += 1
        chosen = []
        for (a, b), k in zip(segments, counts):
            chosen += [a + (j * (b - a)) // (k + 1) for j in range(1, k + 1)]
        return chosen

    # ---------------------------------------------------------------------------------------------
    # result

    def result(self) -> ThresholdResult:
        n = len(self._grid)
        first_fail, _, evidence = self._state()
        fails_at = self._grid[first_fail] if first_fail < n else None
        certified = all(i in self._values for i in range(first_fail))
        return ThresholdResult(
            fails_at=fails_at,
            grid=self._grid,
            measured={self._grid[i]: self._values[i] for i in sorted(self._values)},
            trials_used=len(self._values),
            grid_size=n,
            non_monotone=bool(evidence),
            evidence=tuple((self._grid[i], self._grid[j]) for i, j in sorted(evidence)),
            certified=certified,
            failed_trials=tuple(self._grid[i] for i in sorted(self._values) if self._values[i] is None),
            threshold=self._threshold,
            done=self.done,
        )


# --------------------------------------------------------------------------------------------------
# simulation (tests, benchmark): a trainable with a known response surface

def paper_grid(levels: int = 8) -> tuple:
    """SMC-Bench's sparsities ``1 - 0.8**k``, k = 1..levels (rounded as the sweep rounds them)."""
    return tuple(round(1 - 0.8**k, 6) for k in range(1, levels + 1))


def logistic_curve(grid: Sequence[float], *, dense: float, chance: float, s0: float, width: float = 0.03,
                   noise: float = 0.0, seed: int = 0) -> dict:
    """``{level: chance + (dense - chance) / (1 + exp((level - s0) / width)) + N(0, noise)}``.

    Noise is drawn once per level from ``random.Random(seed)``, so the full grid and the search see
    the same value for a level (the simulated trainable is deterministic per (level, seed)).
    """
    rng = random.Random(seed)
    curve = {}
    for level in grid:
        z = max(min((level - s0) / width, 700.0), -700.0)
        value = chance + (dense - chance) / (1.0 + math.exp(z))
        curve[float(level)] = value + (rng.gauss(0.0, noise) if noise else 0.0)
    return curve


def grid_answer(curve: Mapping[float, Optional[float]], dense: float, tolerance: float) -> Optional[float]:
    """The full grid's failing sparsity: the first level (ascending) that fails, ``None`` for
    "never"; a ``None`` value is a failed trial and fails (the search's convention)."""
    threshold = dense - tolerance
    for level in sorted(curve):
        value = curve[level]
        if value is None or not math.isfinite(value) or value < threshold - COMPARE_EPS:
            return level
    return None


def run_search(search: ThresholdSearch, trial: Union[Mapping, Callable[[float], Optional[float]]], *,
               rng: Optional[random.Random] = None, max_steps: int = 10_000) -> ThresholdResult:
    """Drive ``search`` to the end against a simulated trainable (a mapping level -> value or a callable).

    Trials finish first-in first-out, or in a random order drawn from ``rng`` (for parallel searches).
    """
    value_of = trial if callable(trial) else (lambda level: trial[level])
    in_flight: list = []
    for _ in range(max_steps):
        in_flight += search.next_levels()
        if not in_flight:
            break
        level = in_flight.pop(rng.randrange(len(in_flight)) if rng else 0)
        search.tell(level, value_of(level))
    else:
        raise RuntimeError(f"threshold search did not finish in {max_steps} steps")
    return search.result()
