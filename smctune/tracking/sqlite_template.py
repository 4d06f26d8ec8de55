"""A new sqlite MLflow store starts as a copy of an empty one.

MLflow builds a new sqlite store by running every schema migration since its first release (about
a hundred alembic steps): about 2 s per new store on a 2-core VM (measured after MLflow was imported),
and paid again by every sweep. For one MLflow version the empty store is the same file every time,
so smctune has MLflow build it once, keeps it in its cache directory (``$SMCTUNE_CACHE_DIR``, else
``$XDG_CACHE_HOME/smctune``, else ``~/.cache/smctune``) under the MLflow version's name, and copies
it. Only public behaviour is relied on: MLflow opens a store its own version created.

The template is built in a child process whose working directory is the cache directory: MLflow
gives the ``Default`` experiment it creates in every store (smctune does not use it) an artifact
location under the creating process's working directory, and a fixed one is better than whichever
directory the first sweep ran from. Anything unusual (a cache directory that cannot be written, a
failed build) falls back to MLflow creating the store itself, as before.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

CACHE_ENV = "SMCTUNE_CACHE_DIR"
SQLITE_PREFIX = "sqlite:///"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_BUILD_TIMEOUT_S = 300


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smctune"


def store_path(tracking_uri: str) -> Optional[Path]:
    """The file of a ``sqlite:///<absolute path>`` URI without options; None for anything else."""
    if not tracking_uri.startswith(SQLITE_PREFIX) or "?" in tracking_uri:
        return None
    path = Path(tracking_uri[len(SQLITE_PREFIX):])
    return path if path.is_absolute() else None


def seed_store(tracking_uri: str) -> bool:
    """Put an empty store at ``tracking_uri``'s file when it does not exist yet; True when done.
    An existing file is never touched (a resumed sweep's store, or one created meanwhile)."""
    path = store_path(tracking_uri)
    if path is None or path.exists():
        return False
    template = _template()
    if template is None:
        return False
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, staging)
        os.link(staging, path)   # fails rather than replace a store that appeared meanwhile
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            staging.unlink()


def _template() -> Optional[Path]:
    import mlflow

    directory = cache_dir()
    template = directory / f"mlflow-{mlflow.__version__}-empty.db"
    if _is_sqlite(template):
        return template
    staging = directory / f".{template.name}.{os.getpid()}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        staging.unlink(missing_ok=True)
        build = ("import sys; from mlflow.tracking import MlflowClient; "
                 "MlflowClient('sqlite:///' + sys.argv[1]).search_experiments(max_results=1)")
        done = subprocess.run([sys.executable, "-c", build, str(staging)], cwd=directory, capture_output=True,
                              timeout=_BUILD_TIMEOUT_S, stdin=subprocess.DEVNULL)
        if done.returncode != 0 or not _is_sqlite(staging):
            return None
        os.replace(staging, template)   # two builders at once: either file is the same empty store
        return template
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        with contextlib.suppress(OSError):
            staging.unlink()


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False
