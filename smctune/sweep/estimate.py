"""What a sweep costs and whether a cluster can hold it: the numbers ``smctune plan`` prints, and the
rules ``smctune sweep`` checks before a multi-node run.

Everything here is a pure function over plain data (trial specs, Ray's node dicts, the text of
``/proc/mounts``), so it is tested without GPUs, clusters or network filesystems; the CLI gathers the
data. Importing it is cheap: no torch, no ray.

Time model, per trial: ``setup + fine_tunes * (max_steps * step + evaluations * eval)`` seconds, where
``step``, ``eval`` and ``setup`` come from the search space's ``step_seconds`` table for the preset and
device class (``--step-seconds`` replaces ``step``), ``fine_tunes`` is 1 (an LTH trial: one per round)
and ``evaluations`` is ceil(max_steps / eval_every). GPU-hours are trial-hours times the trial's GPU
share; wall-clock replays each stage's trials in order on as many slots as the cluster fits at once
(stage 2 starts when stage 1 has finished). Not counted: pruning itself (SNIP/oBERT calibration), Ray
scheduling and restarts, early stops of collapsed trials.
"""
from __future__ import annotations

import heapq
import math
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable, Iterable, Optional, Sequence
from urllib.parse import unquote, urlparse

GIB = 1024**3
# Ray's per-node resources we schedule on, and how plan names them.
RESOURCE_LABELS = {"CPU": "cpu", "GPU": "gpu", "memory": "memory"}


# ------------------------------------------------------------------------------------- step times

@dataclass(frozen=True)
class StepTime:
    step: float            # seconds per training step, one trial at its resource share
    eval: float = 0.0      # seconds per evaluation of the dev split
    setup: float = 0.0     # seconds per trial before its first step
    device: str = ""       # the device class the numbers are for ("A100", "cpu"); "" = none in the table
    note: str = ""         # where the numbers come from, for the plan output


def _names_device(device: str, accelerator: str) -> bool:
    """``A100`` names ``A100``, ``A100-80G`` and ``NVIDIA A100-SXM4-80GB``, not ``A10G``; ``A10``
    does not name ``A100``."""
    pattern = r"(?<![A-Za-z0-9])" + re.escape(device) + r"(?![A-Za-z0-9])"
    return re.search(pattern, accelerator, flags=re.IGNORECASE) is not None


def pick_step_time(table: dict, gpu: float, accelerators: Sequence[str], override: Optional[float],
                   where: str) -> tuple[Optional[StepTime], str]:
    """The step times for one preset (``table``: device -> {step, eval, setup}).

    A trial without a GPU uses the ``cpu`` entry. A GPU trial uses the first device class of the table
    that the cluster has (``accelerators``: Ray's ``accelerator_type:*`` names or torch device names),
    else the table's first GPU class, said to be assumed. ``override`` (``--step-seconds``) replaces
    the step time and keeps the chosen entry's eval and setup times. Returns (None, why) when neither
    the table nor the override gives a step time."""
    on_cpu = gpu <= 0
    candidates = {name: t for name, t in table.items() if (name.lower() == "cpu") == on_cpu}
    chosen, note = None, ""
    if candidates:
        if on_cpu:
            chosen = next(iter(candidates))
            note = f"{chosen}, {where}"
        else:
            seen = [name for name in candidates if any(_names_device(name, a) for a in accelerators)]
            if seen:
                chosen = seen[0]
                note = f"{chosen}, {where}; the cluster has {chosen} GPUs"
            else:
                chosen = next(iter(candidates))
                have = ", ".join(sorted(set(accelerators))) or "no GPU type"
                note = f"{chosen}, {where}; assumed: the cluster shows {have}"
    if override is not None:
        base = candidates.get(chosen, {}) if chosen else {}
        kept = f"; eval and setup times from {chosen}" if chosen and (base.get("eval") or base.get("setup")) \
            else "; evaluations and setup not counted" if not chosen else ""
        return StepTime(override, base.get("eval", 0.0), base.get("setup", 0.0), chosen or "",
                        f"--step-seconds{kept}"), ""
    if chosen is None:
        kind = "cpu" if on_cpu else "a GPU class (e.g. A100)"
        return None, f"no step time for {kind} in {where}; pass --step-seconds"
    entry = candidates[chosen]
    return StepTime(entry["step"], entry.get("eval", 0.0), entry.get("setup", 0.0), chosen, note), ""


