"""From a resolved ``SweepSpec`` to Ray Tune trials, and back to records, MLflow runs and a report.

A sweep runs in two stages, because "after" methods and LTH must start from the dense model of the
same seed and must never train it again:

  stage 1  the dense baselines and every method that starts from the pretrained weights
  stage 2  the methods that start from the cached dense fine-tuned checkpoint (``*_after``, ``lth``)

Stage 1 fills the cluster with independent work while the dense models train, so the split costs
little. Each stage is one ``Tuner`` over an explicit list of trial specs (a grid of cells, not a
search). Finished trials have a record in ``results/`` and are skipped when the same sweep (same
``--name``) runs again; Ray retries a failed trial from its last checkpoint (``FailureConfig``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import threading
from pathlib import Path
from typing import Iterable, Optional

from . import cells, registry
from .config import Resources, SearchSpace, SweepSpec, TrialSpec, resolve_epochs
from .dense_cache import DenseCache
from .errors import UserError
from .masks import MASKS_DIRNAME
from .progress import ProgressPrinter
from .tunables import check_all
from .tracking_thread import TrackerThread
from .records import STATUS_FAILED, STATUS_KILLED, RecordKeeper, finished_ids, finished_values

RAY_QUIET_ENV = {
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_DEDUP_LOGS": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",  # the legacy reporter honours verbose=0; the new one still prints boxes
    # Tune's own Ctrl-C handler makes fit() return as if finished (and suggests Tuner.restore);
    # smctune wants the KeyboardInterrupt, to mark open trials killed and stop before stage 2.
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
}


# ---------------------------------------------------------------------------------------- planning

def lth_levels(grid: Iterable[float], rate: float) -> tuple[float, ...]:
    """IMP rounds needed to reach the top of the grid: sparsity 1-(1-rate)^k for k = 1..K."""
    top = max(grid) - 1e-6  # grid values are rounded to 6 digits
    rounds = 1
    while 1 - (1 - rate) ** rounds < top:
        rounds += 1
    return tuple(round(1 - (1 - rate) ** k, 6) for k in range(1, rounds + 1))


def plan_trials(sweep: SweepSpec, space: SearchSpace) -> list[TrialSpec]:
    """Every trial of the sweep: architectures x seeds x folds x methods x (``--prune-only`` groups)
    x levels, dense first. ``train.epochs`` becomes ``max_steps`` over the recorded training size."""
    cache_root = str(Path(sweep.run_dir).parent / "dense_cache")
    masks_dir = str(Path(sweep.run_dir) / MASKS_DIRNAME)
    methods = ("dense",) + tuple(m for m in sweep.methods if m != "dense")
    trials = []
    for arch in sweep.models or ("",):
        preset = space.resolve(sweep.preset, arch, sweep.faithful)
        train = resolve_epochs(preset.train, sweep.train_examples)
        for seed in sweep.seeds:
            for fold in sweep.folds or (None,):
                for name in methods:
                    spec = registry.method_spec(name)
                    tunables = space.tunables(name, sweep.preset, spec.defaults(sweep.faithful),
                                              sweep.faithful)
                    _check_tunables(spec, tunables, space.source)
                    for group in (sweep.prune_only or ("",)) if name != "dense" else ("",):
                        prunable = space.prunable_rules(sweep.keep_dense, name, sweep.faithful, only=group)
                        common = dict(task=sweep.task, method=name, seed=seed, preset=sweep.preset,
                                      model=preset.model, train=train, tunables=tunables,
                                      prunable=prunable, data_dir=sweep.data_dir, cache_root=cache_root,
                                      fold=fold, stop=preset.stop, masks_dir=masks_dir, group=group)
                        trials.extend(_method_trials(spec, tunables, sweep.sparsities, common))
    return trials


def _method_trials(spec, tunables: dict, sparsities, common: dict) -> list[TrialSpec]:
    """One method's trials in one (architecture, seed, fold): by its schedule."""
    if spec.schedule == "none":
        return [TrialSpec(sparsity=None, **common)]
    if spec.schedule == "imp":
        levels = lth_levels(sparsities, float(tunables["rate"]))
        return [TrialSpec(sparsity=levels[-1], levels=levels, **common)]
    if tunables.get("pattern"):  # N:M fixes the sparsity: one trial, not the grid
        n, m = (int(x) for x in tunables["pattern"].split(":"))
        return [TrialSpec(sparsity=round(n / m, 6), **common)]
    return [TrialSpec(sparsity=s, **common) for s in sparsities]


