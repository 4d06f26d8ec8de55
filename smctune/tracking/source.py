"""Rebuild a run directory from an MLflow experiment, for ``smctune report --mlflow-uri``.

The sweep's parent run holds ``sweep.json``, ``plan.json`` and ``environment.json``; every trial run
ends with its ``record.json`` (tracking.py). Downloading those into ``<out>/`` recreates exactly the
files the report reads from a run directory, so there is one report code path. Mask files stay in
the run directory's ``masks/`` (they are large), so mask overlap is absent from a report built this
way; per-layer profiles and their correlations come from the records and are present.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from smctune.errors import UserError
from smctune.rundir.layout import RunDir, write_atomic
from smctune.tracking.tracker import RECORD_ARTIFACT, SWEEP_KIND_TAG

# tracking URI schemes MLflow reads (a database scheme may name its driver: postgresql+psycopg2)
SCHEMES = ("http", "https", "sqlite", "file", "postgresql", "mysql", "mssql", "databricks")
SQLITE_MAGIC = b"SQLite format 3\x00"


def check_source(tracking_uri: str) -> None:
    """A store to read from must exist: MLflow would create an empty database (or ``mlruns``
    directory) at a mistyped path, and retries a file it cannot open for minutes. A local store is
    checked here, without MLflow; a server is asked when the report reads it."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(tracking_uri)
    scheme = parsed.scheme.split("+")[0].lower()
    if len(scheme) <= 1:   # a path (or a Windows drive letter): MLflow's file store
        scheme, local = "file", tracking_uri
    elif scheme not in SCHEMES:
        raise UserError(f"--mlflow-uri {tracking_uri}: unknown scheme '{parsed.scheme}' "
                        f"(valid: {', '.join(SCHEMES)})")
    else:
        local = unquote(parsed.path)
    if scheme == "sqlite":
        path = Path(tracking_uri.split(":///", 1)[1]) if ":///" in tracking_uri else None
        if path is None or not path.is_file():
            raise UserError(f"--mlflow-uri {tracking_uri}: no such database file "
                            f"({path if path is not None else 'expected sqlite:///<path>'})")
        try:
            with open(path, "rb") as handle:
                header = handle.read(len(SQLITE_MAGIC))
        except OSError as err:
            raise UserError(f"--mlflow-uri {tracking_uri}: cannot read {path}: {err.strerror or err}") from None
        if header != SQLITE_MAGIC:
            raise UserError(f"--mlflow-uri {tracking_uri}: {path} is not an SQLite database")
    elif scheme == "file" and not Path(local).is_dir():
        raise UserError(f"--mlflow-uri {tracking_uri}: no MLflow file store at {local} (not a directory)")


def relocated(spec, run_dir: Path):
    """``spec`` (a ``SweepSpec`` read from ``run_dir``'s sweep.json) placed where the directory is
    now: a run directory moved or copied elsewhere names its old place, and so does its default
    MLflow store (a sqlite file inside it), which moved with it. A server's URI stays as it is."""
    import dataclasses

    from smctune.tracking.tracker import default_tracking_uri

    here = Path(run_dir).resolve()
    if spec.run_dir == str(here):
        return spec
    moved = {"run_dir": str(here)}
    if spec.mlflow_uri == default_tracking_uri(spec.run_dir):
        moved["mlflow_uri"] = default_tracking_uri(here)
    return dataclasses.replace(spec, **moved)


def fetch_run(tracking_uri: str, experiment: str, out: Path) -> Path:
    check_source(tracking_uri)
    # MLflow draws a progress bar per downloaded artifact on stderr (two lines each): thousands for a
    # sweep's records, burying the report's own output (a user's setting wins)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
    except MlflowException as err:
        raise UserError(f"cannot read MLflow at {tracking_uri}: {' '.join(str(err).split())[:200]}") from None
    except Exception as err:  # noqa: BLE001 - a damaged store raises its database driver's errors
        raise UserError(f"cannot read MLflow at {tracking_uri}: {type(err).__name__}: "
                        f"{' '.join(str(err).split())[:160]}") from None
    if found is None:
        names = [e.name for e in client.search_experiments(max_results=50) if e.name.startswith("smctune/")]
        raise UserError(f"no MLflow experiment '{experiment}' at {tracking_uri} "
                        f"(smctune experiments there: {', '.join(names) or 'none'})")
    runs = client.search_runs([found.experiment_id], max_results=50000)
    parents = [r for r in runs if r.data.tags.get(SWEEP_KIND_TAG) == "sweep"]
    if not parents:
        raise UserError(f"experiment '{experiment}' has no smctune sweep run (tag {SWEEP_KIND_TAG}=sweep); "
                        "it was not written by this smctune version")
    run_dir = RunDir(out)
    run_dir.results_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        parent = parents[0].info.run_id
        for target in (run_dir.sweep_file, run_dir.plan_file, run_dir.environment_file):
            _download(client, parent, target.name, target, scratch)
        if not run_dir.sweep_file.is_file():
            raise UserError(f"the sweep run of '{experiment}' has no {run_dir.sweep_file.name} artifact")
        for run in runs:
            trial_id = run.data.tags.get("trial_id")
            if trial_id and run.info.run_id != parent:
                _download(client, run.info.run_id, RECORD_ARTIFACT, run_dir.record_file(trial_id), scratch)
    _relocate(run_dir)
    return run_dir.root


def _download(client, run_id: str, artifact: str, target: Path, scratch: str) -> None:
    """Copy one artifact; a trial killed before it ended simply has no record."""
    try:
        local = client.download_artifacts(run_id, artifact, scratch)
    except Exception:  # noqa: BLE001 - MLflow raises several types for "no such artifact"
        return
    write_atomic(target, Path(local).read_bytes())


def _relocate(run_dir: RunDir) -> None:
    """sweep.json names the original run directory; the rebuilt one is here."""
    try:
        data = json.loads(run_dir.sweep_file.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"the sweep.json artifact is damaged ({run_dir.sweep_file}): "
                        f"{' '.join(str(err).split())[:120]}") from None
    if not isinstance(data, dict):
        raise UserError(f"the sweep.json artifact is damaged ({run_dir.sweep_file}): not a JSON object")
    data["run_dir"] = str(run_dir.root.resolve())
    write_atomic(run_dir.sweep_file, json.dumps(data, indent=1))
