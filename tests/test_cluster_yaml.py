"""Offline checks for the three cluster definitions at the repo root.

cluster.yaml (AWS) and cluster-gcp.yaml (GCP) go through what `ray up` does
before it contacts the cloud:

    config = prepare_config(raw)   # merge <provider>/defaults.yaml, merge setup commands,
                                   # docker sanity check, per-type min/max workers
    validate_config(config)        # jsonschema against ray/autoscaler/ray-schema.json
                                   # + head_node_type / sum(min_workers) checks

`ray up` also calls `provider.fillout_available_node_types_resources()` between
those two steps and `provider.bootstrap_config()` after them. Both are skipped
here because they need credentials and network: AWS's fills `resources` from
the EC2 API (boto3), GCP's only adds TPU resources but needs the Google API
client, and both bootstraps look up projects, IAM roles, key pairs and subnets.
This is why both files pin complete `resources` (memory included) and the
tests below check them against the machine types' published sizes.

deploy/kuberay/raycluster.yaml is checked for structure (documents, kinds,
replicas, GPU limits, the shared volume, images) and then translated the way
the KubeRay autoscaler reads it, with Ray's own
`_derive_autoscaling_config_from_ray_cr`, which ends in `validate_config`.

Finally the three are fed to Ray's v2 autoscaler scheduler (the one `ray up`
and KubeRay run with Ray 2.60) with pending smctune trials, to check what the
files' comments claim: every `paper` preset is placeable, four arithmetic
trials share one GPU, spot types come before on-demand ones and overflow onto
them. Nothing here starts Ray.
"""

from __future__ import annotations

import copy
import logging
import math
import re
from pathlib import Path

import jsonschema  # a hard (non-extra) dependency of `ray`; validate_config needs it
import pytest
import ray
import yaml
from ray._private.ray_constants import DEFAULT_OBJECT_STORE_MEMORY_PROPORTION
from ray.autoscaler._private.constants import AUTOSCALER_MAX_CONCURRENT_LAUNCHES
from ray.autoscaler._private.kuberay.autoscaling_config import (
    _derive_autoscaling_config_from_ray_cr,
)
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.autoscaler.v2.instance_manager.config import AutoscalingConfig
from ray.autoscaler.v2.scheduler import ResourceDemandScheduler, SchedulingRequest
from ray.core.generated.autoscaler_pb2 import ResourceRequest, ResourceRequestByCount

from smctune.catalog import registry
from smctune.config.search_space import load_search_space

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
CLUSTER_GCP_YAML = ROOT / "cluster-gcp.yaml"
RAYCLUSTER_YAML = ROOT / "deploy" / "kuberay" / "raycluster.yaml"
SHARED_MOUNT = "/mnt/smctune"
GIB = 2**30

# (vCPUs, RAM in GiB, GPUs, GPU model) per machine type, from the providers'
# published specs, to catch `resources` that don't match the machine. GCP's
# "GB" of machine memory is 2**30 bytes.
AWS_INSTANCES = {
    "m5.2xlarge": (8, 32, 0, None),
    "m5.4xlarge": (16, 64, 0, None),
    "g5.xlarge": (4, 16, 1, "A10G"),
    "g5.2xlarge": (8, 32, 1, "A10G"),
    "g5.4xlarge": (16, 64, 1, "A10G"),
    "g5.12xlarge": (48, 192, 4, "A10G"),
    "g6.4xlarge": (16, 64, 1, "L4"),
    "p4d.24xlarge": (96, 1152, 8, "A100"),
    "p5.48xlarge": (192, 2048, 8, "H100"),
}
GCP_MACHINES = {
    "n2-standard-8": (8, 32, 0, None),
    "n2-standard-16": (16, 64, 0, None),
    "g2-standard-8": (8, 32, 1, "nvidia-l4"),
    "g2-standard-12": (12, 48, 1, "nvidia-l4"),
    "g2-standard-16": (16, 64, 1, "nvidia-l4"),
    "g2-standard-32": (32, 128, 1, "nvidia-l4"),
    "a2-highgpu-1g": (12, 85, 1, "nvidia-tesla-a100"),
    "a2-highgpu-8g": (96, 680, 8, "nvidia-tesla-a100"),
    "a2-ultragpu-1g": (12, 170, 1, "nvidia-a100-80gb"),
}


# ------------------------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML keeps the last one)."""


def _construct_unique_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def _load(path: Path) -> dict:
    with path.open() as f:
        return yaml.load(f, Loader=_UniqueKeyLoader)


def _load_all(path: Path) -> list:
    with path.open() as f:
        return [doc for doc in yaml.load_all(f, Loader=_UniqueKeyLoader) if doc is not None]


def ray_validate(raw: dict) -> dict:
    """Offline part of `ray up`'s config bootstrap; raises if Ray rejects `raw`."""
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


@pytest.fixture(autouse=True)
def _quiet_ray_autoscaler_logs():
    # prepare_config logs one INFO line per call; keep failure output readable.
    logging.disable(logging.INFO)
    yield
    logging.disable(logging.NOTSET)


