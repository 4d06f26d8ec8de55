"""Trial checkpoints without ``CheckpointConfig(num_to_keep)`` (which makes Tune snapshot the whole
experiment state per checkpoint): smctune's pruner keeps only each running trial's latest checkpoint,
removes it when the trial ends, and a failed trial is still retried from its latest one. A real Tune
run of function trainables."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from smctune.sweep.checkpoints import checkpoint_pruner


def _make_trainable():
    """A closure, so Ray ships it by value (workers cannot import this test module)."""

    def _trainable(config):
        from ray import tune

        start = 0
        restored = tune.get_checkpoint()
        if restored is not None:
            with restored.as_directory() as directory:
                start = json.loads(Path(directory, "state.json").read_text())["step"] + 1
        for step in range(start, 4):
            with tempfile.TemporaryDirectory() as directory:
                Path(directory, "state.json").write_text(json.dumps({"step": step}))
                tune.report({"step": step, "resumed_at": start}, checkpoint=tune.Checkpoint.from_directory(directory))
            marker = Path(config["marker_dir"], f"{config['x']}.failed")
            if config["x"] == 1 and step == 1 and not marker.exists():
                marker.write_text("once")
                raise RuntimeError("a worker lost mid-trial")

    return _trainable


def test_only_the_latest_checkpoint_of_a_running_trial_exists(tmp_path, ray_session):
    from ray import tune

    seen = []

    class Watch(tune.Callback):
        """Runs after the pruner: what is on the storage when Tune has the new checkpoint."""

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            trial_dir = Path(checkpoint.path).parent
            seen.append(sorted(p.name for p in trial_dir.glob("checkpoint_*")))

    pruner = checkpoint_pruner()
    tuner = tune.Tuner(
        _make_trainable(), param_space={"x": tune.grid_search([0, 1, 2]), "marker_dir": str(tmp_path)},
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="prune", verbose=0,
                                  callbacks=[pruner, Watch()],
                                  failure_config=tune.FailureConfig(max_failures=1)))
    results = tuner.fit()
    assert not results.errors
    assert sorted(r.metrics["step"] for r in results) == [3, 3, 3]
    retried = next(r for r in results if r.config["x"] == 1)
    assert retried.metrics["resumed_at"] == 2          # restored from its latest checkpoint (step 1)
    assert len(seen) == 3 * 4 and all(len(names) == 1 for names in seen)
    assert list((tmp_path / "ray").rglob("checkpoint_0*")) == []     # none left once trials ended
    assert pruner.removed == 12
