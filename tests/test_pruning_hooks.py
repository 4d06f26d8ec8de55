"""SparseTraining: the hook object users drive from their own loop (one-shot, GMP, RigL)."""
import pytest
import torch
from torch import nn

from smctune.errors import UserError
from smctune.pruning import (GMPSchedule, Mask, RigLConfig, SparseTraining, compute_mask, num_pruned,
                             prune, select_prunable)


pytestmark = pytest.mark.usefixtures("single_thread")

STEPS = 30


def make(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(12, 32), nn.GELU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 4))
    x, y = torch.randn(64, 12), torch.randn(64, 4)
    return model, x, y


def state_tensors(opt, param):
    return {k: v for k, v in opt.state[param].items()
            if k != "step" and torch.is_tensor(v) and v.shape == param.shape}


def assert_zero_at_pruned(model, mask, opt):
    by_name = dict(model.named_parameters())
    for name, keep in mask.items():
        assert torch.count_nonzero(by_name[name][~keep]) == 0, name
        for key, value in state_tensors(opt, by_name[name]).items():
            assert torch.count_nonzero(value[~keep]) == 0, (name, key)


def run(model, x, y, opt, sparse, steps=STEPS, clip=None, check=None):
    """The loop of the module docstring; returns the masks after every step."""
    masks = []
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), y).backward()
        sparse.before_step(step)
        if clip is not None:
            clip(step)
        opt.step()
        sparse.on_step_end(step)
        masks.append(sparse.mask)
        if check is not None:
            check(step)
    return masks


OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "sgd": lambda p: torch.optim.SGD(p, lr=5e-2, momentum=0.9, nesterov=True),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3),  # post-step fallback
}


@pytest.mark.parametrize("strategy", ["auto", "gradient", "post_step"])
@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_gmp_reaches_exactly_the_final_sparsity_with_monotone_masks_and_zeros(opt_name, strategy):
    model, x, y = make()
    opt = OPTIMIZERS[opt_name](model.parameters())
    if strategy == "gradient" and opt_name == "rmsprop":
        pytest.skip("RMSprop is not zero-preserving (covered in test_pruning_enforcer)")
    gmp = GMPSchedule(final=0.8, start_step=5, end_step=20, frequency=4)
    sparse = SparseTraining(model, opt, gmp=gmp, criterion="magnitude", scope="global",
                            exclude=[r"^4\."], strategy=strategy)
    names = [p.name for p in select_prunable(model, exclude=[r"^4\."])]
    assert list(sparse.mask) == names and sparse.mask.sparsity() == 0.0
    total = sparse.mask.counts()[1]
    changed = []

    def check(step):
        assert_zero_at_pruned(model, sparse.mask, opt)
        if gmp.is_update_step(step):
            changed.append(step)
            assert sparse.mask.counts()[0] == num_pruned(total, gmp.target(step))

    masks = run(model, x, y, opt, sparse, check=check)
    assert changed == gmp.update_steps() == [5, 9, 13, 17, 20]
    assert masks[19].counts()[0] == num_pruned(total, 0.8)  # exactly s_f at the end step
    assert masks[-1] is masks[19]  # and nothing moves afterwards
    for before, after in zip(masks, masks[1:]):  # monotone: pruned stays pruned
        for name in names:
            assert not (after[name] & ~before[name]).any()
    kept = sum(int(torch.count_nonzero(p)) for n, p in model.named_parameters() if n in names)
    assert kept == total - num_pruned(total, 0.8)  # the kept weights trained (none is exactly 0)