# --------------------------------------------------------------------- smctune's requests


def _paper_requests() -> dict[str, dict]:
    """Per task, what one trial of the `paper` preset asks Ray for."""
    requests = {}
    for task in registry.TASKS:
        res = load_search_space(task).preset("paper").resources
        req = {"CPU": res.cpu, "GPU": res.gpu}
        if res.memory_gb:
            req["memory"] = res.memory_gb * GIB
        requests[task] = req
    return requests


PAPER = _paper_requests()
ONE_GPU_TASK = next(t for t, r in PAPER.items() if r["GPU"] == 1)            # csqa
SHARED_GPU_TASK = next(t for t, r in PAPER.items() if 0 < r["GPU"] < 1)     # mawps


def _slots(node: dict, req: dict) -> int:
    """How many trials asking for `req` fit on a node with `node` resources."""
    fits = [math.floor(node.get(k, 0) / v + 1e-9) for k, v in req.items() if v > 0]
    return min(fits) if fits else 0


def _packing_problems(name: str, node: dict) -> list[str]:
    """Every paper trial fits, and only the GPU count limits how many share a node."""
    problems = []
    for task, req in PAPER.items():
        slots, by_gpu = _slots(node, req), math.floor(node.get("GPU", 0) / req["GPU"] + 1e-9)
        if slots == 0:
            problems.append(f"{name}: a `paper` {task} trial {req} does not fit in {node}")
        elif slots < by_gpu:
            problems.append(f"{name}: only {slots} {task} trials fit, the GPUs would take {by_gpu} "
                            "(CPU or memory too small for the fractional-GPU packing)")
    return problems


def _max_slots(node_types: dict) -> int:
    """Trials the cluster runs at its maximum size, for the request that packs most."""
    return sum(t["max_workers"] * max(_slots(t["resources"], r) for r in PAPER.values())
               for t in node_types.values() if t["resources"].get("GPU", 0) >= 1)


def _pinned_versions() -> tuple[str, str]:
    """(smctune version from pyproject.toml, torch pin of the README's quick start)."""
    smctune = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    torch = re.search(r"pip install (torch==[\w.]+)", (ROOT / "README.md").read_text())[1]
    return smctune, torch


def _install_problems(where: str, commands: list[str]) -> list[str]:
    smctune_version, torch_pin = _pinned_versions()
    text = "\n".join(commands)
    problems = []
    if not re.search(rf"pip install\b[^\n]*\"?{re.escape(torch_pin)}\b", text):
        problems.append(f"{where}: no `pip install {torch_pin}` (the README's torch pin)")
    pinned = (rf"smctune @ git\+\S+@(v?{re.escape(smctune_version)}\b|[0-9a-f]{{7,40}}\b)"
              rf"|smctune=={re.escape(smctune_version)}\b"
              rf"|smctune-{re.escape(smctune_version)}-\S+\.whl")
    if not re.search(rf"pip install\b[^\n]*({pinned})", text):
        problems.append(f"{where}: smctune is not installed at this version ({smctune_version}): "
                        "pin a git tag or commit, a release or a wheel")
    return problems


def _image_problems(where: str, image: str) -> list[str]:
    if "ray-ml" in image:
        return [f"{where}: rayproject/ray-ml is deprecated"]
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py3\d+-(gpu|cu\d+)", image)
    if not m:
        return [f"{where}: image {image!r} is not a pinned rayproject/ray GPU image"]
    if m[1] != ray.__version__:
        return [f"{where}: image Ray {m[1]} != installed Ray {ray.__version__}"]
    return []


# ------------------------------------------------------------------- cluster launcher files


def _machine(raw: dict, node: dict) -> tuple[str, tuple]:
    if raw["provider"]["type"] == "aws":
        itype = node["node_config"].get("InstanceType", "")
        return itype, AWS_INSTANCES.get(itype)
    mtype = node["node_config"].get("machineType", "")
    return mtype, GCP_MACHINES.get(mtype)


def _is_spot(raw: dict, node: dict) -> bool:
    nc = node["node_config"]
    if raw["provider"]["type"] == "aws":
        return nc.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    sched = nc.get("scheduling")
    return isinstance(sched, dict) and (
        sched.get("provisioningModel") == "SPOT" or sched.get("preemptible") is True)


def _workers(cfg: dict) -> dict:
    head = cfg["head_node_type"]
    return {k: v for k, v in cfg["available_node_types"].items() if k != head}


def _gpu_workers(cfg: dict) -> dict:
    return {k: v for k, v in _workers(cfg).items() if v["resources"].get("GPU", 0) >= 1}


def _env_value(options: list[str], name: str):
    for opt in options:
        m = re.search(rf"--env\s+{name}=(\S+)", opt)
        if m:
            return m[1]
    return None


