"""Rebuild a run directory from an MLflow experiment, for ``smctune report --mlflow-uri``.

The sweep's parent run holds ``sweep.json``, ``plan.json`` and ``environment.json``; every trial run
ends with its ``record.json`` (tracking.py). Downloading those into ``<out>/`` recreates exactly the
files the report reads from a run directory, so there is one report code path. Mask files stay in
the run directory's ``masks/`` (they are large), so mask overlap is absent from a report built this
way; per-layer profiles and their correlations come from the records and are present.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from smctune.errors import UserError
from smctune.rundir.layout import RunDir, write_atomic
from smctune.tracking.tracker import RECORD_ARTIFACT, SWEEP_KIND_TAG



def fetch_run(tracking_uri: str, experiment: str, out: Path) -> Path:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
    except MlflowException as err:
        raise UserError(f"cannot read MLflow at {tracking_uri}: {' '.join(str(err).split())[:200]}") from None
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
    data = json.loads(run_dir.sweep_file.read_text())
    data["run_dir"] = str(run_dir.root.resolve())
    write_atomic(run_dir.sweep_file, json.dumps(data, indent=1))
