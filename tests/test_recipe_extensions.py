"""What the protein recipes added to the core: the OneCycle schedule, frozen heads, budgets in epochs,
per-architecture model sources and a search space's ``smcbench:`` block.

No Ray, no data: settings and optimisers on toy modules, search spaces from YAML text.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from smctune.train import optim
from smctune.catalog import registry
from smctune.config.specs import SweepSpec, TrialSpec, stable_hash
from smctune.config.settings import TrainSettings, resolve_epochs
from smctune.config.search_space import load_search_space
from smctune.errors import UserError
from smctune.sweep.plan import plan_trials
from test_axes_recipes import lrs_over_steps


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(3, 3)
        self.head = torch.nn.Linear(3, 2)


# ------------------------------------------------------------------------------------------ OneCycle

@pytest.mark.parametrize("max_steps", [1, 2, 3, 4, 10, 37, 400])
def test_onecycle_matches_torch_onecyclelr(max_steps):
    """The same curve as torch.optim.lr_scheduler.OneCycleLR (cosine, pct_start 0.3, div 25,
    final div 1e4), for both groups of a backbone/head split."""
    train = TrainSettings(lr=2e-2, backbone_lr=1e-6, lr_schedule="onecycle", max_steps=max_steps)
    optimizer, scheduler = optim.build(Toy(), train, "backbone.")
    ours = lrs_over_steps(optimizer, scheduler, max_steps)

    model = Toy()
    reference_opt = torch.optim.AdamW([{"params": model.head.parameters(), "lr": 2e-2},
                                       {"params": model.backbone.parameters(), "lr": 1e-6}])
    reference = torch.optim.lr_scheduler.OneCycleLR(reference_opt, max_lr=[2e-2, 1e-6],
                                                    total_steps=max_steps)
    theirs = lrs_over_steps(reference_opt, reference, max_steps)
    flat = [lr for row in ours for lr in row]
    assert flat == pytest.approx([lr for row in theirs for lr in row], rel=1e-9, abs=1e-15)
    if max_steps >= 10:
        peak = max(range(max_steps), key=lambda s: ours[s][0])
        assert 0.999 * 2e-2 <= ours[peak][0] <= 2e-2 and ours[0][0] == pytest.approx(2e-2 / 25)


def test_onecycle_stepped_once_per_epoch():
    """``lr_step_every`` = updates per epoch: the cycle moves once an epoch, as SMC-Bench's
    OneCycleLR(steps_per_epoch=1, epochs=4) stepped after each epoch."""
    per_epoch = 5
    train = TrainSettings(lr=1.0, lr_schedule="onecycle", max_steps=4 * per_epoch, lr_step_every=per_epoch)
    optimizer, scheduler = optim.build(Toy(), train)
    ours = [row[0] for row in lrs_over_steps(optimizer, scheduler, 4 * per_epoch)]

    reference_opt = torch.optim.AdamW(Toy().parameters(), lr=1.0)
    reference = torch.optim.lr_scheduler.OneCycleLR(reference_opt, max_lr=1.0, steps_per_epoch=1, epochs=4)
    epochs = [row[0] for row in lrs_over_steps(reference_opt, reference, 4)]
    assert ours == pytest.approx([lr for lr in epochs for _ in range(per_epoch)])


# ------------------------------------------------------------------------------------------ freeze

def test_freeze_head_keeps_it_out_of_the_optimizer():
    model = Toy()
    head_before = model.head.weight.detach().clone()
    train = TrainSettings(lr=0.1, backbone_lr=0.01, freeze=("head",))
    optimizer, _ = optim.build(model, train, "backbone.")
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == \
        {id(p) for p in model.backbone.parameters()}
    model.head(model.backbone(torch.ones(2, 3))).sum().backward()
    optimizer.step()
    assert torch.equal(model.head.weight, head_before)
    one_group, _ = optim.build(model, dataclasses.replace(train, backbone_lr=None), "backbone.")
    assert len(one_group.param_groups) == 1 and len(one_group.param_groups[0]["params"]) == 2


@pytest.mark.parametrize("freeze, needle", [(("tail",), "train.freeze: unknown 'tail'"),
                                            (("head", "backbone"), "nothing to train")])
def test_freeze_errors(freeze, needle):
    with pytest.raises(UserError, match=needle):
        optim.check(TrainSettings(freeze=freeze))


def test_freeze_needs_a_backbone():
    with pytest.raises(UserError, match="backbone"):
        optim.build(Toy(), TrainSettings(freeze=("head",)), "")


# ------------------------------------------------------------------------------------------ epochs

def test_epochs_become_whole_batches_of_the_training_split():
    train = TrainSettings(epochs=4, batch_size=3, max_steps=7)
    assert resolve_epochs(train, 3000).max_steps == 4000
    assert resolve_epochs(train, 3002).max_steps == 4000          # the incomplete batch is dropped
    assert resolve_epochs(dataclasses.replace(train, epochs=0.5), 3000).max_steps == 500
    assert resolve_epochs(dataclasses.replace(train, train_limit=30), 3000).max_steps == 40
    assert resolve_epochs(TrainSettings(max_steps=7), None).max_steps == 7   # no epochs: untouched
    with pytest.raises(UserError, match="size of the training split"):
        resolve_epochs(train, None)
    with pytest.raises(UserError, match="positive"):
        resolve_epochs(dataclasses.replace(train, epochs=-1.0), 3000)


def test_new_train_settings_leave_existing_dense_keys_alone():
    """Dense caches written before epochs/freeze/precision existed keep their keys: those fields
    enter the hash only when set (freeze, precision other than auto) or never (epochs, already turned
    into max_steps)."""
    spec = TrialSpec(task="csqa", method="dense", sparsity=None, seed=0, preset="smoke",
                     model=load_search_space("csqa").preset("smoke").model,
                     train=TrainSettings(), tunables={}, prunable={}, data_dir=None, cache_root="/tmp")
    old_train = {k: v for k, v in dataclasses.asdict(spec.train).items()
                 if k not in ("checkpoint_every_s", "threads", "eval_every", "eval_batch_size", "eval_limit",
                              "epochs", "freeze", "precision")}
    old_key = stable_hash({"task": "csqa", "seed": 0, "preset": "smoke", "model": dataclasses.asdict(spec.model),
                           "train": old_train, "data_dir": "bundled"})
    assert spec.dense_key() == old_key
    assert dataclasses.replace(spec, train=TrainSettings(epochs=3)).dense_key() == old_key
    assert dataclasses.replace(spec, train=TrainSettings(freeze=("head",))).dense_key() != old_key
    assert dataclasses.replace(spec, train=TrainSettings(precision="bf16")).dense_key() != old_key


# ------------------------------------------------------------------------------ search-space blocks

BASE = """
task: csqa
sparsities: [0.2, 0.5]
prunable: {include: [], exclude: []}
presets:
  smoke:
    model: {source: config, name: tiny, config: {hidden_size: 32, num_hidden_layers: 1,
            num_attention_heads: 2, intermediate_size: 64, max_position_embeddings: 64}}
    train: {max_steps: 4, eval_every: 2, batch_size: 4, max_length: 32, train_limit: 16, eval_limit: 8,
            epochs: 2}
