"""Multi-node faults on one machine: a head (no trial slots) and worker nodes from Ray's own test
harness; a worker node is removed while its trial runs. The trial is retried on the other
node from its checkpoint and finishes; records and the dense cache are shared through the storage
path; nothing is lost, nothing runs twice, no MLflow run is left RUNNING."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_a_worker_node_removed_mid_trial_loses_nothing(tmp_path):
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, str(HERE / "multinode_harness.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=420, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["removed"], f"no trial checkpoint appeared, so no node was removed: {outcome}"
    records = outcome["records"]
    assert set(records) == {"dense-dense-seed0", "gmp-s0.5000-seed0"}, records
    assert {r["status"] for r in records.values()} == {"ok"}, records
    retried = [r for r in records.values() if r["retries"]]
    assert retried, f"the trial on the removed node must have been retried: {records}"
    assert all(r["resumed_from"] > 0 for r in retried), f"retries continue from a checkpoint: {records}"
    assert outcome["trials_run"] == 2                       # each trial recorded once
    assert "RUNNING" not in outcome["run_statuses"] and set(outcome["run_statuses"]) == {"FINISHED"}