def evaluations(max_steps: int, eval_every: int) -> int:
    """Evaluations of one fine-tune: every ``eval_every`` steps and at the last step."""
    return max(1, math.ceil(max_steps / eval_every)) if eval_every > 0 else 1


def fine_tunes(trial) -> int:
    """Fine-tunes one trial runs (an IMP trial: one per round)."""
    return _schedule(trial).fine_tunes(trial)


def fine_tune_steps(trial) -> int:
    """Updates of one of the trial's fine-tunes (an IMP round: ``round_fraction`` of ``max_steps``)."""
    return _schedule(trial).fine_tune_steps(trial)


def _schedule(trial):
    from smctune.catalog.registry import method_spec
    from smctune.train.schedules import schedule_of

    return schedule_of(method_spec(trial.method))


def trial_seconds(trial, times: StepTime) -> float:
    steps = fine_tune_steps(trial)
    per_fine_tune = steps * times.step + evaluations(steps, trial.train.eval_every) * times.eval
    return times.setup + fine_tunes(trial) * per_fine_tune


def makespan(durations: Sequence[float], slots: int) -> float:
    """Wall-clock of running ``durations`` in the order given on ``slots`` parallel slots, each trial
    starting when a slot frees up (how Tune works through the trials the searcher hands out)."""
    if not durations:
        return 0.0
    finish = [0.0] * max(1, min(slots, len(durations)))
    for duration in durations:
        heapq.heappush(finish, heapq.heappop(finish) + duration)
    return max(finish)


@dataclass(frozen=True)
class Estimate:
    trial_hours: float
    gpu_hours: float
    cpu_hours: float
    stage_seconds: tuple      # (stage, wall seconds) in order; empty when nothing fits
    slots: int

    @property
    def wall_seconds(self) -> float:
        return sum(seconds for _, seconds in self.stage_seconds)


def estimate(trials: Sequence, stage_of: Callable, times: StepTime, cpu: float, gpu: float,
             slots: int) -> Estimate:
    seconds = [trial_seconds(t, times) for t in trials]
    total_h = sum(seconds) / 3600
    stages = []
    if slots > 0:
        for stage in sorted({stage_of(t) for t in trials}):
            batch = [s for t, s in zip(trials, seconds) if stage_of(t) == stage]
            # the cell searcher starts the longest trials first (trial_order.py)
            stages.append((stage, makespan(sorted(batch, reverse=True), slots)))
    return Estimate(total_h, total_h * gpu, total_h * cpu, tuple(stages), slots)


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 72 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


# ------------------------------------------------------------------------------------- clusters

@dataclass(frozen=True)
class Cluster:
    """Alive nodes' schedulable resources (``{"CPU": n, "GPU": n, "memory": bytes}`` each)."""

    where: str
    nodes: tuple
    accelerators: tuple = ()
    connected: bool = False        # a running Ray cluster (an autoscaler may add nodes)
    memory_note: str = ""          # how memory was obtained when it is an estimate

    def total(self, key: str) -> float:
        return sum(node.get(key, 0.0) for node in self.nodes)


def cluster_from_ray_nodes(nodes: Iterable[dict], where: str) -> Cluster:
    """From ``ray.nodes()``: the alive nodes' CPU, GPU and memory, and their accelerator types."""
    alive, accelerators = [], []
    for node in nodes:
        if not node.get("Alive", node.get("alive", False)):
            continue
        resources = node.get("Resources") or {}
        alive.append({key: float(resources.get(key, 0.0)) for key in RESOURCE_LABELS})
        accelerators += [key.split(":", 1)[1] for key in resources if key.startswith("accelerator_type:")]
    return Cluster(where, tuple(alive), tuple(dict.fromkeys(accelerators)), connected=True)


def local_cluster(cpus: int, gpu_names: Sequence[str], memory_bytes: float) -> Cluster:
    """This machine as a local Ray would see it: every CPU and GPU; Ray's ``memory`` resource is
    about 70 % of the available RAM (the rest is its object store)."""
    node = {"CPU": float(cpus), "GPU": float(len(gpu_names)), "memory": 0.7 * memory_bytes}
    return Cluster("this machine (no RAY_ADDRESS)", (node,), tuple(gpu_names),
                   memory_note="about 70 % of RAM, Ray's default")


