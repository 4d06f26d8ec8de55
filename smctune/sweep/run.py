"""From a resolved ``SweepSpec`` and its plan to Ray Tune trials, and back to records and MLflow runs.

A sweep runs its plan (``plan.py``) in two stages, stage 2 starting from the dense checkpoints
stage 1 cached. Stage 1 fills the cluster with independent work while the dense models train, so the
split costs little. Each stage is one ``Tuner`` (``stages.py``; ``--search threshold``: rounds of
them, ``threshold_stage.py``). Finished trials have a record in ``results/`` and are skipped when
the same sweep (same ``--name``) runs again. A write into the run directory that fails stops the
sweep (``tune_events.StorageFault``): its open trials are recorded killed where the storage still
takes it and their MLflow runs ended; the records written before stay, and ``resume`` runs the rest.
"""
from __future__ import annotations

import dataclasses

from smctune.catalog import registry
from smctune.config.search_space import SearchSpace, trial_resources
from smctune.config.specs import SweepSpec, TrialSpec
from smctune.rundir.dense_cache import DenseCache
from smctune.rundir.layout import RunDir
from smctune.rundir.records import STATUS_FAILED, RecordKeeper, finished_ids
from smctune.sweep.heartbeat import Heartbeat
from smctune.sweep.plan import stage_of
from smctune.sweep.progress import ProgressPrinter
from smctune.sweep.ray_session import ensure_ray, sigterm_interrupts
from smctune.sweep.stages import StageRunner
from smctune.sweep.threshold_stage import threshold_stage
from smctune.sweep.tune_events import Listeners, StorageFault
from smctune.sweep.tune_trainable import resource_request, trainable
from smctune.tracking.thread import TrackerThread
from smctune.train.schedules import schedule_of


@dataclasses.dataclass
class SweepOutcome:
    run_dir: str
    trials_total: int
    trials_run: int
    trials_skipped: int


def run_sweep(sweep: SweepSpec, space: SearchSpace, trials: list[TrialSpec],
              printer: ProgressPrinter, tracker, rerun_failed: bool = True) -> SweepOutcome:
    """Run the trials that have no finished record (``ok``/``collapsed``; with ``rerun_failed``
    False, ``failed`` ones count as finished too, and are left alone). ``tracker``: an
    ``MLflowTracker``, or a ``TrackerThread`` that builds one; either way its calls are done when
    this returns."""
    ensure_ray()
    with sigterm_interrupts():
        return _run_stages(sweep, space, trials, printer, tracker, rerun_failed)


def _run_stages(sweep: SweepSpec, space: SearchSpace, trials: list[TrialSpec], printer: ProgressPrinter,
                tracker, rerun_failed: bool) -> SweepOutcome:
    from ray import tune

    run = RunDir(sweep.run_dir)
    also = () if rerun_failed else (STATUS_FAILED,)
    already = finished_ids(run.root, also=also)
    pending = [t for t in trials if t.trial_id not in already]
    if already:
        printer.message(f"resuming: {len(trials) - len(pending)} of {len(trials)} trials already "
                        f"finished in {run.root}")
    records = RecordKeeper(run.root, chance=registry.task_entry(sweep.task).chance)
    records.discard_live()
    tracking = TrackerThread.around(tracker)
    owned = tracking is not tracker
    listeners = Listeners(records, tracking, printer)
    resources = trial_resources(sweep, space)
    fn = tune.with_resources(trainable, resource_request(resources))
    cache = DenseCache(run.dense_cache_dir)
    redo = _damaged_dense(trials, already, cache, printer)
    pending = [t for t in trials if t.trial_id not in already or t.trial_id in redo]
    with Heartbeat(run.root) as heartbeat:
        runner = StageRunner(sweep, space, run.root, fn, resources, listeners,
                             {t.trial_id: t for t in trials}, also=also, heartbeat=heartbeat, redo=redo)
        try:
            for stage in (1, 2):
                planned = [t for t in pending if stage_of(t) == stage]
                waiting = _drop_without_dense(planned, cache, listeners, printer) if stage == 2 else planned
                dropped = {t.trial_id for t in planned} - {t.trial_id for t in waiting}
                batch = [t for t in trials if stage_of(t) == stage and t.trial_id not in dropped]
                if sweep.search == "threshold":
                    threshold_stage(runner, stage, batch, printer)
                else:
                    runner.run(f"stage{stage}", batch, waiting)
        except KeyboardInterrupt:
            listeners.abort_open(f"sweep interrupted; continue with: smctune resume {run.root}")
            raise
        except StorageFault:
            listeners.abort_open("sweep stopped: a write into the run directory failed")
            raise
        finally:
            listeners.abort_open("sweep ended before the trial did")
            if owned:
                tracking.close()
            else:
                tracking.drain()
    return SweepOutcome(str(run.root), len(trials), len(pending), len(trials) - len(pending))


def _damaged_dense(trials, already: set, cache: DenseCache, printer) -> frozenset:
    """Dense baselines recorded finished whose cache entry is damaged or gone (a truncated copy, a
    cleaned-up cache): they train again, once, before the methods that start from them."""
    redo = set()
    for spec in trials:
        if spec.trial_id in already and schedule_of(registry.method_spec(spec.method)).name == "none":
            problem = cache.verify(spec.dense_key())
            if problem:
                printer.message(f"retrain {spec.trial_id}: dense cache entry {problem}", level=0)
                redo.add(spec.trial_id)
    return frozenset(redo)


def _drop_without_dense(batch, cache: DenseCache, listeners: Listeners, printer) -> list[TrialSpec]:
    """Stage-2 trials whose dense baseline failed cannot run; record why instead of crashing."""
    runnable = []
    for spec in batch:
        problem = cache.verify(spec.dense_key())
        if problem is None:
            runnable.append(spec)
        else:
            reason = f"dense baseline for seed {spec.seed} did not finish (cache {spec.dense_key()}: {problem})"
            listeners.skipped(spec, STATUS_FAILED, reason)
            printer.message(f"skip    {spec.trial_id}: {reason}", level=0)
    listeners.check()
    return runnable
