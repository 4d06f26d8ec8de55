"""The sweep's MLflow calls on their own thread: in order, built lazily, never raising into Tune."""
import pickle
import threading

from smctune.tracking.thread import TrackerThread


class Recorder:
    def __init__(self):
        self.calls = []
        self.thread = threading.current_thread().name

    def started(self, name):
        self.calls.append(("started", name))
        return f"run-{name}"

    def result(self, name, value):
        self.calls.append(("result", name, value))

    def broken(self):
        raise RuntimeError("server down")


def test_calls_run_in_order_on_one_thread_and_the_tracker_is_built_at_the_first_call():
    built = []

    def make():
        built.append(threading.current_thread().name)
        return Recorder()

    tracking = TrackerThread(make)
    assert built == [] and tracking.tracker is None          # nothing built before a call
    first = tracking.submit("started", "a")
    for i in range(50):
        tracking.submit("result", "a", i)
    tracking.drain()
    assert first.result() == "run-a"
    assert built and built[0].startswith("smctune-mlflow")
    assert tracking.tracker.calls == [("started", "a")] + [("result", "a", i) for i in range(50)]


def test_failures_are_reported_not_raised_and_a_failed_build_is_reported_once():
    errors = []
    tracking = TrackerThread(Recorder, on_error=lambda event, err: errors.append((event, str(err))))
    assert tracking.call("broken") is None
    assert errors == [("broken", "server down")]

    def cannot_build():
        raise ConnectionError("no tracking server at http://nowhere:5000")

    errors.clear()
    down = TrackerThread(cannot_build, on_error=lambda event, err: errors.append((event, str(err))))
    assert down.call("started", "a") is None and down.call("result", "a", 1) is None
    assert errors == [("started", "no tracking server at http://nowhere:5000")]


def test_around_wraps_a_ready_tracker_and_keeps_a_thread_as_it_is():
    recorder = Recorder()
    wrapped = TrackerThread.around(recorder)
    assert wrapped.call("started", "b") == "run-b" and recorder.calls == [("started", "b")]
    assert TrackerThread.around(wrapped) is wrapped


def test_a_pickled_copy_tracks_nothing():
    """Tune pickles its callbacks (which hold the thread) into the experiment state."""
    tracking = TrackerThread(Recorder)
    tracking.call("started", "c")
    copy = pickle.loads(pickle.dumps(tracking))
    assert copy.submit("started", "d").result() is None
    assert tracking.tracker.calls == [("started", "c")]


def test_close_finishes_the_queue_and_ends_the_thread():
    tracking = TrackerThread(Recorder)
    for i in range(20):
        tracking.submit("result", "x", i)
    tracking.close()
    assert len(tracking.tracker.calls) == 20
    assert tracking.submit("started", "late").result() is None   # after close: nothing is tracked


def test_a_call_waited_for_at_most_a_timeout_stays_queued():
    """The sweep's parent run is ended before Ray stops, waiting a bounded time for a slow server."""
    release = threading.Event()

    class Slow(Recorder):
        def started(self, name):
            release.wait(5)
            return super().started(name)

    tracking = TrackerThread(Slow)
    tracking.submit("started", "a")
    assert tracking.call("result", "a", 1, timeout=0.05) is None   # behind the slow call
    release.set()
    tracking.close()
    assert tracking.tracker.calls == [("started", "a"), ("result", "a", 1)]
