"""``smctune status``: trial states from a run directory alone (sweep.json, results/, live/, driver.json).

Run directories are fabricated: ``sweep.json`` from a ``SweepSpec``, final records shaped like
``RecordKeeper`` writes them, live records and the driver's heartbeat through ``rundir.records``
(and, in one test, by ``RecordKeeper`` and ``Heartbeat`` themselves). No Ray, no torch.
"""
from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from smctune.cli.main import main
from smctune.config.specs import SweepSpec
from smctune.config.search_space import load_search_space
from smctune.rundir.layout import RunDir, write_atomic
from smctune.rundir.records import RecordKeeper, write_heartbeat
from smctune.sweep.plan import plan_trials
from smctune.sweep.status import WAITING_FOR_STAGE1, read_status
from smctune.sweep.status_format import format_status


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


def record(run, trial, status="ok", error=None, levels=None, ended_at=None, **extra):
    data = {"trial_id": trial.trial_id, "task": trial.task, "method": trial.method, "seed": trial.seed,
            "model": trial.model.arch or None, "fold": trial.fold, "preset": trial.preset,
            "sparsity": trial.sparsity, "status": status, "error": error, "metric": "accuracy",
            "levels": levels if levels is not None else
            [{"sparsity": trial.sparsity or 0.0, "final": 0.3, "best": 0.3, "round": None,
              "layers": {"a.weight": trial.sparsity or 0.0}, "collapsed_layers": []}],
            "history": [], "retries": 0, "ended_at": time.time() if ended_at is None else ended_at, **extra}
    path = run / "results" / f"{trial.trial_id}.json"
    path.write_text(json.dumps(data, indent=1))
    return path


def live(run, trial, state="running", step=None, round=None, retries=0, started_at=None):
    """A live record as ``RecordKeeper`` writes it while the trial runs."""
    now = time.time()
    data = {"trial_id": trial.trial_id, "method": trial.method, "sparsity": trial.sparsity,
            "seed": trial.seed, "model": trial.model.arch or None, "fold": trial.fold,
            "tuning": trial.tuning, "group": trial.group or None, "state": state,
            "started_at": now if started_at is None else started_at, "updated_at": now,
            "step": step, "round": round, "retries": retries, "error": "boom" if retries else None}
    return write_atomic(RunDir(run).live_file(trial.trial_id), json.dumps(data))


def heartbeat(run, stage="stage1", age_s=0.0, ended=None, pid=None, host=None):
    """The driver's heartbeat as ``sweep.heartbeat.Heartbeat`` writes it: this process by default."""
    now = time.time() - age_s
    beat = {"pid": os.getpid() if pid is None else pid, "host": host or socket.gethostname(),
            "started_at": now - 100, "updated_at": now, "stage": stage, "every_s": 30.0}
    if ended:
        beat.update(ended_at=now, ended=ended)
    write_heartbeat(run, beat)


def by_id(status):
    return {t.trial_id: t for t in status.trials}