def _provider_node_problems(raw: dict, name: str, node: dict, spec: tuple) -> list[str]:
    nc, problems = node["node_config"], []
    if raw["provider"]["type"] == "aws":
        if not nc.get("ImageId"):
            problems.append(f"{name}: no ImageId (Ray's default AMI is Ubuntu 18.04 / CUDA 11.2)")
        market = nc.get("InstanceMarketOptions")
        if market is not None and market.get("MarketType") != "spot":
            problems.append(f"{name}: InstanceMarketOptions.MarketType is not 'spot'")
        return problems
    # GCP: node_config is the body of instances.insert.
    disks = nc.get("disks") or []
    if not any(d.get("boot") and d.get("initializeParams", {}).get("sourceImage") for d in disks):
        problems.append(f"{name}: no boot disk with a sourceImage")
    if spec[2] == 0:
        return problems
    sched = nc.get("scheduling")
    if not isinstance(sched, dict):
        return problems + [f"{name}: scheduling must be one object, not {type(sched).__name__}"]
    if sched.get("onHostMaintenance") != "TERMINATE":
        problems.append(f"{name}: GPU VMs need scheduling.onHostMaintenance: TERMINATE")
    if _is_spot(raw, node):
        if sched.get("automaticRestart") is not False:
            problems.append(f"{name}: Spot/preemptible VMs need automaticRestart: false")
        if sched.get("provisioningModel") == "SPOT" and "instanceTerminationAction" not in sched:
            problems.append(f"{name}: Spot VM without instanceTerminationAction")
    accels = nc.get("guestAccelerators") or []
    count = sum(a.get("acceleratorCount", 0) for a in accels)
    types = {a.get("acceleratorType", "").rsplit("/", 1)[-1] for a in accels}
    if count != spec[2] or types != {spec[3]}:
        problems.append(f"{name}: guestAccelerators {accels} != the machine's {spec[2]}x {spec[3]}")
    return problems


def vm_problems(raw: dict) -> list[str]:
    """Everything this repo requires of a cluster-launcher file, as readable problems."""
    try:
        ray_validate(raw)
    except (jsonschema.ValidationError, ValueError) as err:
        return [f"Ray rejects the config: {str(err).splitlines()[0]}"]
    problems = []
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    workers, gpu_workers = _workers(raw), _gpu_workers(raw)

    # Head: runs the driver and the autoscaler, never a trial.
    if head["resources"].get("CPU") != 0 or head["resources"].get("GPU", 0) != 0:
        problems.append(f"head: resources {head['resources']} must be {{CPU: 0}} (no trials there)")
    if head.get("min_workers", 0) or head.get("max_workers", 0):
        problems.append("head: min_workers/max_workers must be 0")

    # Workers: scale from zero, bounded, idle ones go away.
    if not gpu_workers:
        problems.append("no worker node type with resources.GPU >= 1")
    for name, node in workers.items():
        if node.get("min_workers", 0) != 0 or not 0 < node.get("max_workers", 0) <= raw["max_workers"]:
            problems.append(f"{name}: needs min_workers 0 < max_workers <= max_workers ({raw['max_workers']})")
    if sum(n.get("max_workers", 0) for n in workers.values()) > raw["max_workers"]:
        problems.append("the per-type max_workers add up to more than the global max_workers")
    if not 0 < raw.get("idle_timeout_minutes", 0) <= 30:
        problems.append("idle_timeout_minutes must be set, and at most 30 (idle GPUs cost money)")

    # Resources match the machine; memory is declared (trials ask for it).
    for name, node in types.items():
        mtype, spec = _machine(raw, node)
        if spec is None:
            problems.append(f"{name}: unknown machine type {mtype!r}: add it to the tables above")
            continue
        res = node["resources"]
        problems += _provider_node_problems(raw, name, node, spec)
        if name == raw["head_node_type"]:
            continue
        if res.get("GPU", 0) != spec[2] or res.get("CPU", 0) > spec[0]:
            problems.append(f"{name}: resources {res} don't match {mtype} ({spec[0]} vCPU, {spec[2]} GPU)")
        ceiling = (1 - DEFAULT_OBJECT_STORE_MEMORY_PROPORTION) * spec[1] * GIB
        if not 0 < res.get("memory", 0) <= ceiling:
            problems.append(f"{name}: resources.memory must be set, at most {ceiling / GIB:.1f} GiB "
                            f"(Ray's default share of {mtype}'s {spec[1]} GiB)")
        problems += _packing_problems(name, res)

    # Spot first, on-demand as overflow, per machine type.
    by_machine: dict[str, dict] = {}
    for name, node in gpu_workers.items():
        by_machine.setdefault(_machine(raw, node)[0], {}).setdefault(
            "spot" if _is_spot(raw, node) else "ondemand", []).append(name)
    for mtype, kinds in by_machine.items():
        if len(kinds.get("spot", [])) != 1 or len(kinds.get("ondemand", [])) != 1:
            problems.append(f"{mtype}: needs exactly one spot and one on-demand node type, has {kinds}")
            continue
        spot, ondemand = kinds["spot"][0], kinds["ondemand"][0]
        if types[spot]["resources"] != types[ondemand]["resources"]:
            problems.append(f"{spot} and {ondemand} must declare the same resources")
        if not types[spot].get("priority", 0) > types[ondemand].get("priority", 0):
            problems.append(f"{spot}: priority must be above {ondemand}'s (v2 autoscaler tie-break)")
        if not spot > ondemand:
            problems.append(f"{spot} must sort after {ondemand} (v1 autoscaler tie-break by name)")

    # One pinned Ray GPU image everywhere.
    docker = raw.get("docker") or {}
    problems += _image_problems("docker.image", docker.get("image", ""))
    for key in ("head_image", "worker_image"):
        if docker.get(key) not in (None, docker.get("image")):
            problems.append(f"docker.{key} differs from docker.image")

    # This smctune version (and the README's torch) on every node.
    problems += _install_problems("setup_commands", raw.get("setup_commands") or [])

    # Driver environment and shared storage.
    pending = _env_value(docker.get("head_run_options") or [], "TUNE_MAX_PENDING_TRIALS_PG")
    needed = _max_slots(types)
    if pending is None or not pending.isdigit() or int(pending) < needed:
        problems.append(f"docker.head_run_options: TUNE_MAX_PENDING_TRIALS_PG={pending}, "
                        f"needs >= {needed} (trials at maximum cluster size)")
    if int(_env_value(docker.get("head_run_options") or [], "RAY_JOB_STOP_WAIT_TIME_S") or 0) < 10:
        problems.append("docker.head_run_options: RAY_JOB_STOP_WAIT_TIME_S >= 10 missing "
                        "(smctune's clean shutdown on `ray job stop`)")
    if _env_value(docker.get("run_options") or [], "RAY_CHDIR_TO_TRIAL_DIR") != "0":
        problems.append("docker.run_options: RAY_CHDIR_TO_TRIAL_DIR=0 missing")
    if not any(f"{SHARED_MOUNT}:{SHARED_MOUNT}" in o for o in docker.get("run_options") or []):
        problems.append(f"docker.run_options: {SHARED_MOUNT} is not mounted into the container")
    if not any(re.search(rf"mount\b.*\s{SHARED_MOUNT}\s*$", c) for c in raw.get("initialization_commands") or []):
        problems.append(f"initialization_commands: nothing mounts the shared filesystem at {SHARED_MOUNT}")
    if raw["provider"].get("cache_stopped_nodes", True):
        problems.append("provider.cache_stopped_nodes must be false (stopped nodes' disks still bill)")

    # From zero, the first autoscaler round may ask for a whole spot pool.
    biggest_pool = max((n["max_workers"] for n in gpu_workers.values() if _is_spot(raw, n)), default=1)
    if math.ceil(raw.get("upscaling_speed", 0)) < min(biggest_pool, AUTOSCALER_MAX_CONCURRENT_LAUNCHES):
        problems.append(f"upscaling_speed {raw.get('upscaling_speed')} launches fewer than "
                        f"{min(biggest_pool, AUTOSCALER_MAX_CONCURRENT_LAUNCHES)} nodes per round from zero")
    return problems


