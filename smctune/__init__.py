"""smctune: SMC-Bench ("Sparsity May Cry") sweeps on Ray Tune with MLflow tracking.

Kept import-free on purpose: ``smctune --help`` must not pull in torch or ray.
"""
__all__ = ["__version__"]

try:
    from importlib.metadata import version as _version

    __version__ = _version("smctune")
except Exception:  # noqa: BLE001 - running from a checkout without installing
    __version__ = "0+unknown"
