"""Offline checks for the Ray cluster-launcher config at the repo root (cluster.yaml).

Validation mirrors what `ray up` does before it contacts the cloud:

    config = prepare_config(raw)   # merge aws/defaults.yaml, merge setup commands,
                                   # docker sanity check, per-type min/max workers
    validate_config(config)        # jsonschema against ray/autoscaler/ray-schema.json
                                   # + head_node_type / sum(min_workers) checks

`ray up` also calls `provider.fillout_available_node_types_resources()` between
those two steps. That fills `resources` from the EC2 API, which needs credentials
and network, so it is skipped here. This is why the config pins `resources`
explicitly and the tests below check them.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema  # a hard (non-extra) dependency of `ray`; validate_config needs it
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"

# GPUs / vCPUs per instance type (AWS specs), to catch a `resources` block that
# doesn't match its instance type.
KNOWN_INSTANCES = {
    "g5.xlarge": {"GPU": 1, "CPU": 4},
    "g5.2xlarge": {"GPU": 1, "CPU": 8},
    "g5.12xlarge": {"GPU": 4, "CPU": 48},
    "g5.48xlarge": {"GPU": 8, "CPU": 192},
    "g6.xlarge": {"GPU": 1, "CPU": 4},
    "g6e.xlarge": {"GPU": 1, "CPU": 4},
    "p3.2xlarge": {"GPU": 1, "CPU": 8},
    "p4d.24xlarge": {"GPU": 8, "CPU": 96},
    "p5.48xlarge": {"GPU": 8, "CPU": 192},
    "m5.xlarge": {"GPU": 0, "CPU": 4},
    "m5.2xlarge": {"GPU": 0, "CPU": 8},
    "m5.4xlarge": {"GPU": 0, "CPU": 16},
}


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


def ray_validate(raw: dict) -> dict:
    """Offline part of `ray up`'s config bootstrap; raises if Ray rejects `raw`."""
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


@pytest.fixture(scope="module")
def raw() -> dict:
    with CLUSTER_YAML.open() as f:
        return yaml.load(f, Loader=_UniqueKeyLoader)


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    return ray_validate(raw)


def _workers(cfg: dict) -> dict:
    head = cfg["head_node_type"]
    return {k: v for k, v in cfg["available_node_types"].items() if k != head}


def _gpu_workers(cfg: dict) -> dict:
    return {k: v for k, v in _workers(cfg).items() if v["resources"].get("GPU", 0) >= 1}


# --------------------------------------------------------------------------- Ray schema


def test_ray_schema_accepts_cluster_yaml(prepared):
    # `prepared` already went through prepare_config + validate_config.
    assert prepared["cluster_name"] == "smctune"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        # Unknown top-level key: the schema has additionalProperties: false.
        (lambda c: c.__setitem__("max_worker", 8), jsonschema.ValidationError),
        # Wrong type for a top-level field.
        (lambda c: c.__setitem__("max_workers", "eight"), jsonschema.ValidationError),
        # Typo inside a node type.
        (
            lambda c: c["available_node_types"]["ray.worker.g5"].__setitem__("min_worker", 0),
            jsonschema.ValidationError,
        ),
        # Fractional resources are not allowed in node-type resources.
        (
            lambda c: c["available_node_types"]["ray.worker.g5"]["resources"].__setitem__("GPU", 0.5),
            jsonschema.ValidationError,
        ),
        # head_node_type must name one of available_node_types (Ray's own extra check).
        (lambda c: c.__setitem__("head_node_type", "ray.head.missing"), ValueError),
    ],
    ids=["unknown-top-level-key", "wrong-type", "node-type-typo", "fractional-gpu", "bad-head-type"],
)
def test_ray_schema_rejects_broken_copies(raw, mutate, expected):
    broken = copy.deepcopy(raw)
    mutate(broken)
    with pytest.raises(expected):
        ray_validate(broken)


def test_no_duplicate_yaml_keys():
    # The `raw` fixture loads with a duplicate-key check; make sure that check works.
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key"):
        yaml.load("setup_commands: []\nsetup_commands: [x]\n", Loader=_UniqueKeyLoader)


# --------------------------------------------------------------------- smctune invariants


def test_provider_is_aws_us_west_2_with_zones(raw):
    provider = raw["provider"]
    assert provider["type"] == "aws"
    assert provider["region"] == "us-west-2"
    zones = [z.strip() for z in provider["availability_zone"].split(",")]
    assert zones and all(z.startswith("us-west-2") for z in zones)
    for key in ("max_workers", "upscaling_speed", "idle_timeout_minutes"):
        assert key in raw, key


def test_head_schedules_no_trials(raw):
    head = raw["available_node_types"][raw["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0
    assert head.get("min_workers", 0) == 0 and head.get("max_workers", 0) == 0


def test_gpu_worker_autoscales_from_zero(raw, prepared):
    gpu_workers = _gpu_workers(raw)
    assert gpu_workers, "need at least one worker node type with resources.GPU >= 1"
    assert any(v["max_workers"] == 8 for v in gpu_workers.values())
    for name, node in gpu_workers.items():
        assert node["min_workers"] == 0 < node["max_workers"], name
        # A per-type max above the global max is silently capped by the global one.
        assert node["max_workers"] <= raw["max_workers"], name
    assert sum(v["max_workers"] for v in _workers(raw).values()) <= raw["max_workers"]
    # Still true after Ray filled in its defaults.
    assert _gpu_workers(prepared).keys() == gpu_workers.keys()


def test_resources_match_instance_types(raw):
    for name, node in raw["available_node_types"].items():
        itype = node["node_config"]["InstanceType"]
        spec = KNOWN_INSTANCES.get(itype)
        assert spec is not None, f"{name}: add {itype} to KNOWN_INSTANCES"
        assert node["resources"].get("GPU", 0) == spec["GPU"] or name == raw["head_node_type"], (
            f"{name}: resources.GPU != {spec['GPU']} GPUs of {itype}"
        )
        assert node["resources"].get("CPU", 0) <= spec["CPU"], name


def test_every_node_type_pins_an_ami(raw):
    # Without ImageId, Ray falls back to an old Ubuntu 18.04 / CUDA 11.2 DLAMI.
    for name, node in raw["available_node_types"].items():
        assert node["node_config"].get("ImageId"), name


def test_docker_uses_pinned_ray_gpu_image(raw):
    docker = raw["docker"]
    images = [docker["image"], docker.get("head_image", ""), docker.get("worker_image", "")]
    assert not any("ray-ml" in i for i in images), "rayproject/ray-ml is deprecated"
    assert re.fullmatch(
        r"rayproject/ray:\d+\.\d+\.\d+-py3\d+-(gpu|cu\d+)", docker["image"]
    ), docker["image"]


def test_setup_commands_install_smctune(raw, prepared):
    assert any("smctune" in cmd and "pip install" in cmd for cmd in raw["setup_commands"])
    # prepare_config prepends setup_commands to head/worker setup, so both get it.
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert any("smctune" in cmd for cmd in prepared[key]), key
