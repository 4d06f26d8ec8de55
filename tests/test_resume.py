"""Fault injection on the driver: interrupt a real sweep mid-way, then ``smctune resume`` finishes it
without running any finished trial twice, and no MLflow run is left RUNNING."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import joined
from test_sweep import FAST_SPACE

SMCTUNE = [sys.executable, "-m", "smctune.cli"]


def _records(run_dir: Path) -> dict:
    out = {}
    for path in (run_dir / "results").glob("*.json"):
        try:
            out[path.stem] = json.loads(path.read_text())
        except ValueError:
            pass
    return out


def _runs(run_dir: Path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{run_dir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=[f"smctune/{run_dir.name}"])
    return runs[runs.get("tags.kind", "") != "sweep"] if "tags.kind" in runs else runs


def test_interrupted_driver_then_resume(tmp_path, ray_address):
    """The driver joins a running Ray (as on a cluster): SIGTERM stops it, not Ray; resume joins again."""
    space = tmp_path / "space.yaml"
    space.write_text(FAST_SPACE)
    env = joined(dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1"), ray_address)
    storage = tmp_path / "runs"
    cmd = SMCTUNE + ["sweep", "csqa", "--methods", "dense,omp_before,random_before,gmp",
                     "--sparsities", "0.3,0.5,0.7", "--preset", "smoke", "--search-space", str(space),
                     "--storage", str(storage), "--name", "r", "--max-concurrent", "1", "-q"]
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = storage / "r"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len([r for r in _records(run_dir).values()
                                                if r["status"] == "ok"]) < 2:
        time.sleep(0.5)
    driver.send_signal(signal.SIGTERM)  # what `ray job stop` or a batch scheduler sends
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, err
    assert "smctune resume" in err

    before = _records(run_dir)
    finished = {tid for tid, r in before.items() if r["status"] == "ok"}
    assert 2 <= len(finished) < 10
    runs = _runs(run_dir)
    assert "RUNNING" not in set(runs["status"])
    assert set(runs[runs["tags.trial_id"].isin(finished)]["status"]) == {"FINISHED"}
    from smctune.sweep.status import read_status

    # `smctune status` on the real interrupted run: the finished trials, and none left running
    states = {t.trial_id: t.state for t in read_status(run_dir).trials}
    assert {tid for tid, state in states.items() if state == "finished"} == finished
    assert "running" not in states.values() and len(states) == 10

    resumed = subprocess.run(SMCTUNE + ["resume", str(run_dir), "-q"], env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    after = _records(run_dir)
    assert len(after) == 10 and {r["status"] for r in after.values()} == {"ok"}
    for trial_id in finished:  # not run again: the record is untouched
        assert after[trial_id] == before[trial_id]
    runs = _runs(run_dir)
    assert "RUNNING" not in set(runs["status"])
    counts = runs[runs["status"] == "FINISHED"]["tags.trial_id"].value_counts()
    assert set(counts.index) == set(after) and counts.max() == 1  # every trial finished exactly once
    assert read_status(run_dir).counts()["finished"] == 10


def test_resume_keeps_failures_unless_asked(tmp_path):
    from smctune.rundir.records import finished_ids

    run_dir = tmp_path / "r"
    (run_dir / "results").mkdir(parents=True)
    for trial_id, status in (("a", "ok"), ("b", "failed"), ("c", "killed"), ("d", "collapsed")):
        (run_dir / "results" / f"{trial_id}.json").write_text(json.dumps({"trial_id": trial_id,
                                                                           "status": status}))
    assert finished_ids(run_dir) == {"a", "d"}
    assert finished_ids(run_dir, also=("failed",)) == {"a", "b", "d"}
    missing = subprocess.run(SMCTUNE + ["resume", str(tmp_path / "nope")], capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    not_a_run = subprocess.run(SMCTUNE + ["resume", str(run_dir)], capture_output=True, text=True)
    assert not_a_run.returncode == 2 and "no sweep.json" in not_a_run.stderr
