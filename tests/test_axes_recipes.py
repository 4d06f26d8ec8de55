"""Architectures and folds as sweep axes, optimiser recipes, fold/architecture-aware analysis and
report, and SMC-Bench's per-method prunable rules.

No Ray. Run directories are fabricated in tmp_path with ``RecordKeeper`` (the sweep's own record
writer) from ``plan_trials`` specs, so the records have exactly the shape a sweep writes; expected
numbers are computed by hand. One tiny random-weight GTS model is built (smoke preset, a slice of the
bundled MAWPS fold 0) for the prunable-parameter checks.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from smctune.catalog import registry
from smctune.report.analysis import summarize, summarize_all
from smctune.report.cell_stats import cells, collapsed_layers, dense_baseline, folded_stat
from smctune.report.load import load_run
from smctune.sweep.request import parse_folds, parse_models
from smctune.config.settings import ModelSettings, TrainSettings
from smctune.config.specs import SweepSpec, TrialSpec
from smctune.config.search_space import load_search_space
from smctune.errors import UserError
from smctune.rundir.records import RecordKeeper
from smctune.report.facts import run_facts
from smctune.report.results_json import results_dict, results_document
from smctune.report.tables import collapse_lines, format_layers, format_table
from smctune.report.write import write_report
from smctune.sweep.plan import plan_trials

SMCTUNE = str(Path(sys.executable).with_name("smctune"))
MERGE = r"^decoder\.merge\."
CONSTANT = r"^decoder\.predict\.constant_embedding$"


@pytest.fixture(scope="module")
def mawps():
    return load_search_space("mawps")


def sweep_spec(run_dir, *, task="mawps", methods=("dense", "omp_before"), sparsities=(0.2, 0.36),
               seeds=(0,), folds=(0,), models=("gts",), preset="smoke", faithful="paper",
               keep_dense=()) -> SweepSpec:
    return SweepSpec(task=task, methods=tuple(methods), sparsities=tuple(sparsities), seeds=tuple(seeds),
                     preset=preset, preset_reason="test", name="test-run", run_dir=str(run_dir),
                     mlflow_uri="file:///nowhere", models=tuple(models), folds=tuple(folds),
                     faithful=faithful, keep_dense=tuple(keep_dense))


def one_line_user_error(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, text
    return text


# ==================================================================================================
# 1. architectures and folds as sweep axes

def test_plan_over_architectures_seeds_and_folds(mawps, tmp_path):
    methods = ("dense", "omp_before", "gmp", "lth")
    spec = sweep_spec(tmp_path / "run", methods=methods, sparsities=(0.2, 0.36, 0.488),
                      seeds=(0, 1), folds=(0,), models=("gts", "graph2tree"), preset="paper")
    trials = plan_trials(spec, mawps)
    # per (arch, seed, fold): dense 1 + omp_before 3 + gmp 3 + lth 1 (one IMP ladder trial)
    assert len(trials) == 2 * 2 * 1 * (1 + 3 + 3 + 1) == 32
    ids = [t.trial_id for t in trials]
    assert len(set(ids)) == len(ids)
    assert "gts-omp_before-s0.3600-seed1-fold0" in ids
    assert "graph2tree-omp_before-s0.2000-seed0-fold0" in ids
    assert "gts-dense-dense-seed0-fold0" in ids
    assert "graph2tree-lth-to0.4880-seed1-fold0" in ids
    for t in trials:
        assert t.fold == 0 and t.model.arch in ("gts", "graph2tree")
        assert t.trial_id.startswith(t.model.arch + "-") and t.trial_id.endswith(f"-seed{t.seed}-fold0")
    # dense comes first in every (arch, seed, fold) block, architectures in the given order
    assert [t.trial_id for t in trials[:2]] == ["gts-dense-dense-seed0-fold0",
                                                 "gts-omp_before-s0.2000-seed0-fold0"]
    assert [t.model.arch for t in trials] == ["gts"] * 16 + ["graph2tree"] * 16
    lth = next(t for t in trials if t.method == "lth")
    assert lth.levels == (0.2, 0.36, 0.488)


def test_architecture_overrides_are_paper_table4(mawps, tmp_path):
    spec = sweep_spec(tmp_path / "run", methods=("dense", "omp_before"), sparsities=(0.36,), seeds=(0, 1),
                      models=("gts", "graph2tree"), preset="paper")
    trials = plan_trials(spec, mawps)
    expected = {"gts": (512, 1e-3, 8e-6), "graph2tree": (384, 8e-4, 1e-5)}
    for t in trials:
        hidden, lr, backbone_lr = expected[t.model.arch]
        assert t.model.layers["hidden_size"] == hidden, t.trial_id
        assert t.train.lr == pytest.approx(lr) and t.train.backbone_lr == pytest.approx(backbone_lr)
        # what the override does not name is the preset's
        assert t.model.layers["depth"] == 2 and t.model.layers["beam_size"] == 5
        assert t.model.layers["dropout"] == 0.5
        assert t.train.optimizer == "adam" and t.train.lr_schedule == "step"
        assert t.train.lr_step_every == 7680 and t.train.max_steps == 19200
        assert t.model.name == "roberta-base"
    # resolve itself, and the preset object is left alone
    gts, g2t = mawps.resolve("paper", "gts"), mawps.resolve("paper", "graph2tree")
    assert (gts.model.arch, g2t.model.arch) == ("gts", "graph2tree")
    assert mawps.preset("paper").model.arch == "" and "hidden_size" not in mawps.preset("paper").model.layers
    assert mawps.preset("paper").train.lr == pytest.approx(1e-3)
    assert mawps.preset("paper").train.backbone_lr == pytest.approx(8e-6)
    # smoke has no per-architecture numbers: both architectures run the smoke preset's
    smoke_gts, smoke_g2t = mawps.resolve("smoke", "gts"), mawps.resolve("smoke", "graph2tree")
    assert smoke_gts.model.layers == smoke_g2t.model.layers == mawps.preset("smoke").model.layers
    assert smoke_gts.train == smoke_g2t.train == mawps.preset("smoke").train


@pytest.mark.parametrize("task", ["mawps", "asdiv-a", "svamp"])
def test_arithmetic_search_spaces_offer_both_architectures(task):
    space = load_search_space(task)
    assert space.architectures == ("gts", "graph2tree")
    assert space.resolve("paper", "graph2tree").model.layers["hidden_size"] == 384
    assert space.resolve("paper", "gts").train.backbone_lr == pytest.approx(8e-6)


def test_dense_key_differs_by_fold_arch_and_seed_not_by_method(mawps, tmp_path):
    spec = sweep_spec(tmp_path / "run", methods=("dense", "omp_before", "omp_after", "gmp", "lth"),
                      sparsities=(0.2, 0.36), seeds=(0, 1), folds=(0, 1), models=("gts", "graph2tree"))
    trials = plan_trials(spec, mawps)
    assert len(trials) == 2 * 2 * 2 * (1 + 2 + 2 + 2 + 1)
    keys: dict = {}
    for t in trials:
        keys.setdefault((t.model.arch, t.seed, t.fold), set()).add(t.dense_key())
    assert all(len(k) == 1 for k in keys.values()), keys  # one dense checkpoint per (arch, seed, fold)
    distinct = {next(iter(k)) for k in keys.values()}
    assert len(distinct) == len(keys) == 8
    # the smoke preset gives both architectures the same layers/train numbers: only arch separates them
    gts = next(t for t in trials if t.model.arch == "gts")
    g2t = dataclasses.replace(gts, model=dataclasses.replace(gts.model, arch="graph2tree"))
    assert gts.dense_key() != g2t.dense_key()
    assert gts.dense_key() != dataclasses.replace(gts, fold=1).dense_key()
    assert gts.dense_key() != dataclasses.replace(gts, fold=None).dense_key()
    # ... and settings that cannot change the weights do not
    assert gts.dense_key() == dataclasses.replace(
        gts, train=dataclasses.replace(gts.train, threads=3, eval_every=7)).dense_key()


def test_trial_id_forms():
    base = dict(task="mawps", seed=1, preset="smoke", train=TrainSettings(), tunables={}, prunable={},
                data_dir=None, cache_root="/tmp/c")
    gts = ModelSettings(arch="gts")
    assert TrialSpec(method="omp_before", sparsity=0.36, model=gts, fold=0, **base).trial_id == \
        "gts-omp_before-s0.3600-seed1-fold0"
    assert TrialSpec(method="dense", sparsity=None, model=gts, fold=3, **base).trial_id == \
        "gts-dense-dense-seed1-fold3"
    assert TrialSpec(method="lth", sparsity=0.36, levels=(0.2, 0.36), model=gts, fold=0,
                     **base).trial_id == "gts-lth-to0.3600-seed1-fold0"
    # a single-architecture, fold-less task keeps its old ids
    assert TrialSpec(method="gmp", sparsity=0.2, model=ModelSettings(), **base).trial_id == "gmp-s0.2000-seed1"
    # fold 0 is a fold, not "no fold"
    assert TrialSpec(method="gmp", sparsity=0.2, model=ModelSettings(), fold=0,
                     **base).trial_id == "gmp-s0.2000-seed1-fold0"


def test_specs_round_trip_with_models_and_folds(mawps, tmp_path):
    spec = sweep_spec(tmp_path / "run", seeds=(0, 1), folds=(0, 2), models=("gts", "graph2tree"))
    again = SweepSpec.from_json(spec.to_json())
    assert again == spec and again.models == ("gts", "graph2tree") and again.folds == (0, 2)
    # a sweep.json written before the axes existed loads with empty axes
    old = json.loads(spec.to_json())
    del old["models"], old["folds"]
    legacy = SweepSpec.from_json(json.dumps(old))
    assert legacy.models == () and legacy.folds == ()
    for trial in plan_trials(spec, mawps)[:3]:
        shipped = TrialSpec.from_dict(json.loads(json.dumps(trial.to_dict())))  # as Ray ships it
        assert shipped == trial and shipped.trial_id == trial.trial_id
        assert shipped.dense_key() == trial.dense_key()


def test_resolve_errors_are_one_line(mawps):
    with pytest.raises(UserError) as excinfo:
        mawps.resolve("smoke", "nosuch")
    text = one_line_user_error(excinfo)
    assert "nosuch" in text and "gts" in text and "graph2tree" in text
    with pytest.raises(UserError) as excinfo:
        mawps.resolve("smoke", "")  # a multi-architecture task needs one
    assert "gts" in one_line_user_error(excinfo)
    csqa = load_search_space("csqa")
    assert csqa.architectures == () and csqa.models == {}
    assert csqa.resolve("smoke") == csqa.preset("smoke")
    with pytest.raises(UserError) as excinfo:
        csqa.resolve("smoke", "gts")
    text = one_line_user_error(excinfo)
    assert "csqa" in text and "single architecture" in text
    with pytest.raises(UserError) as excinfo:
        mawps.resolve("nosuch", "gts")
    assert "nosuch" in one_line_user_error(excinfo)


# ---------------------------------------------------------------------------------- models: in YAML

@pytest.fixture(scope="module")
def mawps_yaml() -> dict:
    from importlib import resources

    return yaml.safe_load(resources.files("smctune.search_spaces").joinpath("mawps.yaml").read_text())


def write_space(tmp_path, data, name="space.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_user_models_block_overrides_and_order(tmp_path, mawps_yaml):
    data = json.loads(json.dumps(mawps_yaml))
    data["models"] = {"graph2tree": {"smoke": {"layers": {"hidden_size": 48}, "train": {"lr": 0.5}}},
                      "gts": None}
    space = load_search_space("mawps", write_space(tmp_path, data))
    assert space.architectures == ("graph2tree", "gts")  # file order; the first is --model's default
    assert parse_models(None, space) == ("graph2tree",)
    g2t = space.resolve("smoke", "graph2tree")
    assert g2t.model.layers == {**mawps_yaml["presets"]["smoke"]["model"]["layers"], "hidden_size": 48}
    assert g2t.train.lr == 0.5 and g2t.train.max_steps == 20
    gts = space.resolve("smoke", "gts")
    assert gts.model.layers["hidden_size"] == 32 and gts.train.lr == pytest.approx(1e-3)
    # no paper override in this file: the paper preset's own layers
    assert space.resolve("paper", "graph2tree").model.layers == space.preset("paper").model.layers


@pytest.mark.parametrize("models, needles", [
    ({"gts": {"nosuch": {"train": {"lr": 0.1}}}}, ["'nosuch'", "models.gts", "paper", "smoke"]),
    ({"gts": {"smoke": {"optim": {"lr": 0.1}}}}, ["'optim'", "models.gts.smoke", "layers, train"]),
    ({"gts": {"smoke": {"train": {"lrr": 0.1}}}}, ["'lrr'", "models.gts.smoke.train"]),
    ({"gts": {"smoke": {"train": {"lr": "fast"}}}}, ["models.gts.smoke.train.lr", "number"]),
    ({"gts": {"smoke": {"train": [1, 2]}}}, ["models.gts.smoke.train", "mapping"]),
    ({"gts": {"smoke": 5}}, ["models.gts.smoke", "mapping"]),
    ({"gts": ["smoke"]}, ["models.gts", "mapping"]),
    (["gts", "graph2tree"], ["models", "mapping"]),
    ({}, ["models", "mapping"]),
])
def test_malformed_models_block(tmp_path, mawps_yaml, models, needles):
    data = dict(mawps_yaml, models=models)
    path = write_space(tmp_path, data)
    with pytest.raises(UserError) as excinfo:
        load_search_space("mawps", path)
    text = one_line_user_error(excinfo)
    assert path in text
    for needle in needles:
        assert needle in text, (needle, text)


# ==================================================================================================
# 2. CLI

def run_cli(*args, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    return subprocess.run([SMCTUNE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def assert_one_line_error(result, *needles) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    err = result.stderr.strip()
    assert "Traceback" not in result.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("smctune: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_cli_plan_over_both_architectures(tmp_path, mawps):
    result = run_cli("plan", "mawps", "--methods", "dense,omp_before", "--preset", "smoke", "--model", "all",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    n = 2 * (1 + len(mawps.sparsities))  # 2 architectures x (dense + every grid level), 1 seed, fold 0
    assert any(line.startswith(f"{n} trials, {n} fine-tunes of 20 steps") for line in lines)
    assert "architectures: gts, graph2tree" in lines
    assert any(line.startswith("folds: 0 ") for line in lines)
    rows = [line.split() for line in lines if line.startswith("  ")]
    assert len(rows) == n
    assert sum(row[0] == "gts" for row in rows) == sum(row[0] == "graph2tree" for row in rows) == n // 2
    assert all(row[-2:] == ["fold", "0"] for row in rows)
    assert not (tmp_path / "smctune_runs").exists()  # plan runs nothing and writes nothing


def test_cli_plan_default_architecture_and_seeds(tmp_path):
    result = run_cli("plan", "mawps", "--methods", "dense,gmp", "--preset", "smoke", "--sparsities", "0.2,0.36",
                     "--seeds", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "architectures: gts" in result.stdout.splitlines()  # the search space's first
    assert any(line.startswith("6 trials") for line in result.stdout.splitlines())  # 2 seeds x (dense + 2 levels)
    csqa = run_cli("plan", "csqa", "--methods", "dense,gmp", "--preset", "smoke", "--sparsities", "0.2",
                   cwd=tmp_path)
    assert csqa.returncode == 0, csqa.stderr
    assert "architectures:" not in csqa.stdout and "folds:" not in csqa.stdout
    assert any(line.startswith("2 trials") for line in csqa.stdout.splitlines())


@pytest.mark.parametrize("args, needles", [
    (("mawps", "--model", "nosuch"), ["nosuch", "gts", "graph2tree"]),
    (("mawps", "--model", "gts,nosuch"), ["nosuch"]),
    (("mawps", "--model", ","), ["--model"]),
    (("mawps", "--folds", "3"), ["--folds", "'3'", "0"]),
    (("mawps", "--folds", "x"), ["--folds", "'x'"]),
    (("svamp", "--folds", "0"), ["--folds", "svamp"]),
    (("csqa", "--folds", "0"), ["--folds", "csqa"]),
    (("csqa", "--model", "gts"), ["--model", "csqa", "single architecture"]),
])
def test_cli_bad_axes_exit_2(tmp_path, args, needles):
    result = run_cli("plan", *args, "--methods", "dense", "--preset", "smoke", cwd=tmp_path)
    assert_one_line_error(result, *needles)


def test_cli_folds_from_a_data_dir(tmp_path):
    """A data directory with folds 0 and 2 of cv_mawps: the default is every fold it has."""
    from smctune.trainables.arithmetic import data

    bundled = Path(data.BUNDLED_DIR) / "cv_mawps" / "fold0"
    for fold in (0, 2):
        target = tmp_path / "data" / "cv_mawps" / f"fold{fold}"
        target.mkdir(parents=True)
        for split in ("train", "dev"):
            (target / f"{split}.csv").write_text((bundled / f"{split}.csv").read_text())
    common = ("plan", "mawps", "--methods", "dense,omp_before", "--preset", "smoke", "--sparsities", "0.2",
              "--data-dir", str(tmp_path / "data"))
    every = run_cli(*common, cwd=tmp_path)
    assert every.returncode == 0, every.stderr
    lines = every.stdout.splitlines()
    assert any(line.startswith("folds: 0, 2 ") for line in lines)
    assert any(line.startswith("4 trials") for line in lines)  # 2 folds x (dense + 1 level)
    assert sum(line.rstrip().endswith("fold 2") for line in lines) == 2
    two = run_cli(*common, "--folds", "2", cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    assert any(line.startswith("folds: 2 ") for line in two.stdout.splitlines())
    assert any(line.startswith("2 trials") for line in two.stdout.splitlines())
    assert_one_line_error(run_cli(*common, "--folds", "1", cwd=tmp_path), "'1'", "0, 2")


def test_cli_unknown_layers_key_in_models_block_exits_2(tmp_path, mawps_yaml):
    data = json.loads(json.dumps(mawps_yaml))
    data["models"]["graph2tree"]["smoke"] = {"layers": {"hiddn_size": 64}}
    path = write_space(tmp_path, data)
    result = run_cli("plan", "mawps", "--methods", "dense", "--preset", "smoke", "--model", "graph2tree",
                     "--search-space", path, cwd=tmp_path)
    assert_one_line_error(result, "hiddn_size")


def test_parse_models_and_folds_directly(mawps):
    assert parse_models(None, mawps) == ("gts",)
    assert parse_models("all", mawps) == ("gts", "graph2tree")
    assert parse_models(" graph2tree , gts,graph2tree", mawps) == ("graph2tree", "gts")
    with pytest.raises(UserError, match="no architecture"):
        parse_models(" , ", mawps)
    csqa = load_search_space("csqa")
    assert parse_models(None, csqa) == ()
    with pytest.raises(UserError, match="single architecture"):
        parse_models("all", csqa)
    assert parse_folds(None, (0, 1, 2), "mawps") == (0, 1, 2)
    assert parse_folds("all", (0, 1, 2), "mawps") == (0, 1, 2)
    assert parse_folds("2, 0,2", (0, 1, 2), "mawps") == (2, 0)
    for bad in ("3", "-1", "1.0", "0,x"):
        with pytest.raises(UserError, match="not an available fold"):
            parse_folds(bad, (0, 1, 2), "mawps")
    assert parse_folds(None, (), "csqa") == ()
    with pytest.raises(UserError, match="no cross-validation folds"):
        parse_folds("0", (), "csqa")


# ==================================================================================================
# 3. optimiser recipes

torch = pytest.importorskip("torch")

from smctune.train import optim  # noqa: E402


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedder = torch.nn.Linear(3, 3)
        self.head = torch.nn.Linear(3, 2)


def lrs_over_steps(optimizer, scheduler, steps: int) -> list:
    """Every group's lr before each of ``steps`` updates (index = updates done so far)."""
    seen = []
    for _ in range(steps):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def test_optimizer_type_follows_train_optimizer():
    model = Toy()
    adamw, _ = optim.build(model, TrainSettings(optimizer="adamw", weight_decay=0.03, lr=2e-3))
    adam, _ = optim.build(model, TrainSettings(optimizer="adam", weight_decay=1e-5, adam_beta2=0.999,
                                               adam_eps=1e-8))
    assert type(adamw) is torch.optim.AdamW and type(adam) is torch.optim.Adam
    assert adamw.param_groups[0]["weight_decay"] == 0.03 and adamw.param_groups[0]["lr"] == 2e-3
    assert adam.param_groups[0]["betas"] == (0.9, 0.999) and adam.param_groups[0]["eps"] == 1e-8
    assert adam.param_groups[0]["weight_decay"] == 1e-5
    assert TrainSettings().optimizer == "adamw"  # the default stays fairseq's decoupled decay
    # the fused kernel where it exists (optim.fused_kernel_fits)
    assert adamw.param_groups[0]["fused"] and adam.param_groups[0]["fused"]


