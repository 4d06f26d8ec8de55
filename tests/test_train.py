"""The training loop without Ray: methods' sparsity, resume from a checkpoint, the dense cache."""
from __future__ import annotations

import pytest

from smctune.catalog import registry
from smctune.config.specs import TrialSpec
from smctune.pruning import num_pruned, select_prunable
from smctune.train.trial import CallbackReporter, Trial


def _spec(space, method, sparsity, cache_root, levels=()):
    preset = space.preset("smoke")
    return TrialSpec(task="csqa", method=method, sparsity=sparsity, seed=0, preset="smoke",
                     model=preset.model, train=preset.train,
                     tunables=space.tunables(method, "smoke", registry.method_spec(method).defaults()),
                     prunable={"include": [], "exclude": []}, data_dir=None, cache_root=str(cache_root),
                     levels=levels)


class _Crash(Exception):
    pass


class _CrashAfterFirstReport(CallbackReporter):
    def report(self, metrics, checkpoint_dir=None):
        super().report(metrics, checkpoint_dir)
        raise _Crash()


@pytest.mark.parametrize("method", ["gmp", "omp_before"])
def test_resumed_trial_ends_exactly_where_an_uninterrupted_one_does(space, tmp_path, method):
    spec = _spec(space, method, 0.5, tmp_path)
    whole = CallbackReporter()
    Trial(spec, whole, device="cpu").run()

    crashed = _CrashAfterFirstReport(keep_checkpoints=True)
    with pytest.raises(_Crash):
        Trial(spec, crashed, device="cpu").run()
    assert crashed.checkpoints, "the first evaluation must leave a checkpoint (checkpoint_every_s: 0)"

    resumed = CallbackReporter(checkpoints=list(crashed.checkpoints))
    trial = Trial(spec, resumed, device="cpu")
    trial.run()
    assert resumed.reports[0]["step"] == whole.reports[1]["step"]  # continued, did not restart
    for key in ("accuracy", "loss", "train_loss", "sparsity"):
        assert resumed.reports[-1][key] == whole.reports[-1][key], key


def test_oneshot_trial_keeps_exactly_the_pruned_count_zero_through_training(space, tmp_path):
    reporter = CallbackReporter()
    trial = Trial(_spec(space, "omp_before", 0.36, tmp_path), reporter, device="cpu")
    trial.run()
    params = select_prunable(trial.model)
    total = sum(p.param.numel() for p in params)
    zeros = sum(int((p.param == 0).sum()) for p in params)
    assert zeros >= num_pruned(total, 0.36)
    assert reporter.reports[-1]["sparsity"] == pytest.approx(num_pruned(total, 0.36) / total, abs=0)


def test_after_method_without_dense_checkpoint_fails_clearly(space, tmp_path):
    with pytest.raises(RuntimeError, match="dense checkpoint .* is missing"):
        Trial(_spec(space, "omp_after", 0.2, tmp_path), CallbackReporter(), device="cpu").run()


def test_gmp_reaches_exactly_the_target_sparsity(space, tmp_path):
    reporter = CallbackReporter()
    Trial(_spec(space, "gmp", 0.488, tmp_path), reporter, device="cpu").run()
    sparsities = [r["sparsity"] for r in reporter.reports]
    assert sparsities == sorted(sparsities)
    assert reporter.reports[-1]["sparsity"] == pytest.approx(0.488, abs=1e-5)


def test_resumed_lth_rewinds_to_the_pre_fine_tuning_weights(space, tmp_path):
    """A retried LTH trial must rewind later rounds to the starting weights, not to the checkpoint."""
    Trial(_spec(space, "dense", None, tmp_path), CallbackReporter(), device="cpu").run()
    spec = _spec(space, "lth", 0.36, tmp_path, levels=(0.2, 0.36))
    whole = CallbackReporter()
    Trial(spec, whole, device="cpu").run()
    assert [r["round"] for r in whole.reports if r["level_done"]] == [1, 2]

    crashed = _CrashAfterFirstReport(keep_checkpoints=True)
    with pytest.raises(_Crash):
        Trial(spec, crashed, device="cpu").run()
    resumed = CallbackReporter(checkpoints=list(crashed.checkpoints))
    Trial(spec, resumed, device="cpu").run()
    assert len(resumed.reports) == len(whole.reports) - 1
    for key in ("accuracy", "loss", "train_loss", "sparsity"):
        assert resumed.reports[-1][key] == whole.reports[-1][key], key