VM_FILES = {"aws": CLUSTER_YAML, "gcp": CLUSTER_GCP_YAML}


@pytest.fixture(scope="module")
def vm_raw() -> dict:
    return {name: _load(path) for name, path in VM_FILES.items()}


@pytest.fixture(scope="module")
def raw(vm_raw) -> dict:
    return vm_raw["aws"]


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    return ray_validate(raw)


@pytest.mark.parametrize("which", sorted(VM_FILES))
def test_ray_schema_accepts_cluster_file(vm_raw, which):
    prepared = ray_validate(vm_raw[which])
    assert prepared["cluster_name"] == "smctune"
    assert prepared["provider"]["type"] == which


@pytest.mark.parametrize("which", sorted(VM_FILES))
def test_cluster_file_meets_smctune_requirements(vm_raw, which):
    assert vm_problems(vm_raw[which]) == []


@pytest.mark.parametrize(
    "mutate, expected",
    [
        # Unknown top-level key: the schema has additionalProperties: false.
        (lambda c: c.__setitem__("max_worker", 8), jsonschema.ValidationError),
        # Wrong type for a top-level field.
        (lambda c: c.__setitem__("max_workers", "eight"), jsonschema.ValidationError),
        # Typo inside a node type.
        (
            lambda c: c["available_node_types"]["ray.worker.a10g.spot"].__setitem__("min_worker", 0),
            jsonschema.ValidationError,
        ),
        # Fractional resources are not allowed in node-type resources.
        (
            lambda c: c["available_node_types"]["ray.worker.a10g.spot"]["resources"].__setitem__("GPU", 0.5),
            jsonschema.ValidationError,
        ),
        # priority is an integer in Ray's schema.
        (
            lambda c: c["available_node_types"]["ray.worker.a10g.spot"].__setitem__("priority", "high"),
            jsonschema.ValidationError,
        ),
        # head_node_type must name one of available_node_types (Ray's own extra check).
        (lambda c: c.__setitem__("head_node_type", "ray.head.missing"), ValueError),
    ],
    ids=["unknown-top-level-key", "wrong-type", "node-type-typo", "fractional-gpu",
         "priority-not-int", "bad-head-type"],
)
def test_ray_schema_rejects_broken_copies(raw, mutate, expected):
    broken = copy.deepcopy(raw)
    mutate(broken)
    with pytest.raises(expected):
        ray_validate(broken)


