"""Method settings as data: a default, the values that are valid, and SMC-Bench's value.

Every method setting a user can change (GMP frequency, RigL interval, the random-mask draw, ...)
is one ``Tunable``. Keeping the valid range next to the default means a bad value in a search
space fails in the driver with the valid choices named, before any trial is scheduled, and the
Optuna search of issue 6 can read ranges from the same place. ``smcbench`` holds the value that
reproduces SMC-Bench's code where it departs from the paper, so ``--faithful smcbench`` is a
lookup, not a special case in the training loop.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from smctune.errors import UserError

_UNSET = object()


@dataclass(frozen=True)
class Tunable:
    """One method setting. ``kind``: int, float, choice or bool."""

    default: Any
    kind: str
    help: str
    low: Optional[float] = None          # inclusive bounds for int/float (None = unbounded)
    high: Optional[float] = None
    low_open: bool = False               # exclude ``low`` itself
    choices: tuple = ()
    smcbench: Any = _UNSET               # the value SMC-Bench's code uses, where it differs

    @property
    def departs(self) -> bool:
        """True when SMC-Bench's code uses a different value than the paper default."""
        return self.smcbench is not _UNSET and self.smcbench != self.default

    def valid_text(self) -> str:
        if self.kind == "choice":
            return " | ".join("none" if c is None else str(c) for c in self.choices)
        if self.kind == "bool":
            return "true | false"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        kind = "a whole number" if self.kind == "int" else "a number"
        return f"{kind} in {'(' if self.low_open else '['}{lo}, {hi}]"

    def check(self, value: Any, where: str) -> Any:
        """``value`` if valid, else a one-line UserError naming ``where`` and the valid values."""
        if self.kind == "choice":
            ok = value in self.choices
        elif self.kind == "bool":
            ok = isinstance(value, bool)
        else:
            ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
                  and math.isfinite(value)
                  and (self.kind != "int" or isinstance(value, numbers.Integral))
                  and (self.low is None or value > self.low or (value == self.low and not self.low_open))
                  and (self.high is None or value <= self.high))
        if not ok:
            raise UserError(f"{where} = {value!r} is not valid (valid: {self.valid_text()})")
        return value


def check_all(tunables: Mapping[str, Tunable], values: Mapping[str, Any], where: str) -> dict:
    """Validate every value (unknown keys are rejected earlier, by the search-space loader)."""
    return {key: tunables[key].check(value, f"{where}.{key}") for key, value in values.items()}


def defaults(tunables: Mapping[str, Tunable], faithful: str = "paper") -> dict:
    """Default values; with ``faithful="smcbench"`` SMC-Bench's value wherever it has one."""
    if faithful not in FAITHFUL:
        raise UserError(f"unknown --faithful {faithful!r} (valid: {', '.join(FAITHFUL)})")
    return {key: (t.smcbench if faithful == "smcbench" and t.smcbench is not _UNSET else t.default)
            for key, t in tunables.items()}


FAITHFUL = ("paper", "smcbench")


# ------------------------------------------------------------------ the settings methods share

def gmp_tunables(frequency: int = 500) -> dict[str, Tunable]:
    return {
        "frequency": Tunable(frequency, "int", "optimizer steps between GMP pruning steps", low=1),
        "start_fraction": Tunable(0.1, "float", "GMP starts at this fraction of the steps",
                                  low=0.0, high=1.0),
        "end_fraction": Tunable(0.8, "float", "GMP reaches the target at this fraction of the steps",
                                low=0.0, high=1.0, low_open=True),
        "schedule": Tunable("exact_end", "choice",
                            "exact_end: the target is applied at the end step; smcbench: prune only "
                            "at multiples of frequency before the end (final sparsity falls short)",
                            choices=("exact_end", "smcbench"), smcbench="smcbench"),
    }


def rigl_tunables(update_every: int = 500) -> dict[str, Tunable]:
    return {
        "update_every": Tunable(update_every, "int", "optimizer steps between RigL mask updates", low=1),
        "alpha": Tunable(0.3, "float", "initial drop fraction (paper schedule)", low=0.0, high=1.0,
                         low_open=True),
        "end_fraction": Tunable(0.75, "float", "RigL stops updating at this fraction of the steps",
                                low=0.0, high=1.0, low_open=True),
        "variant": Tunable("paper", "choice",
                           "paper: alpha/2(1+cos(pi t/T_end)); smcbench: 0.5 cosine-decayed to 0.005 "
                           "over all steps, never stops", choices=("paper", "smcbench"),
                           smcbench="smcbench"),
    }


def random_tunables() -> dict[str, Tunable]:
    return {"mask": Tunable("exact", "choice",
                            "exact: an exact-count random mask; bernoulli: SMC-Bench's independent "
                            "draws (sparsity only in expectation)",
                            choices=("exact", "bernoulli"), smcbench="bernoulli")}


def calibration_tunables(batches: int) -> dict[str, Tunable]:
    return {"calibration_batches": Tunable(batches, "int",
                                           "training mini-batches the criterion scores on", low=1)}


def pattern_tunables() -> dict[str, Tunable]:
    return {"pattern": Tunable(None, "choice",
                               "N:M semi-structured pattern (the sparsity is then N/M, the grid is "
                               "not used)", choices=(None, "2:4", "4:8"))}


def obert_tunables(batches: int = 32) -> dict[str, Tunable]:
    return {
        **calibration_tunables(batches),
        "block_size": Tunable(50, "int", "Fisher block size B (1 with variant smcbench)", low=1,
                              smcbench=1),
        "damping": Tunable(1e-7, "float", "Fisher damping lambda", low=0.0, low_open=True),
        "variant": Tunable("paper", "choice",
                           "paper: block Fisher with the OBS weight update; smcbench: diagonal "
                           "Fisher (B = 1), no weight update", choices=("paper", "smcbench"),
                           smcbench="smcbench"),
    }


def imp_tunables(rewind: bool) -> dict[str, Tunable]:
    return {
        "rate": Tunable(0.2, "float", "fraction of the remaining weights pruned per round",
                        low=0.0, high=0.99, low_open=True),
        "rewind": Tunable(rewind, "bool", "rewind survivors to the pre-fine-tuning weights each round "
                                          "(false: continue from the trained weights, LR restarted)"),
        "round_fraction": Tunable(1.0, "float", "each round fine-tunes this fraction of train.max_steps "
                                                "(SMC-Bench's protein IMP: 3 of 4 epochs)",
                                  low=0.0, high=1.0, low_open=True),
        "reinit_head": Tunable(False, "bool", "draw a fresh head (everything outside the pretrained "
                                              "backbone) before each round (SMC-Bench's protein IMP)"),
    }


def snip_tunables() -> dict[str, Tunable]:
    return {"score": Tunable("snip", "choice",
                             "snip: |sum g*w| over the calibration batches (the paper); gradient: "
                             "|sum g| (SMC-Bench's protein scripts)", choices=("snip", "gradient"))}


def enforcement_tunables() -> dict[str, Tunable]:
    return {"optimizer_state": Tunable("masked", "choice",
                                       "masked: pruned weights' optimizer state stays 0; smcbench: "
                                       "only the weights are re-zeroed after each step (Adam moments "
                                       "keep moving)", choices=("masked", "smcbench"),
                                       smcbench="smcbench")}


def dense_start_tunables() -> dict[str, Tunable]:
    return {"dense_checkpoint": Tunable("final", "choice",
                                        "which dense fine-tuned weights an 'after' method starts from: "
                                        "final, or best (on the evaluation split, as SMC-Bench)",
                                        choices=("final", "best"), smcbench="best")}