def test_fused_adam_trains_like_the_default_implementation():
    """The fused kernel is the same update: equal to torch's default for-loop Adam up to rounding."""
    train = TrainSettings(optimizer="adam", weight_decay=1e-5, lr=1e-2)
    torch.manual_seed(0)
    fused_model = Toy()
    plain_model = Toy()
    plain_model.load_state_dict(fused_model.state_dict())
    fused, _ = optim.build(fused_model, train)
    same = {key: fused.param_groups[0][key] for key in ("lr", "betas", "eps", "weight_decay")}
    plain = torch.optim.Adam(plain_model.parameters(), **same, fused=False)
    assert fused.param_groups[0]["fused"] and not plain.param_groups[0]["fused"]
    for _ in range(20):
        x = torch.randn(8, 3)
        for model, opt in ((fused_model, fused), (plain_model, plain)):
            opt.zero_grad()
            model.head(model.embedder(x)).pow(2).mean().backward()
            opt.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not optim.fused_kernel_fits([{"params": [torch.zeros(2, dtype=torch.int64)]}])


def test_backbone_lr_gives_two_groups():
    model = Toy()
    train = TrainSettings(optimizer="adam", lr=1e-3, backbone_lr=8e-6)
    optimizer, _ = optim.build(model, train, "embedder.")
    assert len(optimizer.param_groups) == 2
    rest, backbone = optimizer.param_groups
    assert rest["lr"] == 1e-3 and backbone["lr"] == 8e-6
    assert {id(p) for p in backbone["params"]} == {id(p) for p in model.embedder.parameters()}
    assert {id(p) for p in rest["params"]} == {id(p) for p in model.head.parameters()}
    # no prefix, or no backbone_lr: one group at lr
    for opt, _ in (optim.build(model, train), optim.build(model, dataclasses.replace(train, backbone_lr=None),
                                                          "embedder.")):
        assert len(opt.param_groups) == 1 and opt.param_groups[0]["lr"] == 1e-3
        assert len(opt.param_groups[0]["params"]) == 4
    # a prefix that matches nothing: no empty group
    opt, _ = optim.build(model, train, "nothing.")
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == 4


