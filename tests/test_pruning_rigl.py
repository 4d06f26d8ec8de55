import math

import pytest
import torch
from torch import nn

from smctune.errors import UserError
from smctune.pruning.enforce import MaskEnforcer
from smctune.pruning.mask import Mask
from smctune.pruning.rigl import RigL, RigLConfig, rigl_drop_fraction, smcbench_drop_fraction


pytestmark = pytest.mark.usefixtures("single_thread")

WEIGHTS = ("0.weight", "2.weight", "4.weight")


def make(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(12, 24), nn.GELU(), nn.Linear(24, 24), nn.GELU(), nn.Linear(24, 4))
    x, y = torch.randn(32, 12), torch.randn(32, 4)
    params = dict(model.named_parameters())
    masks = {}
    for name in WEIGHTS:
        n = params[name].numel()
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.randperm(n)[: n // 2]] = True  # exactly 50% sparse
        masks[name] = keep.view(params[name].shape)
    return model, x, y, Mask(masks)


def step_once(model, x, y, opt, enforcer):
    opt.zero_grad(set_to_none=True)
    nn.functional.mse_loss(model(x), y).backward()
    opt.step()
    enforcer.apply()


def setup(variant="paper", **kw):
    model, x, y, mask = make()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    enforcer = MaskEnforcer(model, mask, opt)
    enforcer.apply()
    rigl = RigL(model, enforcer, opt, variant=variant, **kw)
    return model, x, y, mask, opt, enforcer, rigl


# ------------------------------------------------------------------ schedules
@pytest.mark.parametrize("step", [0, 1, 25, 50, 99, 137, 299])
def test_rigl_drop_fraction_is_cosine(step):
    expected = 0.3 / 2 * (1 + math.cos(math.pi * step / 300))
    assert rigl_drop_fraction(step, end_step=300) == pytest.approx(expected, rel=1e-12)
    assert rigl_drop_fraction(step, alpha=0.5, end_step=300) == pytest.approx(expected / 0.3 * 0.5)


def test_rigl_drop_fraction_zero_at_and_after_end():
    assert rigl_drop_fraction(0, end_step=300) == pytest.approx(0.3)
    assert rigl_drop_fraction(150, end_step=300) == pytest.approx(0.15)
    for step in (300, 301, 10_000):
        assert rigl_drop_fraction(step, end_step=300) == 0.0


def test_smcbench_drop_fraction():
    T = 1000
    assert smcbench_drop_fraction(0, total_steps=T) == pytest.approx(0.5)
    assert smcbench_drop_fraction(T // 2, total_steps=T) == pytest.approx(0.005 + 0.495 / 2)
    assert smcbench_drop_fraction(T, total_steps=T) == pytest.approx(0.005)
    assert smcbench_drop_fraction(250, total_steps=T, initial=0.4, minimum=0.0) == \
        pytest.approx(0.4 * (1 + math.cos(math.pi / 4)) / 2)
    assert smcbench_drop_fraction(2 * T, total_steps=T) == pytest.approx(0.005)  # never 0


# ------------------------------------------------------------------ reference RigL step
def reference_update(w, g, old, k):
    """Independent pure-Python drop/grow on flat lists (ties: lowest index first)."""
    active = [i for i in range(len(old)) if old[i]]
    dropped = sorted(active, key=lambda i: (abs(w[i]), i))[:k]
    after_drop = set(active) - set(dropped)
    candidates = [i for i in range(len(old)) if i not in after_drop]
    grown = sorted(candidates, key=lambda i: (-abs(g[i]), i))[:k]
    return set(dropped), set(grown)


@pytest.mark.parametrize("zero_regrown", [False, True])
def test_update_matches_reference(zero_regrown):
    model, x, y, mask, opt, enforcer, rigl = setup(update_every=5, end_step=100,
                                                   zero_regrown=zero_regrown)
    params = dict(model.named_parameters())
    for step in range(1, 5):
        step_once(model, x, y, opt, enforcer)
        assert rigl.maybe_update(step) is None
    step = 5
    step_once(model, x, y, opt, enforcer)
    before = {n: params[n].detach().clone() for n in WEIGHTS}
    grads = {n: params[n].grad.detach().clone() for n in WEIGHTS}
    states = {n: {k: v.clone() for k, v in opt.state[params[n]].items()} for n in WEIGHTS}
    old_mask = enforcer.mask
    new_mask = rigl.maybe_update(step)
    assert isinstance(new_mask, Mask) and new_mask is not old_mask
    assert enforcer.mask is new_mask and new_mask.aliases == old_mask.aliases

    f = 0.3 / 2 * (1 + math.cos(math.pi * step / 100))
    total_new = 0
    for n in WEIGHTS:
        old = old_mask[n].reshape(-1).tolist()
        new = new_mask[n].reshape(-1).tolist()
        n_active = sum(old)
        assert sum(new) == n_active  # per-layer nnz constant
        k = math.floor(f * n_active)
        assert k > 0
        dropped, grown = reference_update(before[n].reshape(-1).tolist(),
                                          grads[n].reshape(-1).tolist(), old, k)
        assert len(dropped) == len(grown) == k
        expected = (set(i for i in range(len(old)) if old[i]) - dropped) | grown
        assert set(i for i in range(len(new)) if new[i]) == expected
        w = params[n].detach().reshape(-1)
        st = opt.state[params[n]]
        new_conn = grown - dropped
        total_new += len(new_conn)
        reset = grown if zero_regrown else new_conn
        for i in reset:
            assert w[i].item() == 0.0
            for key in ("exp_avg", "exp_avg_sq"):
                assert st[key].reshape(-1)[i].item() == 0.0
        for i in grown - reset:  # regrown entries keep weight and state
            assert w[i].item() == before[n].reshape(-1)[i].item()
            for key in ("exp_avg", "exp_avg_sq"):
                assert st[key].reshape(-1)[i] == states[n][key].reshape(-1)[i]
        for i in dropped - grown:
            assert w[i].item() == 0.0
            for key in ("exp_avg", "exp_avg_sq"):
                assert st[key].reshape(-1)[i].item() == 0.0
        stats = next(s for s in rigl.last_update if s.name == n)
        assert (stats.n_active, stats.k, stats.new_connections) == (n_active, k, len(new_conn))
    assert total_new > 0  # the mask really moved

    # keep training under the new mask: pruned weights stay exactly 0, grown ones start learning
    for _ in range(5):
        step_once(model, x, y, opt, enforcer)
    for n in WEIGHTS:
        m = new_mask[n]
        assert torch.count_nonzero(params[n][~m]) == 0
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.count_nonzero(opt.state[params[n]][key][~m]) == 0
        assert torch.count_nonzero(params[n][m]) == int(m.sum())


def test_regrowth_ties_and_state_reset_by_hand():
    """2x3 tensor, all 6 kept except index 5; hand-picked |w|, |grad| with ties."""
    lin = nn.Linear(3, 2, bias=False)
    model = nn.Sequential(lin)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.1, -0.1, 2.0], [0.5, 3.0, 0.0]]))
    mask = Mask({"0.weight": torch.tensor([[True, True, True], [True, True, False]])})
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    lin.weight.grad = torch.ones(2, 3)
    opt.step()  # creates momentum_buffer = ones
    enforcer = MaskEnforcer(model, mask, opt)
    enforcer.apply()
    lin.weight.grad = torch.tensor([[9.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    for zero_regrown in (False, True):
        w0 = lin.weight.detach().clone()
        buf0 = opt.state[lin.weight]["momentum_buffer"].clone()
        rigl = RigL(model, enforcer, opt, update_every=1, end_step=10, zero_regrown=zero_regrown)
        enforcer.update(mask)
        with torch.no_grad():
            lin.weight.copy_(w0)
        opt.state[lin.weight]["momentum_buffer"].copy_(buf0)
        new = rigl.update(0.4)  # k = floor(0.4 * 5) = 2
        # drop: |w| ties 0.1 at idx 0 and 1 -> both dropped (smallest two)
        # grow among {0, 1, 5}: |g| = 9, 1, 1 -> idx 0 and (tie 1 vs 5 -> lowest index) 1
        assert new["0.weight"].tolist() == [[True, True, True], [True, True, False]]
        w = lin.weight.detach()
        buf = opt.state[lin.weight]["momentum_buffer"]
        if zero_regrown:
            assert w[0, :2].tolist() == [0.0, 0.0] and buf[0, :2].tolist() == [0.0, 0.0]
        else:
            assert torch.equal(w[0, :2], w0[0, :2]) and buf[0, :2].tolist() == [1.0, 1.0]
        assert rigl.last_update[0].new_connections == 0

    # a different grad makes index 5 win the tie-free growth: genuine new connection
    lin.weight.grad = torch.tensor([[9.0, 1.0, 0.0], [1.0, 0.0, 5.0]])
    new = rigl.update(0.4)
    assert new["0.weight"].tolist() == [[True, False, True], [True, True, True]]
    assert w[1, 2].item() == 0.0 and w[0, 1].item() == 0.0
    assert buf[1, 2].item() == 0.0 and buf[0, 1].item() == 0.0
    assert rigl.last_update[0].new_connections == 1


# ------------------------------------------------------------------ when updates happen
def test_no_update_off_schedule_or_after_end_step():
    model, x, y, mask, opt, enforcer, rigl = setup(update_every=3, end_step=9)
    updated = []
    for step in range(1, 16):
        step_once(model, x, y, opt, enforcer)
        before = enforcer.mask
        out = rigl.maybe_update(step)
        if out is None:
            assert enforcer.mask is before
        else:
            updated.append(step)
    assert updated == [3, 6]  # 9, 12, 15 are >= end_step
    assert rigl.on_step_end(9) is None and rigl.on_step_end(12) is None
    assert RigLConfig(update_every=3, end_step=9).is_update_step(0)


def test_smcbench_keeps_updating_after_three_quarters():
    T = 40
    model, x, y, mask, opt, enforcer, rigl = setup("smcbench", update_every=10, total_steps=T)
    assert rigl.config.alpha == 0.5
    updated = []
    for step in range(1, T + 11):
        step_once(model, x, y, opt, enforcer)
        out = rigl.maybe_update(step)
        if out is not None:
            updated.append(step)
            for s in rigl.last_update:  # ceil(f * n_active), never 0
                f = smcbench_drop_fraction(step, total_steps=T)
                assert s.k == math.ceil(f * s.n_active) >= 1
            for n in WEIGHTS:
                assert int(out[n].sum()) == int(mask[n].sum())
    assert updated == [10, 20, 30, 40, 50]


def test_grad_none_raises_and_leaves_mask():
    model, x, y, mask, opt, enforcer, rigl = setup(update_every=1, end_step=10)
    step_once(model, x, y, opt, enforcer)
    model[2].weight.grad = None  # a tensor outside this step's graph: kept, the others update
    before = mask["2.weight"].clone()
    updated = rigl.maybe_update(1)
    assert torch.equal(updated["2.weight"], before)
    assert {u.name: u.k for u in rigl.last_update}["2.weight"] == 0
    assert any(u.k for u in rigl.last_update if u.name != "2.weight")
    mask = enforcer.mask
    opt.zero_grad(set_to_none=True)
    with pytest.raises(UserError, match="grad is None"):
        rigl.maybe_update(2)
    assert rigl.maybe_update(10) is None  # not an update step: grads not needed


@pytest.mark.parametrize("kwargs, match", [
    (dict(update_every=0, end_step=10), "update_every must be >= 1"),
    (dict(update_every=1.5, end_step=10), "update_every must be an integer"),
    (dict(update_every=1, end_step=0), "end_step must be >= 1"),
    (dict(update_every=1), "needs end_step"),
    (dict(update_every=1, end_step=10, alpha=0.0), r"alpha must be in \(0, 1\]"),
    (dict(update_every=1, end_step=10, alpha=1.5), r"alpha must be in \(0, 1\]"),
    (dict(update_every=1, end_step=10, variant="set"), "unknown RigL variant"),
    (dict(update_every=1, variant="smcbench"), "needs total_steps"),
    (dict(update_every=1, variant="smcbench", total_steps=10, end_step=5), "no end_step"),
    (dict(update_every=1, variant="smcbench", total_steps=0), "total_steps must be >= 1"),
])
def test_argument_validation(kwargs, match):
    model, x, y, mask = make()
    opt = torch.optim.AdamW(model.parameters())
    enforcer = MaskEnforcer(model, mask, opt)
    with pytest.raises(UserError, match=match) as err:
        RigL(model, enforcer, opt, **kwargs)
    assert "\n" not in str(err.value)


def test_optimizer_must_match_enforcer():
    model, x, y, mask = make()
    opt = torch.optim.AdamW(model.parameters())
    enforcer = MaskEnforcer(model, mask, opt)
    with pytest.raises(UserError, match="same optimizer"):
        RigL(model, enforcer, torch.optim.SGD(model.parameters(), lr=0.1), update_every=1, end_step=5)
    with pytest.raises(UserError, match="end_step must be >= 1"):
        rigl_drop_fraction(0, end_step=0)


# ------------------------------------------------------------------ with gradient masking
def forward_backward(model, x, y, opt):
    opt.zero_grad(set_to_none=True)
    nn.functional.mse_loss(model(x), y).backward()


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9),
], ids=["adamw", "sgd"])
def test_rigl_grows_by_the_dense_gradient_when_the_enforcer_masks_gradients(make_opt):
    model, x, y, mask = make()
    opt = make_opt(model.parameters())
    enforcer = MaskEnforcer(model, mask, opt, strategy="gradient")
    rigl = RigL(model, enforcer, opt, update_every=5, end_step=100)
    params = dict(model.named_parameters())
    for step in range(1, 5):
        forward_backward(model, x, y, opt)
        rigl.before_step(step)
        assert rigl._dense is None  # no copy off the update steps
        opt.step()
        enforcer.after_step()
        assert rigl.maybe_update(step) is None
    step = 5
    forward_backward(model, x, y, opt)
    dense = {n: params[n].grad.detach().clone() for n in WEIGHTS}
    rigl.before_step(step)
    for n in WEIGHTS:  # the optimizer gets masked gradients...
        assert torch.count_nonzero(params[n].grad[~mask[n]]) == 0
        assert torch.count_nonzero(dense[n][~mask[n]]) > 0
    opt.step()
    enforcer.after_step()
    opt.zero_grad(set_to_none=True)  # ...and growth does not need .grad any more
    before = {n: params[n].detach().clone() for n in WEIGHTS}
    new_mask = rigl.maybe_update(step)
    f = 0.3 / 2 * (1 + math.cos(math.pi * step / 100))
    moved = 0
    for n in WEIGHTS:
        old = mask[n].reshape(-1).tolist()
        n_active = sum(old)
        k = math.floor(f * n_active)
        dropped, grown = reference_update(before[n].reshape(-1).tolist(),
                                          dense[n].reshape(-1).tolist(), old, k)
        expected = (set(i for i in range(len(old)) if old[i]) - dropped) | grown
        new = new_mask[n].reshape(-1).tolist()
        assert set(i for i in range(len(new)) if new[i]) == expected  # grown by the dense |grad|
        assert sum(new) == n_active
        w = params[n].detach().reshape(-1)
        for i in grown - dropped:
            assert w[i].item() == 0.0
        moved += len(grown - dropped)
    assert moved > 0
    # train on under the new mask with gradient masking: pruned weights and state stay exactly 0,
    # grown ones learn
    for step in range(6, 10):
        forward_backward(model, x, y, opt)
        rigl.before_step(step)
        opt.step()
        enforcer.after_step()
        assert rigl.maybe_update(step) is None
    for n in WEIGHTS:
        m = new_mask[n]
        assert torch.count_nonzero(params[n][~m]) == 0
        for key, value in opt.state[params[n]].items():
            if torch.is_tensor(value) and value.shape == m.shape:
                assert torch.count_nonzero(value[~m]) == 0, key
        assert torch.count_nonzero(params[n][m]) == int(m.sum())


def test_rigl_refuses_to_grow_from_masked_gradients():
    model, x, y, mask = make()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    enforcer = MaskEnforcer(model, mask, opt, strategy="gradient")
    rigl = RigL(model, enforcer, opt, update_every=1, end_step=10)
    forward_backward(model, x, y, opt)
    enforcer.before_step()  # should have been rigl.before_step(1)
    opt.step()
    enforcer.after_step()
    with pytest.raises(UserError, match=r"call rigl\.before_step\(step\)"):
        rigl.maybe_update(1)
    assert enforcer.mask is mask
    rigl.before_step(2)  # a copy for step 2 is no copy for step 3
    with pytest.raises(UserError, match=r"call rigl\.before_step\(step\)"):
        rigl.maybe_update(3)
