"""Module sensitivity (``--prune-only``, the paper's Table 1): each method once per prunable group,
each pruning only its group, reported as one ``method[group]`` row per group.

No Ray: plans, trial ids and rules from the packaged protein search space; run directories written
by ``RecordKeeper`` (the sweep's own record writer) with hand-picked values; the CLI for its errors.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from smctune.report.analysis import summarize
from smctune.report.load import load_run
from smctune.config.specs import SweepSpec
from smctune.config.search_space import load_search_space
from smctune.config.values import parse_prune_only
from smctune.errors import UserError
from smctune.rundir.records import RecordKeeper
from smctune.report.results_json import results_dict
from smctune.report.tables import format_table
from smctune.report.similarity import pair_similarities
from smctune.sweep.status import read_status
from smctune.sweep.plan import plan_trials

SMCTUNE = str(Path(sys.executable).with_name("smctune"))
GROUPS = ("q", "k", "v", "o", "ffn")


@pytest.fixture(scope="module")
def thermo():
    return load_search_space("thermo-hotcold")


def spec(run_dir, prune_only=GROUPS, methods=("dense", "omp_after"), sparsities=(0.05,)) -> SweepSpec:
    return SweepSpec(task="thermo-hotcold", methods=tuple(methods), sparsities=tuple(sparsities), seeds=(0,),
                     preset="smoke", preset_reason="test", name="sens", run_dir=str(run_dir),
                     mlflow_uri="file:///nowhere", models=("esm1b",), prune_only=tuple(prune_only))


def test_parse_prune_only(thermo):
    assert parse_prune_only("q,k,v,o,ffn", thermo) == GROUPS
    assert parse_prune_only(" q+k+v , ffn ", thermo) == ("q+k+v", "ffn")
    assert parse_prune_only("all", thermo) == ("q", "k", "v", "o", "ffn", "embeddings", "head")
    assert parse_prune_only(None, thermo) == ()
    for text, needle in (("q,x", "unknown --prune-only group 'x'"), ("q,,k", "malformed --prune-only"),
                         ("q+q", "names a group twice"), ("q,q", "lists an entry twice")):
        with pytest.raises(UserError) as excinfo:
            parse_prune_only(text, thermo)
        message = str(excinfo.value)
        assert needle in message and "\n" not in message
        assert "valid" in message or "twice" in needle


def test_plan_one_trial_per_group_and_dense_once(thermo, tmp_path):
    trials = plan_trials(spec(tmp_path / "run", prune_only=("q", "k+v")), thermo)
    ids = [t.trial_id for t in trials]
    assert ids == ["esm1b-dense-dense-seed0", "esm1b-omp_after-s0.0500-seed0-gq",
                   "esm1b-omp_after-s0.0500-seed0-gk+v"]
    by_group = {t.group: t for t in trials}
    groups = thermo.keep_dense_groups()
    assert by_group["q"].prunable["include"] == groups["q"] and by_group["q"].prunable["only"] == ["q"]
    assert by_group["k+v"].prunable["include"] == groups["k"] + groups["v"]
    assert by_group[""].prunable["include"] == thermo.prunable["include"]   # dense: the task's rule
    # every group trial starts from the one dense model
    assert len({t.dense_key() for t in trials}) == 1


def test_group_rules_select_exactly_the_module_kind(thermo):
    """On a real (tiny) ESM model of each architecture class, a group's rule selects only its module."""
    torch = pytest.importorskip("torch")
    from smctune.pruning import select_prunable
    from smctune.trainables.protein.runtime import ProteinRuntime
    from smctune.trainables.protein.backbones import load_backbone
    from smctune.trainables.protein.data import load

    settings = thermo.resolve("smoke", "esm1b")
    proteins = list(load("thermo-hotcold", None).splits["train"][:8])
    runtime = ProteinRuntime(backbone=load_backbone(settings.model, settings.train), train_set=proteins,
                             dev_set=proteins, num_classes=2, head_hidden=8, train=settings.train, device="cpu")
    torch.manual_seed(0)
    model = runtime.new_model()
    suffix = {"q": "self_attn.q_proj.weight", "k": "self_attn.k_proj.weight", "v": "self_attn.v_proj.weight",
              "o": "self_attn.out_proj.weight"}
    for group in GROUPS:
        rules = thermo.prunable_rules(only=group)
        names = [p.name for p in select_prunable(model, rules["include"], rules["exclude"])]
        assert names, group
        if group == "ffn":
            assert all(n.endswith(("fc1.weight", "fc2.weight")) for n in names)
        else:
            assert all(n.endswith(suffix[group]) for n in names), names