@pytest.mark.parametrize("warmup", [0, 2])
def test_step_schedule(warmup):
    train = TrainSettings(optimizer="adam", lr=1.0, backbone_lr=0.1, lr_schedule="step", lr_step_every=3,
                          lr_gamma=0.5, warmup_steps=warmup, max_steps=20)
    optimizer, scheduler = optim.build(Toy(), train, "embedder.")
    seen = lrs_over_steps(optimizer, scheduler, 14)
    for step, (lr, backbone) in enumerate(seen):
        factor = (step + 1) / warmup if step < warmup else 0.5 ** (step // 3)
        assert lr == pytest.approx(factor), step
        assert backbone == pytest.approx(0.1 * factor), step  # every group scaled by the same factor
    if not warmup:
        assert [row[0] for row in seen[:7]] == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25])


def test_linear_schedule_warmup_then_decay():
    train = TrainSettings(lr=2.0, warmup_steps=4, max_steps=10, lr_schedule="linear")
    optimizer, scheduler = optim.build(Toy(), train)
    seen = [row[0] for row in lrs_over_steps(optimizer, scheduler, 12)]
    expected = [2 * (s + 1) / 4 for s in range(4)] + [2 * (10 - s) / 6 for s in range(4, 10)] + [0.0, 0.0]
    assert seen == pytest.approx(expected)
    assert seen[3] == pytest.approx(2.0) and seen[4] == pytest.approx(2.0) and seen[10] == 0.0
    # without warmup: from lr straight down to 0 at max_steps
    optimizer, scheduler = optim.build(Toy(), TrainSettings(lr=1.0, max_steps=4))
    assert [row[0] for row in lrs_over_steps(optimizer, scheduler, 5)] == pytest.approx([1, .75, .5, .25, 0])


