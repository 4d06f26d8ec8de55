"""What a trial cost: seconds per phase and peak memory, measured by the trial itself.

A sweep's bill is trials x time per trial, and how many trials share a GPU is decided by their peak
memory; so every trial records both with its result (``costs`` in the record, ``cost/*`` in MLflow)
instead of leaving them to ``ps`` and guesswork. ``benchmarks/bench_trial.py`` compares them with a
plain PyTorch loop, and ``smctune plan``'s memory estimate is checked against them.

Phases: ``setup`` (runtime, data and model until the first step), ``train`` (forward, backward and
optimizer steps with mask enforcement), ``eval``, ``prune`` (scoring and masking outside the steps),
``checkpoint`` (writing trial checkpoints) and ``report`` (records, masks and Tune reports). Timing a
phase is two ``perf_counter`` calls; on CUDA the step time includes no extra synchronisation, so
per-step seconds are only exact over many steps (the sum is).
"""
from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

PHASES = ("setup", "train", "eval", "prune", "checkpoint", "report")


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def current_rss_mb() -> float:
    """This process's resident set size now (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class TrialCosts:
    """Accumulated seconds per phase, steps and evaluations, and memory at start and at peak."""

    seconds: dict = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    steps: int = 0
    evals: int = 0
    start_rss_mb: float = field(default_factory=current_rss_mb)
    started: float = field(default_factory=time.perf_counter)

    _open: list = field(default_factory=list)   # [seconds spent in nested phases] per open phase

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase; a phase inside another (a GMP prune inside a training step) is counted
        once, in the inner phase."""
        begin = time.perf_counter()
        self._open.append(0.0)
        try:
            yield
        finally:
            nested = self._open.pop()
            elapsed = time.perf_counter() - begin
            self.seconds[name] += elapsed - nested
            if self._open:
                self._open[-1] += elapsed

    def summary(self, cuda_peak_mb: float = 0.0) -> dict:
        """Flat floats for the record and MLflow: ``<phase>_s`` totals, ``seconds_per_step`` and
        ``seconds_per_eval`` means, the wall time so far and the share of it outside training steps, and memory."""
        wall = time.perf_counter() - self.started
        out = {f"{name}_s": round(value, 4) for name, value in self.seconds.items()}
        out.update(
            wall_s=round(wall, 4), steps=self.steps, evals=self.evals,
            seconds_per_step=round(self.seconds["train"] / self.steps, 5) if self.steps else 0.0,
            seconds_per_eval=round(self.seconds["eval"] / self.evals, 4) if self.evals else 0.0,
            outside_train_share=round(1.0 - self.seconds["train"] / wall, 4) if wall > 0 else 0.0,
            start_rss_mb=round(self.start_rss_mb, 1), peak_rss_mb=round(peak_rss_mb(), 1))
        if cuda_peak_mb:
            out["peak_cuda_mb"] = round(cuda_peak_mb, 1)
        return out