def tuned_trial_count(trials: list[TrialSpec], space: SearchSpace, sweep: SweepSpec) -> int:
    """Trials the sweep runs at most: every planned trial, plus the further tunings of searched cells
    (each tuning runs every seed and fold of its cell)."""
    decl = space.search_decl(sweep.preset)
    budget = sweep.trials_per_cell or decl.trials_per_cell
    searched = sum(1 for t in trials if decl.space(t.method))
    return len(trials) + (budget - 1) * searched if budget > 1 else len(trials)


def _check_tunables(method, values: dict, source: str) -> None:
    """Settings that cannot work fail in the driver, before any trial is scheduled."""
    check_all(method.tunables, values, f"{source}: {method.name}")
    if method.schedule == "gmp" and not values["start_fraction"] < values["end_fraction"]:
        raise UserError(f"{source}: {method.name} start_fraction {values['start_fraction']} must be "
                        f"below end_fraction {values['end_fraction']}")
    if method.criterion == "obert" and values["variant"] == "smcbench" and values["block_size"] != 1:
        raise UserError(f"{source}: {method.name} variant smcbench is the diagonal Fisher: set "
                        f"block_size: 1 (got {values['block_size']}) or use variant paper")


def stage_of(spec: TrialSpec) -> int:
    return 2 if registry.method_spec(spec.method).start == "dense" else 1


def resolve_preset(requested: str, gpus: float) -> tuple[str, str]:
    """``auto`` -> paper with GPUs, smoke without; ``paper`` without GPUs is an error."""
    registry.preset_entry(requested)
    if requested == "auto":
        if gpus > 0:
            return "paper", f"auto: Ray sees {gpus:g} GPU(s)"
        return "smoke", "auto: Ray sees no GPU"
    if requested == "paper" and gpus <= 0:
        raise UserError("preset 'paper' needs GPUs but Ray sees none; use --preset small "
                        "(real small models on CPU) or --preset smoke (pipeline check)")
    return requested, "requested"


# ---------------------------------------------------------------------------------------- Ray

def ensure_ray(num_cpus: Optional[int] = None) -> dict:
    """Connect to ``RAY_ADDRESS`` when set (a cluster), else start a quiet local instance."""
    for key, value in RAY_QUIET_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    if not ray.is_initialized():
        kwargs = dict(logging_level=logging.ERROR, log_to_driver=False)
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], **kwargs)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
    return ray.cluster_resources()