"""


def write_space(tmp_path, extra: str = "", base: str = BASE):
    path = tmp_path / "space.yaml"
    path.write_text(base + extra)
    return load_search_space("csqa", str(path))


def sweep(tmp_path, methods=("dense", "snip", "lth"), faithful="paper", train_examples=16) -> SweepSpec:
    return SweepSpec(task="csqa", methods=tuple(methods), sparsities=(0.2, 0.5), seeds=(0,), preset="smoke",
                     preset_reason="test", name="t", run_dir=str(tmp_path / "run"), mlflow_uri="file:///x",
                     faithful=faithful, train_examples=train_examples)


SMCBENCH = """
smcbench:
  train: {lr: 0.5}
  methods:
    snip: {score: gradient, calibration_batches: 7}
    lth: {rewind: false, round_fraction: 0.75, reinit_head: true}
"""


def test_smcbench_block_applies_only_when_faithful(tmp_path):
    space = write_space(tmp_path, SMCBENCH)
    paper = {t.method: t for t in plan_trials(sweep(tmp_path), space)}
    faithful = {t.method: t for t in plan_trials(sweep(tmp_path, faithful="smcbench"), space)}
    assert paper["snip"].tunables["score"] == "snip" and paper["snip"].tunables["calibration_batches"] == 1
    assert faithful["snip"].tunables["score"] == "gradient"
    assert faithful["snip"].tunables["calibration_batches"] == 7
    assert faithful["lth"].tunables["round_fraction"] == 0.75 and faithful["lth"].tunables["reinit_head"]
    assert paper["dense"].train.lr != 0.5 and faithful["dense"].train.lr == 0.5
    # the dense model differs, so its cache key does
    assert paper["dense"].dense_key() != faithful["dense"].dense_key()
    # epochs over the recorded training size: 2 epochs x (16 // 4) batches
    assert paper["dense"].train.max_steps == 8


@pytest.mark.parametrize("block, needle", [
    ("smcbench: [1]\n", "smcbench: expected a mapping"),
    ("smcbench: {trian: {}}\n", "unknown key 'trian' at smcbench"),
    ("smcbench: {methods: {snipp: {}}}\n", "unknown method 'snipp' at smcbench.methods"),
    ("smcbench: {methods: {snip: {scor: gradient}}}\n", "unknown key 'scor' at smcbench.methods.snip"),
    ("smcbench: {methods: {snip: {score: grad}}}\n", "score = 'grad' is not valid"),
    ("smcbench: {train: {lrr: 1.0}}\n", "unknown key 'lrr'"),
])
def test_smcbench_block_errors(tmp_path, block, needle):
    with pytest.raises(UserError) as excinfo:
        write_space(tmp_path, block)
    assert needle in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_models_block_overrides_the_model_source(tmp_path):
    text = BASE + """
