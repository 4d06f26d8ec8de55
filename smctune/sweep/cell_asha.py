"""Comparative early stopping that only ever compares tunings of the same (architecture, method,
level, seed, fold): it never stops a trial because of a trial of another sparsity, method, seed or
fold, which a global ASHA does (a high-sparsity trial is worse than a low-sparsity one by design).

``CellRungs`` is the rule in pure Python; ``tune_classes.CellASHA`` feeds it Tune's results.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from smctune.sweep.cell_keys import member_key
from smctune.sweep.cell_study import finite


class CellRungs:
    """Asynchronous successive halving, one set of rungs per key.

    Rungs sit at ``grace_period * reduction_factor**k`` (<= ``max_t``). When a trial reaches a rung it
    is stopped if its value is below the ``1 - 1/reduction_factor`` quantile of the values recorded
    there by *other trials of the same key* (as Ray's ASHA, which compares with every trial). The first
    trial of a key at a rung is never stopped, so a key with one trial (an untuned cell) never is.
    ``decisions`` logs every comparison: (key, trial id, rung, value, cutoff, stopped, peers)."""

    def __init__(self, grace_period: float = 1, max_t: float = 100, reduction_factor: float = 4,
                 mode: str = "max"):
        if grace_period <= 0 or max_t < grace_period or reduction_factor <= 1:
            raise ValueError("CellRungs: need 0 < grace_period <= max_t and reduction_factor > 1")
        if mode not in ("max", "min"):
            raise ValueError("CellRungs: mode must be 'max' or 'min'")
        self.milestones = []
        milestone = grace_period
        while milestone <= max_t:
            self.milestones.append(milestone)
            milestone *= reduction_factor
        self.rf, self.sign = reduction_factor, (1.0 if mode == "max" else -1.0)
        self.rungs: dict[Any, list[dict]] = {}
        self.decisions: list[tuple] = []

    def on_result(self, key, trial_id: str, t: float, value: float) -> bool:
        """True when the trial should stop."""
        value = finite(value)
        if value is None or t is None:
            return False
        rungs = self.rungs.setdefault(key, [{} for _ in self.milestones])
        for index in reversed(range(len(self.milestones))):
            if t < self.milestones[index]:
                continue
            recorded = rungs[index]
            if trial_id in recorded:
                return False  # judged at this rung already
            peers = {tid: v for tid, v in recorded.items() if tid != trial_id}
            recorded[trial_id] = self.sign * value
            if not peers:
                self.decisions.append((key, trial_id, self.milestones[index], value, None, False, ()))
                return False
            cutoff = _quantile(sorted(peers.values()), 1 - 1 / self.rf)
            stop = self.sign * value < cutoff
            self.decisions.append((key, trial_id, self.milestones[index], value, self.sign * cutoff,
                                   stop, tuple(sorted(peers))))
            return stop
        return False

    def to_json(self) -> dict:
        """The recorded values and decisions as JSON (keys are tuples: stored as lists)."""
        return {"rungs": [[list(key), rungs] for key, rungs in self.rungs.items()],
                "decisions": [[list(d[0]), *d[1:6], list(d[6])] for d in self.decisions]}

    def restore_json(self, data: Mapping) -> None:
        self.rungs = {tuple(key): rungs for key, rungs in data.get("rungs", [])}
        self.decisions = [(tuple(d[0]), *d[1:6], tuple(d[6])) for d in data.get("decisions", [])]


def _quantile(values: list, q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of sorted values."""
    position = (len(values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def trial_key(config: Mapping) -> Optional[tuple]:
    """The ``member_key`` of a Tune config (None when it carries no smctune trial)."""
    trial = (config or {}).get("trial")
    return member_key(trial) if isinstance(trial, Mapping) else None