def test_gmp_with_a_prune_fn():
    model, x, y = make()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    calls = []

    def prune_fn(target, current):
        calls.append((round(target, 6), current))
        return prune(model, "magnitude", target, current=current, scope="layerwise")

    gmp = GMPSchedule(final=0.5, start_step=0, end_step=10, frequency=5, initial=0.1)
    sparse = SparseTraining(model, opt, gmp=gmp, prune_fn=prune_fn)
    assert calls[0] == (0.1, None)  # the start mask: the schedule's initial sparsity
    run(model, x, y, opt, sparse, steps=12)
    assert [c[0] for c in calls] == [0.1, round(gmp.target(5), 6), 0.5]
    assert calls[1][1] is not None and calls[2][1] is not calls[1][1]
    for stat in sparse.mask.layerwise():
        assert stat.sparsity == pytest.approx(0.5, abs=0.02)
    assert_zero_at_pruned(model, sparse.mask, opt)


@pytest.mark.parametrize("opt_name", ["adamw", "sgd"])
@pytest.mark.parametrize("as_dict", [False, True])
def test_rigl_moves_the_mask_at_constant_per_layer_sparsity(opt_name, as_dict):
    model, x, y = make()
    opt = OPTIMIZERS[opt_name](model.parameters())
    mask = prune(model, "random", 0.7, scope="layerwise", seed=3)
    config = RigLConfig(update_every=5, end_step=25, alpha=0.3)
    sparse = SparseTraining(model, opt, mask=mask, rigl=config.__dict__ if as_dict else config)
    assert sparse.rigl.config == config
    by_name = dict(model.named_parameters())
    updates = []

    def check(step):
        current = sparse.mask
        assert_zero_at_pruned(model, current, opt)
        if config.is_update_step(step):
            updates.append(step)
            assert any(s.new_connections for s in sparse.rigl.last_update)
            for name, keep in current.items():
                assert int(keep.sum()) == int(mask[name].sum())  # per-layer nnz constant
                # genuinely new connections start at exactly 0 (grown weights initialised to 0)
                new = keep & ~previous[0][name]
                assert torch.count_nonzero(by_name[name][new]) == 0
        previous[0] = current

    previous = [mask]
    masks = run(model, x, y, opt, sparse, check=check)
    assert updates == [5, 10, 15, 20]
    final = masks[-1]
    assert final is not mask
    assert sum(int((final[n] & ~mask[n]).sum()) for n in mask) > 0  # the mask moved
    for name, keep in final.items():
        assert int(keep.sum()) == int(mask[name].sum())
    kept = sum(int(keep.sum()) for keep in final.values())
    assert sum(int(torch.count_nonzero(by_name[n][final[n]])) for n in final) > 0.99 * kept  # grown ones learn


def test_rigl_growth_uses_the_dense_gradient_of_the_update_step():
    """SparseTraining grows by the same entries as a RigL driven with dense gradients (post-step
    enforcement, the original protocol), while it masks the gradients itself."""
    results = []
    for strategy in ("gradient", "post_step"):
        model, x, y = make()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        mask = prune(model, "magnitude", 0.6)
        sparse = SparseTraining(model, opt, mask=mask, strategy=strategy,
                                rigl=dict(update_every=3, end_step=12))
        assert sparse.enforcer.masks_gradients == (strategy == "gradient")
        run(model, x, y, opt, sparse, steps=12)
        results.append((sparse.mask, [p.detach().clone() for p in model.parameters()]))
    (m1, w1), (m2, w2) = results
    assert m1 == m2
    assert all(torch.equal(a, b) for a, b in zip(w1, w2))


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_one_shot_keeps_its_mask_and_its_zeros(opt_name):
    model, x, y = make()
    opt = OPTIMIZERS[opt_name](model.parameters())
    mask = compute_mask(model, "magnitude", 0.9)  # weights not zeroed yet: SparseTraining does it
    sparse = SparseTraining(model, opt, mask=mask)
    assert_zero_at_pruned(model, mask, opt)
    masks = run(model, x, y, opt, sparse, check=lambda step: assert_zero_at_pruned(model, mask, opt))
    assert all(m is mask for m in masks)
    assert sparse.on_step_end(STEPS + 1) is None


