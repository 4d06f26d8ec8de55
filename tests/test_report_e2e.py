"""End to end: a real smoke sweep (Ray Tune, MLflow) -> the report's files in the run directory and as
artifacts of the sweep's parent MLflow run -> the same report rebuilt from MLflow alone -> the
HTML opened in a real headless Chromium (skipped without one)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from browser import find_chromium, render_images  # noqa: E402
from conftest import joined  # noqa: E402

ENV = dict(os.environ, RAY_AUTH_MODE="disabled")
PNG = b"\x89PNG\r\n\x1a\n"


def smctune(*args: str, timeout=420, env=ENV) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smctune.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def swept(tmp_path_factory, ray_address):
    storage = tmp_path_factory.mktemp("runs")
    out = smctune("sweep", "csqa", "--preset", "smoke", "--methods", "dense,omp_after,snip",
                  "--sparsities", "0.36,0.832", "--seeds", "2", "--storage", str(storage), "--name", "e2e", "-q",
                  env=joined(ENV, ray_address))
    assert out.returncode == 0, out.stderr[-2000:]
    return storage / "e2e", out.stdout


def test_sweep_writes_the_report(swept):
    run, stdout = swept
    assert "report:" in stdout and "fails at" in stdout
    for name in ("results.json", "report.md", "report.html", "curves.png", "heatmap.png",
                 "layerwise-s0.360.png", "layerwise-s0.832.png", "similarity-jaccard-s0.360.png",
                 "environment.json", "plan.json"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    for png in run.glob("*.png"):
        assert png.read_bytes()[:8] == PNG
    data = json.loads((run / "results.json").read_text())
    assert data["schema_version"] == 2 and data["criterion"]["tolerance"] == {"value": 1.0, "unit": "points"}
    assert data["completeness"]["complete"] is True and data["completeness"]["planned"] == 10
    assert data["compute"]["trials_timed"] == 10 and data["compute"]["trial_seconds"] > 0
    assert data["compute"]["gpu_seconds"] == 0.0      # smoke asks for no GPU
    assert data["environment"]["versions"]["torch"] and data["sweep"]["name"] == "e2e"
    level = data["methods"]["omp_after"]["levels"]["0.36"]
    assert level["n"] == 2 and abs(level["achieved_sparsity"] - 0.36) < 1e-3
    pairs = {(p["method_a"], p["method_b"], p["sparsity"]): p for p in data["similarity"]}
    assert pairs[("omp_after", "snip", 0.36)]["n_jaccard"] == 2
    assert 0 <= pairs[("omp_after", "snip", 0.36)]["jaccard"] <= 1
    md = (run / "report.md").read_text()
    html = (run / "report.html").read_text()
    assert "## Answer: where each method stops matching dense" in md and "](curves.png)" in md
    assert html.count('src="data:image/png;base64,') == len(list(run.glob("*.png")))


def test_parent_mlflow_run_holds_the_report(swept):
    from mlflow.tracking import MlflowClient

    run, _ = swept
    client = MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smctune/e2e")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    children = [r for r in runs if r.info.run_id != parent]
    assert len(children) == 10 and all(r.data.tags["mlflow.parentRunId"] == parent for r in children)
    assert {r.info.status for r in children} == {"FINISHED"}
    top = {a.path for a in client.list_artifacts(parent)}
    assert {"sweep.json", "plan.json", "environment.json", "report"} <= top
    report = {a.path.split("/", 1)[1] for a in client.list_artifacts(parent, "report")}
    assert {"results.json", "report.md", "report.html", "curves.png", "heatmap.png"} <= report
    assert "record.json" in {a.path for a in client.list_artifacts(children[0].info.run_id)}


def test_report_rebuilt_from_mlflow_alone(swept, tmp_path):
    run, _ = swept
    out = tmp_path / "from-mlflow"
    done = smctune("report", "--mlflow-uri", f"sqlite:///{run / 'mlflow.db'}", "--experiment", "smctune/e2e",
                   "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Downloading artifacts" not in done.stderr   # no bar per record: our output stays readable
    original = json.loads((run / "results.json").read_text())
    rebuilt = json.loads((out / "results.json").read_text())
    assert rebuilt["methods"].keys() == original["methods"].keys()
    for method in original["methods"]:
        assert rebuilt["methods"][method]["levels"] == original["methods"][method]["levels"]
        assert rebuilt["methods"][method]["failing_sparsity"] == original["methods"][method]["failing_sparsity"]
    assert rebuilt["dense"] == original["dense"]
    # no masks in MLflow: layer profiles still correlate, mask Jaccard is absent and said so
    assert all(p["jaccard"] is None for p in rebuilt["similarity"])
    assert any(p["layer_correlation"] is not None for p in rebuilt["similarity"])
    assert "Mask Jaccard is not available" in (out / "report.md").read_text()


def test_a_trial_id_tag_that_is_a_path_writes_nothing_outside(swept, tmp_path):
    """An MLflow store may be shared and written by others: a trial's ``trial_id`` tag names a file
    of the rebuilt run directory, so one that climbs out of it is refused before anything is written."""
    import shutil

    from mlflow.tracking import MlflowClient

    run, _ = swept
    store = tmp_path / "store" / "mlflow.db"
    store.parent.mkdir()
    shutil.copy(run / "mlflow.db", store)
    client = MlflowClient(f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name("smctune/e2e").experiment_id])
    child = next(r for r in runs if r.data.tags.get("trial_id"))
    client.set_tag(child.info.run_id, "trial_id", "../../escaped")
    out = tmp_path / "a" / "b"
    done = smctune("report", "--mlflow-uri", f"sqlite:///{store}", "--experiment", "smctune/e2e",
                   "--out", str(out))
    assert done.returncode == 2 and "not a trial id: '../../escaped'" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("escaped*"))


def test_report_options_and_bad_input(swept, tmp_path):
    run, _ = swept
    out = tmp_path / "opts"
    done = smctune("report", str(run), "--tolerance", "2%", "--alpha", "0.05", "--compare-paper", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((out / "results.json").read_text())
    assert data["criterion"]["alpha"] == 0.05 and data["criterion"]["tolerance"]["unit"] == "percent_of_dense"
    assert data["paper"]["dense"] == pytest.approx(0.773) and "Figure 1" in data["paper"]["citation"]
    for args, needle in ((["--tolerance", "abc"], "--tolerance"), (["--alpha", "1.5"], "--alpha"),
                         (["--mlflow-uri", "sqlite:////nowhere/x.db"], "--experiment")):
        bad = smctune("report", *([] if args[0] == "--mlflow-uri" else [str(run)]), *args)
        assert bad.returncode == 2 and needle in bad.stderr and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1


def test_report_html_renders_in_chromium(swept, tmp_path):
    if find_chromium() is None:
        pytest.skip("Chromium not installed: apt-get install chromium")
    run, _ = swept
    shot = tmp_path / "report.png"
    images = render_images(run / "report.html", screenshot=shot)
    assert len(images) == len(list(run.glob("*.png")))
    assert all(width > 0 and height > 0 for _, width, height in images), images
    assert shot.read_bytes()[:8] == PNG


def test_a_report_that_fails_after_the_trials_ends_the_parent_run_failed(tmp_path, ray_address):
    """The trials are recorded, the report crashes: the sweep's MLflow run must not stay RUNNING."""
    from mlflow.tracking import MlflowClient

    probe = (
        "import sys, smctune.report.write as report\n"
        "def broken(*args, **kwargs):\n"
        "    raise RuntimeError('report broke')\n"
        "report.write_report = broken\n"
        "from smctune.cli.main import main\n"
        f"main(['sweep', 'csqa', '--preset', 'smoke', '--methods', 'dense', '--storage', {str(tmp_path)!r}, "
        "'--name', 'broken', '-q'])\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=joined(ENV, ray_address), timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode != 0 and "report broke" in done.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'broken' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smctune/broken").experiment_id])
    assert {(r.data.tags.get("kind"), r.info.status) for r in runs} == {("sweep", "FAILED"), (None, "FINISHED")}
    assert (tmp_path / "broken" / "results" / "dense-dense-seed0.json").is_file()
