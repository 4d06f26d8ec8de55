"""A whole sweep from one call, the same from the command line and from Python.

    from smctune.sweep.driver import sweep
    result = sweep("csqa", methods="dense,gmp", sparsities=(0.5,), preset="smoke", storage="/tmp/runs")
    result.trials_run, result.run_dir, result.results()

The order matters and is kept in one place: the user's choices are resolved and the data checked
before Ray starts (a bad file costs no start-up); the cluster is checked before the run directory is
created; ``sweep.json``, ``plan.json`` and ``environment.json`` are written before the first trial
(so ``status`` and ``resume`` work from then on); trials run stage by stage (``run.run_sweep``)
with every MLflow call on its own thread (``TrackerThread``), off Tune's event loop; Ray is stopped
before the report, which needs none; and the sweep's MLflow parent run always ends FINISHED,
FAILED or KILLED (Ctrl-C, or the SIGTERM ``run_sweep`` turns into one), ended before Ray is stopped
when the sweep fails. An ``http(s)://`` tracking server is checked before Ray starts.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from smctune.rundir.layout import RunDir, write_atomic
from smctune.rundir.lock import RunLock
from smctune.sweep.request import DEFAULT_STORAGE, SweepRequest

if TYPE_CHECKING:  # annotations only: importing the driver stays light
    from smctune.config.specs import SweepSpec
    from smctune.report.analysis import RunResults
    from smctune.report.write import ReportPaths

# sweep.json fields a continued sweep may change: how it runs, not what it measures
# (train_examples is measured on the data each time; sweeps recorded before it existed have none)


@dataclass(frozen=True)
class SweepResult:
    """What a finished ``sweep``/``resume`` call leaves: where, what ran, and the report (None
    when it was not asked for)."""

    run_dir: Path
    spec: SweepSpec              # as the trials ran with it
    trials_total: int
    trials_run: int
    trials_skipped: int          # finished before this call (a continued sweep)
    seconds: float
    report: Optional[ReportPaths] = None

    def results(self) -> RunResults:
        """The run's records, as ``smctune report`` reads them (``report.analysis.RunResults``)."""
        from smctune.report.load import load_run

        return load_run(self.run_dir)


def sweep(task: str, *, report: bool = True, **choices) -> SweepResult:
    """Run a sweep: the dense baseline + every method x sparsity x seed of ``task``. ``choices`` are
    ``SweepRequest``'s fields, named and defaulted as the CLI's flags (``methods="dense,gmp"`` or
    ``("dense", "gmp")``, ``sparsities=(0.5,)``, ``seeds=1``, ``preset="smoke"``, ``storage=...``,
    ``name=...``, ``verbosity=0``...). Rerunning a ``name`` continues that sweep. ``report``:
    also write the report (``report.write.write_report``) and attach it to the MLflow run."""
    return run_request(SweepRequest.of(task, **choices), report=report)


def run_request(request: SweepRequest, *, report: bool = True) -> SweepResult:
    """``sweep`` for a ready ``SweepRequest`` (what ``smctune sweep`` builds from its flags)."""
    from smctune.sweep.cluster import ray_running, shutdown_ray
    from smctune.sweep.request import resolve
    from smctune.tracking.tracker import check_reachable

    if request.mlflow_uri:
        check_reachable(request.mlflow_uri)   # before Ray starts (resolving a preset may start it)
    own_ray = not ray_running()
    try:
        spec, space = resolve(request, for_plan=False)
    except BaseException:
        if own_ray:
            shutdown_ray()  # the preset's resolution may have started Ray
        raise
    return _run(spec, space, rerun_failed=True, shared_storage=request.shared_storage,
                default_mlflow=not request.mlflow_uri, report=report, own_ray=own_ray)


def resume(run: Union[str, Path], *, storage: Union[str, Path] = DEFAULT_STORAGE,
           restart_errored: bool = False, shared_storage: bool = False,
           verbosity: Optional[int] = None, report: bool = True) -> SweepResult:
    """Continue an interrupted sweep from its run directory (a path, or a name under ``storage``):
    the same settings (``sweep.json``), finished trials skipped, failed ones run again only with
    ``restart_errored``. ``verbosity``: None keeps the sweep's."""
    from smctune.sweep.cluster import ray_running
    from smctune.sweep.request import find_run_dir, recorded_search_space
    from smctune.tracking.tracker import check_reachable, default_tracking_uri

    run_dir = find_run_dir(run, storage)
    spec = read_spec(run_dir)
    check_reachable(spec.mlflow_uri)   # before Ray starts
    spec = dataclasses.replace(spec, verbosity=spec.verbosity if verbosity is None else verbosity)
    space = recorded_search_space(run_dir, spec)
    return _run(spec, space, rerun_failed=restart_errored, shared_storage=shared_storage,
                default_mlflow=spec.mlflow_uri == default_tracking_uri(run_dir), report=report,
                own_ray=not ray_running())


def read_spec(run_dir: Path):
    """The ``SweepSpec`` a run directory was started with (checked key by key, placed where the
    directory is now)."""
    from smctune.sweep.request import read_recorded_spec

    return read_recorded_spec(run_dir)