@pytest.mark.parametrize("changes, needle", [
    ({"optimizer": "sgd"}, "train.optimizer: unknown 'sgd'"),
    ({"lr_schedule": "cosine"}, "train.lr_schedule: unknown 'cosine'"),
    ({"lr_schedule": "step", "lr_step_every": 0}, "lr_step_every"),
    ({"lr_schedule": "step", "lr_step_every": -5}, "lr_step_every"),
    ({"lr_gamma": 0.0}, "lr_gamma"),
    ({"lr_gamma": -0.5}, "lr_gamma"),
    ({"lr_gamma": 1.5}, "lr_gamma"),
    ({"lr_gamma": float("nan")}, "lr_gamma"),
    ({"backbone_lr": -1e-5}, "backbone_lr"),
])
def test_recipe_check_errors(changes, needle):
    train = TrainSettings(**changes)
    with pytest.raises(UserError) as excinfo:
        optim.check(train)
    assert needle in one_line_user_error(excinfo)
    with pytest.raises(UserError):
        optim.build(Toy(), train)


def test_recipe_check_accepts_valid_settings():
    for train in (TrainSettings(), TrainSettings(lr_gamma=1.0), TrainSettings(lr_step_every=0),
                  TrainSettings(optimizer="adam", lr_schedule="step", lr_step_every=1, backbone_lr=0.0)):
        optim.check(train)
    # every bundled preset's recipe is valid for every architecture
    for task in ("mawps", "csqa"):
        space = load_search_space(task)
        for preset in space.presets:
            for arch in space.architectures or ("",):
                optim.check(space.resolve(preset, arch).train)