def _nt(c, name):
    return c["available_node_types"][name]


# Realistic edits that Ray's schema accepts but that break a sweep (or its bill).
BROKEN_VM_COPIES = [
    ("aws", "head-runs-trials", lambda c: _nt(c, "ray.head.cpu")["resources"].update(CPU=8), "head:"),
    ("aws", "always-on-gpu", lambda c: _nt(c, "ray.worker.a10g.ondemand").update(min_workers=1),
     "min_workers 0"),
    ("aws", "no-memory", lambda c: _nt(c, "ray.worker.a10g.spot")["resources"].pop("memory"),
     "resources.memory must be set"),
    ("aws", "small-instance", lambda c: _nt(c, "ray.worker.a10g.spot")["node_config"].update(
        InstanceType="g5.xlarge"), "don't match g5.xlarge"),
    ("aws", "spot-lost", lambda c: _nt(c, "ray.worker.a100.spot")["node_config"].pop(
        "InstanceMarketOptions"), "exactly one spot and one on-demand"),
    ("aws", "spot-not-preferred", lambda c: _nt(c, "ray.worker.a10g.spot").update(priority=0),
     "priority must be above"),
    ("aws", "no-ami", lambda c: _nt(c, "ray.worker.a100.ondemand")["node_config"].pop("ImageId"),
     "no ImageId"),
    ("aws", "image-drift", lambda c: c["docker"].update(image="rayproject/ray:2.31.0-py311-gpu"),
     "!= installed Ray"),
    ("aws", "unpinned-smctune", lambda c: c.__setitem__("setup_commands", [
        "pip install torch==2.13.0", "pip install git+https://github.com/x/smctune.git"]),
     "not installed at this version"),
    ("aws", "slow-scale-up", lambda c: c["docker"].__setitem__("head_run_options", []),
     "TUNE_MAX_PENDING_TRIALS_PG"),
    ("aws", "no-idle-timeout", lambda c: c.pop("idle_timeout_minutes"), "idle_timeout_minutes"),
    ("gcp", "scheduling-as-list", lambda c: _nt(c, "ray.worker.l4.spot")["node_config"].__setitem__(
        "scheduling", [{"provisioningModel": "SPOT"}, {"onHostMaintenance": "TERMINATE"}]),
     "scheduling must be one object"),
    ("gcp", "live-migration", lambda c: _nt(c, "ray.worker.a100.ondemand")["node_config"].__setitem__(
        "scheduling", {"onHostMaintenance": "MIGRATE"}), "onHostMaintenance: TERMINATE"),
    ("gcp", "wrong-accelerator", lambda c: _nt(c, "ray.worker.a100.spot")["node_config"].__setitem__(
        "guestAccelerators", [{"acceleratorType": "nvidia-l4", "acceleratorCount": 1}]),
     "guestAccelerators"),
    ("gcp", "spot-restarts", lambda c: _nt(c, "ray.worker.l4.spot")["node_config"]["scheduling"].update(
        automaticRestart=True), "automaticRestart: false"),
    ("gcp", "no-shared-fs", lambda c: c.__setitem__("initialization_commands", []),
     "shared filesystem"),
    ("gcp", "cpu-starved-packing", lambda c: [
        _nt(c, n)["resources"].update(CPU=4) for n in ("ray.worker.l4.spot", "ray.worker.l4.ondemand")],
     "fractional-GPU packing"),
]


@pytest.mark.parametrize("which, mutate, expected", [(w, m, e) for w, _, m, e in BROKEN_VM_COPIES],
                         ids=[f"{w}-{i}" for w, i, _, _ in BROKEN_VM_COPIES])
def test_broken_cluster_files_are_caught(vm_raw, which, mutate, expected):
    broken = copy.deepcopy(vm_raw[which])
    mutate(broken)
    problems = vm_problems(broken)
    assert any(expected in p for p in problems), problems


def test_no_duplicate_yaml_keys():
    # The fixtures load with a duplicate-key check; make sure that check works.
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key"):
        yaml.load("setup_commands: []\nsetup_commands: [x]\n", Loader=_UniqueKeyLoader)


def test_provider_is_aws_us_west_2_with_zones(raw):
    provider = raw["provider"]
    assert provider["type"] == "aws"
    assert provider["region"] == "us-west-2"
    zones = [z.strip() for z in provider["availability_zone"].split(",")]
    assert zones and all(z.startswith("us-west-2") for z in zones)
    for key in ("max_workers", "upscaling_speed", "idle_timeout_minutes"):
        assert key in raw, key


def test_gcp_provider_names_project_and_zone(vm_raw):
    provider = vm_raw["gcp"]["provider"]
    assert provider["type"] == "gcp"
    assert provider["availability_zone"].startswith(provider["region"] + "-")
    assert "EDIT-ME" in provider["project_id"]  # a placeholder the user must replace


