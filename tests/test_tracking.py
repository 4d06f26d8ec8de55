"""MLflow bookkeeping on a real sqlite store: the sweep's parent run and orphaned runs of a dead driver."""
from __future__ import annotations

from smctune.tracking.tracker import MLflowTracker


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
