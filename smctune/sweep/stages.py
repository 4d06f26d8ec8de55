"""One Ray Tune ``Tuner`` over a batch of planned trials: the unit a sweep stage (or a round of the
threshold search) runs.

The cell searcher emits the trials (skipping finished ones, longest expected first) and, in
searched cells, Optuna's further tunings, interleaving cells. Ray retries a failed trial from its
last checkpoint (``FailureConfig``). A failed write into the run directory stops the Tuner at its
next step and ``run`` raises it (``tune_events.StorageFault``).
"""
from __future__ import annotations

from pathlib import Path

from smctune.catalog import registry
from smctune.config.specs import TrialSpec
from smctune.gc_pause import long_lived
from smctune.rundir.layout import RunDir
from smctune.rundir.records import FinishedTrials
from smctune.sweep.cell_keys import trial_id_of
from smctune.sweep.checkpoints import checkpoint_pruner
from smctune.sweep.plan import check_tunables
from smctune.sweep.ray_session import pending_trials, pending_trials_limit
from smctune.sweep.tune_events import event_bridge
from smctune.sweep.tune_trainable import trial_config


class StageRunner:
    """Runs Tuners for one sweep: ``run(name, batch, waiting)``; ``also``: record statuses that count
    as finished besides ok/collapsed (``failed`` when failures are kept)."""

    def __init__(self, sweep, space, run_dir: Path, fn, resources, listeners, specs, also: tuple,
                 heartbeat=None, redo: frozenset = frozenset()):
        self.sweep, self.space, self.run_dir, self.fn = sweep, space, Path(run_dir), fn
        self.resources, self.listeners, self.specs, self.also = resources, listeners, specs, also
        self.heartbeat = heartbeat
        self.redo = redo   # recorded finished, but to run again (a dense baseline whose cache entry is damaged)
        self.decl = space.search_decl(sweep.preset)
        self.budget = sweep.trials_per_cell or self.decl.trials_per_cell
        self.pending_limit = pending_trials_limit(resources)
        self.finished = FinishedTrials(self.run_dir, listeners.records, also, redo)

    def done(self, metric: str) -> dict:
        """Finished trial id -> value under ``metric`` (``records.FinishedTrials``), less ``redo``."""
        return self.finished.values(metric)

    def run(self, name: str, batch: list[TrialSpec], waiting: list[TrialSpec]) -> None:
        from ray import tune

        from smctune.sweep.tune_classes import CellASHA, CellSearcher

        tuned = self.budget > 1 and any(self.decl.space(t.method) for t in batch)
        if not waiting and not tuned:
            return
        if self.heartbeat is not None:
            self.heartbeat.stage = name
        source = self.space.source
        searcher = CellSearcher(
            [t.to_dict() for t in batch], self.decl, self.budget, storage_dir=self.run_dir,
            done=self.done(self.decl.metric),
            validate=lambda method, values: check_tunables(registry.method_spec(method), values, source))
        for note in searcher.messages:
            self.listeners.printer.message(note, level=0)
        scheduler = (CellASHA(grace_period=batch[0].train.eval_every, max_t=batch[0].train.max_steps)
                     if self.sweep.asha else None)
        tuner = tune.Tuner(
            self.fn,
            param_space=trial_config(self.resources),
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=-1,
                max_concurrent_trials=self.sweep.max_concurrent or None,
                reuse_actors=True,
                trial_name_creator=lambda trial: trial_id_of(trial.config),
                trial_dirname_creator=lambda trial: trial_id_of(trial.config),
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(RunDir(self.run_dir).ray_dir),
                verbose=0,
                callbacks=[event_bridge(self.listeners, self.specs), checkpoint_pruner()],
                failure_config=tune.FailureConfig(max_failures=self.sweep.max_failures),
            ),
        )
        # the plan, the searcher's cells and the records read so far live for the whole stage:
        # kept out of the collector's walks (smctune.gc_pause)
        with pending_trials(self.pending_limit), long_lived():
            tuner.fit()
        self.listeners.check()   # a write that failed at Tune's last event, after its last step
