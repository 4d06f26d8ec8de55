"""Tune's trial events, turned into smctune's: a Tune callback (``event_bridge``) calls the
``Listeners``, which fan each event out to the run directory's records, MLflow and the progress lines.

Records and progress are written on Tune's loop (small local files, a line of output); MLflow calls
are queued to their own thread (``tracking.thread``), so a slow tracking server never holds up
scheduling.

A write that fails (a full disk, a read-only or vanished mount) is not raised into Tune: Tune would
take it for the trial's own error, retry the trial and carry on, training trials whose results could
not be kept. The listeners remember the first failure instead and Tune's loop stops at its next step
(``StorageFault``), as for a SIGTERM. Every write counts, live records included: they go to the same
storage as the final records, so the first one that fails says the next final record would be lost
too, and stopping then loses the least work. What was recorded before stays, and ``resume`` runs
the rest.
"""
from __future__ import annotations

import contextlib
import errno as errno_codes
from pathlib import Path
from typing import Optional

from smctune.config.specs import TrialSpec
from smctune.errors import UserError
from smctune.rundir.records import STATUS_FAILED, STATUS_KILLED, RecordKeeper
from smctune.sweep.cell_keys import trial_id_of
from smctune.sweep.progress import ProgressPrinter
from smctune.sweep.ray_session import sigterm_received
from smctune.tracking.thread import TrackerThread


def event_bridge(listener: "Listeners", specs: dict):
    """A Tune callback that turns Ray's trial events into calls on smctune's listeners."""
    from ray import tune

    ids: dict = {}  # Ray's trial id -> ours; results arrive every evaluation, build the spec once

    def trial_id(trial) -> str:
        if trial.trial_id not in ids:
            ids[trial.trial_id] = trial_id_of(trial.config)
        return ids[trial.trial_id]

    class Bridge(tune.Callback):
        def on_step_begin(self, iteration, trials, **info):
            if sigterm_received():   # a SIGTERM whose KeyboardInterrupt a finalizer swallowed
                raise KeyboardInterrupt
            listener.check()   # a write failed since the last step: stop here

        def on_trial_start(self, iteration, trials, trial, **info):
            # a planned trial, or a tuning of a searched cell (its spec comes with the config)
            key = trial_id(trial)
            listener.started(specs.get(key) or TrialSpec.from_dict(trial.config["trial"]))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            listener.result(trial_id(trial), result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            listener.finished(trial_id(trial), "ok")

        def on_trial_recover(self, iteration, trials, trial, **info):
            listener.recovered(trial_id(trial), one_line_error(trial))

        def on_trial_error(self, iteration, trials, trial, **info):
            listener.finished(trial_id(trial), STATUS_FAILED, one_line_error(trial))

    return Bridge()


def one_line_error(trial) -> str:
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


class StorageFault(UserError):
    """A write into the run directory failed: the sweep stops, with this one line (the path, the
    reason and its errno, and how to continue). A ``UserError``: a full disk or a lost mount is the
    environment's to fix, not a bug to show a traceback for, and ``resume`` continues the sweep."""


def describe_write_failure(err: BaseException, run_dir) -> str:
    """One line for a failed write: ``layout.atomic_path``'s "cannot write <path>: <reason>" (or a
    bare ``OSError``'s), the errno's name, and how to continue."""
    cause = err if isinstance(err, OSError) else getattr(err, "__context__", None)
    code = getattr(err, "errno", None) or getattr(cause, "errno", None)
    name = f" [{errno_codes.errorcode.get(code, code)}]" if code else ""
    if isinstance(err, OSError):
        text = f"cannot write {err.filename or run_dir}: {err.strerror or err}"
    else:
        text = " ".join(str(err).split())
    return (f"{text}{name}; the sweep stopped, its records so far are intact: fix the storage and "
            f"continue with: smctune resume {run_dir}")


class Listeners:
    """Fan-out to records, MLflow and progress, keeping the MLflow run id in the record. A failed
    record write is remembered (``fault``) and stops the sweep at Tune's next step (``check``)."""

    RUN_ID_WAIT_S = 30.0   # a finished trial's record waits this long at most for its MLflow run id

    def __init__(self, records: RecordKeeper, tracking: TrackerThread, printer: ProgressPrinter):
        self.records, self.tracking, self.printer = records, tracking, printer
        self.tracking.on_error = self._tracking_failed
        self._run_ids: dict = {}
        self._tracker_warned = False
        self.fault: Optional[StorageFault] = None

    @contextlib.contextmanager
    def storage(self):
        """Around a record write: a failure is remembered, not raised (see the module docstring);
        ``ok`` is False after the block when it failed."""
        outcome = _Outcome()
        try:
            yield outcome
        except (UserError, OSError) as err:   # layout.write_atomic's one line, or a bare OSError
            outcome.ok = False
            self.write_failed(err)

    def write_failed(self, err: BaseException) -> None:
        """Remember the first failed write (callable from any thread, e.g. the heartbeat's)."""
        if self.fault is None:
            self.fault = StorageFault(describe_write_failure(err, self.records.run.root))

    def check(self) -> None:
        """Raise the remembered write failure, if any: the sweep stops."""
        if self.fault is not None:
            raise self.fault

    def started(self, spec: TrialSpec) -> None:
        if spec.trial_id in self.records.open:
            with self.storage():
                self.records.restarted(spec.trial_id)  # Ray restarting a failed trial: same record, same run
            return
        with self.storage():
            self.records.started(spec)   # opened in memory even when its live record failed
        self._run_ids[spec.trial_id] = self.tracking.submit("started", spec)
        self.printer.started(spec)

    def result(self, trial_id: str, metrics: dict) -> None:
        with self.storage():
            self.records.result(trial_id, metrics)
        self.tracking.submit("result", trial_id, dict(metrics))
        self.printer.result(trial_id, metrics)

    def recovered(self, trial_id: str, error: str) -> None:
        with self.storage():
            self.records.recovered(trial_id, error)
        self.tracking.submit("recovered", trial_id, error)
        self.printer.recovered(trial_id, error)

    def finished(self, trial_id: str, status: str, error: Optional[str] = None) -> None:
        self.records.attach(trial_id, "mlflow_run_id", self._run_id(trial_id))
        record = None
        with self.storage() as write:
            record = self.records.finished(trial_id, status, error)
        if not write.ok:   # not in the run directory, so resume runs it again
            error = f"{error}; record not written" if error else "record not written (storage failed)"
            status = status if status == STATUS_KILLED else STATUS_FAILED
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

    def skipped(self, spec: TrialSpec, status: str, reason: str) -> None:
        """A trial that never ran gets a record saying why (``RecordKeeper.write_skipped``)."""
        with self.storage():
            self.records.write_skipped(spec, status, reason)

    def abort_open(self, reason: str) -> None:
        """Record every open trial ``killed`` (where the storage still takes it) and end its MLflow
        run, so none stays RUNNING."""
        for trial_id in list(self.records.open):
            self.finished(trial_id, STATUS_KILLED, reason)
        self.tracking.submit("close_open_runs")

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks (which hold this) into the experiment state
        return dict(self.__dict__, _run_ids={}, fault=None)


class _Outcome:
    ok = True
