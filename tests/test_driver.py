"""A whole sweep from Python, as a notebook runs it: ``driver.sweep(...)`` with the CLI's choices as
keywords, no subprocess; the result says where and what ran, and the run directory is complete."""
from __future__ import annotations

import json

import pytest

from conftest import fails
from smctune.rundir.layout import RunDir
from smctune.sweep.driver import resume, sweep
from test_sweep import FAST_SPACE


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(FAST_SPACE)
    return path


def test_a_sweep_runs_from_python_and_continues_by_name(tmp_path, space_file, ray_session):
    import ray
    from mlflow.tracking import MlflowClient

    from smctune.report.write import write_report

    storage = tmp_path / "runs"
    result = sweep("csqa", methods="dense,omp_before", sparsities=(0.5,), preset="smoke",
                   search_space=space_file, storage=storage, name="py", verbosity=0)
    run = RunDir(storage / "py")
    assert result.run_dir == run.root
    assert (result.trials_total, result.trials_run, result.trials_skipped) == (2, 2, 0)
    assert result.spec.methods == ("dense", "omp_before") and result.spec.sparsities == (0.5,)
    assert result.spec.train_examples  # the data check's count is recorded
    records = {p.stem: json.loads(p.read_text()) for p in run.results_dir.glob("*.json")}
    assert set(records) == {"dense-dense-seed0", "omp_before-s0.5000-seed0"}
    assert {r["status"] for r in records.values()} == {"ok"}
    assert run.sweep_file.is_file() and run.environment_file.is_file()
    assert json.loads(run.plan_file.read_text())["trials"] == ["dense-dense-seed0", "omp_before-s0.5000-seed0"]
    assert result.report is not None and result.report.html.is_file()
    assert {t.trial_id for t in result.results().trials} == set(records)
    assert ray.is_initialized(), "a Ray the caller started is the caller's to stop"

    client = MlflowClient(result.spec.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("smctune/py").experiment_id])
    assert {(r.data.tags.get("kind"), r.info.status) for r in runs} == {("sweep", "FINISHED"),
                                                                         (None, "FINISHED")}

    again = resume("py", storage=storage, report=False)   # nothing left to run
    assert (again.trials_run, again.trials_skipped, again.report) == (0, 2, None)
    assert write_report(again.run_dir).results_json.is_file()   # the notebook's next step


def test_bad_choices_are_one_line_errors_before_anything_is_created(tmp_path, space_file):
    fails("unknown sweep option 'sparsity'.*sparsities", sweep, "csqa", sparsity=(0.5,))
    fails("sparsity 1.5 is outside", sweep, "csqa", sparsities=(0.5, 1.5), preset="smoke",
          search_space=space_file, storage=tmp_path / "runs")
    fails("unknown method 'magic'", sweep, "csqa", methods=("dense", "magic"), storage=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