def stop_ray() -> None:
    """Disconnect, and stop the local instance when this process started it."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


PENDING_TRIALS_ENV = "TUNE_MAX_PENDING_TRIALS_PG"


def pending_trials_limit(resources: Resources) -> int:
    """How many trials Tune may keep waiting for resources: one per slot the connected cluster has
    now. Tune's "auto" allows a custom searcher a single waiting trial, so trials start one after
    another, each waiting for the previous one's placement group and actor (about a second each on
    this 2-core machine: the second core idled a second; on 64 GPUs, a minute before all are busy).
    smctune's cell searcher emits planned trials (and at most ``max_concurrent_per_cell`` Optuna
    tunings of a cell in flight), so it loses nothing by having them queued. An explicit
    ``TUNE_MAX_PENDING_TRIALS_PG`` wins: cluster.yaml sets 256 so an autoscaler sees the whole
    demand of an empty cluster."""
    import ray

    from . import estimate

    request = estimate.ray_request(resources.cpu, resources.gpu, resources.memory_gb)
    slots, _ = estimate.concurrency(estimate.cluster_from_ray_nodes(ray.nodes(), ""), request)
    return max(1, slots)


@contextlib.contextmanager
def _pending_trials(limit: int):
    """Tune reads the limit from the environment when ``fit`` builds its controller; set it for that
    call only, unless the user (or cluster.yaml) already did."""
    if os.environ.get(PENDING_TRIALS_ENV):
        yield
        return
    os.environ[PENDING_TRIALS_ENV] = str(limit)
    try:
        yield
    finally:
        os.environ.pop(PENDING_TRIALS_ENV, None)


def trial_resources(sweep: SweepSpec, space: SearchSpace) -> Resources:
    """What every trial of the sweep asks Ray for: the preset's resources, with ``--gpus-per-trial``
    (``SweepSpec.gpus_per_trial``) replacing the gpu count when given."""
    resources = space.preset(sweep.preset).resources
    if sweep.gpus_per_trial is not None:
        resources = dataclasses.replace(resources, gpu=float(sweep.gpus_per_trial))
    return resources


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

    from .train import run_trial, set_threads

    spec = TrialSpec.from_dict(config["trial"])
    set_threads(trial_threads(config.get("cpus") or 1, spec.train.threads))
    device = "cuda" if config.get("gpus", 0) > 0 else "cpu"
    run_trial(spec, _RayReporter(tune), device=device)


class _RayReporter:
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


def _event_bridge(listener, specs: dict):
    """A Tune callback that turns Ray's trial events into calls on smctune's listeners."""
    from ray import tune

    ids: dict = {}  # Ray's trial id -> ours; results arrive every evaluation, build the spec once

    def trial_id(trial) -> str:
        if trial.trial_id not in ids:
            ids[trial.trial_id] = cells.trial_id_of(trial.config)
        return ids[trial.trial_id]

    class Bridge(tune.Callback):
        def on_step_begin(self, iteration, trials, **info):
            if sigterm_received():   # a SIGTERM whose KeyboardInterrupt a finalizer swallowed
                raise KeyboardInterrupt

        def on_trial_start(self, iteration, trials, trial, **info):
            # a planned trial, or a tuning of a searched cell (its spec comes with the config)
            key = trial_id(trial)
            listener.started(specs.get(key) or TrialSpec.from_dict(trial.config["trial"]))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            listener.result(trial_id(trial), result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            listener.finished(trial_id(trial), "ok")

        def on_trial_recover(self, iteration, trials, trial, **info):
            listener.recovered(trial_id(trial), _one_line_error(trial))

        def on_trial_error(self, iteration, trials, trial, **info):
            listener.finished(trial_id(trial), STATUS_FAILED, _one_line_error(trial))

    return Bridge()


def _one_line_error(trial) -> str:
    """The last line of the trial's traceback (``Type: message``). Ray writes the error file on the
    driver's local trial dir before calling back; storage may not have it yet."""
    text = ""
    try:
        local = trial.error_file
        if local and Path(local).is_file():
            text = Path(local).read_text()
        else:
            text = trial.get_error() or ""
    except Exception:  # noqa: BLE001 - the error file may be gone; the status still matters
        pass
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1][:300] if lines else "trial failed (no error text)"