def test_stage1_in_progress_every_state_and_the_summary(tmp_path):
    run, trials = make_run(tmp_path)
    heartbeat(run, stage="stage1")
    record(run, trials["dense-dense-seed0"])
    record(run, trials["omp_before-s0.3000-seed0"])
    record(run, trials["omp_before-s0.5000-seed0"], levels=[
        {"sparsity": 0.5, "final": 0.2, "best": 0.2, "round": None,
         "layers": {"head.weight": 1.0}, "collapsed_layers": ["head.weight"]}])
    record(run, trials["omp_before-s0.7000-seed0"], status="collapsed",
           collapse_reason="accuracy at chance (20.0 % + 2 pt) for 3 evaluations")
    record(run, trials["gmp-s0.3000-seed0"], status="failed", error="RuntimeError: boom")
    live(run, trials["gmp-s0.5000-seed0"], step=20)
    (RunDir(run).root / "live" / "broken.json").write_text("{not json")   # skipped

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
    assert status.driver.alive and status.driver.stage == "stage1"

    text = format_status(status)
    assert f"driver: pid {os.getpid()} on {socket.gethostname()}, stage1, seen 0s ago" in text
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
                           max_concurrent=1, gpus_per_trial=1)
    heartbeat(run, stage="stage2")
    record(run, trials["dense-dense-seed0"])
    for s in ("0.3000", "0.5000", "0.7000"):
        record(run, trials[f"gmp-s{s}-seed0"])
    now = time.time()
    # stage 2 of a second session: a killed trial started again (its live record is newer than
    # its record), and one killed after its live record was written (the record wins)
    record(run, trials["omp_after-s0.3000-seed0"], status="killed", error="sweep interrupted",
           ended_at=now - 600)
    live(run, trials["omp_after-s0.3000-seed0"], step=4, started_at=now - 60)
    record(run, trials["omp_after-s0.5000-seed0"], status="killed", error="sweep interrupted", ended_at=now)
    live(run, trials["omp_after-s0.5000-seed0"], started_at=now - 60)
    live(run, trials["omp_after-s0.7000-seed0"], state="retrying", retries=1)

    got = by_id(read_status(run, now=now))
    assert got["omp_after-s0.3000-seed0"].state == "running"
    assert "last attempt killed" in got["omp_after-s0.3000-seed0"].detail
    assert got["omp_after-s0.5000-seed0"].state == "killed"
    pending = got["omp_after-s0.7000-seed0"]
    assert pending.state == "pending"
    assert pending.resources == {"cpu": 1.0, "gpu": 1.0}
    assert pending.detail == "retry 1/2 from its last checkpoint, needs cpu 1, gpu 1"

    # a trial not started yet while the one --max-concurrent slot is taken
    RunDir(run).live_file("omp_after-s0.7000-seed0").unlink()
    status = read_status(run)
    got = by_id(status)
    assert got["omp_after-s0.7000-seed0"].detail == "--max-concurrent 1 reached; needs cpu 1, gpu 1"
    assert "pending (cpu 1, gpu 1 each)" in format_status(status)


def test_run_being_written_partial_and_corrupt_files_never_crash(tmp_path):
    run, trials = make_run(tmp_path, methods=("dense", "gmp"), sparsities=(0.5,))
    heartbeat(run)
    (run / "results" / ".gmp-s0.5000-seed0.json.123.tmp").write_text("{")  # a writer's staging file
    (run / "results" / "old-grid.json").write_text(json.dumps(   # a record the plan does not know
        {"trial_id": "gmp-s0.9000-seed0", "method": "gmp", "sparsity": "junk", "status": "ok"}))
    path = live(run, trials["gmp-s0.5000-seed0"], step=3)
    path.write_text(path.read_text()[:20])   # damaged: as if never written

    status = read_status(run)
    got = by_id(status)
    assert got["dense-dense-seed0"].state == "pending"
    assert got["gmp-s0.5000-seed0"].state == "pending"
    assert got["gmp-s0.9000-seed0"].state == "finished" and got["gmp-s0.9000-seed0"].sparsity is None
    text = format_status(status)
    assert "1 finished, 0 running, 2 pending (cpu 1 each), 0 failed, 0 collapsed" in text
    (run / "driver.json").write_text("{")   # a damaged heartbeat reads as no driver
    assert "driver: none has run this sweep yet" in format_status(read_status(run))