def test_diverged_dense_is_reported_and_never_cached(space, tmp_path):
    import dataclasses

    spec = _spec(space, "dense", None, tmp_path)
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, lr=1e12, max_steps=30,
                                                               warmup_steps=0))
    reporter = CallbackReporter()
    Trial(spec, reporter, device="cpu").run()
    last = reporter.reports[-1]
    assert last["diverged"] is True and last["level_done"] is True
    assert last["step"] < 30
    assert not (tmp_path / spec.dense_key()).exists()


@pytest.mark.parametrize("method", ["omp_rigl", "random_rigl", "snip_rigl", "snip"])
def test_before_methods_reach_their_sparsity_and_rigl_moves_the_mask(space, tmp_path, method):
    """SNIP and the RigL starts prune the pretrained model exactly; RigL then moves its mask during
    fine-tuning at constant per-layer sparsity, so the final zeros differ from the start mask."""
    import torch

    from smctune.pruning import compute_mask

    spec = _spec(space, method, 0.5, tmp_path)
    reporter = CallbackReporter()
    trial = Trial(spec, reporter, device="cpu")
    trial.run()
    assert all(r["sparsity"] == pytest.approx(0.5, abs=1e-6) for r in reporter.reports)

    torch.manual_seed(spec.seed)
    start_model = trial.runtime.new_model()
    criterion = registry.method_spec(method).criterion
    kwargs = {}
    if criterion == "snip":
        stream = trial.runtime.train_batches(spec.seed + 104729)
        kwargs = dict(batches=[next(stream)], loss_fn=trial.runtime.loss)
    start = compute_mask(start_model, criterion, 0.5, scope=registry.method_spec(method).scope,
                         seed=spec.seed, **kwargs)
    final_pruned = {p.name: (p.param == 0) for p in select_prunable(trial.model)}
    for name, keep in start.items():  # per-layer sparsity is constant under RigL
        assert int(final_pruned[name].sum()) >= int((~keep).sum())
    moved = sum(int((final_pruned[name] & keep).sum()) for name, keep in start.items())
    if method.endswith("_rigl"):
        assert moved > 0, "RigL never changed the mask"
    else:
        assert moved == 0, "a one-shot mask must not move"


def _with(spec, **tunables):
    import dataclasses

    return dataclasses.replace(spec, tunables={**spec.tunables, **tunables})


def test_smcbench_enforcement_zeroes_weights_but_lets_adam_state_move(space, tmp_path):
    import torch

    reporter = CallbackReporter()
    trial = Trial(_with(_spec(space, "omp_before", 0.5, tmp_path), optimizer_state="smcbench"),
                  reporter, device="cpu")
    trial.run()
    params = select_prunable(trial.model)
    n = sum(p.numel for p in params)
    zeros = sum(int((p.param == 0).sum()) for p in params)
    assert zeros >= num_pruned(n, 0.5) and reporter.reports[-1]["sparsity"] == pytest.approx(0.5, abs=1e-6)
    from smctune.pruning import MaskEnforcer, prune

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    m = prune(model, "magnitude", 0.5)
    for strategy, moves in (("auto", False), ("weights_only", True)):
        opt = torch.optim.AdamW(model.parameters(), lr=0.1)
        enforcer = MaskEnforcer(model, m, opt, strategy=strategy)
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(4, 8)).pow(2).sum().backward()
            enforcer.before_step()
            opt.step()
            enforcer.after_step()
        w = model[0].weight
        state = opt.state[w]["exp_avg"]
        assert bool((w[~m["0.weight"]] == 0).all())
        assert bool((state[~m["0.weight"]] != 0).any()) == moves, strategy


def test_dense_cache_keeps_the_best_evaluated_weights_for_dense_checkpoint_best(space, tmp_path):
    import torch

    from smctune.rundir.dense_cache import DenseCache

    spec = _spec(space, "dense", None, tmp_path)
    trial = Trial(spec, CallbackReporter(), device="cpu")
    trial.run()
    cache = DenseCache(tmp_path)
    meta = cache.meta(spec.dense_key())
    history = meta["history"]
    best_row = max(history, key=lambda row: row["accuracy"])
    assert meta["best"] == best_row["accuracy"]
    final = cache.load_state(spec.dense_key())
    best = cache.load_state(spec.dense_key(), which="best")
    same = all(torch.equal(final[k], best[k]) for k in final)
    # best.pt exists exactly when the best evaluation was not the last one
    assert same == (meta["best_step"] == history[-1]["step"])
    assert meta["best_step"] in [row["step"] for row in history if row["accuracy"] == meta["best"]]
