"""One call on a helper thread, so the sweep's fixed start-up and tear-down costs overlap.

Ray stays on the main thread (started from a helper thread, its processes did not survive here), and
much of its start-up and shut-down is waiting for those processes: importing Ray Tune and MLflow
fits in the first wait, writing the report in the second. On a short sweep these fixed costs are a
visible share of the wall time (benchmarks/bench_sweep.py).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable


class Background:
    """``fn(*args)`` started now on its own thread; ``result()`` waits and returns its value or
    re-raises its exception in the caller, so an error there surfaces where the value is used."""

    def __init__(self, fn: Callable[..., Any], *args: Any):
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smctune-background")
        self._future = pool.submit(fn, *args)
        pool.shutdown(wait=False)

    def result(self) -> Any:
        return self._future.result()