def test_cli_rejects_bad_recipe_before_any_trial(tmp_path, mawps_yaml):
    data = json.loads(json.dumps(mawps_yaml))
    data["presets"]["smoke"]["train"]["optimizer"] = "sgd"
    path = write_space(tmp_path, data)
    result = run_cli("plan", "mawps", "--methods", "dense", "--preset", "smoke", "--search-space", path,
                     cwd=tmp_path)
    assert_one_line_error(result, "sgd")


# ==================================================================================================
# 4. analysis and report with folds and architectures

GRID2 = (0.2, 0.36)


def make_run(root: Path, values, *, models=("gts",), seeds=(0, 1), folds=(0, 1),
             methods=("dense", "omp_before"), layerwise=None, statuses=None, skip=()) -> Path:
    """A run directory as a sweep writes it: ``sweep.json`` and one record per planned trial.

    ``values(arch, method, sparsity, seed, fold)`` gives each level's ``best`` (final = best - 0.1);
    ``layerwise`` maps a trial id to its ``[[name, numel, kept], ...]``; ``statuses`` a trial id to a
    non-ok status (such a trial still reports its level, as one that fails after finishing a level
    does, so its values and collapsed layers must be ignored); trial ids in ``skip`` get no record.
    """
    spec = sweep_spec(root, methods=methods, sparsities=GRID2, seeds=seeds, folds=folds, models=models)
    root.mkdir(parents=True, exist_ok=True)
    (root / "sweep.json").write_text(spec.to_json())
    keeper = RecordKeeper(root, chance=registry.task_entry("mawps").chance)
    space = load_search_space("mawps")
    for trial in plan_trials(spec, space):
        if trial.trial_id in skip:
            continue
        keeper.started(trial)
        target = trial.sparsity or 0.0
        value = values(trial.model.arch or None, trial.method, trial.sparsity, trial.seed, trial.fold)
        status = (statuses or {}).get(trial.trial_id, "ok")
        metrics = {"metric_name": "accuracy", "step": 20, "global_step": 20, "accuracy": value - 0.1,
                   "best": value, "loss": 1.0, "train_loss": 1.0, "sparsity": target, "sparsity_all": target,
                   "round": None, "level": target, "level_done": True, "diverged": False,
                   "dense_key": trial.dense_key()}
        if layerwise and trial.trial_id in layerwise:
            metrics["layerwise"] = layerwise[trial.trial_id]
        keeper.result(trial.trial_id, metrics)
        keeper.finished(trial.trial_id, status, None if status == "ok" else "boom")
    return root


# seed 0: folds 0.60 / 0.80 (mean 0.70); seed 1: 0.50 / 0.70 (mean 0.60)
FOLD_VALUES = {(0, 0): 0.60, (0, 1): 0.80, (1, 0): 0.50, (1, 1): 0.70}


def fold_values(arch, method, sparsity, seed, fold):
    if method == "dense":
        return {(0, 0): 0.90, (0, 1): 0.70, (1, 0): 0.84, (1, 1): 0.80}[seed, fold]
    return FOLD_VALUES[seed, fold] - (0.1 if sparsity == 0.36 else 0.0)


def test_records_carry_model_and_fold(tmp_path):
    root = make_run(tmp_path / "run", fold_values)
    record = json.loads((root / "results" / "gts-omp_before-s0.3600-seed1-fold0.json").read_text())
    assert record["model"] == "gts" and record["fold"] == 0 and record["seed"] == 1
    run = load_run(root)
    assert len(run.trials) == 2 * 2 * 3
    assert {(t.model, t.fold) for t in run.trials} == {("gts", 0), ("gts", 1)}


def test_folded_stat_is_mean_over_seeds_of_fold_means():
    points = [(seed, fold, v) for (seed, fold), v in FOLD_VALUES.items()]
    stat = folded_stat(points, {"ok": 4})
    assert stat.n == 2
    assert sorted(stat.values) == pytest.approx([0.6, 0.7])
    assert stat.mean == pytest.approx(0.65)
    assert stat.std == pytest.approx(math.sqrt(2) * 0.05)        # over the 2 seed means
    assert stat.std != pytest.approx(0.12909944)                 # not over the 4 raw values
    assert stat.by_fold == pytest.approx({0: 0.55, 1: 0.75})
    assert list(stat.by_fold) == [0, 1]
    assert stat.status_counts == {"ok": 4}
    # a seed that misses a fold is the mean of the folds it has
    partial = folded_stat([(0, 0, 0.6), (0, 1, 0.8), (1, 0, 0.5)])
    assert partial.n == 2 and partial.mean == pytest.approx(0.6)   # (0.7 + 0.5) / 2, not 1.9 / 3
    assert partial.mean != pytest.approx(1.9 / 3)
    assert partial.by_fold == pytest.approx({0: 0.55, 1: 0.8})
    assert partial.missing_folds and not stat.missing_folds
    assert folded_stat([(0, 0, 0.6), (1, 0, 0.5)], expected_folds=(0, 1)).missing_folds  # fold 1 never ran
    # folds listed out of order are reported in fold order
    assert list(folded_stat([(0, 2, 0.1), (0, 0, 0.3)]).by_fold) == [0, 2]
    # no folds: a plain mean over seeds, no by_fold
    plain = folded_stat([(0, None, 0.6), (1, None, 0.8)])
    assert plain.mean == pytest.approx(0.7) and plain.n == 2 and plain.by_fold == {}
    assert folded_stat([]).mean is None and folded_stat([]).n == 0