class _Listeners:
    """Fan-out to records, MLflow and progress, keeping the MLflow run id in the record. Records
    and progress are written here, on Tune's loop; MLflow calls are queued to their own thread
    (tracking_thread.py), so a slow tracking server never holds up scheduling."""

    RUN_ID_WAIT_S = 30.0   # a finished trial's record waits this long at most for its MLflow run id

    def __init__(self, records: RecordKeeper, tracking: TrackerThread, printer: ProgressPrinter):
        self.records, self.tracking, self.printer = records, tracking, printer
        self.tracking.on_error = self._tracking_failed
        self._run_ids: dict = {}
        self._tracker_warned = False

    def started(self, spec: TrialSpec) -> None:
        if spec.trial_id in self.records.open:
            return  # Ray restarting a failed trial: same record, same MLflow run
        self.records.started(spec)
        self._run_ids[spec.trial_id] = self.tracking.submit("started", spec)
        self.printer.started(spec)

    def result(self, trial_id: str, metrics: dict) -> None:
        self.records.result(trial_id, metrics)
        self.tracking.submit("result", trial_id, dict(metrics))
        self.printer.result(trial_id, metrics)

    def recovered(self, trial_id: str, error: str) -> None:
        self.records.recovered(trial_id, error)
        self.tracking.submit("recovered", trial_id, error)
        self.printer.recovered(trial_id, error)

    def finished(self, trial_id: str, status: str, error: Optional[str] = None) -> None:
        self.records.attach(trial_id, "mlflow_run_id", self._run_id(trial_id))
        record = self.records.finished(trial_id, status, error)
        self.tracking.submit("finished", trial_id, status, error, record)
        self.printer.finished(trial_id, status, error)

    def _run_id(self, trial_id: str) -> Optional[str]:
        """Created long before the trial ends, unless the tracking server is slow or down: then the
        record goes without it rather than hold up the sweep."""
        future = self._run_ids.pop(trial_id, None)
        try:
            return future.result(timeout=self.RUN_ID_WAIT_S) if future is not None else None
        except Exception:  # noqa: BLE001 - a timeout: the run id is a convenience, the record is not
            return None

    def _tracking_failed(self, event: str, err: BaseException) -> None:
        if not self._tracker_warned:
            self._tracker_warned = True
            self.printer.message(f"warning: MLflow {event} failed ({' '.join(str(err).split())[:300]}); "
                                 "results still go to the run directory", level=0)

    def abort_open(self, reason: str) -> None:
        for trial_id in list(self.records.open):
            self.finished(trial_id, STATUS_KILLED, reason)
        self.tracking.submit("close_open_runs")

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks (which hold this) into the experiment state
        return dict(self.__dict__, _run_ids={})


# ---------------------------------------------------------------------------------------- running

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
    _sigterm_interrupts()
    from ray import tune

    run_dir = Path(sweep.run_dir)
    already = finished_ids(run_dir, also=() if rerun_failed else (STATUS_FAILED,))
    pending = [t for t in trials if t.trial_id not in already]
    if already:
        printer.message(f"resuming: {len(trials) - len(pending)} of {len(trials)} trials already "
                        f"finished in {run_dir}")
    entry = registry.task_entry(sweep.task)
    records = RecordKeeper(run_dir, chance=entry.chance)
    tracking = TrackerThread.around(tracker)
    owned = tracking is not tracker
    listeners = _Listeners(records, tracking, printer)
    specs = {t.trial_id: t for t in trials}
    resources = trial_resources(sweep, space)
    fn = tune.with_resources(trainable, resource_request(resources))
    cache = DenseCache(Path(run_dir).parent / "dense_cache")
    runner = _StageRunner(sweep, space, run_dir, fn, resources, listeners, specs,
                          also=() if rerun_failed else (STATUS_FAILED,))
    try:
        for stage in (1, 2):
            waiting = [t for t in pending if stage_of(t) == stage]
            if stage == 2:
                waiting = _drop_without_dense(waiting, cache, records, printer)
            dropped = {t.trial_id for t in pending if stage_of(t) == stage} - {t.trial_id for t in waiting}
            batch = [t for t in trials if stage_of(t) == stage and t.trial_id not in dropped]
            if sweep.search == "threshold":
                _threshold_stage(runner, stage, batch, printer)
            else:
                runner.run(f"stage{stage}", batch, waiting)
    except KeyboardInterrupt:
        listeners.abort_open(f"sweep interrupted; continue with: smctune resume {run_dir}")
        raise
    finally:
        listeners.abort_open("sweep ended before the trial did")
        if owned:
            tracking.close()
        else:
            tracking.drain()
    return SweepOutcome(str(run_dir), len(trials), len(pending), len(trials) - len(pending))


