"""Protein trials through the real training loop (no Ray): the paper's protein prunable set, exact
counts that stay zero, and SMC-Bench's protein departures under ``--faithful smcbench`` (a frozen
head, SNIP by |g| over many batches, IMP rounds of 3 of 4 epochs with a fresh head).

Tiny ESM-2 models from the smoke preset on a slice of the bundled ThermoProt sample.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from smctune.catalog import registry
from smctune.config.specs import TrialSpec
from smctune.config.search_space import load_search_space
from smctune.pruning import compute_mask, num_pruned, select_prunable
from smctune.train.trial import CallbackReporter, Trial

TASK = "thermo-hotcold"


@pytest.fixture(scope="module")
def space():
    return load_search_space(TASK)


def spec(space, method, sparsity, cache_root, faithful="paper", arch="esm1b", levels=(), **train) -> TrialSpec:
    preset = space.resolve("smoke", arch, faithful)
    tunables = space.tunables(method, "smoke", registry.method_spec(method).defaults(faithful), faithful)
    return TrialSpec(task=TASK, method=method, sparsity=sparsity, seed=0, preset="smoke", model=preset.model,
                     train=dataclasses.replace(preset.train, checkpoint_every_s=1e9, **train),
                     tunables=tunables, prunable=space.prunable_rules(method=method, faithful=faithful),
                     data_dir=None, cache_root=str(cache_root), levels=levels)


@pytest.mark.parametrize("arch", ["esm1b", "tape"])
def test_only_attention_and_ffn_are_pruned_and_stay_zero(space, tmp_path, arch, single_thread):
    trial = Trial(spec(space, "omp_before", 0.5, tmp_path, arch=arch), CallbackReporter(), device="cpu")
    trial.run()
    rules = space.prunable_rules()
    prunable = select_prunable(trial.model, rules["include"], rules["exclude"])
    names = {p.name for p in prunable}
    assert names and all(".embed" not in n and not n.startswith("head.") for n in names)
    total = sum(p.numel for p in prunable)
    zeros = sum(int((p.param == 0).sum()) for p in prunable)
    assert zeros >= num_pruned(total, 0.5)
    # nothing outside the prunable set lost weights to the mask: embeddings, norms and head are dense
    for name, param in trial.model.named_parameters():
        if name not in names and param.ndim >= 2 and "padding" not in name:
            assert float((param == 0).float().mean()) < 0.05, name


def test_smcbench_freezes_the_head(space, tmp_path, single_thread):
    torch.manual_seed(0)
    trial = Trial(spec(space, "dense", None, tmp_path, faithful="smcbench"), CallbackReporter(), device="cpu")
    trial.run()
    torch.manual_seed(0)
    fresh = trial.runtime.new_model()
    changed = {name: not torch.equal(param, dict(fresh.named_parameters())[name])
               for name, param in trial.model.named_parameters()}
    assert not any(moved for name, moved in changed.items() if name.startswith("head."))
    # the backbone trained (its unused LM and contact heads get no gradient and stay as they were)
    assert all(moved for name, moved in changed.items() if name.startswith("backbone.layers."))


def test_smcbench_snip_scores_summed_gradients(space, tmp_path, single_thread):
    trial_spec = spec(space, "snip", 0.5, tmp_path, faithful="smcbench")
    assert trial_spec.tunables["score"] == "gradient" and trial_spec.tunables["calibration_batches"] == 101
    trial_spec = dataclasses.replace(trial_spec, tunables={**trial_spec.tunables, "calibration_batches": 5})
    trial = Trial(trial_spec, CallbackReporter(), device="cpu")
    trial.run()
    torch.manual_seed(0)
    start = trial.runtime.new_model()
    stream = trial.runtime.train_batches(trial_spec.seed + 104729)
    rules = trial_spec.prunable
    expected = compute_mask(start, "gradient", 0.5, include=rules["include"],
                            batches=[next(stream) for _ in range(5)], loss_fn=trial.runtime.loss)
    final = {p.name: p.param != 0 for p in select_prunable(trial.model, rules["include"])}
    for name, keep in expected.items():
        assert bool((final[name] <= keep).all()), name   # every weight SNIP-|g| pruned is still zero


def test_smcbench_imp_rounds_are_shorter_with_a_fresh_head(space, tmp_path, single_thread):
    Trial(spec(space, "dense", None, tmp_path, faithful="smcbench"), CallbackReporter(), device="cpu").run()
    lth = spec(space, "lth", 0.36, tmp_path, faithful="smcbench", levels=(0.2, 0.36))
    assert (lth.tunables["rewind"], lth.tunables["round_fraction"], lth.tunables["reinit_head"]) == \
        (False, 0.75, True)
    reporter = CallbackReporter()
    trial = Trial(lth, reporter, device="cpu")
    heads = []
    original = trial.reinit_head

    def spy(round_):
        before = {n: p.detach().clone() for n, p in trial.model.named_parameters()}
        original(round_)
        after = dict(trial.model.named_parameters())
        heads.append({n: torch.equal(before[n], after[n]) for n in before})

    trial.reinit_head = spy
    trial.run()
    budget = round(0.75 * lth.train.max_steps)
    ends = [r["step"] for r in reporter.reports if r["level_done"]]
    assert ends == [budget, budget]
    assert [r["round"] for r in reporter.reports if r["level_done"]] == [1, 2]
    assert len(heads) == 2
    for unchanged in heads:   # the head is drawn again, the backbone is not touched
        assert not unchanged["head.0.weight"] and not unchanged["head.3.weight"]   # the two Linears
        assert all(same for n, same in unchanged.items() if n.startswith("backbone."))


def test_reinit_head_is_seeded_by_round(space, tmp_path, single_thread):
    trial = Trial(spec(space, "omp_before", 0.2, tmp_path), CallbackReporter(), device="cpu")
    trial.runtime = trial.task.build(preset="smoke", model=trial.spec.model, train=trial.spec.train,
                                     data_dir=None, device="cpu")
    draws = []
    for round_ in (1, 1, 2):
        torch.manual_seed(123)
        trial.model = trial.runtime.new_model()
        trial.reinit_head(round_)
        draws.append(trial.model.head[0].weight.detach().clone())
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