models:
  big:
    smoke: {model: {name: bigger, config: {hidden_size: 64, num_hidden_layers: 1, num_attention_heads: 2,
                                           intermediate_size: 64, max_position_embeddings: 64}}}
  small: {}
"""
    space = write_space(tmp_path, base=text)
    big, small = space.resolve("smoke", "big"), space.resolve("smoke", "small")
    assert big.model.name == "bigger" and big.model.config["hidden_size"] == 64 and big.model.arch == "big"
    assert small.model.name == "tiny" and small.model.arch == "small"
    with pytest.raises(UserError, match="unknown key 'arch' at models.big.smoke.model"):
        write_space(tmp_path, base=text.replace("{name: bigger,", "{arch: x, name: bigger,"))


def test_packaged_protein_spaces_resolve_every_preset_and_architecture():
    for task in ("hp-s", "hp-s2c5", "hp-s2c2", "meltome", "thermo", "thermo-hotcold"):
        space = load_search_space(task)
        assert space.architectures == ("esm1b", "tape")
        assert space.sparsities[-1] == pytest.approx(1 - 0.8 ** 9, abs=1e-6)
        for preset in ("paper", "small", "smoke"):
            for arch in space.architectures:
                for faithful in ("paper", "smcbench"):
                    space.resolve(preset, arch, faithful)


def test_paper_preset_is_table_5():
    """The paper's Table 5 and SMC-Bench's ESM-1b scripts: resolved for each protein task."""
    for task, batch in (("hp-s", 3), ("hp-s2c2", 3), ("hp-s2c5", 3), ("meltome", 2), ("thermo", 3),
                        ("thermo-hotcold", 3)):
        space = load_search_space(task)
        esm = space.resolve("paper", "esm1b")
        assert (esm.model.source, esm.model.name) == ("hub", "esm1b_t33_650M_UR50S")
        t = esm.train
        assert (t.lr, t.backbone_lr, t.weight_decay, t.batch_size, t.epochs) == (2e-2, 1e-6, 1e-2, batch, 4)
        assert (t.optimizer, t.lr_schedule, t.dropout, t.adam_eps) == ("adamw", "onecycle", 0.0, 1e-8)
        assert (t.adam_beta1, t.adam_beta2, t.grad_clip, t.max_length) == (0.9, 0.999, 0.0, 1022)
        assert esm.model.layers.get("head_hidden", 512) == 512
        tape = space.resolve("paper", "tape").train
        assert (tape.lr, tape.backbone_lr, tape.weight_decay, tape.batch_size, tape.epochs) == \
            (1e-4, None, 1e-2, 16, 4)
        assert (tape.lr_schedule, tape.warmup_steps, tape.dropout, tape.adam_eps) == ("linear", 100, 0.1, 1e-8)
        assert (tape.adam_beta1, tape.adam_beta2) == (0.9, 0.999)
        assert space.resolve("paper", "tape").model.source == "local"
        smcbench = space.resolve("paper", "esm1b", "smcbench").train
        assert smcbench.freeze == ("head",)
        lth = space.tunables("lth", "paper", registry.method_spec("lth").defaults("smcbench"), "smcbench")
        assert (lth["rewind"], lth["round_fraction"], lth["reinit_head"]) == (False, 0.75, True)
        snip = space.tunables("snip", "paper", registry.method_spec("snip").defaults("smcbench"), "smcbench")
        assert (snip["score"], snip["calibration_batches"]) == ("gradient", 101)
        assert space.tunables("gmp", "paper", registry.method_spec("gmp").defaults())["frequency"] == 500
        assert math.isclose(space.preset("paper").resources.gpu, 1.0)


def test_protein_prunable_rule_is_attention_and_ffn_only():
    space = load_search_space("thermo")
    rules = space.prunable_rules()
    assert set(space.keep_dense_groups()) == {"q", "k", "v", "o", "ffn", "embeddings", "head"}
    assert rules["include"] and not rules["exclude"]
    assert space.smcbench["train"] == {"freeze": ["head"]}


def test_a_sweep_recorded_before_train_examples_can_continue(tmp_path):
    """sweep.json files written before train_examples and prune_only existed still read, and the
    same sweep continues under the name (the data check now fills train_examples in)."""
    import json

    from smctune.sweep.driver import record_spec

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    old = json.loads(sweep(tmp_path, train_examples=None).to_json())
    del old["train_examples"], old["prune_only"]
    (run_dir / "sweep.json").write_text(json.dumps(old))
    assert SweepSpec.from_json((run_dir / "sweep.json").read_text()).prune_only == ()
    record_spec(run_dir, sweep(tmp_path, train_examples=16))
    with pytest.raises(UserError, match="different seeds"):
        record_spec(run_dir, dataclasses.replace(sweep(tmp_path), seeds=(0, 1)))
