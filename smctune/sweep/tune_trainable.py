"""What runs inside a Ray worker: the Tune function trainable around ``train.run_trial``, and what it
is told of its allocation.
"""
from __future__ import annotations

import math
from typing import Optional

from smctune.config.settings import Resources
from smctune.config.specs import TrialSpec


def resource_request(resources: Resources) -> dict:
    """The ``tune.with_resources`` dict. Ray counts memory in bytes, and a resource quantity must be
    a whole number of its unit, so memory_gb becomes an integer byte count. Fractional GPUs (0.25:
    four trials share a GPU) pass through as they are."""
    request = {"cpu": resources.cpu, "gpu": resources.gpu}
    if resources.memory_gb:
        request["memory"] = int(round(resources.memory_gb * 1024**3))
    return request


def trial_config(resources: Resources) -> dict:
    """What ``trainable`` needs to know of its allocation, next to the trial spec."""
    return {"cpus": resources.cpu, "gpus": resources.gpu}


def trial_threads(cpus: float, configured: int = 0) -> int:
    """torch intra-op threads of a trial: ``train.threads`` when set (> 0), else the trial's CPU
    share (whole CPUs, at least 1), so concurrent trials do not oversubscribe the cores."""
    if configured and configured > 0:
        return int(configured)
    return max(1, math.floor(cpus + 1e-9))


def trainable(config: dict) -> None:
    """The Ray Tune function trainable: one ``TrialSpec`` -> ``train.run_trial``."""
    from ray import tune

    from smctune.train.trial import run_trial, set_threads

    spec = TrialSpec.from_dict(config["trial"])
    set_threads(trial_threads(config.get("cpus") or 1, spec.train.threads))
    device = "cuda" if config.get("gpus", 0) > 0 else "cpu"
    run_trial(spec, _RayReporter(tune), device=device)


class _RayReporter:
    """``run_trial``'s reporter on Tune: metrics (and a checkpoint directory) out, the last
    checkpoint of a retried trial in."""

    def __init__(self, tune):
        self.tune = tune
        self._restored_dir = None

    def report(self, metrics: dict, checkpoint_dir: Optional[str] = None) -> None:
        checkpoint = self.tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        self.tune.report(metrics, checkpoint=checkpoint)

    def restore(self) -> Optional[str]:
        checkpoint = self.tune.get_checkpoint()
        if checkpoint is None:
            return None
        import tempfile

        self._restored_dir = tempfile.mkdtemp(prefix="smctune-restore-")
        return checkpoint.to_directory(self._restored_dir)
