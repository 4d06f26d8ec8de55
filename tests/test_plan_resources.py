"""Resources per trial, --gpus-per-trial, the plan's time estimate and cluster fit, trial threads, and
the multi-node rules (as pure functions over fake node lists and fake /proc/mounts text)."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from smctune.sweep import estimate
from smctune.config.settings import Resources
from smctune.config.specs import SweepSpec
from smctune.config.search_space import load_search_space
from smctune.errors import UserError

REPO = Path(__file__).resolve().parents[1]
ENV = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
ENV.update(RAY_AUTH_MODE="disabled", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
GIB = 1024**3


def plan(*args: str, tmp_path) -> tuple[str, bool]:
    """Run `smctune plan` in a fresh interpreter; also report whether it left a Ray running."""
    probe = textwrap.dedent(f"""
        import sys
        from smctune.cli.main import main
        code = main({["plan", *args, "--storage", str(tmp_path / "runs")]!r})
        started = "ray" in sys.modules and sys.modules["ray"].is_initialized()
        print("EXIT", code, "RAY", started)
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 0 and "EXIT 0" in out.stdout, (out.stdout, out.stderr)
    assert not (tmp_path / "runs").exists(), "plan must not create the run directory"
    return out.stdout, "RAY True" in out.stdout


def smctune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smctune.cli", *args], capture_output=True, text=True,
                          env=ENV, timeout=120, stdin=subprocess.DEVNULL)