def test_gpu_worker_autoscales_from_zero(raw, prepared):
    gpu_workers = _gpu_workers(raw)
    assert any(v["max_workers"] == 8 for v in gpu_workers.values())
    # Still true after Ray filled in its defaults.
    assert _gpu_workers(prepared).keys() == gpu_workers.keys()


def test_setup_commands_reach_head_and_workers(vm_raw):
    for which, raw in vm_raw.items():
        prepared = ray_validate(raw)
        # prepare_config prepends setup_commands to head/worker setup, so both get it.
        for key in ("head_setup_commands", "worker_setup_commands"):
            assert any("smctune" in cmd for cmd in prepared[key]), (which, key)


# ------------------------------------------------------------------------ KubeRay manifest


def _pod_templates(cluster: dict) -> dict:
    spec = cluster["spec"]
    templates = {"head": spec["headGroupSpec"]["template"]}
    for group in spec.get("workerGroupSpecs") or []:
        templates[group.get("groupName", "?")] = group["template"]
    return templates


def _k8s_int(value) -> int:
    return int(str(value))


def kuberay_problems(docs: list) -> list[str]:
    """Structure this repo requires of the KubeRay manifest, as readable problems."""
    clusters = [d for d in docs if d.get("kind") == "RayCluster"]
    if len(clusters) != 1:
        return [f"expected one RayCluster document, found {len(clusters)}"]
    cluster, problems = clusters[0], []
    if cluster.get("apiVersion") != "ray.io/v1":
        problems.append(f"RayCluster apiVersion {cluster.get('apiVersion')!r} != 'ray.io/v1'")
    spec = cluster.get("spec") or {}
    if spec.get("rayVersion") != ray.__version__:
        problems.append(f"spec.rayVersion {spec.get('rayVersion')!r} != installed Ray {ray.__version__}")
    if spec.get("enableInTreeAutoscaling") is not True:
        problems.append("spec.enableInTreeAutoscaling must be true")
    head = spec.get("headGroupSpec") or {}
    if (head.get("rayStartParams") or {}).get("num-cpus") != "0":
        problems.append('headGroupSpec.rayStartParams must have num-cpus: "0" (no trials on the head)')

    groups = spec.get("workerGroupSpecs") or []
    if not groups:
        problems.append("no workerGroupSpecs")
    for group in groups:
        name = group.get("groupName", "?")
        lo, hi = group.get("minReplicas"), group.get("maxReplicas")
        replicas = group.get("replicas", 0)
        if lo != 0 or not isinstance(hi, int) or not 0 <= replicas <= hi or hi < 1:
            problems.append(f"{name}: needs minReplicas 0 <= replicas <= maxReplicas, maxReplicas >= 1")
        pod = group["template"]["spec"]
        limits = pod["containers"][0].get("resources", {}).get("limits", {})
        requests = pod["containers"][0].get("resources", {}).get("requests", {})
        gpus = _k8s_int(limits.get("nvidia.com/gpu", 0))
        if gpus < 1:
            problems.append(f"{name}: no nvidia.com/gpu limit")
        elif "nvidia.com/gpu" in requests and _k8s_int(requests["nvidia.com/gpu"]) != gpus:
            problems.append(f"{name}: nvidia.com/gpu request != limit")
        start_gpus = (group.get("rayStartParams") or {}).get("num-gpus")
        if start_gpus is not None and _k8s_int(start_gpus) != gpus:
            problems.append(f"{name}: rayStartParams num-gpus {start_gpus} != GPU limit {gpus}")
        if not pod.get("nodeSelector"):
            problems.append(f"{name}: no nodeSelector for GPU nodes")
        if not any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations") or []):
            problems.append(f"{name}: no toleration for the nvidia.com/gpu taint")

    claims = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "PersistentVolumeClaim"}
    images = set()
    for where, template in _pod_templates(cluster).items():
        pod = template["spec"]
        container = pod["containers"][0]  # KubeRay: the Ray container comes first
        images.update(c.get("image") for c in pod["containers"])
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for vol in volumes.values():
            claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
            if claim is not None and claim not in claims:
                problems.append(f"{where}: PVC {claim!r} is not defined in this file")
        shared = [m for m in container.get("volumeMounts") or [] if m.get("mountPath") == SHARED_MOUNT]
        if not shared or "persistentVolumeClaim" not in volumes.get(shared[0]["name"], {}):
            problems.append(f"{where}: no PersistentVolumeClaim mounted at {SHARED_MOUNT}")
        env = {e["name"]: e.get("value") for e in container.get("env") or []}
        if env.get("RAY_CHDIR_TO_TRIAL_DIR") != "0":
            problems.append(f"{where}: env RAY_CHDIR_TO_TRIAL_DIR=0 missing")
        if container.get("command") or container.get("args"):
            annotations = cluster.get("metadata", {}).get("annotations") or {}
            if annotations.get("ray.io/overwrite-container-cmd") != "true":
                problems.append(f"{where}: command/args need the ray.io/overwrite-container-cmd annotation")
            args = " ".join(container.get("args") or [])
            if "$KUBERAY_GEN_RAY_START_CMD" not in args:
                problems.append(f"{where}: args never start Ray ($KUBERAY_GEN_RAY_START_CMD)")
            problems += _install_problems(where, container.get("args") or [])
    for claim in claims.values():
        if "ReadWriteMany" not in claim.get("spec", {}).get("accessModes", []):
            problems.append(f"PVC {claim['metadata']['name']}: every pod mounts it: needs ReadWriteMany")
    if len(images) != 1:
        problems.append(f"different images in the pods: {sorted(map(str, images))}")
    for image in images:
        problems += _image_problems("image", str(image))

    # How the KubeRay autoscaler reads it: Ray's own translation, then validate_config.
    try:
        derived = _derived_config(cluster)
    except Exception as err:  # noqa: BLE001 - any failure here is the finding
        return problems + [f"Ray's KubeRay translation fails: {type(err).__name__}: {err}"]
    types = derived["available_node_types"]
    if types["headgroup"]["resources"].get("CPU") != 0:
        problems.append(f"head: Ray sees {types['headgroup']['resources']}, needs CPU 0")
    for name, node in _workers(derived).items():
        problems += _packing_problems(name, node["resources"])
    head_env = {e["name"]: e.get("value") for e in
                head["template"]["spec"]["containers"][0].get("env") or []}
    pending, needed = head_env.get("TUNE_MAX_PENDING_TRIALS_PG"), _max_slots(types)
    if pending is None or not pending.isdigit() or int(pending) < needed:
        problems.append(f"head env TUNE_MAX_PENDING_TRIALS_PG={pending}, needs >= {needed}")
    if int(head_env.get("RAY_JOB_STOP_WAIT_TIME_S") or 0) < 10:
        problems.append("head env RAY_JOB_STOP_WAIT_TIME_S >= 10 missing")
    return problems