def test_cells_and_dense_average_folds_per_seed(tmp_path):
    run = load_run(make_run(tmp_path / "run", fold_values))
    stat = cells(run)["omp_before"][0.2]
    assert stat.n == 2 and stat.mean == pytest.approx(0.65)
    assert stat.by_fold == pytest.approx({0: 0.55, 1: 0.75})
    assert stat.status_counts == {"ok": 4}
    high = cells(run)["omp_before"][0.36]
    assert high.mean == pytest.approx(0.55) and high.by_fold == pytest.approx({0: 0.45, 1: 0.65})
    assert cells(run, "final")["omp_before"][0.2].mean == pytest.approx(0.55)
    dense = dense_baseline(run)
    # seed 0: (0.90 + 0.70) / 2 = 0.80; seed 1: (0.84 + 0.80) / 2 = 0.82
    assert dense.n == 2 and dense.mean == pytest.approx(0.81)
    assert sorted(dense.values) == pytest.approx([0.80, 0.82])
    assert dense.by_fold == pytest.approx({0: 0.87, 1: 0.75})


def test_missing_fold_of_one_seed(tmp_path):
    root = make_run(tmp_path / "run", fold_values, skip={"gts-omp_before-s0.2000-seed1-fold1",
                                                         "gts-dense-dense-seed1-fold1"})
    run = load_run(root)
    stat = cells(run)["omp_before"][0.2]
    assert stat.n == 2 and stat.mean == pytest.approx((0.70 + 0.50) / 2)
    assert stat.by_fold == pytest.approx({0: 0.55, 1: 0.80})
    assert stat.status_counts == {"ok": 3}
    dense = dense_baseline(run)
    assert dense.mean == pytest.approx((0.80 + 0.84) / 2) and dense.n == 2
    # a failed fold is counted, never averaged
    root = make_run(tmp_path / "failed", fold_values,
                    statuses={"gts-omp_before-s0.2000-seed1-fold1": "failed"})
    failed = cells(load_run(root))["omp_before"][0.2]
    assert failed.mean == pytest.approx(0.6) and failed.status_counts == {"ok": 3, "failed": 1}


def test_results_json_and_table_with_folds(tmp_path):
    root = make_run(tmp_path / "run", fold_values)
    paths = write_report(root)
    assert paths.curves_png == root / "curves.png" and paths.curves_png.read_bytes()[:4] == b"\x89PNG"
    data = json.loads(paths.results_json.read_text())
    assert data["folds"] == [0, 1] and data["model"] == "gts"
    level = data["methods"]["omp_before"]["levels"]["0.2"]
    assert level["mean"] == pytest.approx(0.65) and level["n"] == 2
    assert level["folds"] == pytest.approx({"0": 0.55, "1": 0.75})
    assert sorted(level["values"]) == pytest.approx([0.6, 0.7])
    assert data["dense"]["folds"] == pytest.approx({"0": 0.87, "1": 0.75})
    assert data["dense"]["mean"] == pytest.approx(0.81) and data["dense"]["n"] == 2
    assert "mean of 2 folds" in paths.table
    assert "dense 81.0±1.4 (2 seeds)" in paths.table
    row = next(line for line in paths.table.splitlines() if line.startswith("omp_before"))
    assert "65.0±7.1 ✗" in row and "*" not in row  # 2 of 2 seeds, though 4 trials per cell


# ------------------------------------------------------------------------------- two architectures

def arch_values(arch, method, sparsity, seed, fold):
    if arch == "gts":
        return {"dense": 0.80, "omp_before": 0.79 if sparsity == 0.2 else 0.60}[method]
    return {"dense": 0.40, "omp_before": 0.41 if sparsity == 0.2 else 0.39}[method]


def test_two_architectures_are_summarized_apart(tmp_path):
    root = make_run(tmp_path / "run", arch_values, models=("gts", "graph2tree"), seeds=(0,), folds=(0,),
                    statuses={"graph2tree-omp_before-s0.3600-seed0-fold0": "failed"})
    run = load_run(root)
    summaries = summarize_all(run)
    assert [s.model for s in summaries] == ["gts", "graph2tree"]
    gts, g2t = summaries
    assert gts.dense.mean == pytest.approx(0.80) and gts.dense.n == 1 and gts.dense.values == (0.80,)
    assert g2t.dense.mean == pytest.approx(0.40) and g2t.dense.values == (0.40,)
    gts_cells, g2t_cells = gts.methods[0].cells, g2t.methods[0].cells
    assert gts_cells[0.2].values == pytest.approx((0.79,)) and gts_cells[0.36].values == pytest.approx((0.60,))
    assert gts_cells[0.36].status_counts == {"ok": 1}
    assert g2t_cells[0.2].values == pytest.approx((0.41,))
    assert g2t_cells[0.36].mean is None and g2t_cells[0.36].status_counts == {"failed": 1}
    assert gts.methods[0].fail.fails_at == 0.36
    assert (gts.trials_ok, gts.trials_failed) == (3, 0) and (g2t.trials_ok, g2t.trials_failed) == (2, 1)
    assert [t for t, _, _ in g2t.failures] == ["graph2tree-omp_before-s0.3600-seed0-fold0"] and not gts.failures
    # without a model filter everything would mix: the per-architecture split is what keeps it apart
    assert summarize(run).dense.n == 1 and summarize(run).dense.mean == pytest.approx(0.6)

    paths = write_report(root)
    assert [p.name for p in paths.plots] == ["curves-gts.png", "curves-graph2tree.png"]
    for plot in paths.plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (root / "curves.png").exists()
    data = json.loads(paths.results_json.read_text())
    assert data["models"] == ["gts", "graph2tree"] and set(data["by_model"]) == {"gts", "graph2tree"}
    assert data["task"] == "mawps" and data["schema_version"] == 2
    by = data["by_model"]
    assert by["gts"]["model"] == "gts" and by["graph2tree"]["model"] == "graph2tree"
    assert by["gts"]["dense"]["values"] == [0.8] and by["graph2tree"]["dense"]["values"] == [0.4]
    assert by["gts"]["methods"]["omp_before"]["failing_sparsity"] == 0.36
    assert by["graph2tree"]["methods"]["omp_before"]["levels"]["0.36"]["status_counts"] == {"failed": 1}
    assert by["gts"]["trials"]["failures"] == []
    assert data == json.loads(json.dumps(results_document(summaries, None, run_facts(load_run(root)))))
    tables = paths.table.split("\n\n")
    titles = [line for line in paths.table.splitlines() if line.startswith("mawps")]
    assert titles[0].startswith("mawps · model gts ·") and titles[1].startswith("mawps · model graph2tree ·")
    assert len(tables) >= 2


def test_single_architecture_sweep_writes_plain_files(tmp_path):
    root = make_run(tmp_path / "run", arch_values, models=("graph2tree",), seeds=(0,), folds=(0,))
    paths = write_report(root)
    assert [p.name for p in paths.plots] == ["curves.png"]
    data = json.loads(paths.results_json.read_text())
    assert "by_model" not in data and data["model"] == "graph2tree"
    assert data["dense"]["values"] == [0.4]