def record_spec(run_dir: Union[str, Path], spec) -> Path:
    """sweep.json pins a run's settings: rerunning the name with different settings is refused."""
    from smctune.sweep.request import check_continues

    check_continues(spec)
    return write_atomic(RunDir(run_dir).sweep_file, spec.to_json())


def _run(spec, space, *, rerun_failed: bool, shared_storage: bool, default_mlflow: bool,
         report: bool, own_ray: bool) -> SweepResult:
    """Check, plan, record and run a resolved sweep, then report (``sweep`` and ``resume``)."""
    from smctune.catalog import registry
    from smctune.rundir import environment
    from smctune.sweep.cluster import check_cluster, check_writable, ray_nodes, shutdown_ray
    from smctune.sweep.plan_view import write_plan
    from smctune.sweep.progress import ProgressPrinter
    from smctune.sweep.request import validate_data, write_search_space_copy
    from smctune.sweep.plan import plan_trials, tuned_trial_count
    from smctune.sweep.run import run_sweep
    from smctune.tracking.thread import TrackerThread
    from smctune.tracking.tracker import git_sha

    def stop_ray() -> None:
        if own_ray:   # a Ray the caller had started before is theirs to stop
            shutdown_ray()

    tracking = lock = None
    try:
        printer = ProgressPrinter(total=0, verbosity=spec.verbosity)
        printer.message(f"preset: {spec.preset} ({spec.preset_reason})", level=0)
        task = registry.load_task(spec.task)
        spec, data, notes = validate_data(task, spec, space)
        for note in notes:
            printer.message(f"data: {note}")
        trials = plan_trials(spec, space)
        check_cluster(spec, space, shared_storage, default_mlflow,
                      warn=lambda text: printer.message(text, level=0))
        run_dir = Path(spec.run_dir)
        check_writable(run_dir)
        # one driver per run directory: a second `sweep --name` of the same run is refused, naming
        # the holder, instead of training every trial twice
        lock = RunLock(RunDir(run_dir).lock_file, f"sweep {spec.task} --name {spec.name}",
                       what=f"run directory {run_dir}").acquire()
        files = [record_spec(run_dir, spec)]
        copy = write_search_space_copy(run_dir, spec)
        files += [copy] if copy else []
        printer.total = tuned_trial_count(trials, space, spec)
        printer.message(f"task {spec.task}: {len(trials)} trials ({', '.join(spec.methods)}) on "
                        f"{data.source}; run directory {run_dir}")
        sha = git_sha()
        files += [write_plan(run_dir, spec, trials),
                  environment.write(run_dir, environment.capture(ray_nodes(), sha))]
        tracking = TrackerThread(lambda: _open_tracker(spec, run_dir, sha, files))
        started = time.monotonic()
        outcome = run_sweep(spec, space, trials, printer, tracking, rerun_failed=rerun_failed)
        seconds = time.monotonic() - started
        printer.message(f"sweep finished in {seconds:.0f}s "
                        f"({outcome.trials_run} trials run, {outcome.trials_skipped} already done)")
    except BaseException as err:
        # the parent run first: Ray's shutdown can outlast a scheduler's grace period (timeout -k,
        # SLURM, ray job stop) and a SIGKILL then would leave it RUNNING
        _end_sweep_run(tracking, err)
        if tracking is not None:
            tracking.close()
        if lock is not None:
            lock.release()
        stop_ray()
        raise
    paths = None
    try:
        stop_ray()   # inside: a SIGTERM during the shutdown still ends the parent run
        if report:
            from smctune.report import write as report_write

            paths = report_write.write_report(spec.run_dir, report_write.ReportOptions())
            tracking.call("log_sweep_report", paths.files)
        else:
            tracking.call("end_sweep", "FINISHED")
    except BaseException as err:
        _end_sweep_run(tracking, err)   # the trials are recorded; `smctune report` can retry
        raise
    finally:
        tracking.close()
        lock.release()
    return SweepResult(run_dir=run_dir, spec=spec, trials_total=outcome.trials_total,
                       trials_run=outcome.trials_run, trials_skipped=outcome.trials_skipped,
                       seconds=seconds, report=paths)


def _open_tracker(spec, run_dir: Path, sha: str, files: list):
    """The sweep's MLflow experiment and parent run, holding the sweep's settings from the start."""
    from smctune import __version__
    from smctune.tracking.tracker import MLflowTracker

    tracker = MLflowTracker(spec.mlflow_uri, experiment=f"smctune/{spec.name}", run_dir=str(run_dir),
                            sweep_tags={"sweep": spec.name, "smctune_version": __version__,
                                        "git_sha": sha, "preset_reason": spec.preset_reason})
    tracker.log_sweep_files(files)
    return tracker


END_RUN_WAIT_S = 30.0   # a hung tracking server does not keep Ray from being stopped


def _end_sweep_run(tracking, err: BaseException) -> None:
    """The sweep's MLflow parent run never stays RUNNING: KILLED on Ctrl-C or a SIGTERM (Ray's own
    handler turns one into ``SystemExit`` outside the trials), FAILED otherwise, with the error's
    one line as its ``error`` tag."""
    if tracking is not None:
        stopped = isinstance(err, (KeyboardInterrupt, SystemExit))
        tracking.call("end_sweep", "KILLED" if stopped else "FAILED",
                      None if stopped else " ".join(str(err).split()) or type(err).__name__,
                      timeout=END_RUN_WAIT_S)
