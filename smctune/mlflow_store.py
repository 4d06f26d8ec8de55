"""A new sqlite MLflow store for a run directory, without re-running MLflow's schema migrations.

MLflow builds a new sqlite database by applying its whole chain of schema migrations, about 1.3 s of
CPU on this machine, paid at the start of every sweep (and of every sweep in the test suite), while
opening an existing store takes 0.03 s. The empty, migrated database is the same for every run of one
MLflow version, so it is built once per version under the user's cache directory, by MLflow itself,
and copied. The copy's ``Default`` experiment is pointed into the run directory (MLflow would have put
it under whatever the working directory was). Anything unexpected - no cache directory, a read-only
home, another store layout - leaves the file absent and MLflow builds it the usual way.
"""
from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Optional

SQLITE_PREFIX = "sqlite:///"


def seed_sqlite_store(tracking_uri: str) -> bool:
    """Put a migrated empty store at the uri's path when it names a sqlite file that does not exist
    yet. True when seeded; False when left to MLflow (not sqlite, already there, or seeding failed)."""
    target = _sqlite_path(tracking_uri)
    if target is None or target.exists():
        return False
    try:
        template = _template()
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkstemp(prefix=".mlflow-seed-", dir=target.parent)[1])
        try:
            staging.write_bytes(template.read_bytes())
            with sqlite3.connect(staging) as db:
                db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                           ((target.parent / "mlflow-artifacts" / "0").as_uri(),))
            db.close()
            os.link(staging, target)  # fails if the file appeared meanwhile: that one is kept
        finally:
            staging.unlink(missing_ok=True)
    except (OSError, sqlite3.Error):
        return False
    return True


def _sqlite_path(tracking_uri: str) -> Optional[Path]:
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    path = tracking_uri[len(SQLITE_PREFIX):]
    return Path(path) if path.startswith("/") else None  # relative paths: MLflow's own resolution


def _template() -> Path:
    """The cached empty store of the installed MLflow version, built on first use."""
    from mlflow.version import VERSION

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "smctune"
    template = cache / f"mlflow-{VERSION}-empty-store.db"
    if template.is_file():
        return template
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        from mlflow.tracking import MlflowClient

        built = Path(scratch) / "store.db"
        MlflowClient(f"{SQLITE_PREFIX}{built}").search_experiments(max_results=1)
        os.replace(built, template)  # atomic: concurrent builders each install a complete file
    return template
