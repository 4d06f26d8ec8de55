"""The cluster a sweep runs on, and the storage it writes to: what is visible, and whether it is fit.

Checked before any trial, because a sweep that cannot place one trial, or that spans nodes while its
run directory or MLflow store is local to one, would otherwise fail (or silently lose results) hours
in. ``plan`` uses the same functions without starting a Ray of its own. The arithmetic (what fits,
which filesystem is shared) lives in ``estimate``; this module asks Ray, torch and the OS.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

from smctune.errors import UserError


def visible_gpus(start_ray: bool) -> float:
    """GPUs Ray sees. ``plan`` does not start Ray: it asks torch, which sees what a local Ray would."""
    if start_ray or os.environ.get("RAY_ADDRESS"):
        from smctune.sweep.ray_session import ensure_ray

        return float(ensure_ray().get("GPU", 0))
    import torch

    return float(torch.cuda.device_count())


def ray_running() -> bool:
    """Whether this process is connected to Ray already (no Ray import just to find out)."""
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def ray_nodes() -> list:
    """``ray.nodes()`` when connected, else none (what ``environment.json`` records)."""
    if not ray_running():
        return []
    import ray

    return ray.nodes()


def shutdown_ray() -> None:
    """Disconnect from Ray, stopping the local instance this process started."""
    if "ray" in sys.modules:  # no Ray import just to find nothing to stop
        from smctune.sweep.ray_session import stop_ray

        stop_ray()


def physical_memory() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float("inf")  # unknown: memory does not limit the estimate


def read_mounts() -> str:
    try:
        return Path("/proc/mounts").read_text()
    except OSError:
        return ""  # not Linux: no filesystem is known to be shared; --shared-storage says so


def plan_cluster():
    """(cluster, ray.nodes(), driver node id): the Ray cluster at RAY_ADDRESS, else this machine as
    a local Ray would see it (plan starts no Ray)."""
    from smctune.sweep import estimate

    if os.environ.get("RAY_ADDRESS"):
        from smctune.sweep.ray_session import ensure_ray

        ensure_ray()
        import ray

        nodes = ray.nodes()
        return (estimate.cluster_from_ray_nodes(nodes, f"Ray cluster at {os.environ['RAY_ADDRESS']}"),
                nodes, ray.get_runtime_context().get_node_id())
    import torch

    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return estimate.local_cluster(os.cpu_count() or 1, names, physical_memory()), [], None


def multinode_problems(spec, nodes, driver, request: dict, shared_storage: bool,
                       default_mlflow: bool) -> list:
    """Why a sweep on this Ray cluster must not start: it spans nodes, and the run directory or the
    MLflow store is local to this node (empty when the sweep stays on the driver's node)."""
    from smctune.sweep import estimate

    why = estimate.spans_nodes(nodes, driver, request, connected=bool(os.environ.get("RAY_ADDRESS")))
    if not why:
        return []
    mounts = estimate.parse_mounts(read_mounts())
    storage = str(Path(spec.run_dir).parent)
    problems = [estimate.storage_problem(storage, shared_storage, mounts, why),
                estimate.mlflow_problem(spec.mlflow_uri, mounts, storage, shared_storage, why,
                                        default=default_mlflow, cwd=os.getcwd())]
    return [problem for problem in problems if problem]


def check_cluster(spec, space, shared_storage: bool, default_mlflow: bool,
                  warn: Callable[[str], None] = print) -> None:
    """Before any trial: one trial must fit on a node, and a sweep that spans nodes needs
    --storage on a shared filesystem and an MLflow store other machines can reach. Asks Ray (the
    cluster at RAY_ADDRESS, else the sweep's own local instance, started here rather than later),
    so what is checked is exactly what the trials will be scheduled on. Raises ``UserError`` when
    the sweep must not start; ``warn`` is told what may still hold it up."""
    from smctune.config.search_space import trial_resources
    from smctune.sweep import estimate
    from smctune.sweep.ray_session import ensure_ray

    resources = trial_resources(spec, space)
    request = estimate.ray_request(resources.cpu, resources.gpu, resources.memory_gb)
    connected = bool(os.environ.get("RAY_ADDRESS"))
    source = "--gpus-per-trial" if spec.gpus_per_trial is not None else f"preset {spec.preset}"
    ensure_ray()
    import ray

    nodes = ray.nodes()
    cluster = estimate.cluster_from_ray_nodes(nodes, "")
    if estimate.concurrency(cluster, request)[0] == 0:
        reason = estimate.unfit_reason(cluster, request)
        if not connected:
            raise UserError(f"a trial cannot run on this machine: {reason} (resources from {source}; "
                            "see `smctune plan`)")
        warn(f"warning: no node can hold a trial yet ({reason}); the sweep waits for the autoscaler "
             "to add one")
    problems = multinode_problems(spec, nodes, ray.get_runtime_context().get_node_id(), request,
                                  shared_storage, default_mlflow)
    if problems:
        raise UserError("; also, ".join(problems))


def check_writable(run_dir: Path) -> None:
    """Create the run directory and prove a file can be written there, before Ray starts trials."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"run directory {run_dir} is not writable: {err.strerror or err}") from None
