"""MLflow tracking: one experiment per sweep, a parent run for the sweep, one child run per trial.

Runs are created and closed from the driver (not from inside Ray workers), so a run's status is always
settled by someone who outlives the trial: FINISHED when it completes, FAILED when it errors, KILLED
when the sweep is interrupted. ``close_open_runs`` is called from a ``finally`` in the sweep, so no run
is ever left RUNNING. Artifacts are logged through the client, which works the same for the default
sqlite store and for a remote tracking server.

The parent run (tag ``kind=sweep``) holds the sweep's settings (``sweep.json``, ``plan.json``,
``environment.json``) from the start and the report at the end; a resumed sweep reopens the same
parent. Each trial run ends with its record (``record.json``, the run directory's
``results/<trial>.json``), so the MLflow experiment alone is enough to rebuild the report
(``smctune report --mlflow-uri``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
from pathlib import Path
from typing import Optional

from smctune.config.specs import TrialSpec
from smctune.errors import UserError
from smctune.rundir.layout import RunDir
from smctune.tracking.sqlite_template import seed_store

METRIC_KEYS = ("loss", "train_loss", "sparsity", "sparsity_all", "best")
SWEEP_KIND_TAG = "kind"
PARENT_TAG = "mlflow.parentRunId"
RECORD_ARTIFACT = "record.json"


def default_tracking_uri(run_dir: str | os.PathLike) -> str:
    """MLflow 3 refuses the plain file store; a sqlite file inside the run directory needs no server."""
    return f"sqlite:///{RunDir(Path(run_dir).resolve()).mlflow_db}"


REACHABLE_TIMEOUT_S = 5.0   # a tracking server that has not answered by then is treated as down
GATEWAY_DOWN = (502, 503, 504)   # a proxy answering for a server behind it that is not


def check_reachable(uri: str, timeout: float = REACHABLE_TIMEOUT_S) -> None:
    """Refuse an ``http(s)://`` tracking URI whose server does not answer, with one ``UserError``
    naming it and the reason, before anything is started or created. Why: MLflow's client retries a
    dead server with backoff at every call (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
    ``MLFLOW_HTTP_REQUEST_TIMEOUT``), so a typo in ``--mlflow-uri`` would only surface long after
    Ray had started. A plain GET of the server's ``/health`` endpoint: any HTTP answer but a
    gateway's 502/503/504 counts as reachable (a 401 or 404 is a server behind authentication or a
    path prefix, a TLS error one with its own certificate: MLflow's settings handle those). Other
    URIs (``sqlite:``, a database, ``databricks``) are left to MLflow."""
    import ssl
    from urllib import error, parse, request

    parts = parse.urlsplit(uri)
    if parts.scheme.lower() not in ("http", "https"):
        return
    # credentials in the URI are neither sent to /health nor shown in the message
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        raise UserError(f"--mlflow-uri: the port of {parts.scheme}://{host}... is not a number") from None
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    shown = parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    probe = shown.rstrip("/") + "/health"
    try:
        with request.urlopen(request.Request(probe, method="GET"), timeout=timeout) as response:
            response.read(64)
        return
    except error.HTTPError as err:
        if err.code not in GATEWAY_DOWN:
            return
        reason = f"HTTP {err.code} {err.reason}"
    except error.URLError as err:
        if isinstance(err.reason, ssl.SSLError):
            return   # it answered; MLFLOW_TRACKING_INSECURE_TLS or a CA bundle is MLflow's business
        reason = _reason(err.reason, timeout)
    except ssl.SSLError:
        return
    except (OSError, ValueError) as err:   # a timeout while reading, a reset, a malformed URI
        reason = _reason(err, timeout)
    raise UserError(f"MLflow tracking server {shown} is unreachable ({reason}); start it, fix "
                    "--mlflow-uri, or leave --mlflow-uri out to track in the run directory")


def _reason(err, timeout: float) -> str:
    if isinstance(err, TimeoutError):
        return f"no answer within {timeout:g}s"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return " ".join(str(err).split())[:200] or type(err).__name__


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class MLflowTracker:
    def __init__(self, tracking_uri: str, experiment: str, run_dir: str, sweep_tags: dict):
        import logging

        from mlflow.tracking import MlflowClient

        # after the import: mlflow configures its logger on import; no "creating tables" chatter
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)

        seed_store(tracking_uri)
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            artifacts = None
            if tracking_uri.startswith("sqlite:"):
                artifacts = (Path(run_dir).resolve() / "mlflow-artifacts").as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts)
        else:
            self.experiment_id = found.experiment_id
        self.sweep_tags = {key: str(value) for key, value in sweep_tags.items()}
        self.runs: dict[str, str] = {}
        self.parent_id = self._open_parent()

    def _open_parent(self) -> str:
        """The sweep's own run: created once, reopened (RUNNING again) by a resumed sweep."""
        found = self.client.search_runs([self.experiment_id], filter_string=f"tags.{SWEEP_KIND_TAG} = 'sweep'",
                                        max_results=1)
        if found:
            run_id = found[0].info.run_id
            self._settle_orphans(run_id)
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        name = self.sweep_tags.get("sweep", "sweep")
        run = self.client.create_run(self.experiment_id, run_name=f"{name} (sweep)",
                                     tags=dict(self.sweep_tags, **{SWEEP_KIND_TAG: "sweep"}))
        return run.info.run_id

    def _settle_orphans(self, parent_id: str) -> None:
        """Runs still RUNNING when a sweep is reopened belong to a driver that died without its
        ``finally`` (SIGKILL, a lost head node): only one driver works on a run directory, so they
        are over. They end KILLED, as an interrupted trial's run does."""
        stale = self.client.search_runs([self.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                        max_results=10000)
        for run in stale:
            if run.info.run_id != parent_id:
                self.client.set_tag(run.info.run_id, "error", "the sweep's driver died before the trial ended")
                self.client.set_terminated(run.info.run_id, "KILLED")
        if any(run.info.run_id == parent_id for run in stale):
            self.client.set_terminated(parent_id, "KILLED")

    def log_sweep_files(self, files) -> None:
        for path in files:
            if Path(path).is_file():
                self.client.log_artifact(self.parent_id, str(path))

    def started(self, spec: TrialSpec) -> str:
        tags = dict(self.sweep_tags, task=spec.task, method=spec.method, seed=str(spec.seed),
                    preset=spec.preset, trial_id=spec.trial_id,
                    sparsity="dense" if spec.sparsity is None else f"{spec.sparsity:g}")
        if spec.model.arch:
            tags["model"] = spec.model.arch
        if spec.fold is not None:
            tags["fold"] = str(spec.fold)
        if spec.group:
            tags["group"] = spec.group
        tags[PARENT_TAG] = self.parent_id
        run = self.client.create_run(self.experiment_id, run_name=spec.trial_id, tags=tags)
        run_id = run.info.run_id
        self.runs[spec.trial_id] = run_id
        from mlflow.entities import Param

        params = [Param(key, str(value)[:500]) for key, value in _flatten(dataclasses.asdict(spec)).items()]
        params.append(Param("dense_key", spec.dense_key()))
        for start in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[start:start + 100])
        return run_id

    def result(self, trial_id: str, metrics: dict) -> None:
        run_id = self.runs.get(trial_id)
        if run_id is None:
            return
        from mlflow.entities import Metric

        step = int(metrics.get("global_step") or 0)
        name = metrics.get("metric_name", "accuracy")
        values = {name: metrics.get(name)}
        values.update({key: metrics.get(key) for key in METRIC_KEYS})
        values.update(metrics.get("details") or {})   # e.g. BLEU and chrF per translation direction
        values.update({f"cost/{key}": value for key, value in (metrics.get("costs") or {}).items()})
        if metrics.get("round") is not None:
            values["round"] = metrics["round"]
        if metrics.get("level") is not None:  # next to "sparsity", the one reached
            values["requested_sparsity"] = metrics["level"]
        stamp = _now_ms()
        batch = [Metric(key, float(value), stamp, step) for key, value in values.items()
                 if isinstance(value, (int, float)) and math.isfinite(float(value))]
        if batch:
            self.client.log_batch(run_id, metrics=batch)
        if metrics.get("collapsed"):
            self.client.set_tag(run_id, "collapsed", str(metrics["collapsed"])[:500])
        if metrics.get("layerwise_csv"):
            level = metrics.get("level") or 0.0
            suffix = f"_round{metrics['round']}" if metrics.get("round") is not None else ""
            self.client.log_text(run_id, metrics["layerwise_csv"],
                                 f"layerwise/sparsity_{level:.4f}{suffix}.csv")

    def recovered(self, trial_id: str, error: str) -> None:
        run_id = self.runs.get(trial_id)
        if run_id is not None:
            retries = int(self.client.get_run(run_id).data.tags.get("retries", "0")) + 1
            self.client.set_tag(run_id, "retries", str(retries))
            self.client.set_tag(run_id, "last_retry_error", error[:500])

    def finished(self, trial_id: str, status: str, error: Optional[str] = None,
                 record: Optional[dict] = None) -> None:
        run_id = self.runs.pop(trial_id, None)
        if run_id is None:
            return
        if error:
            self.client.set_tag(run_id, "error", error[:500])
        if record is not None:
            self.client.log_text(run_id, json.dumps(record, indent=1, default=str), RECORD_ARTIFACT)
        self.client.set_terminated(run_id, {"ok": "FINISHED", "failed": "FAILED"}.get(status, "KILLED"))

    def log_sweep_report(self, files: list) -> None:
        """The report's files as artifacts of the parent run (``report/``), which then ends FINISHED."""
        for path in files:
            if Path(path).is_file():
                self.client.log_artifact(self.parent_id, str(path), "report")
        self.end_sweep("FINISHED")

    def end_sweep(self, status: str, error: Optional[str] = None) -> None:
        """The parent run ends ``status``; ``error``: why the sweep failed or stopped (tag ``error``)."""
        if error:
            self.client.set_tag(self.parent_id, "error", " ".join(str(error).split())[:500])
        self.client.set_terminated(self.parent_id, status)

    def close_open_runs(self) -> None:
        for trial_id in list(self.runs):
            self.finished(trial_id, "killed", "sweep interrupted before the trial ended")


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
