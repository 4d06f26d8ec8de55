"""Analysis and report on synthetic run directories (no ray, no torch); expectations computed by hand."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from smctune.report.analysis import FAILS_AT, NEVER, NO_DATA, NO_DENSE, failing_sparsity, summarize
from smctune.report.cell_stats import CellStat, cells, dense_baseline
from smctune.report.load import load_run
from smctune.config.specs import SweepSpec
from smctune.config.settings import paper_grid
from smctune.report.criterion import Criterion, Tolerance, parse_tolerance
from smctune.errors import UserError
from smctune.report.figures.curves import plot_curves
from smctune.report.results_json import write_results_json
from smctune.report.tables import format_table
from smctune.report.write import write_report

GRID = paper_grid(4)  # (0.2, 0.36, 0.488, 0.5904)


def pts(points: float) -> Criterion:
    """An absolute tolerance of ``points`` (metrics are fractions: 1 point = 0.01)."""
    return Criterion(Tolerance(points))


# --------------------------------------------------------------------------------------------------
# helpers

def make_run(root: Path, methods=("dense", "omp_after"), grid=GRID, seeds=(0,), preset="smoke") -> Path:
    (root / "results").mkdir(parents=True, exist_ok=True)
    spec = SweepSpec(task="csqa", methods=tuple(methods), sparsities=tuple(grid), seeds=tuple(seeds),
                     preset=preset, preset_reason="test", name="test-run", run_dir=str(root),
                     mlflow_uri="file:///nowhere")
    (root / "sweep.json").write_text(spec.to_json())
    return root


def level(sparsity, best, final=None, round_=None):
    return {"sparsity": sparsity, "achieved_sparsity": sparsity, "achieved_sparsity_all": sparsity * 0.9,
            "final": best if final is None else final, "best": best, "step": 40, "round": round_}


def add_trial(root: Path, method, seed, levels, status="ok", trial_id=None, error=None):
    if trial_id is None:
        if method == "dense":
            trial_id = f"dense-dense-seed{seed}"
        elif method == "lth":
            trial_id = f"lth-to{levels[-1]['sparsity']:.4f}-seed{seed}"
        else:
            trial_id = f"{method}-s{levels[0]['sparsity']:.4f}-seed{seed}"
    data = {"trial_id": trial_id, "task": "csqa", "method": method, "seed": seed, "preset": "smoke",
            "status": status, "error": error, "metric": "accuracy", "chance": 0.2,
            "levels": levels if status == "ok" else [], "history": [], "dense_key": "ab12cd34ef56",
            "wall_s": 1.0, "mlflow_run_id": "r"}
    (root / "results" / f"{trial_id}.json").write_text(json.dumps(data))
    return trial_id


def add_curve(root, method, values, seed=0, grid=GRID):
    """One ok trial per grid level; ``None`` skips a level (missing cell)."""
    for s, v in zip(grid, values):
        if v is not None:
            add_trial(root, method, seed, [level(s, v)])


def add_dense(root, value, seed=0):
    add_trial(root, "dense", seed, [level(0.0, value)])


# --------------------------------------------------------------------------------------------------
# failing sparsity

def test_fails_at_first_level_below_dense_minus_tolerance():
    result = failing_sparsity({0.2: 0.77, 0.36: 0.765, 0.488: 0.74, 0.59: 0.60}, 0.775, pts(1))
    assert result.outcome == FAILS_AT
    assert result.fails_at == 0.488
    assert not result.fails_at_first_level
    assert not result.non_monotone
    assert result.failing_levels == (0.488, 0.59)
    assert result.threshold == pytest.approx(0.765)


def test_never_fails_within_grid():
    result = failing_sparsity({0.2: 0.77, 0.36: 0.77, 0.488: 0.769}, 0.77, pts(1))
    assert result.outcome == NEVER
    assert result.fails_at is None
    assert not result.fails_at_first_level and not result.non_monotone


def test_fails_at_first_level():
    result = failing_sparsity({0.2: 0.70, 0.36: 0.60}, 0.77, pts(1))
    assert result.outcome == FAILS_AT and result.fails_at == 0.2
    assert result.fails_at_first_level


def test_non_monotone_flag():
    result = failing_sparsity({0.2: 0.77, 0.36: 0.70, 0.488: 0.765, 0.59: 0.50}, 0.77, pts(1))
    assert result.fails_at == 0.36
    assert result.non_monotone
    # recovery has to reach dense - tolerance; staying below is monotone failure
    result = failing_sparsity({0.2: 0.77, 0.36: 0.70, 0.488: 0.75}, 0.77, pts(1))
    assert not result.non_monotone


def test_tolerance_edge_exactly_at_threshold_is_not_failing():
    # 0.77 - 0.01 is not exactly representable; the threshold comparison must not fail by rounding
    assert failing_sparsity({0.2: 0.76, 0.36: 0.76}, 0.77, pts(1)).outcome == NEVER
    result = failing_sparsity({0.2: 0.76, 0.36: 0.7599}, 0.77, pts(1))
    assert result.outcome == FAILS_AT and result.fails_at == 0.36
    # tolerance 0: anything strictly below dense fails
    assert failing_sparsity({0.2: 0.77}, 0.77, pts(0)).outcome == NEVER
    assert failing_sparsity({0.2: 0.7699}, 0.77, pts(0)).fails_at == 0.2
    # tolerance is in metric units: 0.05 = 5 points
    assert failing_sparsity({0.2: 0.73, 0.36: 0.71}, 0.77, pts(5)).fails_at == 0.36


def test_no_dense_baseline_is_explicit():
    result = failing_sparsity({0.2: 0.1, 0.36: 0.1}, None, pts(1))
    assert result.outcome == NO_DENSE and result.fails_at is None


def test_missing_levels_are_skipped_and_flagged():
    result = failing_sparsity({0.2: None, 0.36: 0.70, 0.488: 0.6}, 0.77, pts(1))
    assert result.fails_at == 0.36
    assert not result.fails_at_first_level  # the grid's first level was never measured
    assert result.missing == (0.2,) and result.missing_below
    result = failing_sparsity({0.2: 0.77, 0.36: None}, 0.77, pts(1))
    assert result.outcome == NEVER and result.missing_below
    assert failing_sparsity({0.2: None}, 0.77, pts(1)).outcome == NO_DATA


def test_curve_accepts_cellstats_in_any_order():
    curve = {0.36: CellStat(0.5, 0.0, 1, (0.5,), {"ok": 1}), 0.2: CellStat(0.77, 0.0, 1, (0.77,), {"ok": 1})}
    assert failing_sparsity(curve, 0.77).fails_at == 0.36


# --------------------------------------------------------------------------------------------------
# aggregation

def test_seed_mean_and_std(tmp_path):
    root = make_run(tmp_path / "run", seeds=(0, 1, 2))
    for seed, value in enumerate((0.70, 0.74, 0.72)):
        add_trial(root, "omp_after", seed, [level(0.2, value, final=value - 0.1)])
    for seed, value in enumerate((0.76, 0.78, 0.77)):
        add_dense(root, value, seed)
    run = load_run(root)
    stat = cells(run)["omp_after"][0.2]
    assert stat.n == 3
    assert stat.mean == pytest.approx(0.72)
    assert stat.std == pytest.approx(0.02)  # sample std: sqrt((0.02² + 0.02² + 0) / 2)
    assert sorted(stat.values) == pytest.approx([0.70, 0.72, 0.74])
    assert stat.status_counts == {"ok": 3}
    assert cells(run, "final")["omp_after"][0.2].mean == pytest.approx(0.62)
    dense = dense_baseline(run)
    assert dense.mean == pytest.approx(0.77) and dense.std == pytest.approx(0.01) and dense.n == 3
    assert cells(run)["omp_after"][0.36].n == 0 and cells(run)["omp_after"][0.36].mean is None


def test_failed_trials_counted_but_excluded_from_mean(tmp_path):
    root = make_run(tmp_path / "run", seeds=(0, 1, 2))
    add_dense(root, 0.77)
    add_trial(root, "omp_after", 0, [level(0.2, 0.70)])
    add_trial(root, "omp_after", 1, [level(0.2, 0.74)])
    add_trial(root, "omp_after", 2, [level(0.2, 0.0)], status="failed", error="RuntimeError: boom")
    add_trial(root, "omp_after", 0, [level(0.36, 0.5)], status="killed")
    for seed in (0, 1):
        add_trial(root, "omp_after", seed, [level(0.488, 0.5)], status="failed", error="OOM")
    run = load_run(root)
    table = cells(run)["omp_after"]
    assert table[0.2].mean == pytest.approx(0.72) and table[0.2].n == 2
    assert table[0.2].status_counts == {"ok": 2, "failed": 1}
    assert table[0.36].status_counts == {"killed": 1} and table[0.36].mean is None
    assert table[0.488].status_counts == {"failed": 2}
    summary = summarize(run)
    assert (summary.trials_ok, summary.trials_failed, summary.trials_killed) == (3, 3, 1)
    assert ("omp_after-s0.2000-seed2", "failed", "RuntimeError: boom") in summary.failures
    text = format_table(summary)
    row = next(line for line in text.splitlines() if line.startswith("omp_after"))
    assert "72.0±2.8* ✗" in row      # 2 of 3 seeds ok; below 77 - 1
    assert "killed" in row and "failed" in row
    assert row.endswith("first level (0.200)")
    assert "ok, 3 failed, 1 killed" in text


def test_missing_cells_shown_as_dash_and_table_layout(tmp_path):
    root = make_run(tmp_path / "run", methods=("dense", "gmp", "omp_after"))
    add_dense(root, 0.773)
    add_curve(root, "omp_after", [0.770, None, 0.70, 0.60])
    add_curve(root, "gmp", [0.775, 0.768, 0.766, 0.764])
    text = format_table(summarize(load_run(root)))
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("method"))
    assert [c for c in header.split()] == ["method", "dense", "0.200", "0.360", "0.488", "0.590", "fails", "at"]
    names = [line.split()[0] for line in lines[3:6]]
    assert names == ["dense", "omp_after", "gmp"]  # dense first, then registry order
    dense_row, omp_row, gmp_row = lines[3:6]
    assert "77.3" in dense_row
    # a level below the failure is missing, so the failing sparsity is an upper bound and says so
    assert omp_row.split()[1:] == ["77.0", "✓", "—", "70.0", "✗", "60.0", "✗", "0.488", "(levels", "missing",
                                   "below)"]
    assert gmp_row.split()[-1] == "never"
    # fixed width: every data column ends at the same position as its header
    for label in ("0.200", "0.590"):
        end = header.index(label) + len(label)
        for row in (omp_row, gmp_row):
            assert row[end - 1] in "✓✗—"
    assert "dense 77.3 (1 seed)" in text
    assert "tolerance 1 pt" in text and "best over evaluations" in text and "chance 20.0%" in text
    assert "trials: 8 ok, 0 failed" in text  # 1 dense + 3 + 4


def test_fails_at_column_texts(tmp_path):
    root = make_run(tmp_path / "run", methods=("dense", "lth", "omp_after", "gmp", "random_after"))
    add_dense(root, 0.77)
    add_curve(root, "omp_after", [0.70, 0.60, 0.5, 0.4])
    add_curve(root, "gmp", [0.77, 0.70, 0.77, 0.6])
    add_curve(root, "random_after", [0.77, 0.77, None, 0.77])
    text = format_table(summarize(load_run(root)))
    rows = {line.split()[0]: line for line in text.splitlines()[3:] if line.strip()}
    assert rows["omp_after"].endswith("first level (0.200)")
    assert rows["gmp"].endswith("0.360 (non-monotone)")
    assert rows["random_after"].endswith("never (levels missing)")
    assert rows["lth"].endswith("— (no data)")


def test_no_dense_baseline_in_run(tmp_path):
    root = make_run(tmp_path / "run", methods=("omp_after",))
    add_curve(root, "omp_after", [0.5, 0.4, 0.3, 0.2])
    summary = summarize(load_run(root))
    assert summary.dense is None
    assert summary.methods[0].fail.outcome == NO_DENSE
    text = format_table(summary)
    assert "unknown (no dense)" in text and "failing sparsity unknown" in text
    assert "✗" not in text.split("\n\n")[0] and "✓" not in text


def test_lth_levels_map_onto_grid_columns(tmp_path):
    root = make_run(tmp_path / "run", methods=("dense", "lth"), seeds=(0, 1))
    add_dense(root, 0.77, 0)
    add_dense(root, 0.77, 1)
    ladder = [round(1 - 0.8**k, 6) for k in range(1, 6)]  # 0.2 .. 0.67232: the last round is off the grid
    add_trial(root, "lth", 0, [level(s, v, round_=k + 1) for k, (s, v) in
                               enumerate(zip(ladder, (0.77, 0.765, 0.75, 0.70, 0.6)))])
    # seed 1 reports sparsities with float noise (within 1e-4 of the grid) and stops after 3 rounds
    add_trial(root, "lth", 1, [level(s + 4e-5, v, round_=k + 1) for k, (s, v) in
                               enumerate(zip(ladder[:3], (0.77, 0.755, 0.74)))])
    table = cells(load_run(root))["lth"]
    assert list(table) == list(GRID)
    assert table[0.2].n == 2 and table[0.2].mean == pytest.approx(0.77)
    assert table[0.36].mean == pytest.approx(0.76)
    assert table[0.488].mean == pytest.approx(0.745)
    assert table[0.5904].n == 1 and table[0.5904].mean == pytest.approx(0.70)
    assert summarize(load_run(root)).methods[0].fail.fails_at == 0.488


def test_records_as_the_sweep_writes_them(tmp_path):
    """Top-level ``sparsity`` places a failed trial; null metric, NaN best and extra keys are tolerated."""
    root = make_run(tmp_path / "run")
    add_dense(root, 0.77)
    record = {"trial_id": "skipped-id", "task": "csqa", "method": "omp_after", "seed": 0, "preset": "smoke",
              "sparsity": 0.36, "status": "failed", "error": "dense baseline failed", "metric": None,
              "chance": 0.2, "levels": [], "history": [], "dense_key": "k", "cached": False,
              "wall_s": 0.0, "mlflow_run_id": None, "tunables": {}, "prunable": {}}
    (root / "results" / "skipped-id.json").write_text(json.dumps(record))
    nan_level = dict(level(0.2, 0.7), best=float("nan"), diverged=True)
    add_trial(root, "omp_after", 0, [nan_level])
    (root / "results" / "omp_after-s0.4880-seed0.json.tmp").write_text("{half a reco")  # staging file
    table = cells(load_run(root))["omp_after"]
    assert table[0.36].status_counts == {"failed": 1}
    assert table[0.2].status_counts == {"ok": 1} and table[0.2].mean is None
    assert cells(load_run(root), "final")["omp_after"][0.2].mean == pytest.approx(0.7)


def test_failed_lth_counts_in_every_cell_of_its_ladder(tmp_path):
    root = make_run(tmp_path / "run", methods=("dense", "lth"))
    add_dense(root, 0.77)
    add_trial(root, "lth", 0, [level(0.2, 0), level(0.36, 0), level(0.488, 0)], status="failed",
              trial_id="lth-to0.4880-seed0")
    table = cells(load_run(root))["lth"]
    assert [table[s].status_counts for s in GRID] == [{"failed": 1}] * 3 + [{}]


# --------------------------------------------------------------------------------------------------
# outputs

def realistic_run(root: Path) -> Path:
    root = make_run(root, methods=("dense", "lth", "omp_after", "random_after", "gmp"), seeds=(0, 1))
    for seed, d in enumerate((0.772, 0.774)):
        add_dense(root, d, seed)
        add_trial(root, "lth", seed, [level(s, v, round_=k + 1) for k, (s, v) in
                                      enumerate(zip(GRID, (0.772, 0.768, 0.75, 0.70)))])
        add_curve(root, "omp_after", (0.771, 0.766, 0.755, 0.70), seed)
        add_curve(root, "random_after", (0.74, 0.70, 0.60, 0.40), seed)
        add_curve(root, "gmp", (0.77, 0.74, 0.768, 0.70), seed)
    add_trial(root, "gmp", 2, [level(0.5904, 0)], status="failed", error="x")
    return root


def test_results_json_schema_and_numbers(tmp_path):
    root = realistic_run(tmp_path / "run")
    summary = summarize(load_run(root), metric="final", criterion=pts(3))
    path = write_results_json(summary, tmp_path / "out" / "results.json")
    data = json.loads(path.read_text())
    assert data["schema_version"] == 2
    assert data["task"] == "csqa" and data["preset"] == "smoke"
    assert data["metric"] == "final" and data["criterion"]["tolerance"] == {"value": 3.0, "unit": "points"} and data["chance"] == 0.2
    assert data["grid"] == list(GRID)
    assert data["dense"]["mean"] == pytest.approx(0.773) and data["dense"]["n"] == 2
    assert data["dense"]["std"] == pytest.approx(math.sqrt(2) * 0.001)
    assert data["method_order"] == ["lth", "omp_after", "random_after", "gmp"]
    assert set(data["methods"]) == set(data["method_order"])
    lth = data["methods"]["lth"]
    assert lth["failing_sparsity"] == 0.5904 and lth["outcome"] == "fails_at"  # 0.75 >= 0.773 - 0.03
    assert lth["levels"]["0.488"] == {"sparsity": 0.488, "mean": pytest.approx(0.75), "std": 0.0, "n": 2,
                                      "values": [0.75, 0.75], "status_counts": {"ok": 2},
                                      "collapsed_layers": [], "achieved_sparsity": 0.488, "embedding_collapse": None,
                                      "mark": "ok", "p_value": None, "tunables": {}}
    gmp = data["methods"]["gmp"]
    assert gmp["failing_sparsity"] == 0.36 and gmp["non_monotone"] is True
    assert gmp["levels"]["0.5904"]["status_counts"] == {"ok": 2, "failed": 1}
    random_after = data["methods"]["random_after"]
    assert random_after["fails_at_first_level"] is True and random_after["failing_sparsity"] == 0.2
    assert data["trials"]["ok"] == 2 * (1 + 1 + 3 * 4) and data["trials"]["failed"] == 1
    assert data["trials"]["failures"] == [{"trial_id": "gmp-s0.5904-seed2", "status": "failed", "error": "x"}]


def test_results_json_never_and_no_dense_outcomes(tmp_path):
    root = make_run(tmp_path / "run", methods=("omp_after",))
    add_curve(root, "omp_after", [0.77, None, None, None])
    data = json.loads(write_results_json(summarize(load_run(root)), tmp_path / "r.json").read_text())
    assert data["dense"] is None
    assert data["methods"]["omp_after"]["outcome"] == "no_dense"
    assert data["methods"]["omp_after"]["failing_sparsity"] is None
    assert data["methods"]["omp_after"]["levels"]["0.36"]["mean"] is None


def test_plot_is_a_png(tmp_path):
    root = realistic_run(tmp_path / "run")
    path = plot_curves(summarize(load_run(root)), tmp_path / "plot" / "curves.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000


def test_plot_copes_with_empty_and_dense_less_runs(tmp_path):
    root = make_run(tmp_path / "run", methods=("omp_after", "lth"))
    add_curve(root, "omp_after", [0.5, None, 0.3, None])
    path = plot_curves(summarize(load_run(root)), tmp_path / "curves.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_write_report(tmp_path):
    root = realistic_run(tmp_path / "run")
    paths = write_report(root)
    assert paths.results_json == root / "results.json" and paths.curves_png == root / "curves.png"
    assert paths.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths.results_json.read_text())["metric"] == "best"
    assert paths.table.splitlines()[0].startswith("csqa")
    assert "0.488" in paths.table and "first level (0.200)" in paths.table


def test_every_figure_the_report_lists_is_on_disk_and_nothing_else(tmp_path):
    root = realistic_run(tmp_path / "run")
    paths = write_report(root)
    assert {p.name for p in paths.figures} == {"curves.png", "heatmap.png"}
    assert sorted(paths.figures) == sorted(root.glob("*.png"))
    assert not list(root.glob(".*.tmp"))                      # save_figure's temporaries are gone


def test_an_unwritable_output_directory_is_a_one_line_user_error(tmp_path):
    from smctune.report.write import ReportOptions

    root = realistic_run(tmp_path / "run")
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(UserError, match="cannot write") as err:
        write_report(root, ReportOptions(out_dir=blocked / "out"))
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------------
# errors

def test_bad_run_dir(tmp_path):
    with pytest.raises(UserError, match=r"not a smctune run directory: .*missing \(no sweep.json\)"):
        load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no sweep.json"):
        write_report(tmp_path / "empty")


def test_malformed_result_names_the_file(tmp_path):
    root = make_run(tmp_path / "run")
    (root / "results" / "broken.json").write_text("{not json")
    with pytest.raises(UserError, match="broken.json"):
        load_run(root)
    (root / "results" / "broken.json").write_text(json.dumps({"trial_id": "x", "method": "gmp",
                                                              "status": "weird"}))
    with pytest.raises(UserError, match="broken.json.*unknown status 'weird'"):
        load_run(root)


def test_malformed_sweep_json(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    (root / "sweep.json").write_text("[]")
    with pytest.raises(UserError, match="sweep.json"):
        load_run(root)


def test_bad_metric_and_tolerance(tmp_path):
    root = make_run(tmp_path / "run")
    with pytest.raises(UserError, match="unknown metric 'mean'"):
        summarize(load_run(root), metric="mean")
    for bad in ("-1", "abc", "100%", "-2%", "nan"):
        with pytest.raises(UserError, match="--tolerance"):
            parse_tolerance(bad)


def test_empty_results_dir_reports_dashes(tmp_path):
    root = make_run(tmp_path / "run")
    summary = summarize(load_run(root))
    assert summary.trials_ok == 0 and summary.dense is None
    text = format_table(summary)
    assert "—" in text and "trials: 0 ok, 0 failed" in text


def test_table_warns_when_dense_is_at_chance(tmp_path):
    """Smoke runs train random-weight models: the table must say its marks are noise."""
    def table_for(dense_value):
        run_dir = make_run(tmp_path / f"run{dense_value}", grid=(0.2,))
        add_dense(run_dir, dense_value)
        add_curve(run_dir, "omp_after", [0.19], grid=(0.2,))
        return format_table(summarize(load_run(run_dir)))

    assert "dense is at chance level" in table_for(0.195)
    assert "dense is at chance level" not in table_for(0.60)


# --------------------------------------------------------------------------------------------------
# the full report on synthetic runs: schema round trip, partial sweeps, significance in the table

def test_results_json_round_trips_and_report_files(tmp_path):
    from smctune.report.facts import run_facts
    from smctune.report.results_json import results_document
    from smctune.report.write import ReportOptions

    root = realistic_run(tmp_path / "run")
    paths = write_report(root, ReportOptions(criterion=pts(3)))
    on_disk = json.loads(paths.results_json.read_text())
    run = load_run(root)
    again = results_document([summarize(run, criterion=pts(3))], None, run_facts(run))
    assert on_disk == json.loads(json.dumps(again))       # what is written is what the API computes
    assert on_disk["compute"]["trial_seconds"] == pytest.approx(29.0)  # 2 seeds x 14 trials + 1 failed, 1 s each and on_disk["compute"]["gpu_seconds"] == 0
    assert on_disk["completeness"]["planned"] is None       # no plan.json: said, not guessed
    assert paths.markdown.is_file() and paths.html.is_file()
    html = paths.html.read_text()
    assert html.count("data:image/png;base64,") == len(paths.figures) >= 2
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths.figures)


def test_partial_sweep_report_names_what_is_missing(tmp_path):
    root = make_run(tmp_path / "run", methods=("dense", "omp_after"))
    add_dense(root, 0.77)
    add_curve(root, "omp_after", (0.77, 0.76, None, None))
    planned = ["dense-dense-seed0"] + [f"omp_after-s{s:.4f}-seed0" for s in GRID]
    (root / "plan.json").write_text(json.dumps({"search": "grid", "trials": planned}))
    paths = write_report(root)
    data = json.loads(paths.results_json.read_text())
    assert data["completeness"]["planned"] == 5 and data["completeness"]["finished"] == 3
    assert data["completeness"]["missing"] == ["omp_after-s0.4880-seed0", "omp_after-s0.5904-seed0"]
    assert data["completeness"]["complete"] is False
    md = paths.markdown.read_text()
    assert "Partial sweep: 3 of 5 planned trials finished; 2 have no result yet" in md
    assert "omp_after-s0.4880-seed0" in md and "—" in paths.table


def test_table_marks_levels_below_threshold_but_not_significant(tmp_path):
    from smctune.report.write import ReportOptions

    root = make_run(tmp_path / "run", methods=("dense", "gmp"), seeds=(0, 1, 2))
    for seed, (d, noisy, clear) in enumerate(((0.80, 0.60, 0.60), (0.81, 0.85, 0.61), (0.79, 0.80, 0.59))):
        add_dense(root, d, seed)
        add_trial(root, "gmp", seed, [level(GRID[0], noisy)])
        add_trial(root, "gmp", seed, [level(GRID[1], clear)])
    plain = write_report(root, ReportOptions(out_dir=tmp_path / "plain"))
    tested = write_report(root, ReportOptions(criterion=Criterion(alpha=0.05), out_dir=tmp_path / "tested"))
    assert plain.summary.methods[0].fail.fails_at == GRID[0]
    assert tested.summary.methods[0].fail.fails_at == GRID[1]
    row = next(line for line in tested.table.splitlines() if line.startswith("gmp"))
    assert "≈" in row and "✗" in row and "Welch" in tested.table
    data = json.loads(tested.results_json.read_text())
    assert data["methods"]["gmp"]["levels"]["0.2"]["mark"] == "not_significant"
    assert data["methods"]["gmp"]["not_significant"] == [0.2]


def test_a_finished_threshold_search_is_not_called_partial(tmp_path):
    root = make_run(tmp_path / "run", methods=("dense", "omp_after"))
    add_dense(root, 0.77)
    add_curve(root, "omp_after", (0.77, None, 0.70, None))
    planned = ["dense-dense-seed0"] + [f"omp_after-s{s:.4f}-seed0" for s in GRID]
    (root / "plan.json").write_text(json.dumps({"search": "threshold", "trials": planned}))
    unfinished = json.loads(write_report(root).results_json.read_text())["completeness"]
    assert unfinished["complete"] is False                    # no threshold.json: still searching
    (root / "threshold.json").write_text("{}")
    paths = write_report(root)
    done = json.loads(paths.results_json.read_text())["completeness"]
    assert done["complete"] is True and done["finished"] == 3 and len(done["missing"]) == 2
    md = paths.markdown.read_text()
    assert "Partial sweep" not in md and "Threshold search: 3 of the grid's 5 trials were run" in md


def test_layerwise_figures_go_to_the_levels_nearest_the_wanted_ones_that_have_layer_data():
    from smctune.report.figures.registry import layer_levels

    profiles = {("gmp", 0.2): {}, ("gmp", 0.488): {}, ("snip", 0.5904): {}}
    assert layer_levels(profiles, None) == (0.488, 0.5904)        # 0.36 -> 0.488; 0.672, 0.832 -> 0.5904
    assert layer_levels(profiles, (0.36,)) == (0.488,)            # on the grid but without layer data
    assert layer_levels(profiles, (0.2, 0.21)) == (0.2,)
    assert layer_levels({}, None) == ()
