"""Many threshold searches at once: one ``ThresholdSearch`` per curve (e.g. per (architecture,
method)), served round-robin so a cluster stays full; ``summary().text`` is the "trials used vs the
full grid" line the driver prints.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Mapping, Optional, Sequence, Union

from smctune.errors import UserError
from smctune.sweep.threshold import ThresholdSearch


def _label(key) -> str:
    """``("omp_before", 1)`` -> "omp_before seed 1"; other tuples joined by spaces; else ``str``."""
    if isinstance(key, tuple):
        if len(key) == 2 and isinstance(key[1], int) and not isinstance(key[1], bool):
            return f"{key[0]} seed {key[1]}"
        return " ".join(str(part) for part in key)
    return str(key)


@dataclass(frozen=True)
class MultiSummary:
    """Per-curve results and totals of a ``MultiSearch``; ``text`` is the one-line human summary."""

    results: dict
    trials_used: int
    grid_trials: int
    non_monotone: tuple = ()
    done: bool = True
    text: str = field(default="", compare=False)

    @property
    def ratio(self) -> float:
        return self.trials_used / self.grid_trials if self.grid_trials else 0.0


class MultiSearch:
    """Several ``ThresholdSearch`` curves under hashable keys (e.g. ``(method, seed)``), served round-robin.

    With ``parallel=1`` per curve, up to one trial per curve is in flight; give the curves
    ``parallel=k`` to let ``next_batch`` fill more slots when there are fewer curves than workers.
    """

    def __init__(self, searches: Optional[Mapping[Hashable, ThresholdSearch]] = None):
        self._searches: dict = {}
        self._cursor = 0
        for key, search in (searches or {}).items():
            self.add(key, search)

    def add(self, key: Hashable, search: ThresholdSearch) -> None:
        """Add a curve (e.g. once its dense baseline is known)."""
        if key in self._searches:
            raise UserError(f"threshold search for {_label(key)} exists already")
        if not isinstance(search, ThresholdSearch):
            raise UserError(f"expected a ThresholdSearch for {_label(key)}, got {type(search).__name__}")
        self._searches[key] = search

    def __getitem__(self, key) -> ThresholdSearch:
        return self._search(key)

    def __len__(self) -> int:
        return len(self._searches)

    def keys(self) -> list:
        return list(self._searches)

    @property
    def done(self) -> bool:
        return all(s.done for s in self._searches.values())

    def _search(self, key) -> ThresholdSearch:
        try:
            return self._searches[key]
        except (KeyError, TypeError):
            raise UserError(f"no threshold search for {_label(key)} (have: "
                            f"{', '.join(_label(k) for k in self._searches) or 'none'})") from None

    def next_batch(self, max_trials: int) -> list:
        """Up to ``max_trials`` ``(key, level)`` pairs to start now, one level per curve per round,
        the rounds continuing where the previous call stopped (no curve starves)."""
        if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 0:
            raise UserError(f"max_trials must be a non-negative integer, got {max_trials!r}")
        keys = list(self._searches)
        batch = []
        idle = 0                      # curves in a row that had nothing to start
        while len(batch) < max_trials and keys and idle < len(keys):
            index = self._cursor % len(keys)
            self._cursor = index + 1
            levels = self._searches[keys[index]].next_levels(1)
            if levels:
                batch.append((keys[index], levels[0]))
                idle = 0
            else:
                idle += 1
        return batch

    def tell(self, key: Hashable, level: float, value: Optional[float]) -> None:
        self._search(key).tell(level, value)

    def cancel(self, key: Hashable, level: float) -> None:
        self._search(key).cancel(level)

    def summary(self) -> MultiSummary:
        results = {key: s.result() for key, s in self._searches.items()}
        used = sum(r.trials_used for r in results.values())
        grid = sum(r.grid_size for r in results.values())
        non_monotone = tuple(key for key, r in results.items() if r.non_monotone)
        done = all(r.done for r in results.values())
        ratio = used / grid if grid else 0.0
        text = (f"threshold search: {used} trial{'' if used == 1 else 's'} instead of {grid} "
                f"({ratio:.2f} of the grid)")
        if not done:
            text += f", {sum(not r.done for r in results.values())} curve(s) still searching"
        if non_monotone:
            text += "; non-monotone: " + ", ".join(_label(k) for k in non_monotone)
        return MultiSummary(results, used, grid, non_monotone, done, text)


def plan_threshold_search(keys: Iterable[Hashable], grid: Sequence[float],
                          dense: Union[float, Mapping, Callable], tolerance: float = 0.01,
                          **options) -> MultiSearch:
    """A ``MultiSearch`` with one ``ThresholdSearch(grid, dense, tolerance, **options)`` per key.

    ``dense`` is one value for every curve, a mapping key -> value, or a callable key -> value (e.g.
    ``lambda key: dense_by_seed[key[1]]``).
    """
    multi = MultiSearch()
    for key in keys:
        if callable(dense):
            value = dense(key)
        elif isinstance(dense, Mapping):
            if key not in dense:
                raise UserError(f"no dense value for {_label(key)}")
            value = dense[key]
        else:
            value = dense
        multi.add(key, ThresholdSearch(grid, value, tolerance, **options))
    return multi
