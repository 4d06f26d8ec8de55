"""Sparsity schedules: gradual magnitude pruning (Zhu & Gupta cubic) and the IMP/LTH ladder."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from .checks import integer as _int, real as _real


def _check_gmp(final, start_step, end_step, initial) -> None:
    final, initial = _real(final, "final sparsity"), _real(initial, "initial sparsity")
    if not 0 <= final < 1:
        raise UserError(f"final sparsity must be in [0, 1), got {final!r}")
    if not 0 <= initial <= final:
        raise UserError(f"initial sparsity must be in [0, final={final}], got {initial!r}")
    if _int(start_step, "start_step") >= _int(end_step, "end_step"):
        raise UserError(f"GMP start_step ({start_step}) must be < end_step ({end_step})")


def gmp_sparsity(step: int, *, final: float, start_step: int, end_step: int,
                 initial: float = 0.0) -> float:
    """Zhu & Gupta cubic schedule: ``initial`` up to ``start_step``, exactly ``final`` from
    ``end_step`` on, ``final + (initial - final) * (1 - progress) ** 3`` in between."""
    _check_gmp(final, start_step, end_step, initial)
    if step <= start_step:
        return float(initial)
    if step >= end_step:
        return float(final)
    progress = (step - start_step) / (end_step - start_step)
    return final + (initial - final) * (1.0 - progress) ** 3


@dataclass(frozen=True)
class GMPSchedule:
    """When GMP prunes and to which sparsity.

    ``exact_end=True`` (the paper): every ``frequency`` optimizer steps in [start_step, end_step),
    and always at ``end_step``, so the final sparsity is reached exactly. ``exact_end=False``
    reproduces SMC-Bench's code: prune at the steps in [start_step, end_step) that are multiples
    of ``frequency`` and never at ``end_step``, so the run ends at the schedule's value at the last
    such step (≈ 0.993·final for CSQA's 3000 steps, every 500, 0.1T..0.8T). Use
    ``final_sparsity()`` for the value actually reached.
    """

    final: float
    start_step: int
    end_step: int
    frequency: int
    initial: float = 0.0
    exact_end: bool = True

    def __post_init__(self):
        _check_gmp(self.final, self.start_step, self.end_step, self.initial)
        if _int(self.frequency, "GMP frequency") < 1:
            raise UserError(f"GMP frequency must be >= 1, got {self.frequency!r}")

    def is_update_step(self, step: int) -> bool:
        if self.exact_end:
            if step == self.end_step:
                return True
            return (self.start_step <= step < self.end_step
                    and (step - self.start_step) % self.frequency == 0)
        return self.start_step <= step < self.end_step and step % self.frequency == 0

    def target(self, step: int) -> float:
        return gmp_sparsity(step, final=self.final, start_step=self.start_step,
                            end_step=self.end_step, initial=self.initial)

    def update_steps(self) -> list[int]:
        if self.exact_end:
            return [*range(self.start_step, self.end_step, self.frequency), self.end_step]
        first = -(-self.start_step // self.frequency) * self.frequency
        return list(range(first, self.end_step, self.frequency))

    def final_sparsity(self) -> float:
        """The sparsity the schedule actually ends at (``final`` unless ``exact_end`` is off)."""
        steps = self.update_steps()
        return self.target(steps[-1]) if steps else float(self.initial)


def imp_sparsity(round: int, rate: float = 0.2) -> float:
    """Sparsity after ``round`` IMP rounds pruning ``rate`` of the remaining weights each:
    ``1 - (1 - rate) ** round``."""
    round = _int(round, "IMP round")
    rate = _real(rate, "IMP rate")
    if round < 0:
        raise UserError(f"IMP round must be >= 0, got {round}")
    if not 0 < rate < 1:
        raise UserError(f"IMP rate must be in (0, 1), got {rate!r}")
    return 1 - (1 - rate) ** round
