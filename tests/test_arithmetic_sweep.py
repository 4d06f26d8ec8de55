"""A real Ray Tune sweep of the arithmetic family: two architectures, a fold axis, records, per-layer
sparsity and collapse, MLflow tags, and the per-architecture report."""
from __future__ import annotations

import json
from pathlib import Path

from smctune.config.specs import SweepSpec
from smctune.config.search_space import load_search_space
from smctune.sweep.progress import ProgressPrinter
from smctune.report.write import write_report
from smctune.sweep.plan import plan_trials
from smctune.sweep.run import run_sweep
from smctune.tracking.tracker import MLflowTracker, default_tracking_uri

FAST_SPACE = """
task: mawps
methods:
  omp_rigl: {update_every: 2}
prunable:
  exclude: ['^decoder\\.predict\\.constant_embedding$']
models:
  gts: {}
  graph2tree: {smoke: {layers: {hidden_size: 16}}}
presets:
  smoke:
    model:
      source: config
      name: tiny-bert
      config: {hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64,
               max_position_embeddings: 128}
      layers: {hidden_size: 24, depth: 1, beam_size: 2, max_output_length: 7}
    train: {max_steps: 6, eval_every: 3, batch_size: 4, optimizer: adam, lr: 1.0e-3, backbone_lr: 1.0e-4,
            lr_schedule: step, lr_step_every: 3, max_length: 96, train_limit: 32, eval_limit: 8,
            checkpoint_every_s: 0}
    resources: {cpu: 1}
"""


def test_two_architectures_one_fold_sweep_end_to_end(tmp_path, ray_session):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(FAST_SPACE)
    space = load_search_space("mawps", str(space_file))
    run_dir = tmp_path / "runs" / "arith"
    run_dir.mkdir(parents=True)
    spec = SweepSpec(task="mawps", methods=("dense", "omp_before", "omp_rigl"), sparsities=(0.999,),
                     seeds=(0,), preset="smoke", preset_reason="test", name="arith", run_dir=str(run_dir),
                     mlflow_uri=default_tracking_uri(run_dir), max_failures=0,
                     search_space_file=str(space_file), verbosity=0, models=("gts", "graph2tree"),
                     folds=(0,))
    (run_dir / "sweep.json").write_text(spec.to_json())
    trials = plan_trials(spec, space)
    tracker = MLflowTracker(spec.mlflow_uri, "smctune/arith", str(run_dir), {"sweep": "arith", "git_sha": "t"})
    outcome = run_sweep(spec, space, trials, ProgressPrinter(len(trials), verbosity=0), tracker)
    assert outcome.trials_run == 6
    records = {p.stem: json.loads(p.read_text()) for p in (run_dir / "results").glob("*.json")}
    assert set(records) == {f"{arch}-{name}-seed0-fold0" for arch in ("gts", "graph2tree")
                            for name in ("dense-dense", "omp_before-s0.9990", "omp_rigl-s0.9990")}
    for trial_id, record in records.items():
        assert record["status"] == "ok", (trial_id, record["error"])
        assert record["fold"] == 0 and record["model"] == trial_id.split("-")[0]
        assert 0.0 <= record["levels"][-1]["best"] <= 1.0
    for arch in ("gts", "graph2tree"):
        level = records[f"{arch}-omp_before-s0.9990-seed0-fold0"]["levels"][0]
        layers = level["layers"]
        assert abs(level["achieved_sparsity"] - 0.999) < 1e-3
        assert "decoder.predict.constant_embedding" not in layers  # 3-D: never masked
        assert any(name.startswith("embedder.") for name in layers)
        assert any(name.startswith("encoder.rnn.weight_hh") for name in layers)
        # collapse = exactly the layers with nothing left, and global magnitude at 99.9 % empties some
        assert level["collapsed_layers"] == [n for n, s in layers.items() if s == 1.0]
        assert level["collapsed_layers"]
    assert any(name.startswith("graph.") for name in
               records["graph2tree-omp_before-s0.9990-seed0-fold0"]["levels"][0]["layers"])

    import mlflow

    mlflow.set_tracking_uri(spec.mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["smctune/arith"])
    trial_runs = runs[runs["tags.kind"] != "sweep"] if "tags.kind" in runs else runs
    assert len(trial_runs) == 6 and set(trial_runs["status"]) == {"FINISHED"}
    assert set(trial_runs["tags.model"]) == {"gts", "graph2tree"} and set(trial_runs["tags.fold"]) == {"0"}

    paths = write_report(run_dir)
    data = json.loads(Path(paths.results_json).read_text())
    assert data["models"] == ["gts", "graph2tree"] and set(data["by_model"]) == {"gts", "graph2tree"}
    for arch, summary in data["by_model"].items():
        assert summary["model"] == arch and summary["folds"] == [0]
        assert summary["dense"]["n"] == 1
        level = summary["methods"]["omp_before"]["levels"]["0.999"]
        assert level["folds"] == {"0": level["mean"]}
        assert level["collapsed_layers"]
    assert [p.name for p in paths.plots] == ["curves-gts.png", "curves-graph2tree.png"]
    assert "⊘ omp_before at 0.999" in paths.table