def write_records(run_dir: Path, values: dict, prune_only=GROUPS) -> Path:
    """A finished sensitivity run: dense 0.90, each group's value from ``values``."""
    sweep = spec(run_dir, prune_only=prune_only)
    run_dir.mkdir(parents=True)
    (run_dir / "sweep.json").write_text(sweep.to_json())
    keeper = RecordKeeper(run_dir, chance=0.5)
    for trial in plan_trials(sweep, load_search_space("thermo-hotcold")):
        keeper.started(trial)
        value = 0.90 if trial.method == "dense" else values[trial.group]
        level = trial.sparsity or 0.0
        keeper.result(trial.trial_id, {"metric_name": "accuracy", "step": 20, "global_step": 20,
                                       "accuracy": value, "best": value, "loss": 1.0, "train_loss": 1.0,
                                       "sparsity": level, "sparsity_all": level / 10, "round": None,
                                       "level": level, "level_done": True, "diverged": False,
                                       "layerwise": [["backbone.layers.0.self_attn.q_proj.weight", 100, 95],
                                                     ["backbone.layers.0.fc1.weight", 300, 300]]})
        keeper.finished(trial.trial_id, "ok", None)
    return run_dir


def test_report_has_one_row_per_group(tmp_path):
    values = {"q": 0.895, "k": 0.88, "v": 0.85, "o": 0.90, "ffn": 0.70}
    run = load_run(write_records(tmp_path / "run", values))
    record = json.loads((tmp_path / "run" / "results" / "esm1b-omp_after-s0.0500-seed0-gffn.json").read_text())
    assert record["group"] == "ffn" and record["method"] == "omp_after"
    summary = summarize(run)
    assert [m.name for m in summary.methods] == [f"omp_after[{g}]" for g in GROUPS]
    means = {m.name: m.cells[0.05].mean for m in summary.methods}
    assert means == {f"omp_after[{g}]": pytest.approx(v) for g, v in values.items()}
    fails = {m.name: m.fail.fails_at for m in summary.methods}
    assert fails == {"omp_after[q]": None, "omp_after[k]": 0.05, "omp_after[v]": 0.05, "omp_after[o]": None,
                     "omp_after[ffn]": 0.05}
    table = format_table(summary)
    assert "module sensitivity" in table
    rows = [line.split()[0] for line in table.splitlines()[4:10]]
    assert rows == ["dense"] + [f"omp_after[{g}]" for g in GROUPS]
    assert set(results_dict(summary)["methods"]) == {f"omp_after[{g}]" for g in GROUPS}
    assert "omp_after" not in results_dict(summary)["methods"]   # no empty row for the bare method


def test_similarity_compares_within_a_group_only(tmp_path):
    run = load_run(write_records(tmp_path / "run", {"q": 0.9, "k": 0.9}, prune_only=("q", "k")))
    assert pair_similarities(run) == []   # one method per group: nothing to compare across groups


def test_status_shows_group_rows(tmp_path):
    run_dir = write_records(tmp_path / "run", {"q": 0.9, "k": 0.9}, prune_only=("q", "k"))
    status = read_status(run_dir)
    assert sorted(t.method for t in status.trials) == ["dense", "omp_after[k]", "omp_after[q]"]
    assert all(t.state == "finished" for t in status.trials)


@pytest.mark.parametrize("args, needle", [
    (["--prune-only", "q", "--search", "threshold"], "--prune-only runs every level"),
    (["--prune-only", "q", "--trials-per-cell", "2"], "does not combine with --trials-per-cell"),
    (["--prune-only", "q", "--keep-dense", "q"], "also in --keep-dense"),
    (["--prune-only", "qq"], "unknown --prune-only group 'qq'"),
])
def test_cli_refuses_bad_prune_only(tmp_path, args, needle):
    result = subprocess.run([SMCTUNE, "plan", "thermo-hotcold", "--preset", "smoke", "--methods", "omp_after",
                             "--storage", str(tmp_path), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_plan_lists_group_trials(tmp_path):
    result = subprocess.run([SMCTUNE, "plan", "thermo-hotcold", "--preset", "smoke", "--methods", "omp_after",
                             "--sparsities", "0.05", "--prune-only", "q,k,v,o,ffn", "--storage", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "module sensitivity (--prune-only)" in result.stdout
    for group in GROUPS:
        assert f"omp_after[{group}]" in result.stdout
    assert "6 trials" in result.stdout


def test_layers_by_group(tmp_path):
    """Per-group sparsity weighted by layer size: q lost 5 of its 100 weights, ffn none of 300."""
    run_dir = write_records(tmp_path / "run", {"q": 0.9, "k": 0.9}, prune_only=("q", "k"))
    result = subprocess.run([SMCTUNE, "layers", str(run_dir), "--by-group", "--method", "omp_after[q]"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.strip().splitlines()
    assert header.split() == ["trial", "level", "q", "k", "v", "o", "ffn", "embeddings", "head"]
    assert row.split() == ["esm1b-omp_after-s0.0500-seed0-gq", "0.050", "5.00%", "-", "-", "-", "0.00%",
                           "-", "-"]
