"""The driver's Ray: connect or start it quietly, tell Tune how many trials may wait for resources,
and turn SIGTERM into the same orderly stop as Ctrl-C.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Optional

from smctune.config.settings import Resources

RAY_QUIET_ENV = {
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_DEDUP_LOGS": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",  # the legacy reporter honours verbose=0; the new one still prints boxes
    # Tune's own Ctrl-C handler makes fit() return as if finished (and suggests Tuner.restore);
    # smctune wants the KeyboardInterrupt, to mark open trials killed and stop before stage 2.
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
}
PENDING_TRIALS_ENV = "TUNE_MAX_PENDING_TRIALS_PG"
# glibc gives every thread that allocates its own malloc arena, up to 8 per core, and memory freed
# into one arena is not reused by another. A Ray worker runs the trial in a thread of its own beside
# Ray's threads: measured on a small CSQA trial (benchmarks/bench_trial.py), its peak RSS was 3.6 GB
# against 2.7 GB for the same training in a plain process, and 2.7 GB with two arenas. Applied to the
# job's workers (also on a cluster); a value in the driver's environment wins.
WORKER_MALLOC_ARENAS = "2"


def worker_env() -> dict:
    """Environment variables for the sweep's Ray workers."""
    return {"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", WORKER_MALLOC_ARENAS)}


def ensure_ray(num_cpus: Optional[int] = None) -> dict:
    """Connect to ``RAY_ADDRESS`` when set (a cluster, or ``auto`` for the last one started on this
    machine), else start a quiet local instance of this sweep's own."""
    for key, value in RAY_QUIET_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    if not ray.is_initialized():
        kwargs = dict(logging_level=logging.ERROR, log_to_driver=False,
                      runtime_env={"env_vars": worker_env()})
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], **kwargs)
        else:
            # "local": a new instance, never one found by Ray's auto-detection (the last `ray start`
            # on this machine, which may be someone else's cluster); joining one is RAY_ADDRESS's job
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
    return ray.cluster_resources()


def stop_ray() -> None:
    """Disconnect, and stop the local instance when this process started it."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def pending_trials_limit(resources: Resources) -> int:
    """How many trials Tune may keep waiting for resources: one per slot the connected cluster has
    now. Tune's "auto" allows a custom searcher a single waiting trial, so trials would start one
    after another, each waiting for the previous one's placement group and actor, while the other
    slots idle. smctune's cell searcher emits planned trials (and at most
    ``max_concurrent_per_cell`` Optuna tunings of a cell in flight), so it loses nothing by having
    them queued. An explicit ``TUNE_MAX_PENDING_TRIALS_PG`` wins: cluster.yaml sets 256 so an
    autoscaler sees the whole demand of an empty cluster."""
    import ray

    from smctune.sweep import estimate

    request = estimate.ray_request(resources.cpu, resources.gpu, resources.memory_gb)
    slots, _ = estimate.concurrency(estimate.cluster_from_ray_nodes(ray.nodes(), ""), request)
    return max(1, slots)


@contextlib.contextmanager
def pending_trials(limit: int):
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


@contextlib.contextmanager
def sigterm_interrupts():
    """``ray job stop``, a batch scheduler or a preempted head sends SIGTERM: while the block runs,
    treat it like Ctrl-C, so open trials are recorded as killed and their MLflow runs end KILLED.
    Entered after ``ray.init``, which sets a SIGTERM handler of its own that would exit without that
    bookkeeping; the previous handler is back when the block ends (a notebook keeps its own)."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum, frame):
        _TERMINATED.set()
        raise KeyboardInterrupt

    _TERMINATED.clear()
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Set by the SIGTERM handler. An exception raised in a signal handler is lost ("Exception ignored")
# when the signal lands while a garbage-collection callback runs (seen with SQLAlchemy's weakref
# finalizers in MLflow's store); Tune's loop then raises it again at its next step.
_TERMINATED = threading.Event()


def sigterm_received() -> bool:
    """Module-level so Tune's pickled callback refers to it by name, not to the Event's lock."""
    return _TERMINATED.is_set()
