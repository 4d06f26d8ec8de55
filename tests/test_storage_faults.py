"""Storage and tracking faults in the driver (issue 18): a write into the run directory that fails
mid-sweep stops the sweep with one line naming the path and the errno, leaves no MLflow run RUNNING,
keeps what was recorded, and ``resume`` finishes the rest without rerunning a finished trial; an
unreachable ``http(s)://`` tracking server is refused in seconds, before Ray starts.

The fault is injected into the one atomic writer (``rundir.layout.atomic_path``): the driver runs
as root here, so a read-only run directory would not stop it."""
from __future__ import annotations

import contextlib
import errno
import http.server
import json
import os
import socket
import threading
import time

import pytest

from smctune.errors import UserError
from smctune.rundir import layout
from smctune.rundir.layout import RunDir
from smctune.sweep.driver import resume, sweep
from smctune.tracking.tracker import check_reachable
from test_sweep import FAST_SPACE


class DiskFull:
    """Every write of a trial record (final or live) fails with ENOSPC once the first final record
    exists, ``failures`` times; then the disk has room again."""

    def __init__(self, failures: int):
        self.failures, self.failed, self.armed = failures, [], False
        self.original = layout.atomic_path

    @contextlib.contextmanager
    def __call__(self, path):
        with self.original(path) as staging:
            yield staging
            parts = os.fspath(path).split(os.sep)
            if self.armed and len(self.failed) < self.failures and ("results" in parts or "live" in parts):
                self.failed.append(os.fspath(path))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
            if "results" in parts:
                self.armed = True


def _records(run: RunDir) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in run.results_dir.glob("*.json")}


def _runs(run: RunDir) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run.mlflow_db}")
    return client.search_runs([client.get_experiment_by_name(f"smctune/{run.root.name}").experiment_id])


def test_a_failed_write_stops_the_sweep_in_one_line_and_resume_finishes_it(tmp_path, ray_session,
                                                                          monkeypatch, capsys):
    from smctune.cli.main import main

    space = tmp_path / "space.yaml"
    space.write_text(FAST_SPACE.replace("max_steps: 8", "max_steps: 4"))
    storage = tmp_path / "runs"
    disk = DiskFull(failures=10**6)   # full until the user frees it
    monkeypatch.setattr(layout, "atomic_path", disk)
    code = main(["sweep", "csqa", "--methods", "dense,omp_before", "--sparsities", "0.5",
                 "--preset", "smoke", "--search-space", str(space), "--storage", str(storage),
                 "--name", "full", "--max-concurrent", "2", "--quiet"])
    run = RunDir(storage / "full")
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1, lines    # the environment's to fix: no traceback
    assert lines[0].startswith(f"smctune: error: cannot write {disk.failed[0]}: No space left")
    assert "[ENOSPC]" in lines[0] and f"smctune resume {run.root}" in lines[0]

    before = _records(run)
    assert [r["status"] for r in before.values()] == ["ok"]   # the one written before the fault
    runs = _runs(run)
    assert "RUNNING" not in {r.info.status for r in runs}
    assert {r.info.status for r in runs if r.data.tags.get("kind") == "sweep"} == {"FAILED"}

    monkeypatch.setattr(layout, "atomic_path", disk.original)    # the disk has room again
    again = resume("full", storage=storage, report=False)
    assert (again.trials_total, again.trials_skipped, again.trials_run) == (2, 1, 1)
    after = _records(run)
    assert {r["status"] for r in after.values()} == {"ok"} and len(after) == 2
    for trial_id, record in before.items():      # finished before the fault: not run again
        assert after[trial_id]["ended_at"] == record["ended_at"]
    statuses = {(r.data.tags.get("kind"), r.info.status) for r in _runs(run)}
    assert ("sweep", "FINISHED") in statuses and not any(s == "RUNNING" for _, s in statuses)


def test_after_a_failed_write_open_trials_are_recorded_killed_where_the_storage_takes_it(tmp_path,
                                                                                     monkeypatch):
    """The listeners alone (no Ray): the final record of one trial fails once (a transient fault);
    the sweep's stop then records the other open trial ``killed``, and every MLflow run ends."""
    from smctune.rundir.records import RecordKeeper
    from smctune.sweep.progress import ProgressPrinter
    from smctune.sweep.tune_events import Listeners, StorageFault
    from smctune.tracking.thread import TrackerThread
    from test_status import make_run

    class Tracker:
        def __init__(self):
            self.ended = {}

        def started(self, spec):
            return f"run-{spec.trial_id}"

        def finished(self, trial_id, status, error=None, record=None):
            self.ended[trial_id] = (status, record is not None)

        def close_open_runs(self):
            pass

    tracker = Tracker()
    run, trials = make_run(tmp_path, methods=("omp_before",), sparsities=(0.5, 0.7))
    listeners = Listeners(RecordKeeper(run, chance=0.2), TrackerThread(lambda: tracker),
                          ProgressPrinter(2, verbosity=0))
    first, second = [t for t in trials.values() if t.method == "omp_before"]
    listeners.started(first)
    listeners.started(second)
    disk = DiskFull(failures=1)
    disk.armed = True
    monkeypatch.setattr(layout, "atomic_path", disk)
    listeners.finished(first.trial_id, "ok")          # its record fails: remembered, not raised
    with pytest.raises(StorageFault, match=r"cannot write .*results.*\[ENOSPC\]"):
        listeners.check()
    listeners.abort_open("sweep stopped")             # the disk took writes again
    listeners.tracking.close()
    records = _records(RunDir(run))
    assert list(records) == [second.trial_id] and records[second.trial_id]["status"] == "killed"
    assert tracker.ended == {first.trial_id: ("failed", False), second.trial_id: ("killed", True)}


def test_an_unreachable_tracking_server_is_refused_in_seconds(tmp_path):
    started = time.monotonic()
    with pytest.raises(UserError, match=r"http://127\.0\.0\.1:9 is unreachable \(Connection refused\)"):
        check_reachable("http://127.0.0.1:9")
    assert time.monotonic() - started < 3

    silent = socket.socket()           # accepts the connection, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    uri = f"http://user:secret@127.0.0.1:{silent.getsockname()[1]}/mlflow"
    started = time.monotonic()
    with pytest.raises(UserError) as caught:
        check_reachable(uri, timeout=1.0)
    assert time.monotonic() - started < 3
    assert "no answer within 1s" in str(caught.value) and "secret" not in str(caught.value)
    silent.close()

    check_reachable(f"sqlite:///{tmp_path}/mlflow.db")   # not a server: left to MLflow
    assert not (tmp_path / "mlflow.db").exists()


def test_any_answer_but_a_gateway_error_counts_as_reachable():
    answers = {"/health": 200, "/prefix/health": 404, "/down/health": 503}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(answers.get(self.path, 500))
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        check_reachable(base)
        check_reachable(base + "/prefix/")
        with pytest.raises(UserError, match="HTTP 503"):
            check_reachable(base + "/down")
    finally:
        server.shutdown()


def test_a_sweep_with_an_unreachable_tracking_server_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")   # were it not checked: fail fast
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    storage = tmp_path / "runs"
    started = time.monotonic()
    with pytest.raises(UserError, match="127.0.0.1:9 is unreachable"):
        sweep("csqa", methods="dense", sparsities=(0.5,), preset="smoke", storage=storage,
              name="x", mlflow_uri="http://127.0.0.1:9", verbosity=0, report=False)
    assert time.monotonic() - started < 5
    assert not storage.exists()
