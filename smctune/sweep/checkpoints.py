"""Trial checkpoints on the storage: only the latest of each running trial, none of an ended one.

A checkpoint holds the model, its optimizer state and the mask: for RoBERTa-large about 5.7 GB.
Tune keeps every one unless ``CheckpointConfig(num_to_keep=k)`` is set, and that setting makes it
force a snapshot of the whole experiment state (every trial's state, rewritten and synced) each
time a trial has checkpointed k times, bypassing its throttle of 5 % of the loop's time (Ray's
``tune/execution/experiment_state.py``): with thousands of trials that is a write of everything per
checkpoint, quadratic in trials over a sweep (``benchmarks/bench_scale.py`` counts the snapshots).

So smctune sets no ``num_to_keep`` and removes superseded checkpoints itself, in the driver, when
Tune reports the next one (``Callback.on_checkpoint``): by then Tune's view of the trial's latest
checkpoint is the new one, which a retry restores from. When a trial ends its last checkpoint goes
too: a resumed sweep reruns unfinished trials from their start, and records, masks and the dense
cache live elsewhere. Tune's own state on disk (for ``Tuner.restore``, which smctune does not use)
may name a removed checkpoint.
"""
from __future__ import annotations

import contextlib


def checkpoint_pruner():
    """A Tune callback that deletes each trial's superseded checkpoints and an ended trial's last."""
    from ray import tune

    class CheckpointPruner(tune.Callback):
        def __init__(self):
            self.latest: dict = {}     # Ray trial id -> its latest checkpoint (one per live trial)
            self.removed = 0

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            previous = self.latest.get(trial.trial_id)
            self.latest[trial.trial_id] = checkpoint
            if previous is not None and previous.path != checkpoint.path:
                self._remove(previous)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._ended(trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._ended(trial)

        def _ended(self, trial) -> None:
            last = self.latest.pop(trial.trial_id, None)
            if last is not None:
                self._remove(last)

        def _remove(self, checkpoint) -> None:
            # disk space only: a checkpoint that cannot be removed (already gone, a read-only
            # mount) must not fail the trial or the sweep
            with contextlib.suppress(OSError):   # FileNotFoundError included
                checkpoint.filesystem.delete_dir(checkpoint.path)
                self.removed += 1

    return CheckpointPruner()
