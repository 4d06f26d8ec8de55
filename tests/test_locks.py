"""The lock on a run directory and on a dense-cache entry (``smctune.rundir.lock``): one holder, the
holder named to the next, stale locks taken over, exactly one winner of a race."""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from smctune.errors import UserError
from smctune.rundir.lock import RunLock


def _content(path):
    for _ in range(50):   # a refresh may be rewriting it this very moment
        try:
            return json.loads(path.read_text())
        except ValueError:
            time.sleep(0.01)
    return json.loads(path.read_text())


def test_second_acquire_is_refused_naming_the_holder(tmp_path):
    path = tmp_path / "run" / "sweep.lock"
    with RunLock(path, "sweep csqa", what="run directory run", refresh_every_s=None):
        held = _content(path)
        assert {"host", "pid", "started_at", "updated_at", "purpose"} <= set(held)
        with pytest.raises(UserError) as caught:
            RunLock(path, "sweep csqa again", what="run directory run").acquire()
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith("run directory run is in use by another smctune (sweep csqa;")
        assert f"host {held['host']}" in message and f"pid {os.getpid()}" in message
        assert "started 20" in message and str(path) in message
        assert _content(path)["token"] == held["token"]   # the refusal left the holder's file alone
    assert not path.exists()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_lock_of_a_dead_process_on_this_machine_is_taken_over(tmp_path):
    path = tmp_path / "sweep.lock"
    first = RunLock(path, "crashed driver", refresh_every_s=None).acquire()
    stale = dict(_content(path), pid=_dead_pid())
    path.write_text(json.dumps(stale))
    first._token = None   # this object "died": it must not release what it no longer holds
    with RunLock(path, "new driver", refresh_every_s=None):
        now = _content(path)
        assert now["pid"] == os.getpid() and now["purpose"] == "new driver"
    assert not path.exists()
    assert not list(tmp_path.glob("*.aside"))


def test_a_lock_not_updated_for_longer_than_the_bound_is_taken_over_from_any_host(tmp_path):
    path = tmp_path / "sweep.lock"
    old = time.time() - 1000
    path.write_text(json.dumps({"host": "elsewhere", "machine": "elsewhere:x", "pid": 1,
                                "started_at": old, "updated_at": old, "purpose": "other", "token": "t"}))
    os.utime(path, (old, old))
    with pytest.raises(UserError, match="host elsewhere, pid 1"):
        RunLock(path, "new", stale_after_s=2000).acquire()   # within the bound: still held
    with RunLock(path, "new", stale_after_s=60, refresh_every_s=None):
        assert _content(path)["pid"] == os.getpid()


def test_a_fresh_lock_of_another_host_is_not_taken_over(tmp_path):
    path = tmp_path / "sweep.lock"
    now = time.time()
    path.write_text(json.dumps({"host": "elsewhere", "machine": "elsewhere:x", "pid": 123456789,
                                "started_at": now, "updated_at": now, "purpose": "other", "token": "t"}))
    with pytest.raises(UserError, match="host elsewhere, pid 123456789"):
        RunLock(path, "new", stale_after_s=60).acquire()


def test_refresh_keeps_a_lock_fresh_and_notices_a_takeover(tmp_path):
    path = tmp_path / "sweep.lock"
    lock = RunLock(path, "driver", stale_after_s=60, refresh_every_s=None).acquire()
    before = _content(path)["updated_at"]
    time.sleep(0.01)
    assert lock.refresh() and _content(path)["updated_at"] > before and lock.lost is None
    path.unlink()   # taken over, in effect: the next holder's file replaces ours
    other = RunLock(path, "other", refresh_every_s=None).acquire()
    assert not lock.refresh() and "taken over" in lock.lost
    assert _content(path)["purpose"] == "other"
    lock.release()   # not ours any more: left alone
    assert _content(path)["purpose"] == "other"
    other.release()
    assert not path.exists()


def test_the_refresh_thread_rewrites_updated_at(tmp_path):
    path = tmp_path / "sweep.lock"
    with RunLock(path, "driver", refresh_every_s=0.05):
        first = _content(path)["updated_at"]
        deadline = time.time() + 5
        while _content(path)["updated_at"] == first and time.time() < deadline:
            time.sleep(0.02)
        assert _content(path)["updated_at"] > first


def test_release_removes_only_our_own_lock(tmp_path):
    path = tmp_path / "sweep.lock"
    ours = RunLock(path, "ours", refresh_every_s=None).acquire()
    foreign = {"host": "elsewhere", "machine": "m", "pid": 1, "started_at": 1.0,
               "updated_at": time.time(), "purpose": "theirs", "token": "theirs"}
    path.write_text(json.dumps(foreign))
    ours.release()
    assert _content(path) == foreign
    assert not list(tmp_path.glob("*.aside"))


def test_an_empty_lock_file_counts_as_held_until_it_is_old(tmp_path):
    path = tmp_path / "sweep.lock"
    path.write_text("")   # a holder between create and write
    with pytest.raises(UserError, match="being written or is unreadable"):
        RunLock(path, "new", stale_after_s=60).acquire()
    old = time.time() - 120
    os.utime(path, (old, old))   # ... or one that crashed right there
    with RunLock(path, "new", stale_after_s=60, refresh_every_s=None):
        assert _content(path)["purpose"] == "new"


def test_acquire_waits_for_a_holder_to_let_go(tmp_path):
    path = tmp_path / "sweep.lock"
    holder = RunLock(path, "first", refresh_every_s=None).acquire()
    import threading

    threading.Timer(0.3, holder.release).start()
    with RunLock(path, "second", refresh_every_s=None).acquire(wait_s=5):
        assert _content(path)["purpose"] == "second"


def _contend(path, barrier, results, done):
    """One racer: wait for the others, then try to take the (stale) lock; a winner holds it until
    every racer has tried, so a late racer cannot win after a release."""
    lock = RunLock(path, f"racer {os.getpid()}", stale_after_s=60, refresh_every_s=None)
    barrier.wait()
    try:
        lock.acquire()
    except UserError:
        results.put("refused")
        return
    results.put("won")
    done.wait(20)
    lock.release()


@pytest.mark.parametrize("start", ["free", "stale"])
def test_racing_processes_exactly_one_wins_each_time(tmp_path, start):
    context = multiprocessing.get_context("fork")
    racers, rounds = 5, 8
    for attempt in range(rounds):
        path = tmp_path / f"race{attempt}.lock"
        if start == "stale":   # a dead driver's lock: every racer sees it stale and takes it over
            path.write_text(json.dumps({"host": "h", "machine": "gone", "pid": 1, "started_at": 1.0,
                                        "updated_at": 1.0, "purpose": "dead", "token": "dead"}))
            os.utime(path, (1.0, 1.0))
        barrier, results, done = context.Barrier(racers), context.Queue(), context.Event()
        procs = [context.Process(target=_contend, args=(path, barrier, results, done))
                 for _ in range(racers)]
        for proc in procs:
            proc.start()
        outcomes = sorted(results.get(timeout=20) for _ in procs)
        done.set()
        for proc in procs:
            proc.join(20)
        assert outcomes == ["refused"] * (racers - 1) + ["won"], (attempt, outcomes)
        assert not path.exists()
        assert not list(tmp_path.glob("*.aside"))