def test_a_damaged_final_record_is_an_error_naming_the_file(tmp_path, capsys):
    """Records are written atomically, so one that does not parse was damaged after the fact: status
    says which file (exit 2), rather than a "?" cell and exit 0."""
    run, trials = make_run(tmp_path, methods=("dense", "gmp"), sparsities=(0.5,))
    (run / "results" / "dense-dense-seed0.json").write_text('{"trial_id": "dense-dense-se')
    assert main(["status", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "results/dense-dense-seed0.json" in err


def test_not_started_stale_gone_and_ended_drivers(tmp_path):
    run, trials = make_run(tmp_path, methods=("dense", "omp_after"), sparsities=(0.5,))
    got = by_id(read_status(run))
    assert got["dense-dense-seed0"].detail == "not started (run the sweep)"
    assert got["omp_after-s0.5000-seed0"].detail == WAITING_FOR_STAGE1

    # the driver stopped beating 3 hours ago: its running trial died with it
    now = time.time()
    heartbeat(run, age_s=3 * 3600)
    live(run, trials["dense-dense-seed0"], step=2, started_at=now - 4 * 3600)
    status = read_status(run, now=now)
    assert not status.driver.alive
    assert by_id(status)["dense-dense-seed0"].state == "killed"
    text = format_status(status)
    assert "stopped writing its heartbeat, last seen 3.0h ago" in text

    # its pid is gone on this host: dead at once, however recent the last beat
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    heartbeat(run, pid=int(finished.stdout))
    status = read_status(run)
    assert status.driver.gone and not status.driver.alive
    assert f"pid {int(finished.stdout)} on {socket.gethostname()} is gone" in format_status(status)

    # a driver that ended says how; what it did not run waits for a resume
    RunDir(run).live_file("dense-dense-seed0").unlink()
    heartbeat(run, age_s=300, ended="interrupted")
    status = read_status(run)
    assert by_id(status)["dense-dense-seed0"].detail == "not run: no driver runs the sweep (resume it)"
    assert "driver: ended 5m ago (interrupted)" in format_status(status)


def test_what_the_driver_writes_is_what_status_reads(tmp_path):
    """``RecordKeeper`` and ``Heartbeat``, the driver's own writers, through a trial's life."""
    from smctune.sweep.heartbeat import Heartbeat

    run, trials = make_run(tmp_path, methods=("dense",), sparsities=(0.5,))
    spec = trials["dense-dense-seed0"]
    keeper = RecordKeeper(run, chance=0.2, live_every_s=3600)
    metrics = {"metric_name": "accuracy", "accuracy": 0.3, "best": 0.3, "global_step": 4, "step": 4}
    with Heartbeat(run, every_s=3600) as beat:
        beat.stage = "stage1"
        keeper.started(spec)
        assert by_id(read_status(run))[spec.trial_id].detail == "started"
        keeper.result(spec.trial_id, metrics)                  # within live_every_s: not rewritten
        assert by_id(read_status(run))[spec.trial_id].detail == "started"
        keeper.live_every_s = 0
        keeper.result(spec.trial_id, {**metrics, "global_step": 8, "step": 8})
        assert by_id(read_status(run))[spec.trial_id].detail == f"step 8/{spec.train.max_steps}"
        keeper.recovered(spec.trial_id, "RuntimeError: worker died")
        retrying = by_id(read_status(run))[spec.trial_id]
        assert retrying.detail == "retry 1/2 from its last checkpoint, needs cpu 1"
        keeper.restarted(spec.trial_id)
        assert by_id(read_status(run))[spec.trial_id].state == "running"
        keeper.finished(spec.trial_id, "ok")
        assert not RunDir(run).live_file(spec.trial_id).exists()
        status = read_status(run)
        assert status.driver.alive and status.driver.stage == "stage1"
    status = read_status(run)
    assert by_id(status)[spec.trial_id].state == "finished"
    assert status.driver.ended == "finished" and not status.driver.alive


def test_architecture_seed_and_fold_columns(tmp_path):
    run, trials = make_run(tmp_path, task="mawps", methods=("dense", "omp_before"), sparsities=(0.5,),
                           seeds=(0, 1), models=("gts", "graph2tree"), folds=(0, 1),
                           search_space_file="search_spaces/mawps.yaml")
    record(run, trials["graph2tree-omp_before-s0.5000-seed1-fold1"])
    text = format_status(read_status(run))
    assert "model       seed  fold  method      dense  0.5" in text
    assert "graph2tree  1     1     omp_before         done" in text
    assert "1 finished, 0 running, 15 pending (cpu 1 each), 0 failed, 0 collapsed" in text


def test_nothing_in_smctune_unpickles():
    """A run directory sits on shared storage: reading one must never run code from it."""
    package = Path(__file__).resolve().parents[1] / "smctune"
    found = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.name}: {name}" for name in names
                      if name.split(".")[0] in ("pickle", "cloudpickle")]
    assert not found, found


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
    code = ("import sys, smctune.sweep.status, smctune.cli.main; "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_collapsed_status_counts_as_collapsed_even_without_layers(tmp_path):
    run, trials = make_run(tmp_path, methods=("dense", "gmp"), sparsities=(0.5,))
    record(run, trials["gmp-s0.5000-seed0"], status="collapsed", levels=[])
    assert by_id(read_status(run))["gmp-s0.5000-seed0"].state == "collapsed"


def test_trials_show_the_gpus_per_trial_override(tmp_path):
    # --gpus-per-trial 0.25 is pinned in sweep.json: trials show what the sweep will request, not
    # the preset's default
    run, _ = make_run(tmp_path, gpus_per_trial=0.25)
    status = read_status(run)
    assert {t.resources["gpu"] for t in status.trials} == {0.25}