def _derived_config(cluster: dict) -> dict:
    cr = copy.deepcopy(cluster)
    cr["metadata"].setdefault("namespace", "default")  # set by the API server on apply
    return _derive_autoscaling_config_from_ray_cr(cr)


@pytest.fixture(scope="module")
def kuberay_docs() -> list:
    return _load_all(RAYCLUSTER_YAML)


def _raycluster(docs: list) -> dict:
    return next(d for d in docs if d.get("kind") == "RayCluster")


def test_kuberay_manifest_meets_smctune_requirements(kuberay_docs):
    assert {d["kind"] for d in kuberay_docs} == {"RayCluster", "PersistentVolumeClaim"}
    assert kuberay_problems(kuberay_docs) == []


def test_kuberay_translation_is_valid_for_ray(kuberay_docs):
    derived = _derived_config(_raycluster(kuberay_docs))  # raises if validate_config fails
    validate_config(derived)
    workers = _workers(derived)
    assert workers and all(w["min_workers"] == 0 and w["resources"]["GPU"] >= 1
                           for w in workers.values())


def _group(docs, name):
    return next(g for g in _raycluster(docs)["spec"]["workerGroupSpecs"] if g["groupName"] == name)


def _container(docs, group):
    return _group(docs, group)["template"]["spec"]["containers"][0]


BROKEN_KUBERAY_COPIES = [
    ("head-runs-trials", lambda d: _raycluster(d)["spec"]["headGroupSpec"]["rayStartParams"].update(
        {"num-cpus": "8"}), "num-cpus"),
    ("old-api", lambda d: _raycluster(d).update(apiVersion="ray.io/v1alpha1"), "apiVersion"),
    ("always-on-gpu", lambda d: _group(d, "gpu-small").update(minReplicas=1), "minReplicas 0"),
    ("replicas-over-max", lambda d: _group(d, "gpu-a100").update(replicas=9), "replicas <= maxReplicas"),
    ("no-gpu-limit", lambda d: _container(d, "gpu-a100")["resources"]["limits"].pop("nvidia.com/gpu"),
     "no nvidia.com/gpu limit"),
    ("gpu-param-mismatch", lambda d: _group(d, "gpu-small")["rayStartParams"].update({"num-gpus": "2"}),
     "num-gpus"),
    ("missing-pvc", lambda d: d.pop(next(i for i, x in enumerate(d) if x["kind"] == "PersistentVolumeClaim")),
     "not defined in this file"),
    ("pvc-rwo", lambda d: next(x for x in d if x["kind"] == "PersistentVolumeClaim")["spec"].update(
        accessModes=["ReadWriteOnce"]), "ReadWriteMany"),
    ("image-drift", lambda d: _container(d, "gpu-small").update(image="rayproject/ray:2.46.0-py311-gpu"),
     "different images"),
    ("no-autoscaling", lambda d: _raycluster(d)["spec"].update(enableInTreeAutoscaling=False),
     "enableInTreeAutoscaling"),
    ("tiny-pod", lambda d: _container(d, "gpu-small")["resources"]["limits"].update(memory="16Gi"),
     "does not fit"),
    ("bad-quantity", lambda d: _container(d, "gpu-a100")["resources"]["limits"].update(cpu="ten"),
     "translation fails"),
]


