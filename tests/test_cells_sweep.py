"""--trials-per-cell through the real driver: Optuna tunes the declared cells inside the sweep's one
Tuner per stage, every tuning runs every seed, and the report shows each cell's best tuning."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from smctune.config.specs import SweepSpec
from smctune.config.search_space import load_search_space
from smctune.sweep.progress import ProgressPrinter
from smctune.report.write import write_report
from smctune.sweep.plan import plan_trials, tuned_trial_count
from smctune.sweep.run import run_sweep
from smctune.tracking.tracker import MLflowTracker, default_tracking_uri

from test_sweep import FAST_SPACE

SEARCHED = FAST_SPACE + """
search:
  trials_per_cell: 2
  methods:
    gmp: {frequency: {choices: [1, 2]}, start_fraction: {low: 0.0, high: 0.3}}
"""


def test_searched_cells_in_a_real_sweep(tmp_path, ray_session):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(SEARCHED)
    space = load_search_space("csqa", str(space_file))
    run_dir = tmp_path / "runs" / "tuned"
    run_dir.mkdir(parents=True)
    spec = SweepSpec(task="csqa", methods=("dense", "gmp", "omp_before"), sparsities=(0.5,), seeds=(0, 1),
                     preset="smoke", preset_reason="test", name="tuned", run_dir=str(run_dir),
                     mlflow_uri=default_tracking_uri(run_dir), max_failures=0,
                     search_space_file=str(space_file), verbosity=0)
    (run_dir / "sweep.json").write_text(spec.to_json())
    trials = plan_trials(spec, space)
    assert len(trials) == 6 and tuned_trial_count(trials, space, spec) == 8  # gmp: 2 tunings x 2 seeds
    tracker = MLflowTracker(spec.mlflow_uri, "smctune/tuned", str(run_dir), {"sweep": "t", "git_sha": "t"})
    run_sweep(spec, space, trials, ProgressPrinter(8, verbosity=0), tracker)

    records = {p.stem: json.loads(p.read_text()) for p in (run_dir / "results").glob("*.json")}
    assert set(records) == {"dense-dense-seed0", "dense-dense-seed1", "omp_before-s0.5000-seed0",
                            "omp_before-s0.5000-seed1", "gmp-s0.5000-seed0", "gmp-s0.5000-seed1",
                            "gmp-s0.5000-seed0-t1", "gmp-s0.5000-seed1-t1"}
    assert {r["status"] for r in records.values()} == {"ok"}
    defaults, tuned = records["gmp-s0.5000-seed0"], records["gmp-s0.5000-seed0-t1"]
    assert defaults["tuning"] == 0 and tuned["tuning"] == 1
    # only the declared tunables move, and both seeds of a tuning share them
    changed = {k for k in defaults["tunables"] if defaults["tunables"][k] != tuned["tunables"][k]}
    assert changed <= {"frequency", "start_fraction"} and changed
    assert records["gmp-s0.5000-seed1-t1"]["tunables"] == tuned["tunables"]
    assert records["omp_before-s0.5000-seed0"]["tuning"] == 0
    assert (run_dir / "optuna.journal").is_file()

    paths = write_report(run_dir)
    level = json.loads(Path(paths.results_json).read_text())["methods"]["gmp"]["levels"]["0.5"]
    assert level["tunings"] == 2 and level["tuning"] in (0, 1) and level["n"] == 2
    best = max((0, 1), key=lambda t: sum(
        records[f"gmp-s0.5000-seed{s}{'-t1' if t else ''}"]["levels"][-1]["best"] for s in (0, 1)))
    assert level["tuning"] == best
    assert "best tuning" in paths.table

    # the same sweep again runs nothing: the planned trials and the study's tunings are all done
    again = run_sweep(spec, space, trials, ProgressPrinter(8, verbosity=0),
                      MLflowTracker(spec.mlflow_uri, "smctune/tuned", str(run_dir), {"sweep": "t"}))
    assert again.trials_skipped == 6
    assert len(list((run_dir / "results").glob("*.json"))) == 8


@pytest.mark.parametrize("args, message", [
    (["--trials-per-cell", "0"], "--trials-per-cell"),
    (["--trials-per-cell", "two"], "not a whole number"),
    (["--trials-per-cell", "3"], "declares no search"),
    (["--asha"], "--asha compares tunings within a cell"),
])
def test_bad_search_flags_are_one_line_errors(tmp_path, args, message):
    plain = tmp_path / "plain.yaml"  # a search space without a search: block
    plain.write_text(FAST_SPACE)
    result = subprocess.run([sys.executable, "-m", "smctune.cli", "plan", "csqa", "--preset", "smoke",
                             "--methods", "gmp", "--search-space", str(plain), *args],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_plan_counts_tunings(tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(SEARCHED)
    result = subprocess.run([sys.executable, "-m", "smctune.cli", "plan", "csqa", "--preset", "smoke",
                             "--methods", "gmp,omp_before", "--sparsities", "0.5", "--seeds", "2",
                             "--search-space", str(space_file), "--trials-per-cell", "3"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "search: gmp tuned with Optuna (3 tunings per cell: 4 more trials" in result.stdout