class _StageRunner:
    """Runs one Tuner over a batch of planned trials: the cell searcher emits them (skipping
    finished ones) and, in searched cells, Optuna's further tunings, interleaving cells."""

    def __init__(self, sweep, space, run_dir: Path, fn, resources, listeners, specs, also: tuple):
        self.sweep, self.space, self.run_dir, self.fn = sweep, space, run_dir, fn
        self.resources, self.listeners, self.specs, self.also = resources, listeners, specs, also
        self.decl = space.search_decl(sweep.preset)
        self.budget = sweep.trials_per_cell or self.decl.trials_per_cell
        self.pending_limit = pending_trials_limit(resources)

    def run(self, name: str, batch: list[TrialSpec], waiting: list[TrialSpec]) -> None:
        from ray import tune

        tuned = self.budget > 1 and any(self.decl.space(t.method) for t in batch)
        if not waiting and not tuned:
            return
        space = self.space
        searcher = cells.CellSearcher(
            [t.to_dict() for t in batch], self.decl, self.budget, storage_dir=self.run_dir,
            done=finished_values(self.run_dir, self.decl.metric, also=self.also),
            validate=lambda method, values: _check_tunables(registry.method_spec(method), values,
                                                            space.source))
        for note in searcher.messages:
            self.listeners.printer.message(note, level=0)
        scheduler = (cells.CellASHA(grace_period=batch[0].train.eval_every,
                                    max_t=batch[0].train.max_steps) if self.sweep.asha else None)
        tuner = tune.Tuner(
            self.fn,
            param_space=trial_config(self.resources),
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=-1,
                max_concurrent_trials=self.sweep.max_concurrent or None,
                reuse_actors=True,
                trial_name_creator=lambda trial: cells.trial_id_of(trial.config),
                trial_dirname_creator=lambda trial: cells.trial_id_of(trial.config),
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(self.run_dir / "ray"),
                verbose=0,
                callbacks=[_event_bridge(self.listeners, self.specs)],
                failure_config=tune.FailureConfig(max_failures=self.sweep.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
        with _pending_trials(self.pending_limit):
            tuner.fit()


def _threshold_stage(runner: _StageRunner, stage: int, batch: list[TrialSpec], printer) -> None:
    """``--search threshold``: per (architecture, method), bisect the grid for the first failing
    level instead of running every level. A proposed level runs on every seed and fold and its
    search is told their mean, the value the report compares. Trials that are not on a grid curve
    (dense, IMP ladders, N:M) run in the first round; the searches start once the dense baselines
    of the stage are known (stage-2 methods: from the records of stage 1). Rounds are Tuners over
    the levels proposed; a resumed sweep replays finished levels without running them."""
    from .threshold import MultiSearch, ThresholdSearch, is_searchable

    def searchable(t: TrialSpec) -> bool:
        return is_searchable(registry.method_spec(t.method).schedule) and not t.tunables.get("pattern")

    fixed = [t for t in batch if not searchable(t)]
    curves: dict = {}
    for t in batch:
        if searchable(t):
            curves.setdefault((t.model.arch, t.method), {}).setdefault(t.sparsity, []).append(t)
    def done() -> dict:
        return finished_values(runner.run_dir, "best", also=runner.also)

    runner.run(f"stage{stage}", fixed, [t for t in fixed if t.trial_id not in done()])
    if not curves:
        return
    dense = _dense_means(runner.run_dir, {arch for arch, _ in curves})
    multi = MultiSearch()
    grid = tuple(sorted(runner.sweep.sparsities))
    for key in curves:
        if dense.get(key[0]) is None:
            printer.message(f"threshold search: no dense value for {key[0] or 'the task'}; "
                            f"{key[1]} runs its whole grid", level=0)
            continue
        multi.add(key, ThresholdSearch(grid, dense[key[0]], tolerance=0.01))
    unsearched = [t for key, levels in curves.items() if key not in multi.keys()
                  for members in levels.values() for t in members]
    if unsearched:
        runner.run(f"stage{stage}-grid", unsearched, unsearched)
    for round_number in range(1, 10 * len(grid) + 2):
        if multi.done:
            break
        proposals = multi.next_batch(len(multi) * len(grid))
        finished = done()
        to_run = [t for key, level in proposals for t in curves[key][level] if t.trial_id not in finished]
        if to_run:
            runner.run(f"stage{stage}-round{round_number}", to_run, to_run)
            finished = done()
        for key, level in proposals:
            values = [finished.get(t.trial_id) for t in curves[key][level]]
            known = [v for v in values if v is not None]
            multi.tell(key, level, sum(known) / len(known) if known else None)
    summary = multi.summary()
    printer.message(summary.text, level=0)
    _write_threshold_record(runner.run_dir, stage, summary)


def _dense_means(run_dir: Path, archs) -> dict:
    """Architecture -> the dense baseline the report compares with (``analysis.dense_baseline``:
    mean over seeds of the fold means); None where no dense trial has a value."""
    from .analysis import dense_baseline, load_run

    run = load_run(run_dir)
    means = {}
    for arch in archs:
        stat = dense_baseline(run, "best", arch or None)
        means[arch] = stat.mean if stat is not None else None
    return means


def _write_threshold_record(run_dir: Path, stage: int, summary) -> None:
    """``threshold.json``: per curve the failing level found and the trials it took (a stage's
    entry replaces the previous one)."""
    path = run_dir / "threshold.json"
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        data = {}
    data[f"stage{stage}"] = {
        "text": summary.text, "trials_used": summary.trials_used, "grid_trials": summary.grid_trials,
        "curves": [{"model": key[0] or None, "method": key[1], "fails_at": r.fails_at,
                    "non_monotone": r.non_monotone, "certified": r.certified,
                    "trials_used": r.trials_used, "grid_size": r.grid_size,
                    "measured": {repr(level): value for level, value in r.measured.items()}}
                   for key, r in summary.results.items()]}
    path.write_text(json.dumps(data, indent=1))


def _sigterm_interrupts() -> None:
    """``ray job stop``, a batch scheduler or a preempted head sends SIGTERM: treat it like Ctrl-C, so
    open trials are recorded as killed and their MLflow runs end KILLED. Installed after ``ray.init``,
    which sets a SIGTERM handler of its own that would exit without that bookkeeping."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread

    def interrupt(signum, frame):
        _TERMINATED.set()
        raise KeyboardInterrupt

    _TERMINATED.clear()
    signal.signal(signal.SIGTERM, interrupt)


# Set by the SIGTERM handler. An exception raised in a signal handler is lost ("Exception ignored")
# when the signal lands while a garbage-collection callback runs (seen with SQLAlchemy's weakref
# finalizers in MLflow's store); Tune's loop then raises it again at its next step.
_TERMINATED = threading.Event()


def sigterm_received() -> bool:
    """Module-level so Tune's pickled callback refers to it by name, not to the Event's lock."""
    return _TERMINATED.is_set()


def _drop_without_dense(batch, cache: DenseCache, records: RecordKeeper, printer) -> list[TrialSpec]:
    """Stage-2 trials whose dense baseline failed cannot run; record why instead of crashing."""
    runnable = []
    for spec in batch:
        if cache.has(spec.dense_key()):
            runnable.append(spec)
        else:
            reason = f"dense baseline for seed {spec.seed} did not finish (cache {spec.dense_key()} missing)"
            records.write_skipped(spec, STATUS_FAILED, reason)
            printer.message(f"skip    {spec.trial_id}: {reason}", level=0)
    return runnable