def assert_one_line_error(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("smctune: error: "), out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def number_before(text: str, unit: str) -> float:
    match = re.search(r"([0-9.]+) " + re.escape(unit), text)
    assert match, (unit, text)
    return float(match.group(1))


# ------------------------------------------------------------------------------------------ plan

def test_plan_prints_resources_estimate_and_fit_and_gpus_per_trial_scales_it(tmp_path):
    import torch

    argv = ("csqa", "--preset", "paper", "--methods", "dense,omp_after,lth", "--sparsities", "0.2,0.36")
    text, ray_started = plan(*argv, tmp_path=tmp_path)
    assert not ray_started, "plan must not start a local Ray"
    # dense, omp_after at 2 levels, one LTH trial of 2 rounds: 4 trials, 5 fine-tunes
    assert "4 trials, 5 fine-tunes of 3000 steps" in text
    assert "resources per trial: cpu 4, gpu 1, memory 24 GB" in text

    # the estimate, from the YAML's own numbers: setup per trial + per fine-tune steps and evaluations
    raw = yaml.safe_load((REPO / "search_spaces/csqa.yaml").read_text())
    device = re.search(r"per trial \((\w+), search_spaces/csqa.yaml step_seconds.paper", text).group(1)
    times = raw["step_seconds"]["paper"][device]
    train = raw["presets"]["paper"]["train"]
    evals = math.ceil(train["max_steps"] / train["eval_every"])
    seconds = 4 * times["setup"] + 5 * (train["max_steps"] * times["step"] + evals * times["eval"])
    assert number_before(text, "trial-hours") == pytest.approx(seconds / 3600, abs=0.006)
    assert number_before(text, "GPU-hours") == pytest.approx(seconds / 3600 * 1, abs=0.006)

    # the fit line: this machine as a local Ray would see it
    gpus = torch.cuda.device_count()
    if gpus == 0 or (os.cpu_count() or 1) < 4:
        assert "fits 0 trials at once" in text
        warning = [line for line in text.splitlines() if line.startswith("warning: ")]
        assert len(warning) == 1 and "one trial needs" in warning[0] and "not even one trial fits" in warning[0]
        if gpus == 0:
            assert "1 GPU" in warning[0] and "0 GPU" in warning[0]
    else:
        assert re.search(r"fits [1-9]\d* trials? at once \(limited by \w+\); wall-clock about", text)

    quarter, _ = plan(*argv, "--gpus-per-trial", "0.25", tmp_path=tmp_path)
    assert "resources per trial: cpu 4, gpu 0.25 (--gpus-per-trial; preset 1), memory 24 GB" in quarter
    assert number_before(quarter, "trial-hours") == pytest.approx(seconds / 3600, abs=0.006)
    assert number_before(quarter, "GPU-hours") == pytest.approx(seconds / 3600 * 0.25, abs=0.006)


def test_plan_step_seconds_override_and_fit_on_this_machine(tmp_path):
    text, _ = plan("csqa", "--preset", "smoke", "--methods", "dense,omp_before", "--sparsities", "0.5",
                   "--step-seconds", "0.5", "--max-concurrent", "1", tmp_path=tmp_path)
    raw = yaml.safe_load((REPO / "search_spaces/csqa.yaml").read_text())
    smoke = raw["step_seconds"]["smoke"]["cpu"]
    train = raw["presets"]["smoke"]["train"]
    per_trial = smoke["setup"] + train["max_steps"] * 0.5 + math.ceil(train["max_steps"] / train["eval_every"]) * smoke["eval"]
    assert "0.5 s per step" in text and "--step-seconds" in text
    assert number_before(text, "trial-hours") == pytest.approx(2 * per_trial / 3600, abs=0.006)
    assert number_before(text, "GPU-hours") == 0
    # both trials are stage 1; one at a time (--max-concurrent 1): wall-clock = their sum
    assert "fits 1 trial at once (--max-concurrent 1)" in text
    assert f"wall-clock about {estimate.format_duration(2 * per_trial)}" in text


@pytest.mark.parametrize("argv,needle", [
    (["plan", "csqa", "--preset", "smoke", "--gpus-per-trial", "-1"], "--gpus-per-trial must be >= 0"),
    (["plan", "csqa", "--preset", "smoke", "--gpus-per-trial", "abc"], "--gpus-per-trial 'abc' is not a number"),
    (["plan", "csqa", "--preset", "smoke", "--gpus-per-trial", "nan"], "--gpus-per-trial must be a finite number"),
    (["plan", "csqa", "--preset", "smoke", "--gpus-per-trial", "1.5"], "whole GPUs"),
    (["sweep", "csqa", "--preset", "smoke", "--gpus-per-trial", "-0.5"], "--gpus-per-trial must be >= 0"),
    (["plan", "csqa", "--preset", "smoke", "--step-seconds", "0"], "--step-seconds must be > 0"),
    (["plan", "csqa", "--preset", "smoke", "--step-seconds", "fast"], "--step-seconds 'fast' is not a number"),
])
def test_bad_override_values_are_one_line_errors(argv, needle, tmp_path):
    assert_one_line_error(smctune(*argv, "--storage", str(tmp_path / "runs")), needle)
    assert not (tmp_path / "runs").exists()


def test_sweep_refuses_a_trial_this_machine_cannot_hold(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = smctune("sweep", "csqa", "--preset", "smoke", "--methods", "dense", "--gpus-per-trial", "1",
                  "--storage", str(tmp_path / "runs"))
    assert_one_line_error(out, "a trial cannot run on this machine", "1 GPU", "--gpus-per-trial")
    assert not (tmp_path / "runs").exists()


def test_gpus_per_trial_is_pinned_in_sweep_json(tmp_path):
    from smctune.sweep.driver import record_spec

    fields = dict(task="csqa", methods=("dense",), sparsities=(0.5,), seeds=(0,), preset="smoke",
                  preset_reason="requested", name="g", run_dir=str(tmp_path), mlflow_uri="")
    record_spec(tmp_path, SweepSpec(**fields, gpus_per_trial=0.25))
    assert SweepSpec.from_json((tmp_path / "sweep.json").read_text()).gpus_per_trial == 0.25
    record_spec(tmp_path, SweepSpec(**fields, gpus_per_trial=0.25))  # same settings: continues
    with pytest.raises(UserError, match="gpus_per_trial"):
        record_spec(tmp_path, SweepSpec(**fields, gpus_per_trial=0.5))
    with pytest.raises(UserError, match="gpus_per_trial"):
        record_spec(tmp_path, SweepSpec(**fields))
    data = json.loads(SweepSpec(**fields).to_json())
    del data["gpus_per_trial"]  # a sweep.json written before the option existed
    assert SweepSpec.from_json(json.dumps(data)).gpus_per_trial is None


# ----------------------------------------------------------------------------- step-time table

def test_every_packaged_search_space_has_step_times_for_every_preset():
    for path in sorted((REPO / "search_spaces").glob("*.yaml")):
        space = load_search_space(path.stem)
        assert set(space.step_seconds) == set(space.presets), path.name
        assert "cpu" in space.step_seconds["smoke"] and "cpu" in space.step_seconds["small"]
        assert {"A100", "A10G"} <= set(space.step_seconds["paper"]), path.name


@pytest.mark.parametrize("table,needle", [
    ("step_seconds: {paper: {A100: 0.3}}", "unknown key 'paper' at step_seconds (valid: smoke)"),
    ("step_seconds: {smoke: {cpu: -1}}", "step_seconds.smoke.cpu.step: expected a number of seconds > 0"),
    ("step_seconds: {smoke: {cpu: {eval: 1}}}", "'step' (seconds per training step) is required"),
    ("step_seconds: {smoke: {cpu: {step: 1, evl: 2}}}", "unknown key 'evl' at step_seconds.smoke.cpu"),
    ("step_seconds: {smoke: {cpu: {step: 1, eval: fast}}}", "step_seconds.smoke.cpu.eval"),
    ("step_seconds: [1, 2]", "step_seconds: expected a mapping"),
])
def test_bad_step_seconds_table_is_named(tmp_path, table, needle):
    path = tmp_path / "space.yaml"
    path.write_text(f"task: csqa\npresets:\n  smoke: {{}}\n{table}\n")
    with pytest.raises(UserError) as err:
        load_search_space("csqa", str(path))
    assert needle in str(err.value)


def test_step_time_follows_the_cluster_gpu_class():
    table = {"A100": {"step": 0.15, "eval": 5.0, "setup": 60.0}, "A10G": {"step": 0.45, "eval": 15.0, "setup": 60.0},
             "cpu": {"step": 3.0, "eval": 20.0, "setup": 10.0}}
    assert estimate.pick_step_time(table, 1, ["A10G"], None, "t")[0].device == "A10G"
    assert estimate.pick_step_time(table, 1, ["NVIDIA A100-SXM4-80GB"], None, "t")[0].device == "A100"
    assert estimate.pick_step_time(table, 0.25, ["A100-80G"], None, "t")[0].device == "A100"
    assumed = estimate.pick_step_time(table, 1, ["H100"], None, "t")[0]
    assert assumed.device == "A100" and "assumed" in assumed.note
    assert estimate.pick_step_time(table, 0, ["A100"], None, "t")[0].step == 3.0
    override = estimate.pick_step_time(table, 1, [], 0.2, "t")[0]
    assert (override.step, override.eval, override.setup) == (0.2, 5.0, 60.0)
    assert not estimate._names_device("A10", "NVIDIA A100-SXM4-40GB")
    missing, why = estimate.pick_step_time({"cpu": table["cpu"]}, 1, [], None, "t")
    assert missing is None and "--step-seconds" in why


def test_makespan_replays_trials_in_order_on_the_slots():
    assert estimate.makespan([10, 10, 10], 2) == 20
    assert estimate.makespan([30, 10, 10, 10], 2) == 30
    assert estimate.makespan([5, 5], 8) == 5
    assert estimate.makespan([], 2) == 0


# ------------------------------------------------------------------------- resources and threads

def test_resource_request_memory_in_bytes_and_fractional_gpu():
    from ray.tune.execution.placement_groups import resource_dict_to_pg_factory

    from smctune.config.search_space import trial_resources

    from smctune.sweep.tune_trainable import resource_request, trial_config

    space = load_search_space("mawps")
    spec = SweepSpec(task="mawps", methods=("dense",), sparsities=(0.5,), seeds=(0,), preset="paper",
                     preset_reason="", name="r", run_dir="/tmp/r", mlflow_uri="")
    resources = trial_resources(spec, space)
    assert resources == Resources(cpu=2, gpu=0.25, memory_gb=6)
    request = resource_request(resources)
    assert request == {"cpu": 2, "gpu": 0.25, "memory": 6 * GIB} and isinstance(request["memory"], int)
    assert resource_dict_to_pg_factory(request).required_resources == {"CPU": 2, "GPU": 0.25, "memory": 6 * GIB}
    assert resource_request(Resources(1, 0, 1.3))["memory"] == round(1.3 * GIB)  # whole bytes for Ray
    overridden = trial_resources(SweepSpec(**{**spec.__dict__, "gpus_per_trial": 1.0}), space)
    assert overridden.gpu == 1.0 and overridden.cpu == 2
    assert trial_config(overridden) == {"cpus": 2, "gpus": 1.0}


def test_trial_threads_are_the_cpu_share_unless_train_threads_is_set(monkeypatch):
    import dataclasses

    import smctune.train.trial as train
    from smctune.sweep.plan import plan_trials
    from smctune.sweep.tune_trainable import trainable, trial_threads

    assert [trial_threads(c) for c in (4, 2.9, 1, 0.5, 0)] == [4, 2, 1, 1, 1]
    assert trial_threads(4, configured=2) == 2 and trial_threads(1, configured=3) == 3

    spec = SweepSpec(task="csqa", methods=("dense",), sparsities=(0.5,), seeds=(0,), preset="smoke",
                     preset_reason="", name="t", run_dir="/tmp/t", mlflow_uri="")
    trial = plan_trials(spec, load_search_space("csqa"))[0]
    calls = []
    monkeypatch.setattr(train, "set_threads", lambda n: calls.append(("threads", n)))
    monkeypatch.setattr(train, "run_trial", lambda spec, reporter, device: calls.append(("device", device)))
    trainable({"trial": trial.to_dict(), "cpus": 3, "gpus": 0})
    pinned = dataclasses.replace(trial, train=dataclasses.replace(trial.train, threads=2))
    trainable({"trial": pinned.to_dict(), "cpus": 4, "gpus": 0.25})
    trainable({"trial": trial.to_dict(), "cpus": 0.5, "gpus": 0})
    assert calls == [("threads", 3), ("device", "cpu"), ("threads", 2), ("device", "cuda"),
                     ("threads", 1), ("device", "cpu")]


# --------------------------------------------------------------------------------- cluster fit

def ray_node(node_id, alive=True, **resources):
    return {"NodeID": node_id, "Alive": alive, "Resources": resources}


AWS = [ray_node("head", CPU=0.0, memory=8.0 * GIB),
       ray_node("g5", CPU=16.0, GPU=1.0, memory=44.0 * GIB, **{"accelerator_type:A10G": 1.0}),
       ray_node("p4d", CPU=96.0, GPU=8.0, memory=800.0 * GIB, **{"accelerator_type:A100": 1.0}),
       ray_node("gone", alive=False, CPU=96.0, GPU=8.0, memory=800.0 * GIB)]


def test_concurrency_is_per_node_and_names_the_limit():
    cluster = estimate.cluster_from_ray_nodes(AWS, "test")
    assert len(cluster.nodes) == 3 and cluster.accelerators == ("A10G", "A100")
    gts = estimate.ray_request(2, 0.25, 6)        # g5: min(8, 4, 7) = 4; p4d: min(48, 32, 133) = 32
    assert estimate.concurrency(cluster, gts) == (36, "gpu")
    roberta = estimate.ray_request(4, 1, 24)      # g5: 1; p4d: min(24, 8, 33) = 8
    assert estimate.concurrency(cluster, roberta) == (9, "gpu")
    huge = estimate.ray_request(4, 16, 0)         # 16 GPUs in one bundle: no node has them
    assert estimate.concurrency(cluster, huge)[0] == 0
    assert "needs 16 GPU" in estimate.unfit_reason(cluster, huge) and "has 8 GPU" in estimate.unfit_reason(cluster, huge)
    laptop = estimate.local_cluster(8, [], 16 * GIB)
    assert estimate.concurrency(laptop, estimate.ray_request(1, 0, 0)) == (8, "cpu")
    assert estimate.concurrency(laptop, gts)[0] == 0


# ------------------------------------------------------------------------------ multi-node rules

MOUNTS = """\
overlay / overlay rw,relatime 0 0
/dev/nvme0n1p1 /home ext4 rw,relatime 0 0
/dev/nvme0n1p1 /mnt ext4 rw,relatime 0 0
fs-123.efs.us-west-2.amazonaws.com:/ /mnt/smctune nfs4 rw,vers=4.1 0 0
bucket /mnt/gcs fuse.gcsfuse rw,nosuid 0 0
mountpoint-s3 /mnt/s3 fuse rw,nosuid 0 0
filer:/export /mnt/my\\040share nfs rw 0 0
tmpfs /mnt/smctune/tmp tmpfs rw 0 0
"""


def test_mount_lookup_longest_prefix_and_escapes():
    mounts = estimate.parse_mounts(MOUNTS)
    assert estimate.mount_of("/mnt/smctune/runs/csqa", mounts)[2] == "nfs4"
    assert estimate.mount_of("/mnt/smctuneX/runs", mounts)[2] == "ext4"       # not under /mnt/smctune
    assert estimate.mount_of("/mnt/smctune/tmp/x", mounts)[2] == "tmpfs"
    assert estimate.mount_of("/mnt/my share/runs", mounts)[2] == "nfs"
    assert estimate.mount_of("/srv/runs", mounts)[1] == "/"
    for path, shared in (("/mnt/smctune/runs", True), ("/mnt/gcs/runs", True), ("/mnt/s3/runs", True),
                         ("/mnt/my share", True), ("/home/me/runs", False), ("/srv/runs", False),
                         ("/mnt/smctune/tmp/runs", False)):
        assert estimate.is_network_mount(estimate.mount_of(path, mounts)) is shared, path


def test_spans_nodes():
    one = [ray_node("a", CPU=8.0, GPU=1.0), ray_node("b", alive=False, CPU=8.0)]
    request = estimate.ray_request(4, 1, 0)
    assert estimate.spans_nodes(AWS, "head", request, connected=True) == "3 nodes alive"
    assert estimate.spans_nodes(one, "a", request, connected=True) is None
    assert estimate.spans_nodes(one, "a", request, connected=False) is None
    head_only = [ray_node("head", CPU=0.0, memory=8.0 * GIB)]          # cluster.yaml before scaling up
    assert "autoscaler" in estimate.spans_nodes(head_only, "head", request, connected=True)
    assert estimate.spans_nodes(head_only, "head", request, connected=False) is None


def test_storage_rule():
    mounts = estimate.parse_mounts(MOUNTS)
    assert estimate.storage_problem("/mnt/smctune/runs", False, mounts, "3 nodes alive") is None
    problem = estimate.storage_problem("/home/me/smctune_runs", False, mounts, "3 nodes alive")
    assert "\n" not in problem and "ext4 at /home" in problem and "--shared-storage" in problem
    assert "3 nodes alive" in problem and "NFS" in problem
    assert estimate.storage_problem("/home/me/smctune_runs", True, mounts, "3 nodes alive") is None


def test_mlflow_rule():
    mounts = estimate.parse_mounts(MOUNTS)
    check = lambda uri, shared=False, storage="/mnt/smctune/runs", cwd="/": estimate.mlflow_problem(  # noqa: E731
        uri, mounts, storage, shared, "2 nodes alive", default=False, cwd=cwd)
    assert check("http://mlflow:5000") is None and check("https://mlflow.example.com") is None
    assert check("postgresql://user@db/mlflow") is None and check("databricks") is None
    local = check("sqlite:////home/me/mlflow.db")
    assert "sqlite" in local and "ext4 at /home" in local and "http" in local and "\n" not in local
    unsafe = check("sqlite:////mnt/smctune/runs/x/mlflow.db")
    assert "unsafe" in unsafe and "nfs4" in unsafe and "postgresql://" in unsafe
    assert "unsafe" in check("sqlite:///mlflow.db", cwd="/mnt/smctune")          # relative to the cwd
    assert "unsafe" in check("sqlite:////home/me/runs/mlflow.db", shared=True, storage="/home/me/runs")
    assert check("file:///mnt/smctune/mlruns") is None and check("/mnt/gcs/mlruns") is None
    assert "file store" in check("./mlruns", cwd="/home/me")
    assert check("/home/me/runs/mlruns", shared=True, storage="/home/me/runs") is None


def test_sweep_refusal_combines_the_rules(monkeypatch, tmp_path):
    from smctune.sweep import cluster

    monkeypatch.setattr(cluster, "read_mounts", lambda: MOUNTS)
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    base = dict(task="csqa", methods=("dense",), sparsities=(0.5,), seeds=(0,), preset="paper",
                preset_reason="", name="n")
    request = estimate.ray_request(4, 1, 24)
    local = SweepSpec(**base, run_dir="/home/me/smctune_runs/n", mlflow_uri="sqlite:////home/me/smctune_runs/n/mlflow.db")
    problems = cluster.multinode_problems(local, AWS, "head", request, shared_storage=False, default_mlflow=True)
    assert len(problems) == 2 and "--storage /home/me/smctune_runs" in problems[0]
    assert "the default --mlflow-uri is a sqlite file" in problems[1]
    declared = cluster.multinode_problems(local, AWS, "head", request, shared_storage=True, default_mlflow=True)
    assert len(declared) == 1 and "unsafe" in declared[0]
    shared = SweepSpec(**base, run_dir="/mnt/smctune/runs/n", mlflow_uri="http://mlflow:5000")
    assert cluster.multinode_problems(shared, AWS, "head", request, False, False) == []
    single = [ray_node("head", CPU=8.0, GPU=1.0, memory=64.0 * GIB)]
    assert cluster.multinode_problems(local, single, "head", request, False, True) == []
