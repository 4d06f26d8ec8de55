"""Every MLflow call of a sweep, in order, on one thread of its own.

Why a thread: the calls come from Tune's callbacks, which run on Tune's scheduling loop. A run's
creation is several round trips (run, tags, parameters in batches of 100), each evaluation another,
and on a remote tracking server each is network latency the loop would otherwise spend not starting
trials. Queued here, the loop only appends. The tracker itself (its store opened, the sweep's
parent run found or created) is built by the first call, while the first trials run instead of
before any trial can start (benchmarks/bench_sweep.py); the CLI imports MLflow during Ray's start-up.

Tracking never stops a sweep: the run directory's records are the source of truth and ``smctune
report`` needs nothing else. A failing call is reported through ``on_error`` and the sweep goes on.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Optional


class TrackerThread:
    """``submit(method, *args)`` queues ``tracker.method(*args)``; the tracker is built by ``make``
    on the thread, at the first call. ``drain()`` waits for everything queued so far."""

    def __init__(self, make: Callable[[], Any], on_error: Optional[Callable[[str, BaseException], None]] = None):
        self._make = make
        self._tracker: Any = None
        self._failed: Optional[BaseException] = None
        self.on_error = on_error
        self._pool: Optional[ThreadPoolExecutor] = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="smctune-mlflow")

    @classmethod
    def around(cls, tracker) -> "TrackerThread":
        """``tracker`` itself when it already is one, else a thread calling this ready tracker."""
        return tracker if isinstance(tracker, cls) else cls(lambda: tracker)

    def submit(self, method: str, *args: Any) -> Future:
        if self._pool is None:  # an unpickled copy (Tune saves its callbacks): nothing to track with
            done: Future = Future()
            done.set_result(None)
            return done
        return self._pool.submit(self._call, method, args)

    def call(self, method: str, *args: Any, timeout: Optional[float] = None) -> Any:
        """Queued behind everything before it, and waited for (at most ``timeout`` seconds: then it
        stays queued and this returns); ``None`` when it failed or is not done yet."""
        try:
            return self.submit(method, *args).result(timeout=timeout)
        except FutureTimeout:
            return None

    def drain(self) -> None:
        self.submit("__drain__").result()

    def close(self) -> None:
        """Everything queued is done, and the thread ends."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    @property
    def tracker(self) -> Any:
        """The tracker once built (after a drained call), else ``None``."""
        return self._tracker

    def _call(self, method: str, args: tuple) -> Any:
        if method == "__drain__":
            return None
        try:
            if self._tracker is None:
                if self._failed is not None:
                    return None  # said once, when building it failed
                self._tracker = self._make()
            return getattr(self._tracker, method)(*args)
        except Exception as err:  # noqa: BLE001 - tracking must not stop a sweep
            if self._tracker is None:
                self._failed = err
            if self.on_error is not None:
                self.on_error(method, err)
            return None

    def __getstate__(self) -> dict:
        # Tune pickles run_config.callbacks into its experiment state; the copy never tracks
        return {"_make": None, "_tracker": None, "_failed": None, "on_error": None, "_pool": None}