# ------------------------------------------------------------------------------------ layer collapse

COLLAPSE_LAYERS = {
    "gts-omp_before-s0.3600-seed0-fold0": [["decoder.merge.merge.weight", 3072, 0],
                                           ["encoder.rnn.weight_ih_l0", 4096, 2000],
                                           ["decoder.predict.ops.weight", 320, 0]],
    "gts-omp_before-s0.2000-seed0-fold0": [["decoder.merge.merge.weight", 3072, 1500],
                                           ["encoder.rnn.weight_ih_l0", 4096, 3000]],
    "graph2tree-omp_before-s0.2000-seed0-fold0": [[f"graph.heads.{i}.gc1.linear.weight", 64, 0]
                                                  for i in range(5)],
}


def collapse_run(root):
    return make_run(root, arch_values, models=("gts", "graph2tree"), seeds=(0,), folds=(0,),
                    layerwise=COLLAPSE_LAYERS)


def test_records_name_collapsed_layers(tmp_path):
    root = collapse_run(tmp_path / "run")
    record = json.loads((root / "results" / "gts-omp_before-s0.3600-seed0-fold0.json").read_text())
    level = record["levels"][0]
    assert level["collapsed_layers"] == ["decoder.merge.merge.weight", "decoder.predict.ops.weight"]
    assert level["layers"]["encoder.rnn.weight_ih_l0"] == pytest.approx(2096 / 4096, abs=1e-6)
    run = load_run(root)
    assert collapsed_layers(run, "gts") == {
        ("omp_before", 0.36): ["decoder.merge.merge.weight", "decoder.predict.ops.weight"]}
    assert set(collapsed_layers(run, "graph2tree")) == {("omp_before", 0.2)}


def test_collapse_lines_in_table_and_results(tmp_path):
    root = collapse_run(tmp_path / "run")
    gts, g2t = summarize_all(load_run(root))
    assert collapse_lines(gts) == ["⊘ omp_before at 0.360: 2 layers 100 % pruned "
                                   "(decoder.merge.merge.weight, decoder.predict.ops.weight)"]
    lines = collapse_lines(g2t)
    assert lines == ["⊘ omp_before at 0.200: 5 layers 100 % pruned (graph.heads.0.gc1.linear.weight, "
                     "graph.heads.1.gc1.linear.weight, graph.heads.2.gc1.linear.weight, +2 more)"]
    gts_table, g2t_table = format_table(gts), format_table(g2t)
    assert collapse_lines(gts)[0] in gts_table.splitlines()
    assert "⊘" not in gts_table.replace(collapse_lines(gts)[0], "")  # graph2tree's collapse stays out
    assert lines[0] in g2t_table.splitlines() and "decoder.merge" not in g2t_table
    gts_json = results_dict(gts)
    assert gts_json["methods"]["omp_before"]["levels"]["0.36"]["collapsed_layers"] == [
        "decoder.merge.merge.weight", "decoder.predict.ops.weight"]
    assert gts_json["methods"]["omp_before"]["levels"]["0.2"]["collapsed_layers"] == []
    data = json.loads(write_report(root).results_json.read_text())
    g2t_levels = data["by_model"]["graph2tree"]["methods"]["omp_before"]["levels"]
    assert len(g2t_levels["0.2"]["collapsed_layers"]) == 5 and g2t_levels["0.36"]["collapsed_layers"] == []


def test_collapse_of_failed_trial_ignored_and_single_layer_wording(tmp_path):
    layers = {"gts-omp_before-s0.2000-seed0-fold0": [["a.weight", 10, 0], ["b.weight", 10, 5]],
              "gts-omp_before-s0.3600-seed0-fold0": [["c.weight", 10, 0]]}
    root = make_run(tmp_path / "run", arch_values, seeds=(0,), folds=(0,), layerwise=layers,
                    statuses={"gts-omp_before-s0.3600-seed0-fold0": "failed"})
    summary = summarize_all(load_run(root))[0]
    assert collapse_lines(summary) == ["⊘ omp_before at 0.200: 1 layer 100 % pruned (a.weight)"]


def test_format_layers(tmp_path):
    run = load_run(collapse_run(tmp_path / "run"))
    text = format_layers(run, method="omp_before", sparsity=0.36)
    lines = text.splitlines()
    assert lines[0] == "gts-omp_before-s0.3600-seed0-fold0 · level 0.360 · 2 of 3 layers 100 % pruned"
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"decoder.merge.merge.weight", "encoder.rnn.weight_ih_l0", "decoder.predict.ops.weight"}
    assert rows["decoder.merge.merge.weight"].rstrip().endswith("100.00%  COLLAPSED")
    assert rows["encoder.rnn.weight_ih_l0"].rstrip().endswith("51.17%")
    assert "COLLAPSED" not in rows["encoder.rnn.weight_ih_l0"]
    assert len(format_layers(run).split("\n\n")) == 3
    assert format_layers(run, method="dense").startswith("no finished pruned level")


