"""What a result was produced with: package versions, the code's git revision, the machines' GPUs.

Written by the driver into the run directory (``RunDir.environment_file``) when a sweep starts,
because the report may be made later, elsewhere, by other versions; the report copies it into results.json.
Versions come from package metadata, so nothing heavy (torch, ray) is imported to learn them.
"""
from __future__ import annotations

import json
import os
import platform
import socket
from importlib import metadata
from pathlib import Path
from typing import Iterable, Optional, Union

from smctune.rundir.layout import RunDir, write_atomic

PACKAGES = ("smctune", "torch", "ray", "transformers", "optuna", "mlflow-skinny", "mlflow", "numpy")


def package_versions(names: Iterable[str] = PACKAGES) -> dict:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def gpus_of(nodes: Iterable[dict]) -> dict:
    """GPU count and accelerator types of the alive nodes of ``ray.nodes()``."""
    count, types = 0.0, []
    for node in nodes:
        if not node.get("Alive", node.get("alive", False)):
            continue
        resources = node.get("Resources") or {}
        count += float(resources.get("GPU", 0.0))
        types += [key.split(":", 1)[1] for key in resources if key.startswith("accelerator_type:")]
    return {"gpus": count, "gpu_types": sorted(set(types))}


def capture(nodes: Iterable[dict] = (), git_sha: Optional[str] = None) -> dict:
    nodes = list(nodes)
    return {"versions": package_versions(), "python": platform.python_version(),
            "platform": platform.platform(), "driver_host": socket.gethostname(),
            "git_sha": git_sha, "ray_nodes": sum(1 for n in nodes if n.get("Alive", n.get("alive"))),
            **gpus_of(nodes)}


def write(run_dir: Union[str, os.PathLike], environment: dict) -> Path:
    return write_atomic(RunDir(run_dir).environment_file, json.dumps(environment, indent=1) + "\n")
