"""A stand-in for ``StageRunner`` whose Tuners finish at once: every trial they would run gets its
records written through the real ``RecordKeeper`` (and its mask files, when asked), with an
accuracy that falls with sparsity. What the driver does around Tuners (the threshold search's
bookkeeping, resuming) and what reads a run (``status``, ``report``) can so be exercised and
measured at paper scale without training (``tests/test_scale_paths.py``,
``benchmarks/bench_scale.py``).
"""
from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Callable, Mapping, Optional

import numpy as np

from smctune.config.specs import TrialSpec
from smctune.rundir.masks import save_mask
from smctune.rundir.records import STATUS_OK, FinishedTrials, RecordKeeper

EVALUATIONS = 4   # results per trial, as a trial reports every eval_every steps


def falling_accuracy(spec: TrialSpec) -> float:
    """0.6 up to 50 % sparsity, then down by half a point per point of sparsity (seed noise 0.002)."""
    noise = ((spec.seed * 7919 + spec.tuning) % 11 - 5) * 0.0004
    return 0.6 - 0.5 * max(0.0, (spec.sparsity or 0.0) - 0.5) + noise


class SimulatedStageRunner:
    """``run(name, batch, waiting)`` and ``done(metric)`` as ``StageRunner`` has them.

    ``mask_shapes``: name -> shape of the masks to save for every sparse level (random bits at the
    level's density, seeded by the trial), or None for no mask files."""

    def __init__(self, run_dir: Path, sweep, value: Callable[[TrialSpec], float] = falling_accuracy,
                 mask_shapes: Optional[Mapping[str, tuple]] = None):
        self.run_dir, self.sweep, self.value = Path(run_dir), sweep, value
        self.mask_shapes = dict(mask_shapes or {})
        self.keeper = RecordKeeper(run_dir, chance=0.2, live_every_s=math.inf)
        self.finished = FinishedTrials(run_dir, self.keeper)
        self.trained = 0

    def done(self, metric: str) -> dict:
        return self.finished.values(metric)

    def run(self, name: str, batch: list, waiting: list) -> None:
        for spec in waiting:
            self.trained += 1
            self.keeper.started(spec)
            value = self.value(spec)
            levels = list(spec.levels) or [spec.sparsity]
            for round_, level in enumerate(levels):
                for step in range(1, EVALUATIONS + 1):
                    self.keeper.result(spec.trial_id, self._metrics(spec, level, round_ if spec.levels else None,
                                                                    step, value, step == EVALUATIONS))
                if level and self.mask_shapes:
                    self._save_mask(spec, level)
            self.keeper.finished(spec.trial_id, STATUS_OK)

    def _metrics(self, spec: TrialSpec, level, round_, step: int, value: float, last: bool) -> dict:
        sizes = {name: math.prod(shape) for name, shape in self.mask_shapes.items()} or {"encoder.weight": 1 << 16}
        layerwise = [(name, n, int(round(n * (1 - (level or 0.0))))) for name, n in sizes.items()]
        metrics = {"metric_name": "accuracy", "accuracy": value - 0.01 * (EVALUATIONS - step), "best": value,
                   "loss": 1.0 / step, "train_loss": 1.1 / step, "step": step * 10,
                   "global_step": step * 10 + 1000 * (round_ or 0), "level": level, "round": round_,
                   "sparsity": level, "sparsity_all": level}
        if last:
            metrics.update(level_done=True, layerwise=layerwise)
        return metrics

    def _save_mask(self, spec: TrialSpec, level: float) -> None:
        rng = np.random.default_rng(zlib.crc32(f"{spec.trial_id}@{level}".encode()))
        masks = {name: rng.random(shape, dtype=np.float32) >= level for name, shape in self.mask_shapes.items()}
        save_mask(self.run_dir / "masks", spec.trial_id, level, masks)
