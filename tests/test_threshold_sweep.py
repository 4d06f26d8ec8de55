"""--search threshold through the real driver: fewer trials than the grid, the answer recorded in
threshold.json, and a rerun replays the finished levels without running them."""
from __future__ import annotations

import json

from smctune.config.specs import SweepSpec
from smctune.config.search_space import load_search_space
from smctune.sweep.progress import ProgressPrinter
from smctune.sweep.plan import plan_trials
from smctune.sweep.run import run_sweep
from smctune.tracking.tracker import MLflowTracker, default_tracking_uri

from test_sweep import FAST_SPACE

GRID = (0.2, 0.36, 0.488, 0.59, 0.672)   # the paper ladder's first five levels


def test_threshold_search_runs_fewer_trials_than_the_grid(tmp_path, ray_session):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(FAST_SPACE)
    space = load_search_space("csqa", str(space_file))
    run_dir = tmp_path / "runs" / "th"
    run_dir.mkdir(parents=True)
    spec = SweepSpec(task="csqa", methods=("dense", "omp_before", "lth"), sparsities=GRID, seeds=(0,),
                     preset="smoke", preset_reason="test", name="th", run_dir=str(run_dir),
                     mlflow_uri=default_tracking_uri(run_dir), max_failures=0,
                     search_space_file=str(space_file), verbosity=0, search="threshold")
    (run_dir / "sweep.json").write_text(spec.to_json())
    trials = plan_trials(spec, space)
    assert len(trials) == 1 + len(GRID) + 1

    def sweep():
        tracker = MLflowTracker(spec.mlflow_uri, "smctune/th", str(run_dir), {"sweep": "th", "git_sha": "t"})
        return run_sweep(spec, space, trials, ProgressPrinter(len(trials), verbosity=0), tracker)

    sweep()
    records = {p.stem: json.loads(p.read_text()) for p in (run_dir / "results").glob("*.json")}
    searched = sorted(r["sparsity"] for r in records.values() if r["method"] == "omp_before")
    assert "dense-dense-seed0" in records and any(k.startswith("lth-") for k in records)  # not searched
    assert 1 <= len(searched) < len(GRID)

    data = json.loads((run_dir / "threshold.json").read_text())["stage1"]
    (curve,) = data["curves"]
    assert curve["method"] == "omp_before" and curve["trials_used"] == len(searched) == data["trials_used"]
    assert data["grid_trials"] == len(GRID) and f"instead of {len(GRID)}" in data["text"]
    # the answer agrees with the measured values: the first failing measured level, or none
    dense = records["dense-dense-seed0"]["levels"][-1]["best"]
    measured = {float(k): v for k, v in curve["measured"].items()}
    assert sorted(measured) == searched
    failing = [s for s in sorted(measured) if measured[s] < dense - 0.01 - 1e-9]
    assert curve["fails_at"] == (failing[0] if failing else None)

    before = {k: r["wall_s"] for k, r in records.items()}
    sweep()  # everything is done: the searches replay the finished levels, nothing runs again
    after = {p.stem: json.loads(p.read_text()) for p in (run_dir / "results").glob("*.json")}
    assert {k: r["wall_s"] for k, r in after.items()} == before