def test_cli_layers(tmp_path):
    root = collapse_run(tmp_path / "run")
    result = run_cli("layers", str(root), "--method", "omp_before", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "gts-omp_before-s0.3600-seed0-fold0 · level 0.360 · 2 of 3 layers 100 % pruned" in out
    assert "graph2tree-omp_before-s0.2000-seed0-fold0 · level 0.200 · 5 of 5 layers 100 % pruned" in out
    assert out.count("COLLAPSED") == 2 + 5
    flagged = [line.split()[0] for line in out.splitlines() if line.endswith("COLLAPSED")]
    assert "decoder.merge.merge.weight" in flagged and "encoder.rnn.weight_ih_l0" not in flagged
    # by run name under --storage, and filtered by sparsity
    named = run_cli("layers", "run", "--storage", str(tmp_path), "--method", "omp_before", "--sparsity", "0.36",
                    cwd=tmp_path / "run" / "results")
    assert named.returncode == 0, named.stderr
    assert named.stdout.count(" · level ") == 1 and "level 0.360" in named.stdout
    bad = run_cli("layers", str(root), "--method", "nosuch", cwd=tmp_path)
    assert_one_line_error(bad, "nosuch", "omp_before")
    missing = run_cli("layers", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert_one_line_error(missing, "nowhere")


# ==================================================================================================
# 5. prunable rules under --faithful smcbench

SMCBENCH_EXCLUDED = ("snip", "gmp", "omp_rigl", "random_rigl", "snip_rigl")
NEVER_EXCLUDED = ("dense", "omp_before", "random_before", "omp_after", "random_after", "lth")


def test_prunable_rules_by_method_and_faithful(mawps):
    for method in SMCBENCH_EXCLUDED + NEVER_EXCLUDED:
        paper = mawps.prunable_rules((), method, "paper")
        assert paper == {"include": [], "exclude": [CONSTANT], "keep_dense": []}, method
        smcbench = mawps.prunable_rules((), method, "smcbench")
        assert smcbench["exclude"] == ([CONSTANT, MERGE] if method in SMCBENCH_EXCLUDED else [CONSTANT]), method
    # keep-dense groups and the smcbench exclude combine, without duplicates, in a fixed order
    both = mawps.prunable_rules(("embeddings",), "gmp", "smcbench")
    assert both["exclude"] == [CONSTANT, r"^embedder\.embeddings\.", r"^decoder\.generate\.embeddings\.", MERGE]
    assert both["keep_dense"] == ["embeddings"]
    # asking for smcbench rules never changes the search space itself
    assert mawps.prunable_rules((), "gmp") == {"include": [], "exclude": [CONSTANT], "keep_dense": []}
    assert mawps.prunable["exclude"] == [CONSTANT]


@pytest.mark.parametrize("faithful", ["paper", "smcbench"])
def test_planned_trials_carry_the_rules(mawps, tmp_path, faithful):
    methods = ("omp_before", "snip", "gmp", "omp_rigl", "random_rigl", "snip_rigl", "omp_after", "lth")
    spec = sweep_spec(tmp_path / "run", methods=methods, sparsities=(0.36,), models=("gts", "graph2tree"),
                      faithful=faithful)
    trials = plan_trials(spec, mawps)
    assert {t.method for t in trials} == set(methods) | {"dense"}
    for t in trials:
        merged = MERGE in t.prunable["exclude"]
        assert merged == (faithful == "smcbench" and t.method in SMCBENCH_EXCLUDED), (t.trial_id, faithful)
        assert CONSTANT in t.prunable["exclude"]
    # each trial owns its rule: editing one leaves the others alone
    trials[0].prunable["exclude"].append("x")
    assert all("x" not in t.prunable["exclude"] for t in trials[1:])


# ---------------------------------------------------------------------------- on a real tiny GTS model

@pytest.fixture(scope="module")
def gts_runtime(mawps):
    from smctune.trainables.arithmetic.family import MAWPSTask

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    preset = mawps.resolve("smoke", "gts")
    # the whole fold-0 train split is what puts constants (1.0, 100.0, ...) into the output vocabulary:
    # with a small slice the 3-D constant embedding would be empty; eval is cut short
    train = dataclasses.replace(preset.train, train_limit=None, eval_limit=4)
    runtime = MAWPSTask().build(preset="smoke", model=preset.model, train=train, data_dir=None,
                                device="cpu", fold=0)
    torch.manual_seed(0)
    yield runtime, runtime.new_model()
    torch.set_num_threads(threads)


def test_gts_prunable_parameters(gts_runtime, mawps, tmp_path):
    from smctune.pruning import compute_mask, select_prunable

    _, model = gts_runtime
    params = dict(model.named_parameters())
    constant = params["decoder.predict.constant_embedding"]
    assert constant.ndim == 3 and constant.numel() > 0
    default = {p.name for p in select_prunable(model)}
    assert "decoder.predict.constant_embedding" in default  # the default rule (ndim >= 2) would take it
    assert {"decoder.merge.merge.weight", "decoder.merge.merge_g.weight"} <= default

    def selected(method, faithful):
        spec = sweep_spec(tmp_path / "run", methods=(method,), sparsities=(0.36,), faithful=faithful)
        trial = next(t for t in plan_trials(spec, mawps) if t.method == method)
        rules = trial.prunable
        names = {p.name for p in select_prunable(model, rules["include"] or None, rules["exclude"] or None)}
        # what the trainer's prune hands to compute_mask: the mask covers exactly those tensors
        m = registry.method_spec(method)
        mask = compute_mask(model, m.criterion, 0.36, scope=m.scope, include=rules["include"] or None,
                            exclude=rules["exclude"] or None, seed=0)
        assert set(mask) == names
        return names

    paper_gmp = selected("gmp", "paper")
    assert paper_gmp == default - {"decoder.predict.constant_embedding"}
    assert all(params[n].ndim >= 2 for n in paper_gmp)
    assert not any(n.endswith(".bias") or "LayerNorm" in n for n in paper_gmp)
    assert {"decoder.merge.merge.weight", "decoder.merge.merge_g.weight"} <= paper_gmp
    smcbench_gmp = selected("gmp", "smcbench")
    assert smcbench_gmp == paper_gmp - {"decoder.merge.merge.weight", "decoder.merge.merge_g.weight"}
    assert not any(n.startswith("decoder.merge.") for n in smcbench_gmp)
    assert selected("omp_before", "smcbench") == paper_gmp


def test_trainer_prune_uses_the_trial_rule(gts_runtime, mawps, tmp_path):
    """``Trial.prune``, the function every schedule calls, on the planned smcbench GMP trial."""
    from smctune.train.trial import CallbackReporter, Trial

    runtime, model = gts_runtime
    spec = sweep_spec(tmp_path / "run", methods=("gmp",), sparsities=(0.36,), faithful="smcbench")
    trial_spec = next(t for t in plan_trials(spec, mawps) if t.method == "gmp")
    trial = Trial(trial_spec, CallbackReporter(), device="cpu")
    trial.runtime, trial.model = runtime, model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mask = trial.prune(0.36, current=None, zero=False)
    assert "decoder.predict.constant_embedding" not in set(mask)
    assert not any(name.startswith("decoder.merge.") for name in mask)
    assert "embedder.embeddings.word_embeddings.weight" in set(mask)
    assert mask.sparsity() == pytest.approx(0.36, abs=1e-6)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # compute only


def test_gts_backbone_group_on_the_real_model(gts_runtime, mawps):
    runtime, model = gts_runtime
    assert runtime.backbone_prefix == "embedder."
    train = mawps.resolve("paper", "gts").train
    optimizer, _ = optim.build(model, train, runtime.backbone_prefix)
    assert type(optimizer) is torch.optim.Adam
    rest, backbone = optimizer.param_groups
    assert (rest["lr"], backbone["lr"]) == (pytest.approx(1e-3), pytest.approx(8e-6))
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith("embedder.") for p in backbone["params"])
    assert not any(names[id(p)].startswith("embedder.") for p in rest["params"])
    assert len(backbone["params"]) + len(rest["params"]) == len(names)
