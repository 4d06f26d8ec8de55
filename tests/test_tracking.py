"""MLflow bookkeeping on a real sqlite store: the sweep's parent run, orphaned runs of a dead driver,
and new stores seeded from the per-version template."""
from __future__ import annotations

import sqlite3

from smctune.mlflow_store import seed_sqlite_store
from smctune.tracking import MLflowTracker


def _tracker(tmp_path, name="s"):
    return MLflowTracker(f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}", f"smctune/{name}", str(tmp_path / "run"),
                         {"sweep": name})


def test_parent_run_is_reopened_and_orphans_of_a_dead_driver_end_killed(tmp_path):
    first = _tracker(tmp_path)
    client = first.client
    orphan = client.create_run(first.experiment_id, run_name="t", tags={"mlflow.parentRunId": first.parent_id})
    # the driver is SIGKILLed here: nothing is closed
    second = _tracker(tmp_path)
    assert second.parent_id == first.parent_id
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    assert "driver died" in client.get_run(orphan.info.run_id).data.tags["error"]
    assert client.get_run(second.parent_id).info.status == "RUNNING"
    second.end_sweep("FINISHED")
    third = _tracker(tmp_path)          # a finished sweep resumed: reopened, not duplicated
    assert third.parent_id == first.parent_id and client.get_run(third.parent_id).info.status == "RUNNING"
    runs = client.search_runs([first.experiment_id])
    assert len([r for r in runs if r.data.tags.get("kind") == "sweep"]) == 1


def test_new_store_is_seeded_from_a_template_built_by_mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    target = tmp_path / "a" / "mlflow.db"
    assert seed_sqlite_store(f"sqlite:///{target}")
    assert list((tmp_path / "cache" / "smctune").glob("mlflow-*-empty-store.db"))
    assert not seed_sqlite_store(f"sqlite:///{target}")            # never over an existing store
    assert not seed_sqlite_store("http://mlflow:5000")             # only sqlite files
    with sqlite3.connect(target) as db:
        location = db.execute("select artifact_location from experiments where experiment_id = 0").fetchone()[0]
    assert location == (tmp_path / "a" / "mlflow-artifacts" / "0").as_uri()
    tracker = MLflowTracker(f"sqlite:///{target}", "smctune/x", str(tmp_path / "a"), {"sweep": "x"})
    assert tracker.client.get_experiment(tracker.experiment_id).name == "smctune/x"
    assert not list((tmp_path / "a").glob(".mlflow-seed-*"))      # no staging file left