def ray_request(cpu: float, gpu: float, memory_gb: float) -> dict:
    """A trial's request in Ray's units (memory in bytes); zero entries left out."""
    request = {"CPU": cpu, "GPU": gpu, "memory": memory_gb * GIB}
    return {key: value for key, value in request.items() if value > 0}


def fits_on(node: dict, request: dict) -> int:
    """How many trials fit on one node at once."""
    counts = [math.floor(node.get(key, 0.0) / value + 1e-9) for key, value in request.items() if value > 0]
    return min(counts) if counts else 10**9


def concurrency(cluster: Cluster, request: dict) -> tuple[int, str]:
    """Trials the cluster holds at once (a trial is one bundle: it must fit on one node), and the
    resource that limits it."""
    slots = sum(fits_on(node, request) for node in cluster.nodes)
    per_resource = {key: sum(fits_on(node, {key: value}) for node in cluster.nodes)
                    for key, value in request.items() if value > 0}
    limit = min(per_resource, key=per_resource.get) if per_resource else ""
    return slots, RESOURCE_LABELS.get(limit, limit)


def unfit_reason(cluster: Cluster, request: dict) -> str:
    """Why not even one trial fits: the resources no node has enough of."""
    short = []
    for key, value in request.items():
        largest = max((node.get(key, 0.0) for node in cluster.nodes), default=0.0)
        if largest + 1e-9 < value:
            short.append((format_amount(key, value), format_amount(key, largest)))
    if not short:
        return "no single node has every resource one trial needs"
    return (f"one trial needs {', '.join(need for need, _ in short)} and the largest node has "
            f"{', '.join(have for _, have in short)}")


def format_amount(key: str, value: float) -> str:
    return f"{value / GIB:.1f} GB memory" if key == "memory" else f"{value:g} {key}"


# ------------------------------------------------------------------------------ multi-node rules

# Filesystem types that are the same directory on every machine that mounts them. A bind mount of
# one of these into a container keeps its type, so Docker and Kubernetes mounts are recognised too.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "ceph", "glusterfs", "beegfs", "wekafs",
    "orangefs", "afs", "ocfs2", "gfs2", "panfs",
    "fuse.gcsfuse", "fuse.s3fs", "fuse.goofys", "fuse.juicefs", "fuse.sshfs", "fuse.rclone",
    "fuse.ceph-fuse", "fuse.glusterfs", "fuse.mountpoint-s3", "fuse.geesefs", "fuse.blobfuse2",
})
# FUSE mounts whose type is plain "fuse": recognised by their source.
NETWORK_FUSE_SOURCES = ("mountpoint-s3", "gcsfuse", "s3fs", "goofys", "juicefs", "rclone", "blobfuse")


def parse_mounts(text: str) -> list[tuple[str, str, str]]:
    """``/proc/mounts`` lines -> (source, mount point, type); octal escapes (``\\040``) decoded."""
    def unescape(field: str) -> str:
        return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)

    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            mounts.append((unescape(fields[0]), unescape(fields[1]), fields[2]))
    return mounts


def mount_of(path: str, mounts: Sequence[tuple[str, str, str]]) -> tuple[str, str, str]:
    """The mount holding the absolute ``path``: the longest mount point above it (of equal ones, the
    last listed, which hides the earlier)."""
    best = ("", "/", "")
    best_len = -1
    for source, point, fstype in mounts:
        inside = path == point or point == "/" or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best_len:
            best, best_len = (source, point, fstype), len(point)
    return best


def is_network_mount(mount: tuple[str, str, str]) -> bool:
    source, _, fstype = mount
    if fstype in NETWORK_FILESYSTEMS:
        return True
    return fstype in ("fuse", "fuseblk") and any(name in source for name in NETWORK_FUSE_SOURCES)


def describe_mount(mount: tuple[str, str, str]) -> str:
    source, point, fstype = mount
    return f"{fstype or 'an unknown filesystem'} at {point}" if fstype else f"the filesystem at {point}"


