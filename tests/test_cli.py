"""The command line: fast paths stay light, and bad input gives one line, exit code 2, no traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import joined

ENV = dict(os.environ, RAY_AUTH_MODE="disabled", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")


def smctune(*args: str, cwd=None, timeout=180, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smctune.cli", *args], capture_output=True, text=True,
                          env=env or ENV, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("argv", [["ls", "tasks"], ["ls", "methods"], ["ls", "presets"], ["--help"],
                                  ["sweep", "--help"]])
def test_help_and_ls_import_neither_torch_nor_ray(argv):
    probe = textwrap.dedent(f"""
        import sys
        from smctune.cli.main import main
        try:
            main({argv!r})
        except SystemExit:
            pass
        heavy = sorted(m for m in ("torch", "ray", "transformers", "mlflow") if m in sys.modules)
        print("HEAVY", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout


def test_ls_methods_lists_registered_methods():
    out = smctune("ls", "methods")
    assert out.returncode == 0
    for name in ("dense", "lth", "omp_after", "random_after", "gmp", "omp_before", "random_before"):
        assert f"\n{name} " in "\n" + out.stdout


def test_help_has_examples_on_every_command():
    for command in ([], ["ls"], ["plan"], ["sweep"], ["report"], ["env"]):
        out = smctune(*command, "--help")
        assert out.returncode == 0
        assert "examples:" in out.stdout, command


def _assert_user_error(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("smctune: error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_unknown_task(tmp_path):
    _assert_user_error(smctune("sweep", "nope", "--storage", str(tmp_path)), "unknown task 'nope'", "csqa")


def test_unknown_method(tmp_path):
    _assert_user_error(smctune("sweep", "csqa", "--methods", "gmp,magic", "--storage", str(tmp_path)),
                       "unknown method 'magic'", "omp_after")


@pytest.mark.parametrize("levels,needle", [("0.2,1.5", "outside (0, 1)"), ("0,0.5", "outside (0, 1)"),
                                           ("0.2,abc", "malformed --sparsities"), ("0.2,,0.3", "malformed")])
def test_bad_sparsities(tmp_path, levels, needle):
    _assert_user_error(smctune("sweep", "csqa", "--preset", "smoke", "--sparsities", levels,
                               "--storage", str(tmp_path)), needle)


def test_unknown_preset(tmp_path):
    _assert_user_error(smctune("sweep", "csqa", "--preset", "huge", "--storage", str(tmp_path)),
                       "unknown preset 'huge'", "smoke")


def test_missing_data_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    out = smctune("sweep", "csqa", "--preset", "smoke", "--data-dir", str(data),
                  "--storage", str(tmp_path / "runs"))
    _assert_user_error(out, "missing data file", "train_rand_split.jsonl")
    assert not (tmp_path / "runs").exists(), "nothing may be created for a sweep that cannot start"


def test_malformed_data_line_names_file_and_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    good = Path(__file__).resolve().parents[1] / "trainables/commonsense/data/csqa/train.jsonl"
    lines = good.read_text().splitlines()[:5]
    lines[2] = '{"answerKey": "A", "question": '
    (data / "train_rand_split.jsonl").write_text("\n".join(lines) + "\n")
    (data / "dev_rand_split.jsonl").write_text("\n".join(good.read_text().splitlines()[:3]) + "\n")
    out = smctune("plan", "csqa", "--preset", "smoke", "--data-dir", str(data))
    _assert_user_error(out, "train_rand_split.jsonl", "line 3")


def test_paper_preset_without_gpu_suggests_another(tmp_path):
    out = smctune("sweep", "csqa", "--preset", "paper", "--storage", str(tmp_path))
    _assert_user_error(out, "preset 'paper' needs GPUs", "--preset small", "--preset smoke")


def test_unwritable_run_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = smctune("sweep", "csqa", "--preset", "smoke", "--methods", "dense", "--storage", str(blocker / "runs"))
    _assert_user_error(out, "not writable", str(blocker / "runs"))


def test_invalid_yaml_search_space(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: csqa\npresets: [unclosed\n")
    _assert_user_error(smctune("plan", "csqa", "--preset", "smoke", "--search-space", str(bad)),
                       "invalid YAML", str(bad))


def test_unknown_key_in_search_space_is_named(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("task: csqa\npresets:\n  smoke:\n    train: {max_step: 10}\n")
    _assert_user_error(smctune("plan", "csqa", "--preset", "smoke", "--search-space", str(bad)),
                       "unknown key 'max_step'", "presets.smoke.train", "max_steps")


def test_unknown_method_tunable_is_named(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("task: csqa\nmethods:\n  gmp: {freqency: 3}\npresets:\n  smoke: {}\n")
    _assert_user_error(smctune("plan", "csqa", "--methods", "gmp", "--preset", "smoke",
                               "--search-space", str(bad)), "unknown key 'freqency'", "frequency")


def test_plan_lists_stages_and_counts():
    out = smctune("plan", "csqa", "--methods", "all", "--preset", "smoke")
    assert out.returncode == 0, out.stderr
    assert "preset: smoke (requested)" in out.stdout
    # dense + 10 one-trial-per-level methods x 8 levels + 1 LTH trial
    assert "82 trials" in out.stdout
    assert "stage 2" in out.stdout and "lth" in out.stdout


def test_object_store_storage_is_refused_with_the_alternative(tmp_path):
    _assert_user_error(smctune("sweep", "csqa", "--preset", "smoke", "--storage", "s3://bucket/runs"),
                       "object-store URIs are not supported", "NFS")


@pytest.mark.slow
def test_interrupted_sweep_ends_runs_killed_and_the_same_command_resumes(tmp_path, ray_address):
    """The driver starts Ray of its own, as on a laptop (the other CLI sweeps of the tests join the
    session's): stopping the driver stops that Ray too. The same command then resumes; it joins the
    session's Ray (``RAY_ADDRESS``), as on a cluster, which saves a second Ray start."""
    import signal

    import mlflow

    from test_sweep import FAST_SPACE

    space = tmp_path / "space.yaml"
    # two trials at once (one CPU each, on the driver's own Ray of this machine's two), so one is
    # mid-way when the driver is stopped
    space.write_text(FAST_SPACE.replace("max_steps: 8", "max_steps: 300").replace("eval_every: 4", "eval_every: 100"))
    argv = ["sweep", "csqa", "--methods", "dense,omp_before", "--sparsities", "0.2,0.36,0.488",
            "--preset", "smoke", "--search-space", str(space), "--storage", str(tmp_path / "runs"),
            "--name", "intr"]
    proc = subprocess.Popen([sys.executable, "-m", "smctune.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, stdin=subprocess.DEVNULL)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if " done " in line:
            break
    # SIGTERM (a cancelled job, a preempted node) takes the same path as Ctrl-C; SIGINT itself is
    # ignored by processes a non-interactive shell starts in the background, as CI may
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (seen, err)
    assert "smctune resume" in err and "Traceback" not in err

    run_dir = tmp_path / "runs" / "intr"
    mlflow.set_tracking_uri(f"sqlite:///{run_dir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["smctune/intr"])
    assert "RUNNING" not in set(runs["status"]), runs[["tags.trial_id", "status"]]
    assert "KILLED" in set(runs["status"]) and "FINISHED" in set(runs["status"])
    statuses = {json.loads(p.read_text())["status"] for p in (run_dir / "results").glob("*.json")}
    assert statuses == {"ok", "killed"}
    finished_before = len(runs[runs["status"] == "FINISHED"])

    again = smctune(*argv, timeout=300, env=joined(ENV, ray_address))
    assert again.returncode == 0, again.stderr
    assert f"resuming: {finished_before} of 4 trials already finished" in again.stdout
    records = [json.loads(p.read_text()) for p in (run_dir / "results").glob("*.json")]
    assert len(records) == 4 and {r["status"] for r in records} == {"ok"}
