"""Real Ray Tune sweeps of smoke trials: MLflow runs, dense cache reuse, rerun skipping, failures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from smctune.catalog import registry
from smctune.config.specs import SweepSpec
from smctune.config.search_space import load_search_space
from smctune.sweep.progress import ProgressPrinter
from smctune.sweep.plan import plan_trials
from smctune.train.schedules import lth_levels
from smctune.sweep.run import run_sweep
from smctune.tracking.tracker import MLflowTracker, default_tracking_uri

FAST_SPACE = """
task: csqa
methods:
  gmp: {frequency: 2, start_fraction: 0.25, end_fraction: 0.75}
  omp_rigl: {update_every: 2}
  random_rigl: {update_every: 2}
  snip_rigl: {update_every: 2}
presets:
  smoke:
    model: {source: config, name: tiny-bert, config: {hidden_size: 32, num_hidden_layers: 1,
            num_attention_heads: 2, intermediate_size: 64, max_position_embeddings: 64}}
    train: {max_steps: 8, eval_every: 4, batch_size: 4, lr: 1.0e-3, max_length: 40,
            train_limit: 64, eval_limit: 40, checkpoint_every_s: 0, threads: 1}
    resources: {cpu: 1}
"""
# threads: 1 keeps a trial to its one CPU beside the other test worker; the tests' Ray has one CPU
# (conftest.ray_session), so a sweep's trials run one at a time in one worker that Tune reuses


def _sweep(tmp_path: Path, name: str, methods, sparsities, space_text=FAST_SPACE, max_failures=0):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(space_text)
    space = load_search_space("csqa", str(space_file))
    run_dir = tmp_path / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = SweepSpec(task="csqa", methods=tuple(methods), sparsities=tuple(sparsities), seeds=(0,),
                     preset="smoke", preset_reason="test", name=name, run_dir=str(run_dir),
                     mlflow_uri=default_tracking_uri(run_dir), max_failures=max_failures,
                     search_space_file=str(space_file), verbosity=0)
    (run_dir / "sweep.json").write_text(spec.to_json())
    trials = plan_trials(spec, space)
    tracker = MLflowTracker(spec.mlflow_uri, f"smctune/{name}", str(run_dir), {"sweep": name, "git_sha": "test"})
    outcome = run_sweep(spec, space, trials, ProgressPrinter(len(trials), verbosity=0), tracker)
    tracker.end_sweep("FINISHED")  # what the CLI does after the report
    records = {p.stem: json.loads(p.read_text()) for p in (run_dir / "results").glob("*.json")}
    return spec, outcome, records


def _runs(spec: SweepSpec):
    import mlflow

    mlflow.set_tracking_uri(spec.mlflow_uri)
    runs = mlflow.search_runs(experiment_names=[f"smctune/{spec.name}"])
    return runs[runs["tags.kind"] != "sweep"]  # the trial runs, not the sweep's parent run


def test_sweep_records_mlflow_runs_and_reuses_the_dense_checkpoint(tmp_path, ray_session):
    spec, outcome, records = _sweep(tmp_path, "main", ["dense", "omp_after", "lth"], [0.2, 0.36])
    assert outcome.trials_run == 4  # dense, omp_after x 2, one LTH trial with 2 rounds
    assert {r["status"] for r in records.values()} == {"ok"}

    runs = _runs(spec)
    assert len(runs) == 4
    assert set(runs["status"]) == {"FINISHED"}
    assert sorted(runs["tags.method"]) == ["dense", "lth", "omp_after", "omp_after"]
    assert set(runs["tags.preset"]) == {"smoke"} and set(runs["tags.git_sha"]) == {"test"}
    assert runs["metrics.accuracy"].between(0, 1).all()

    # the dense model was trained once, and every "after" trial started from that very checkpoint
    cache = Path(spec.run_dir).parent / "dense_cache"
    entries = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1
    key = entries[0].name
    dense = records["dense-dense-seed0"]
    assert dense["cached"] is False and dense["dense_key"] == key
    for trial_id, record in records.items():
        assert record["dense_key"] == key, trial_id
    meta = json.loads((entries[0] / "meta.json").read_text())
    assert meta["final"] == dense["levels"][0]["final"]

    # LTH: one trial, one level per IMP round, exact sparsities of the 20% ladder
    lth = records["lth-to0.3600-seed0"]
    assert [lv["round"] for lv in lth["levels"]] == [1, 2]
    assert [lv["sparsity"] for lv in lth["levels"]] == [0.2, 0.36]
    for level in lth["levels"]:
        assert abs(level["achieved_sparsity"] - level["sparsity"]) < 1e-6
    after = records["omp_after-s0.3600-seed0"]
    assert abs(after["levels"][0]["achieved_sparsity"] - 0.36) < 1e-6
    assert after["levels"][0]["achieved_sparsity_all"] < 0.36  # biases/LayerNorm stay dense

    # the same sweep again: every finished trial is skipped
    _, again, _ = _sweep(tmp_path, "main", ["dense", "omp_after", "lth"], [0.2, 0.36])
    assert again.trials_run == 0 and again.trials_skipped == 4

    # a new sweep with the same dense settings takes the cached dense model instead of training it
    spec2, _, records2 = _sweep(tmp_path, "second", ["dense"], [0.2])
    assert records2["dense-dense-seed0"]["cached"] is True
    assert records2["dense-dense-seed0"]["levels"][0]["final"] == dense["levels"][0]["final"]
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1


def test_failed_dense_is_recorded_failed_and_its_after_trials_say_why(tmp_path, ray_session):
    """A dense baseline that cannot train (2 questions for a batch of 4) fails inside its worker: its
    MLflow run is FAILED with the error, and the "after" trials that need it are recorded as failed
    with the reason instead of crashing the sweep."""
    broken = FAST_SPACE.replace("train_limit: 64", "train_limit: 2")
    spec, outcome, records = _sweep(tmp_path, "broken", ["dense", "omp_after"], [0.5], space_text=broken)
    dense = records["dense-dense-seed0"]
    assert dense["status"] == "failed" and "no full batch" in dense["error"]
    after = records["omp_after-s0.5000-seed0"]
    assert after["status"] == "failed" and "dense baseline for seed 0 did not finish" in after["error"]
    runs = _runs(spec)
    assert list(runs["status"]) == ["FAILED"] and "no full batch" in runs["tags.error"][0]


def test_impossible_gmp_schedule_fails_before_any_trial(tmp_path):
    from smctune.errors import UserError

    broken = FAST_SPACE.replace("start_fraction: 0.25, end_fraction: 0.75", "start_fraction: 0.9, end_fraction: 0.5")
    path = tmp_path / "space.yaml"
    path.write_text(broken)
    space = load_search_space("csqa", str(path))
    spec = SweepSpec(task="csqa", methods=("gmp",), sparsities=(0.5,), seeds=(0,), preset="smoke",
                     preset_reason="test", name="x", run_dir=str(tmp_path / "x"), mlflow_uri="sqlite:///x")
    with pytest.raises(UserError, match="start_fraction 0.9 must be below end_fraction 0.5"):
        plan_trials(spec, space)


def test_plan_counts_and_lth_ladder():
    space = load_search_space("csqa")
    assert lth_levels(space.sparsities, 0.2) == space.sparsities  # the paper's grid is the LTH ladder
    assert lth_levels([0.5], 0.2) == (0.2, 0.36, 0.488, 0.5904)
    spec = SweepSpec(task="csqa", methods=registry.parse_methods("all"), sparsities=space.sparsities,
                     seeds=(0, 1), preset="smoke", preset_reason="test", name="x", run_dir="/tmp/x",
                     mlflow_uri="sqlite:////tmp/x.db")
    trials = plan_trials(spec, space)
    per_level = [m for m in spec.methods if registry.method_spec(m).schedule not in ("none", "imp")]
    assert len(per_level) == 10  # omp/random before+after, gmp, snip, three RigL starts, oBERT
    per_seed = 1 + len(per_level) * len(space.sparsities) + 1
    assert len(trials) == 2 * per_seed
    assert len({t.trial_id for t in trials}) == len(trials)


def test_killed_worker_is_retried_from_its_last_checkpoint(tmp_path, ray_session):
    """SIGKILL the Ray worker running a trial after its first checkpoint: Ray restarts the trial,
    which continues from that checkpoint (not from step 0) and ends FINISHED with the exact sparsity."""
    import signal
    import threading
    import time

    import psutil

    slow = (FAST_SPACE.replace("max_steps: 8", "max_steps: 300").replace("eval_every: 4", "eval_every: 100"))
    ray_dir = tmp_path / "runs" / "chaos" / "ray"
    killed = []

    def kill_worker_after_first_checkpoint():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if list(ray_dir.glob("stage1/gmp-*/checkpoint_*")):
                # the driver registers a checkpoint after the worker wrote it; a kill inside that
                # window restarts from scratch (Ray's semantics), so give the driver a moment
                time.sleep(0.5)
                # only this session's Ray (its raylet and workers descend from this process): other
                # Ray instances on the machine, e.g. a sweep running beside the tests, are left alone
                for proc in psutil.Process().children(recursive=True):
                    try:
                        cmdline = " ".join(proc.cmdline())
                    except psutil.Error:
                        continue
                    if cmdline.startswith("ray::ImplicitFunc"):
                        proc.send_signal(signal.SIGKILL)
                        killed.append(proc.pid)
                return
            time.sleep(0.05)

    chaos = threading.Thread(target=kill_worker_after_first_checkpoint, daemon=True)
    chaos.start()
    spec, _, records = _sweep(tmp_path, "chaos", ["gmp"], [0.5], space_text=slow, max_failures=2)
    chaos.join(timeout=5)
    assert killed, "no trial worker was found to kill"

    gmp = records["gmp-s0.5000-seed0"]
    assert gmp["status"] == "ok", gmp["error"]
    assert gmp["retries"] >= 1, {k: gmp[k] for k in ("retries", "resumed_from", "history")}
    assert gmp["resumed_from"] >= 100, "the retry must continue from the checkpoint, not from step 0"
    assert abs(gmp["levels"][0]["achieved_sparsity"] - 0.5) < 1e-6
    steps = [row["step"] for row in gmp["history"] if row["round"] is None]
    assert steps == sorted(set(steps)) and steps[-1] == 300
    runs = _runs(spec)
    gmp_runs = runs[runs["tags.method"] == "gmp"].reset_index()
    assert len(gmp_runs) == 1, "a retried trial keeps its one MLflow run"
    assert gmp_runs["status"][0] == "FINISHED" and int(gmp_runs["tags.retries"][0]) >= 1
    assert set(runs["status"]) == {"FINISHED"}


def test_every_beyond_paper_method_reaches_the_requested_sparsity_in_mlflow(tmp_path, ray_session):
    """oBERT (one-shot, gradual, iterative), Wanda, SparseGPT: FINISHED runs whose achieved sparsity
    metric equals the requested one (exact counts), side by side in MLflow."""
    methods = ["dense", "obert", "obert_gmp", "obert_imp", "wanda", "sparsegpt"]
    # few calibration batches: this checks the pipeline, not the estimates
    text = FAST_SPACE.replace("methods:\n", "methods:\n  obert: {calibration_batches: 4}\n"
                        "  obert_gmp: {calibration_batches: 2, frequency: 2}\n"
                        "  obert_imp: {calibration_batches: 2}\n"
                        "  wanda: {calibration_batches: 2}\n  sparsegpt: {calibration_batches: 2}\n", 1)
    spec, outcome, records = _sweep(tmp_path, "beyond", methods, [0.36], space_text=text)
    assert {r["status"] for r in records.values()} == {"ok"}, {k: r["error"] for k, r in records.items()}
    runs = _runs(spec)
    assert set(runs["status"]) == {"FINISHED"}
    sparse = runs[runs["tags.method"] != "dense"]
    assert set(sparse["tags.method"]) == set(methods) - {"dense"}
    for _, run in sparse.iterrows():
        assert abs(run["metrics.sparsity"] - run["metrics.requested_sparsity"]) < 1e-4, run["tags.method"]


def test_tune_may_queue_one_trial_per_slot_unless_the_user_set_a_limit(monkeypatch):
    """Tune's default lets a custom searcher keep one trial waiting, so trials started one by one."""
    import os

    from smctune.sweep.ray_session import PENDING_TRIALS_ENV, pending_trials

    monkeypatch.delenv(PENDING_TRIALS_ENV, raising=False)
    with pending_trials(6):
        assert os.environ[PENDING_TRIALS_ENV] == "6"
    assert PENDING_TRIALS_ENV not in os.environ
    monkeypatch.setenv(PENDING_TRIALS_ENV, "256")   # cluster.yaml's value for autoscaling
    with pending_trials(6):
        assert os.environ[PENDING_TRIALS_ENV] == "256"
    assert os.environ[PENDING_TRIALS_ENV] == "256"