def spans_nodes(nodes: Iterable[dict], driver_node_id: Optional[str], request: dict,
                connected: bool) -> Optional[str]:
    """Why trials may run on another node than the driver's, or None when they cannot: more than one
    alive node, or (on a running cluster) a driver node that cannot hold a trial itself, so every
    trial runs on nodes the autoscaler adds (a head with CPU 0, as this repository's cluster files)."""
    alive = [node for node in nodes if node.get("Alive", node.get("alive", False))]
    if len(alive) > 1:
        return f"{len(alive)} nodes alive"
    if connected and driver_node_id:
        for node in alive:
            if node.get("NodeID") == driver_node_id:
                resources = {key: float((node.get("Resources") or {}).get(key, 0.0)) for key in RESOURCE_LABELS}
                if fits_on(resources, request) == 0:
                    return "this node cannot hold a trial, so trials run on nodes the autoscaler adds"
    return None


def storage_problem(storage: str, shared_flag: bool, mounts: Sequence[tuple[str, str, str]],
                    why: str) -> Optional[str]:
    """A multi-node sweep's run directory must be one directory for every node."""
    if shared_flag:
        return None
    mount = mount_of(storage, mounts)
    if is_network_mount(mount):
        return None
    return (f"this Ray cluster spans nodes ({why}) and --storage {storage} is on {describe_mount(mount)}, "
            "local to this node, so trials elsewhere would write checkpoints and the dense cache to "
            "their own disks: use a directory on a filesystem every node mounts (NFS/EFS, Filestore, "
            "a gcsfuse or s3fs bucket mount), or add --shared-storage if it is mounted at this path on "
            "every node")


def mlflow_store_path(uri: str) -> tuple[str, Optional[str]]:
    """(kind, path) of an MLflow URI: ``sqlite`` or ``file`` with its path, else (scheme, None)."""
    if uri.startswith("sqlite:///"):
        return "sqlite", uri[len("sqlite:///"):]
    if uri.startswith("sqlite:"):
        return "sqlite", uri[len("sqlite:"):].lstrip("/") or None
    if uri in ("databricks", "databricks-uc"):  # MLflow's names for a Databricks workspace
        return uri, None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return "file", unquote(parsed.path)
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # a plain path (or a Windows drive letter)
        return "file", uri
    return parsed.scheme, None


def mlflow_problem(uri: str, mounts: Sequence[tuple[str, str, str]], storage: str, shared_flag: bool,
                   why: str, default: bool, cwd: str = "/") -> Optional[str]:
    """A multi-node sweep needs an MLflow store that outlives this node and that others can read: a
    tracking server or a database, or a file store on a shared filesystem; never sqlite, which is
    unsafe on a network filesystem. A file store under ``--storage`` declared shared
    (``shared_flag``) counts as shared; relative paths are taken from ``cwd``."""
    kind, path = mlflow_store_path(uri)
    if kind not in ("sqlite", "file") or not path:
        return None
    path = str(PurePosixPath(cwd) / path)
    fix = "use a tracking server (--mlflow-uri http://host:5000) or a database URI (postgresql://..., mysql://...)"
    given = "the default --mlflow-uri" if default else f"--mlflow-uri {uri}"
    mount = mount_of(path, mounts)
    under_storage = PurePosixPath(path).is_relative_to(storage) if storage else False
    shared = is_network_mount(mount) or (shared_flag and under_storage)
    if kind == "sqlite":
        if shared:
            return (f"this Ray cluster spans nodes ({why}) and {given} is a sqlite file on a shared "
                    f"filesystem ({describe_mount(mount)}): sqlite over a network filesystem is unsafe "
                    f"(its file locking is unreliable there, so a second reader such as the MLflow UI "
                    f"can corrupt it); {fix}")
        return (f"this Ray cluster spans nodes ({why}) and {given} is a sqlite file on this node's "
                f"{describe_mount(mount)}, which no other machine can read and which goes away with "
                f"the node; {fix}")
    if shared:
        return None
    return (f"this Ray cluster spans nodes ({why}) and {given} is a file store on this node's "
            f"{describe_mount(mount)}, which no other machine can read and which goes away with the "
            f"node; {fix}, or a directory on a shared filesystem")