@pytest.mark.parametrize("mutate, expected", [(m, e) for _, m, e in BROKEN_KUBERAY_COPIES],
                         ids=[i for i, _, _ in BROKEN_KUBERAY_COPIES])
def test_broken_kuberay_manifests_are_caught(kuberay_docs, mutate, expected):
    broken = copy.deepcopy(kuberay_docs)
    mutate(broken)
    problems = kuberay_problems(broken)
    assert any(expected in p for p in problems), problems


# ----------------------------------------------- what Ray's autoscaler does with these files


def _node_type_configs(config: dict, only=None) -> tuple[dict, int]:
    cfg = AutoscalingConfig(copy.deepcopy(config), skip_content_hash=True)
    types = {k: v for k, v in cfg.get_node_type_configs().items()
             if only is None or k in only or k == config["head_node_type"]}
    return types, cfg.get_max_num_worker_nodes()


def launches(config: dict, demand: dict, only=None) -> tuple[dict, int]:
    """Node types (and counts) Ray's v2 scheduler launches from zero for pending trials.

    `demand` maps a task to a number of pending trials of its `paper` preset.
    Returns ({node type: count}, number of trials it cannot place).
    """
    types, max_nodes = _node_type_configs(config, only)
    requests = [ResourceRequestByCount(request=ResourceRequest(resources_bundle=PAPER[t]), count=n)
                for t, n in demand.items()]
    reply = ResourceDemandScheduler().schedule(SchedulingRequest(
        disable_launch_config_check=True, node_type_configs=types, max_num_nodes=max_nodes,
        resource_requests=requests))
    counts: dict[str, int] = {}
    for launch in reply.to_launch:
        counts[launch.instance_type] = counts.get(launch.instance_type, 0) + launch.count
    return counts, len(reply.infeasible_resource_requests)


@pytest.fixture(scope="module")
def autoscaled(vm_raw, kuberay_docs) -> dict:
    return {**{w: ray_validate(r) for w, r in vm_raw.items()},
            "kuberay": _derived_config(_raycluster(kuberay_docs))}


SMALL_SPOT = {"aws": "ray.worker.a10g.spot", "gcp": "ray.worker.l4.spot", "kuberay": "gpu-small"}


@pytest.mark.parametrize("which", ["aws", "gcp", "kuberay"])
def test_every_paper_trial_can_be_placed(autoscaled, which):
    for task in PAPER:
        counts, infeasible = launches(autoscaled[which], {task: 1})
        assert infeasible == 0 and sum(counts.values()) == 1, (task, counts)


@pytest.mark.parametrize("which", ["aws", "gcp", "kuberay"])
def test_four_arithmetic_trials_share_one_gpu_node(autoscaled, which):
    counts, infeasible = launches(autoscaled[which], {SHARED_GPU_TASK: 4})
    assert infeasible == 0 and counts == {SMALL_SPOT[which]: 1}


@pytest.mark.parametrize("which", ["aws", "gcp", "kuberay"])
def test_any_single_trial_starts_the_small_spot_type(autoscaled, which):
    for task in PAPER:
        assert launches(autoscaled[which], {task: 1}) == ({SMALL_SPOT[which]: 1}, 0), task


@pytest.mark.parametrize("which", ["aws", "gcp"])
def test_spot_comes_first_and_overflows_to_on_demand(autoscaled, which):
    config = autoscaled[which]
    for machine, kinds in _spot_pairs(config).items():
        spot, ondemand = kinds["spot"], kinds["ondemand"]
        per_node = _slots(config["available_node_types"][spot]["resources"], PAPER[ONE_GPU_TASK])
        n_spot = config["available_node_types"][spot]["max_workers"]
        counts, _ = launches(config, {ONE_GPU_TASK: (n_spot + 1) * per_node}, only={spot, ondemand})
        assert counts == {spot: n_spot, ondemand: 1}, (machine, counts)


def _spot_pairs(config: dict) -> dict:
    pairs: dict[str, dict] = {}
    for name, node in _gpu_workers(config).items():
        pairs.setdefault(_machine(config, node)[0], {})["spot" if _is_spot(config, node) else "ondemand"] = name
    return pairs


def test_aws_prefers_p4d_from_four_pending_gpu_trials(autoscaled):
    # What cluster.yaml's "WHICH GPU CLASS A TRIAL GETS" says, with Ray 2.60's scoring.
    assert launches(autoscaled["aws"], {ONE_GPU_TASK: 3}) == ({"ray.worker.a10g.spot": 3}, 0)
    assert launches(autoscaled["aws"], {ONE_GPU_TASK: 4}) == ({"ray.worker.a100.spot": 1}, 0)


def test_kuberay_fills_the_small_group_first(autoscaled):
    # What the gpu-small comment in raycluster.yaml says.
    small = autoscaled["kuberay"]["available_node_types"]["gpu-small"]["max_workers"]
    assert launches(autoscaled["kuberay"], {ONE_GPU_TASK: small + 1}) == (
        {"gpu-small": small, "gpu-a100": 1}, 0)
