"""Progress output: one line per trial event instead of Ray's status tables.

verbosity 0 (--quiet): nothing but errors; 1 (default): trial start/finish/failure; 2 (--verbose):
also every evaluation.
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

from smctune.config.specs import TrialSpec, row_label
from smctune.units import shown


def describe(spec: TrialSpec) -> str:
    if spec.levels:
        level = f"rounds 1-{len(spec.levels)}"
    elif spec.sparsity is None:
        level = "dense"
    else:
        level = f"s={spec.sparsity:.3f}"
    arch = f"{spec.model.arch:<11}" if spec.model.arch else ""
    fold = "" if spec.fold is None else f" fold {spec.fold}"
    tuning = f" tuning {spec.tuning}" if spec.tuning else ""
    method = row_label(spec.method, spec.group)
    return f"{arch}{method:<14} {level:<12} seed {spec.seed}{fold}{tuning}"


class ProgressPrinter:
    def __init__(self, total: int, verbosity: int = 1, stream: Optional[TextIO] = None):
        self.total = total
        self.verbosity = verbosity
        self.stream = stream  # None = sys.stdout at print time (the Tuner pickles its callbacks)
        self.done = 0
        self.specs: dict[str, TrialSpec] = {}
        self.started_at: dict[str, float] = {}
        self.last: dict[str, dict] = {}

    def _line(self, text: str, level: int = 1) -> None:
        if self.verbosity >= level:
            print(text, file=self.stream or sys.stdout, flush=True)

    def _count(self) -> str:
        width = len(str(self.total))
        return f"[{self.done:>{width}}/{self.total}]"

    def started(self, spec: TrialSpec) -> None:
        self.specs[spec.trial_id] = spec
        self.started_at[spec.trial_id] = time.monotonic()
        self._line(f"{self._count()} start   {describe(spec)}")

    def result(self, trial_id: str, metrics: dict) -> None:
        self.last[trial_id] = metrics
        spec = self.specs.get(trial_id)
        if spec is None:
            return
        name = metrics.get("metric_name", "accuracy")
        round_text = f" round {metrics['round']}" if metrics.get("round") is not None else ""
        self._line(f"{self._count()} eval    {describe(spec)}{round_text} step {metrics.get('step')}: "
                   f"{name} {shown(name, metrics.get(name, float('nan')))} loss {metrics.get('loss', float('nan')):.3f} "
                   f"sparsity {metrics.get('sparsity', 0):.3f}", level=2)
        if metrics.get("level_done") and metrics.get("round") is not None:
            self._line(f"{self._count()} level   {describe(spec)} round {metrics['round']} "
                       f"(s={metrics.get('sparsity', 0):.3f}): {name} {shown(name, metrics.get(name, 0))}")

    def finished(self, trial_id: str, status: str, error: Optional[str] = None) -> None:
        spec = self.specs.pop(trial_id, None)
        if spec is None:
            return
        self.done += 1
        seconds = time.monotonic() - self.started_at.pop(trial_id, time.monotonic())
        last = self.last.pop(trial_id, {})
        if status == "ok":
            name = last.get("metric_name", "accuracy")
            cached = " (cached)" if last.get("cached") else ""
            diverged = f" COLLAPSED ({last['collapsed']})" if last.get("collapsed") else ""
            self._line(f"{self._count()} done    {describe(spec)}: {name} "
                       f"{shown(name, last.get(name, float('nan')))} (best {shown(name, last.get('best', float('nan')))}), "
                       f"sparsity {last.get('sparsity', 0):.3f}, {seconds:.1f}s{cached}{diverged}")
        else:
            self._line(f"{self._count()} {status.upper():<7} {describe(spec)}: {error or 'no error text'}",
                       level=0)

    def recovered(self, trial_id: str, error: str) -> None:
        spec = self.specs.get(trial_id)
        if spec is not None:
            self._line(f"{self._count()} retry   {describe(spec)}: {error} (continuing from its last "
                       "checkpoint)", level=0)

    def message(self, text: str, level: int = 1) -> None:
        self._line(text, level)
