"""``smctune status``: trial states from a run directory alone (sweep.json, results/, Tune's state).

Run directories are fabricated: ``sweep.json`` from a ``SweepSpec``, records shaped like
``RecordKeeper`` writes them, and ``ray/stage<N>/experiment_state-<session>.json`` shaped like
Ray Tune 2.60 writes it (``trial_data`` = list of [trial JSON string, run-metadata JSON string];
``placement_group_factory`` a hex pickle). No Ray, no torch.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

from smctune.cli import main
from smctune.config import SweepSpec, load_search_space
from smctune.status import WAITING_FOR_STAGE1, _bundle_resources, format_status, read_status
from smctune.sweep import plan_trials

# A real placement_group_factory value (Ray 2.60, tune.with_resources(fn, {"cpu": 1, "gpu": 0})).
PGF_CPU1 = ("800595aa000000000000008c237261792e74756e652e657865637574696f6e2e706c6163656d656e745f6772"
            "6f757073948c15506c6163656d656e7447726f7570466163746f72799493942981947d94288c085f62756e646c"
            "6573945d947d948c0343505594473ff000000000000073618c155f686561645f62756e646c655f69735f656d70"
            "747994898c095f7374726174656779948c045041434b948c055f6172677394298c075f6b7761726773947d9475622e")


def pgf(bundles) -> str:
    """The same pickle shape for other bundles: GLOBAL PlacementGroupFactory, NEWOBJ, BUILD(state)."""
    state = pickle.dumps({"_bundles": bundles, "_head_bundle_is_empty": False, "_strategy": "PACK",
                          "_args": (), "_kwargs": {}}, protocol=2)[2:-1]
    return (b"\x80\x02cray.tune.execution.placement_groups\nPlacementGroupFactory\n)\x81"
            + state + b"b.").hex()


def make_run(tmp_path, **overrides):
    fields = dict(task="csqa", methods=("dense", "omp_before", "gmp", "omp_after"),
                  sparsities=(0.3, 0.5, 0.7), seeds=(0,), preset="smoke", preset_reason="requested",
                  name="t", run_dir=str(tmp_path / "t"), mlflow_uri="", search_space_file="search_spaces/csqa.yaml")
    fields.update(overrides)
    spec = SweepSpec(**fields)
    run = Path(spec.run_dir)
    (run / "results").mkdir(parents=True)
    (run / "sweep.json").write_text(spec.to_json())
    trials = {t.trial_id: t for t in plan_trials(spec, load_search_space(spec.task))}
    return run, trials


def record(run, trial, status="ok", error=None, levels=None, **extra):
    data = {"trial_id": trial.trial_id, "task": trial.task, "method": trial.method, "seed": trial.seed,
            "model": trial.model.arch or None, "fold": trial.fold, "preset": trial.preset,
            "sparsity": trial.sparsity, "status": status, "error": error, "metric": "accuracy",
            "levels": levels if levels is not None else
            [{"sparsity": trial.sparsity or 0.0, "final": 0.3, "best": 0.3, "round": None,
              "layers": {"a.weight": trial.sparsity or 0.0}, "collapsed_layers": []}],
            "history": [], "retries": 0, **extra}
    path = run / "results" / f"{trial.trial_id}.json"
    path.write_text(json.dumps(data, indent=1))
    return path


def ray_trial(trial, status, num_failures=0, last_result=None, resources=PGF_CPU1, max_failures=2):
    state = {"stub": False, "trainable_name": "trainable", "trial_id": "69131_00001",
             "config": {"trial": trial.to_dict(), "threads": 1, "gpus": 0},
             "status": status, "relative_logdir": trial.trial_id, "custom_trial_name": trial.trial_id,
             "custom_dirname": trial.trial_id, "max_failures": max_failures,
             "placement_group_factory": resources, "results": "80054e2e", "_resources": "80054e2e"}
    meta = {"start_time": 1795640932.18 if status == "RUNNING" else None, "num_failures": num_failures,
            "num_failures_after_restore": 0, "error_filename": None, "pickled_error_filename": None,
            "last_result": last_result or {}, "last_result_time": 0}
    return [json.dumps(state, indent=2), json.dumps(meta)]


def ray_state(run, stage, entries, session="2026-11-25_21-08-49", mtime=None):
    directory = run / "ray" / f"stage{stage}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"experiment_state-{session}.json"
    path.write_text(json.dumps({"trial_data": entries,
                                "runner_data": {"_session_str": session, "_max_pending_trials": 200},
                                "stats": {"start_time": 1795640929.67}}))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def by_id(status):
    return {t.trial_id: t for t in status.trials}


def test_stage1_in_progress_every_state_and_the_summary(tmp_path):
    run, trials = make_run(tmp_path)
    record(run, trials["dense-dense-seed0"])
    record(run, trials["omp_before-s0.3000-seed0"])
    record(run, trials["omp_before-s0.5000-seed0"], levels=[
        {"sparsity": 0.5, "final": 0.2, "best": 0.2, "round": None,
         "layers": {"head.weight": 1.0}, "collapsed_layers": ["head.weight"]}])
    record(run, trials["omp_before-s0.7000-seed0"], status="collapsed",
           collapse_reason="accuracy at chance (20.0 % + 2 pt) for 3 evaluations")
    record(run, trials["gmp-s0.3000-seed0"], status="failed", error="RuntimeError: boom")
    ray_state(run, 1, [ray_trial(trials["dense-dense-seed0"], "TERMINATED"),
                       ray_trial(trials["gmp-s0.3000-seed0"], "ERROR"),
                       ray_trial(trials["gmp-s0.5000-seed0"], "RUNNING",
                                 last_result={"step": 20, "global_step": 20, "round": None}),
                       ray_trial(trials["gmp-s0.7000-seed0"], "PENDING"),
                       ["{not json", "{}"]])   # a broken entry is skipped

    status = read_status(run)
    got = by_id(status)
    assert {k: t.state for k, t in got.items()} == {
        "dense-dense-seed0": "finished", "omp_before-s0.3000-seed0": "finished",
        "omp_before-s0.5000-seed0": "collapsed", "omp_before-s0.7000-seed0": "collapsed",
        "gmp-s0.3000-seed0": "failed", "gmp-s0.5000-seed0": "running", "gmp-s0.7000-seed0": "pending",
        "omp_after-s0.3000-seed0": "pending", "omp_after-s0.5000-seed0": "pending",
        "omp_after-s0.7000-seed0": "pending"}
    max_steps = trials["gmp-s0.5000-seed0"].train.max_steps
    assert got["gmp-s0.5000-seed0"].detail == f"step 20/{max_steps}"
    assert got["gmp-s0.7000-seed0"].detail == "waiting for cpu 1"
    assert got["gmp-s0.3000-seed0"].detail == "RuntimeError: boom"
    assert "1 layer emptied (head.weight)" in got["omp_before-s0.5000-seed0"].detail
    assert got["omp_before-s0.7000-seed0"].detail.startswith("accuracy at chance")
    assert all(got[f"omp_after-s{s}-seed0"].detail == WAITING_FOR_STAGE1 for s in ("0.3000", "0.5000", "0.7000"))
    assert status.counts()["pending"] == 4

    text = format_status(status)
    assert "2 finished, 1 running, 4 pending (cpu 1 each), 1 failed, 2 collapsed" in text
    table = {line.split()[0]: line.split()[1:] for line in text.splitlines()
             if line.split() and line.split()[0] in ("dense", "gmp", "omp_before", "omp_after")}
    assert table == {"dense": ["done"], "gmp": ["FAIL", "run", "pend"],
                     "omp_before": ["done", "coll", "coll"], "omp_after": ["pend", "pend", "pend"]}
    assert "method      dense  0.3   0.5   0.7" in text
    assert f"pending      3 trials (stage 2): {WAITING_FOR_STAGE1}" in text
    assert "pending      1 trial  (stage 1): waiting for cpu 1" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_gpu_request_retry_max_concurrent_and_record_versus_newer_state(tmp_path):
    run, trials = make_run(tmp_path, methods=("dense", "gmp", "omp_after"), sparsities=(0.3, 0.5, 0.7),
                           max_concurrent=1)
    gpu = pgf([{"CPU": 2.0, "GPU": 1.0}])
    record(run, trials["dense-dense-seed0"])
    for s in ("0.3000", "0.5000", "0.7000"):
        record(run, trials[f"gmp-s{s}-seed0"])
    now = time.time()
    # stage 2, second session: one killed trial retried (newer state), one killed after the last state
    retried = record(run, trials["omp_after-s0.3000-seed0"], status="killed", error="sweep interrupted")
    killed = record(run, trials["omp_after-s0.5000-seed0"], status="killed", error="sweep interrupted")
    os.utime(retried, (now - 600, now - 600))
    ray_state(run, 2, [ray_trial(trials["omp_after-s0.3000-seed0"], "RUNNING", resources=gpu),
                       ray_trial(trials["omp_after-s0.5000-seed0"], "RUNNING", resources=gpu),
                       ray_trial(trials["omp_after-s0.7000-seed0"], "PENDING", num_failures=1, resources=gpu)],
              session="2026-11-25_22-00-00", mtime=now - 60)
    os.utime(killed, (now, now))
    # an older stage-2 session is ignored: Tune resumes from the newest file too
    ray_state(run, 2, [ray_trial(trials["omp_after-s0.7000-seed0"], "TERMINATED")],
              session="2026-11-25_21-00-00")

    got = by_id(read_status(run, now=now))
    assert got["omp_after-s0.3000-seed0"].state == "running"
    assert "last attempt killed" in got["omp_after-s0.3000-seed0"].detail
    assert got["omp_after-s0.5000-seed0"].state == "killed"
    pending = got["omp_after-s0.7000-seed0"]
    assert pending.state == "pending"
    assert pending.resources == {"cpu": 2.0, "gpu": 1.0}
    assert pending.detail == "retry 1/2 from its last checkpoint, needs cpu 2, gpu 1"

    # a plain queued trial while the one --max-concurrent slot is taken
    ray_state(run, 2, [ray_trial(trials["omp_after-s0.3000-seed0"], "RUNNING", resources=gpu),
                       ray_trial(trials["omp_after-s0.7000-seed0"], "PENDING", resources=gpu)],
              session="2026-11-25_23-00-00")
    status = read_status(run)
    got = by_id(status)
    assert got["omp_after-s0.7000-seed0"].detail == "--max-concurrent 1 reached; needs cpu 2, gpu 1"
    assert "pending (cpu 2, gpu 1 each)" in format_status(status)


def test_run_being_written_partial_and_corrupt_files_never_crash(tmp_path):
    run, trials = make_run(tmp_path, methods=("dense", "gmp"), sparsities=(0.5,))
    (run / "results" / "dense-dense-seed0.json").write_text('{"trial_id": "dense-dense-se')
    (run / "results" / "gmp-s0.5000-seed0.json.tmp").write_text("{")  # staging file: ignored
    (run / "results" / "old-grid.json").write_text(json.dumps(   # a record the plan does not know
        {"trial_id": "gmp-s0.9000-seed0", "method": "gmp", "sparsity": "junk", "status": "ok"}))
    path = ray_state(run, 1, [ray_trial(trials["gmp-s0.5000-seed0"], "RUNNING")])
    path.write_text(path.read_text()[:500])   # Tune copying the file in right now

    status = read_status(run)
    got = by_id(status)
    assert got["dense-dense-seed0"].state == "unknown"
    assert got["dense-dense-seed0"].detail == "record unreadable"
    assert got["gmp-s0.5000-seed0"].state == "unknown"
    assert "Ray state unreadable" in got["gmp-s0.5000-seed0"].detail
    text = format_status(status)
    assert "ray state: stage 1 unreadable" in text
    assert got["gmp-s0.9000-seed0"].state == "finished" and got["gmp-s0.9000-seed0"].sparsity is None
    assert "1 finished, 0 running, 0 pending, 0 failed, 0 collapsed, 2 unknown" in text


def test_not_started_and_stale_state(tmp_path):
    run, trials = make_run(tmp_path, methods=("dense", "omp_after"), sparsities=(0.5,))
    got = by_id(read_status(run))
    assert got["dense-dense-seed0"].detail == "not started (run the sweep)"
    assert got["omp_after-s0.5000-seed0"].detail == WAITING_FOR_STAGE1

    now = time.time()
    ray_state(run, 1, [ray_trial(trials["dense-dense-seed0"], "RUNNING")], mtime=now - 3600)
    text = format_status(read_status(run, now=now))
    assert "ray state: stage 1 60m old" in text
    assert "not updated for 60m" in text


def test_rerun_in_stage1_ignores_the_previous_runs_stage2_state(tmp_path):
    run, trials = make_run(tmp_path, methods=("dense", "omp_after"), sparsities=(0.5,))
    ray_state(run, 2, [ray_trial(trials["omp_after-s0.5000-seed0"], "PENDING")],
              session="2026-11-25_21-00-00")
    ray_state(run, 1, [ray_trial(trials["dense-dense-seed0"], "RUNNING")], session="2026-11-25_22-00-00")
    got = by_id(read_status(run))
    assert got["dense-dense-seed0"].state == "running"
    assert got["omp_after-s0.5000-seed0"].detail == WAITING_FOR_STAGE1


def test_architecture_seed_and_fold_columns(tmp_path):
    run, trials = make_run(tmp_path, task="mawps", methods=("dense", "omp_before"), sparsities=(0.5,),
                           seeds=(0, 1), models=("gts", "graph2tree"), folds=(0, 1),
                           search_space_file="search_spaces/mawps.yaml")
    record(run, trials["graph2tree-omp_before-s0.5000-seed1-fold1"])
    text = format_status(read_status(run))
    assert "model       seed  fold  method      dense  0.5" in text
    assert "graph2tree  1     1     omp_before         done" in text
    assert "1 finished, 0 running, 15 pending (cpu 1 each), 0 failed, 0 collapsed" in text


def test_resource_pickle_is_read_without_ray_and_nothing_else_is_unpickled():
    assert _bundle_resources(PGF_CPU1) == {"cpu": 1.0, "gpu": 0.0}
    assert _bundle_resources(pgf([{"CPU": 4.0, "GPU": 0.5, "memory": 2 * 1024**3}])) == \
        {"cpu": 4.0, "gpu": 0.5, "memory_gb": 2.0}
    evil = (b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.").hex()
    assert _bundle_resources(evil) == {}
    assert _bundle_resources("80054e2e") == {} and _bundle_resources("zz") == {}


def test_cli_prints_and_exits_0_missing_run_exits_2(tmp_path, capsys):
    run, trials = make_run(tmp_path, methods=("dense",), sparsities=(0.5,))
    record(run, trials["dense-dense-seed0"])
    assert main(["status", "t", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "run t · csqa · preset smoke · 1 trials" in out
    assert "1 finished, 0 running, 0 pending, 0 failed, 0 collapsed" in out

    assert main(["status", "nope", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no run directory 'nope'" in err
    (tmp_path / "empty").mkdir()
    assert main(["status", str(tmp_path / "empty")]) == 2
    assert "no sweep.json" in capsys.readouterr().err


def test_status_imports_neither_torch_nor_ray():
    code = ("import sys, smctune.status, smctune.cli; "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_collapsed_status_counts_as_collapsed_even_without_layers(tmp_path):
    run, trials = make_run(tmp_path, methods=("dense", "gmp"), sparsities=(0.5,))
    record(run, trials["gmp-s0.5000-seed0"], status="collapsed", levels=[])
    assert by_id(read_status(run))["gmp-s0.5000-seed0"].state == "collapsed"


def test_trials_without_ray_state_show_the_gpus_per_trial_override(tmp_path):
    # --gpus-per-trial 0.25 is pinned in sweep.json; trials Ray has not seen yet (stage 2 here)
    # must show what the sweep will request, not the preset's default
    run, _ = make_run(tmp_path, gpus_per_trial=0.25)
    status = read_status(run)
    assert {t.resources["gpu"] for t in status.trials} == {0.25}
