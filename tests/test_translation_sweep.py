"""Translation sweeps: the bundled FLORES-200 sample through the CLI under real Ray Tune (several
methods, one level), the dense baseline of the larger groups (30 and 110 training directions) and a
user's ``--data-dir`` of parallel text files as planned trials run in this process, and what a sweep
records (BLEU and chrF per direction in the records and in MLflow, BLEU printed in points)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import joined, last_reports
from smctune.trainables.translation import data
from smctune.trainables.translation.languages import direction_name, eval_directions

SMCTUNE = str(Path(sys.executable).with_name("smctune"))
METHODS = ("dense", "omp_after", "gmp", "snip", "omp_rigl", "lth")


def sweep(tmp_path: Path, ray_address: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SMCTUNE, "sweep", *args, "--preset", "smoke", "--storage", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, env=joined(os.environ, ray_address))


def records(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (run_dir / "results").glob("*.json")]


def test_cli_sweep_mt_2to2_records_bleu_per_direction(tmp_path, ray_address):
    result = sweep(tmp_path, ray_address, "mt-2to2", "--methods", ",".join(METHODS), "--sparsities", "0.2",
                   "--name", "mt")
    assert result.returncode == 0, result.stderr[-3000:]
    found = records(tmp_path / "mt")
    assert len(found) == len(METHODS) and {r["status"] for r in found} == {"ok"}, [r.get("error") for r in found]
    assert "bleu (points) by sparsity" in result.stdout and "fails at" in result.stdout
    assert "training directions" in result.stdout   # the data check's note
    directions = {direction_name(d) for d in eval_directions()}
    for record in found:
        level = record["levels"][-1]
        assert record["metric"] == "bleu" and 0.0 <= level["best"] <= 1.0
        details = level["details"]
        assert {k.split("/", 1)[1] for k in details if k.startswith("bleu/")} == directions
        assert {k.split("/", 1)[1] for k in details if k.startswith("chrf/")} == directions
        assert details["bleu_points"] == pytest.approx(100 * level["final"])
        if record["method"] != "dense":   # an exact count over unique tensors (LTH: its ladder level)
            assert level["achieved_sparsity"] == pytest.approx(level["sparsity"], abs=1e-4)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mt' / 'mlflow.db'}")
    experiment = client.search_experiments()[0]
    runs = client.search_runs([experiment.experiment_id], "tags.method = 'dense'")
    assert runs and "bleu/fr-en" in runs[0].data.metrics and "chrf/en-zh" in runs[0].data.metrics


@pytest.mark.parametrize("task", ["mt-5to5", "mt-10to10"])
def test_larger_groups_train_their_directions(tmp_path, task, single_thread):
    """The dense baseline of the larger groups as a sweep plans it, run in this process (the Ray path
    is the mt-2to2 sweep above)."""
    (last,) = run_planned(tmp_path, task)
    assert last["level_done"] and 0.0 <= last["best"] <= 1.0


def run_planned(tmp_path: Path, task: str, data_dir=None) -> list[dict]:
    """Every trial a ``--methods dense`` sweep of ``task`` plans, in this process: the last report of each."""
    from smctune.config.search_space import load_search_space
    from smctune.config.specs import SweepSpec
    from smctune.sweep.plan import plan_trials

    run_dir = tmp_path / "runs" / task
    run_dir.mkdir(parents=True)
    spec = SweepSpec(task=task, methods=("dense",), sparsities=(0.5,), seeds=(0,), preset="smoke",
                     preset_reason="test", name=task, run_dir=str(run_dir), mlflow_uri="sqlite:////unused.db",
                     data_dir=data_dir, verbosity=0)
    return last_reports(plan_trials(spec, load_search_space(task)))


def test_a_data_dir_of_parallel_files(tmp_path, single_thread):
    """``<split>.<src>-<tgt>.<lang>`` files (cut from the bundled sample): the English-centric pairs
    are files, fr-cs comes through the English pivot, and the evaluation reads valid.*."""
    bundled = Path(data.__file__).parent / "data" / "flores200"
    lines = {code: (bundled / "dev" / f"{flores}.dev").read_text(encoding="utf-8").splitlines()
             for code, flores in (("en", "eng_Latn"), ("fr", "fra_Latn"), ("cs", "ces_Latn"), ("de", "deu_Latn"),
                                  ("gu", "guj_Gujr"), ("ja", "jpn_Jpan"), ("my", "mya_Mymr"), ("ro", "ron_Latn"),
                                  ("ru", "rus_Cyrl"), ("vi", "vie_Latn"), ("zh", "zho_Hans"))}
    directory = tmp_path / "corpus"
    directory.mkdir()
    for code in lines:
        if code == "en":
            continue
        for split, rows in (("train", slice(0, 60)), ("valid", slice(900, 920))):
            for side in ("en", code):
                (directory / f"{split}.en-{code}.{side}").write_text("\n".join(lines[side][rows]) + "\n",
                                                                     encoding="utf-8")
    data.clear_cache()
    corpus = data.load("mt-2to2", str(directory))
    assert corpus.train.route("fr", "cs") == "pivot" and len(corpus.train.pairs(("fr", "cs"))) == 60
    (last,) = run_planned(tmp_path, "mt-2to2", str(directory))
    assert last["level_done"] and 0.0 <= last["best"] <= 1.0


def test_a_misaligned_data_dir_is_one_line_and_exit_2(tmp_path, ray_address):
    directory = tmp_path / "corpus"
    directory.mkdir()
    for split in ("train", "valid"):
        (directory / f"{split}.en-fr.en").write_text("a\nb\n", encoding="utf-8")
        (directory / f"{split}.en-fr.fr").write_text("a\n" if split == "train" else "a\nb\n", encoding="utf-8")
    result = sweep(tmp_path, ray_address, "mt-2to2", "--methods", "dense", "--data-dir", str(directory), "--name", "bad")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "train.en-fr" in result.stderr