@pytest.mark.parametrize("strategy", ["gradient", "post_step"])
def test_clip_grad_norm_clips_by_the_sparse_gradient_with_either_strategy(strategy):
    model, x, y = make()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    mask = prune(model, "magnitude", 0.8)
    sparse = SparseTraining(model, opt, mask=mask, strategy=strategy)
    norms = []

    def clip(step):
        by_name = dict(model.named_parameters())
        masked = [by_name[n].grad * mask[n] if n in mask else by_name[n].grad for n in by_name]
        sparse_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in masked]))
        norms.append((float(sparse.clip_grad_norm_(1e-3)), float(sparse_norm)))

    run(model, x, y, opt, sparse, steps=3, clip=clip)
    for total, sparse_norm in norms:
        assert total == pytest.approx(sparse_norm, rel=1e-6)
        assert total > 1e-3  # the clip was active
    assert_zero_at_pruned(model, mask, opt)


def test_clipped_training_is_the_same_with_both_strategies():
    out = []
    for strategy in ("gradient", "post_step"):
        model, x, y = make()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        sparse = SparseTraining(model, opt, mask=prune(model, "magnitude", 0.7), strategy=strategy)
        run(model, x, y, opt, sparse, steps=5, clip=lambda step: sparse.clip_grad_norm_(0.01))
        out.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*out))


def test_resume_from_a_saved_mask_and_optimizer_state(tmp_path):
    """Checkpoint: the mask plus model and optimizer state; resuming continues bit for bit."""
    def fresh():
        model, x, y = make()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        gmp = GMPSchedule(final=0.75, start_step=2, end_step=14, frequency=3)
        return model, x, y, opt, gmp

    model, x, y, opt, gmp = fresh()
    whole = SparseTraining(model, opt, gmp=gmp)
    run(model, x, y, opt, whole, steps=20)
    expected = [p.detach().clone() for p in model.parameters()]

    model, x, y, opt, gmp = fresh()
    first = SparseTraining(model, opt, gmp=gmp)
    run(model, x, y, opt, first, steps=8)
    first.mask.save(tmp_path / "mask.pt")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "state.pt")

    model, x, y, opt, gmp = fresh()
    state = torch.load(tmp_path / "state.pt")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    resumed = SparseTraining(model, opt, gmp=gmp, mask=Mask.load(tmp_path / "mask.pt"))
    for step in range(9, 21):
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), y).backward()
        resumed.before_step(step)
        opt.step()
        resumed.on_step_end(step)
    assert resumed.mask == whole.mask
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), expected))


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "needs a mask"),
    (dict(rigl=dict(update_every=2, end_step=10)), "needs a mask"),
    (dict(gmp=GMPSchedule(final=0.5, start_step=0, end_step=4, frequency=1),
          rigl=dict(update_every=2, end_step=10)), "not both"),
    (dict(gmp=GMPSchedule(final=0.5, start_step=0, end_step=4, frequency=1),
          prune_fn=lambda t, c: None, exclude=["x"]), "prune_fn replaces"),
    (dict(gmp=GMPSchedule(final=0.5, start_step=0, end_step=4, frequency=1),
          prune_fn=lambda t, c: None), "must return a smctune Mask"),
    (dict(gmp=dict(final=0.5)), "must be a GMPSchedule"),
    (dict(mask="mask"), "must be a smctune Mask"),
    (dict(rigl=5, mask=True), "rigl must be"),
    (dict(rigl=dict(update_every=0, end_step=10), mask=True), "update_every must be >= 1"),
    (dict(mask=True, strategy="sometimes"), "unknown enforcement strategy"),
])
def test_argument_errors(kwargs, match):
    model, x, y = make()
    opt = torch.optim.AdamW(model.parameters())
    if kwargs.get("mask") is True:
        kwargs["mask"] = compute_mask(model, "magnitude", 0.5)
    with pytest.raises(UserError, match=match):
        SparseTraining(model, opt, **kwargs)
