import copy

import pytest
import torch
from torch import nn

from smctune.pruning import Mask, MaskEnforcer, compute_mask, prune, select_prunable


pytestmark = pytest.mark.usefixtures("single_thread")

OPTIMIZERS = {
    "adam_wd": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=0.01),
    "adam_amsgrad": lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True),
    "adamw_wd": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, weight_decay=1e-3),
}
STATE_KEYS = {"adam_wd": {"exp_avg", "exp_avg_sq"}, "adam_amsgrad": {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
              "adamw_wd": {"exp_avg", "exp_avg_sq"}, "sgd_momentum": {"momentum_buffer"}}


def make():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 24), nn.GELU(), nn.Linear(24, 24), nn.GELU(), nn.Linear(24, 4))
    x, y = torch.randn(32, 12), torch.randn(32, 4)
    return model, x, y


def train(model, x, y, opt, steps, enforcer=None, check=None):
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        if enforcer is not None:
            enforcer.apply()
        if check is not None:
            check()


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_pruned_weights_and_state_stay_exactly_zero(opt_name):
    model, x, y = make()
    mask = prune(model, "magnitude", 0.8)
    opt = OPTIMIZERS[opt_name](model.parameters())
    enforcer = MaskEnforcer(model, mask, opt)
    enforcer.apply()  # before the optimizer has any state
    params = select_prunable(model)
    kept_before = {p.name: p.param.detach().clone() for p in params}

    def check():
        for p in params:
            assert (p.param[~mask[p.name]] == 0).all()

    train(model, x, y, opt, 50, enforcer, check)
    for p in params:
        m = mask[p.name]
        assert torch.count_nonzero(p.param[~m]) == 0
        assert not torch.equal(p.param[m], kept_before[p.name][m])  # training did happen
        state = opt.state[p.param]
        assert STATE_KEYS[opt_name] <= set(state)
        for key in STATE_KEYS[opt_name]:
            assert torch.count_nonzero(state[key][~m]) == 0, key
            assert torch.count_nonzero(state[key][m]) > 0, key
    assert mask.sparsity() == pytest.approx(0.8, abs=1e-3)


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_without_enforcer_pruned_weights_move(opt_name):
    model, x, y = make()
    mask = prune(model, "magnitude", 0.8)
    opt = OPTIMIZERS[opt_name](model.parameters())
    train(model, x, y, opt, 5)
    moved = sum(int(torch.count_nonzero(p.param[~mask[p.name]])) for p in select_prunable(model))
    assert moved > 0.5 * mask.counts()[0]


def test_update_swaps_mask_and_zeroes_new_positions():
    model, x, y = make()
    params = select_prunable(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    enforcer = MaskEnforcer(model, Mask.ones(params), opt)
    train(model, x, y, opt, 3, enforcer)
    assert all(torch.count_nonzero(p.param) == p.numel for p in params)
    for target in (0.3, 0.6, 0.9):  # GMP-style ladder
        new = compute_mask(model, "magnitude", target, current=enforcer.mask)
        enforcer.update(new)
        assert enforcer.mask is new
        for p in params:
            m = new[p.name]
            assert torch.count_nonzero(p.param[~m]) == 0
            assert torch.count_nonzero(opt.state[p.param]["exp_avg"][~m]) == 0
            assert torch.count_nonzero(opt.state[p.param]["exp_avg_sq"][~m]) == 0
        train(model, x, y, opt, 3, enforcer)
    assert sum(int(torch.count_nonzero(p.param)) for p in params) == enforcer.mask.counts()[1] - enforcer.mask.counts()[0]


def test_enforcer_handles_tied_weights_once():
    torch.manual_seed(0)
    emb = nn.Embedding(10, 6)
    head = nn.Linear(6, 10, bias=False)
    head.weight = emb.weight
    model = nn.Sequential(emb, nn.Tanh(), head)
    mask = prune(model, "magnitude", 0.5)
    assert list(mask) == ["0.weight"] and mask.aliases["0.weight"] == ("2.weight",)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    enforcer = MaskEnforcer(model, mask, opt)
    tokens = torch.arange(10)
    for _ in range(10):
        opt.zero_grad()
        model(tokens).logsumexp(-1).sum().backward()
        opt.step()
        enforcer.apply()
    assert torch.count_nonzero(model[2].weight[~mask["0.weight"]]) == 0
    assert torch.count_nonzero(opt.state[emb.weight]["exp_avg"][~mask["0.weight"]]) == 0


# ------------------------------------------------------------------ gradient masking
# Every configuration of the optimizers gradient masking is proven for (enforce.py's docstring).
ZERO_PRESERVING = {
    "adamw_wd": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "adamw_amsgrad_foreach": lambda p: torch.optim.AdamW(p, lr=1e-2, amsgrad=True, foreach=True),
    "adamw_fused_maximize": lambda p: torch.optim.AdamW(p, lr=1e-2, fused=True, maximize=True),
    "adam_l2": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=0.01),
    "adam_amsgrad": lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True),
    "adam_decoupled_foreach": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=0.1,
                                                         decoupled_weight_decay=True, foreach=True),
    "sgd": lambda p: torch.optim.SGD(p, lr=1e-2),
    "sgd_momentum_wd": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, weight_decay=1e-3),
    "sgd_nesterov_foreach": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, nesterov=True,
                                                      weight_decay=1e-3, foreach=True),
    "sgd_dampening_fused": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, dampening=0.1,
                                                     fused=True),
}


def state_tensors(opt, param):
    return {k: v for k, v in opt.state[param].items()
            if k != "step" and torch.is_tensor(v) and v.shape == param.shape}


def assert_zero_at_pruned(model, mask, opt, *, state_expected=True):
    by_name = dict(model.named_parameters())
    for name, keep in mask.items():
        param = by_name[name]
        assert torch.count_nonzero(param[~keep]) == 0, name
        state = state_tensors(opt, param)
        assert state or not state_expected, name
        for key, value in state.items():
            assert torch.count_nonzero(value.to_dense()[~keep]) == 0, (name, key)


def train_protocol(model, x, y, opt, enforcer, steps, between=None):
    """The before_step/after_step protocol; ``between`` runs after optimizer.step(), before
    after_step() (to see what the optimizer alone did)."""
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), y).backward()
        enforcer.before_step()
        opt.step()
        if between is not None:
            between()
        enforcer.after_step()


@pytest.mark.parametrize("opt_name", sorted(ZERO_PRESERVING))
def test_gradient_masking_keeps_weights_and_every_state_tensor_exactly_zero(opt_name):
    model, x, y = make()
    mask = prune(model, "magnitude", 0.8)
    opt = ZERO_PRESERVING[opt_name](model.parameters())
    enforcer = MaskEnforcer(model, mask, opt, strategy="gradient")
    assert enforcer.masks_gradients
    kept_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # the optimizer alone keeps the zeros: checked right after every optimizer.step(), before
    # after_step() (which has nothing to do on this path)
    train_protocol(model, x, y, opt, enforcer, 30,
                   between=lambda: assert_zero_at_pruned(model, mask, opt, state_expected=False))
    assert enforcer.grads_masked
    by_name = dict(model.named_parameters())
    for name, keep in mask.items():
        assert not torch.equal(by_name[name][keep], kept_before[name][keep])  # training did happen
        assert torch.count_nonzero(by_name[name].grad[~keep]) == 0  # the gradients were masked
        if "sgd" not in opt_name or "momentum" in opt_name:
            assert any(torch.count_nonzero(v[keep]) > 0 for v in state_tensors(opt, by_name[name]).values())
    assert_zero_at_pruned(model, mask, opt, state_expected=opt_name != "sgd")


@pytest.mark.parametrize("opt_name", ["adamw_wd", "adam_amsgrad", "sgd_momentum_wd"])
def test_gradient_masking_trains_the_kept_weights_exactly_like_post_step_enforcement(opt_name):
    """Both strategies do the same arithmetic at kept positions (the updates are elementwise)."""
    runs = {}
    for strategy in ("gradient", "post_step"):
        model, x, y = make()
        mask = prune(model, "magnitude", 0.7)
        opt = ZERO_PRESERVING[opt_name](model.parameters())
        enforcer = MaskEnforcer(model, mask, opt, strategy=strategy)
        assert enforcer.masks_gradients == (strategy == "gradient")
        train_protocol(model, x, y, opt, enforcer, 20)
        assert_zero_at_pruned(model, mask, opt)
        runs[strategy] = (model, opt)
    (m1, o1), (m2, o2) = runs["gradient"], runs["post_step"]
    for (name, p1), p2 in zip(m1.named_parameters(), m2.parameters()):
        assert torch.equal(p1, p2), name  # -0.0 == 0.0
        for key, value in state_tensors(o1, p1).items():
            assert torch.equal(value, o2.state[p2][key]), (name, key)


def test_adamw_keeps_an_exact_zero_and_minus_zero_with_zero_grad_and_state():
    """AdamW's decoupled decay multiplies 0 (or -0.0): the weight stays == 0, the moments stay 0,
    with gradients exactly 0 there and large gradients elsewhere."""
    w = nn.Parameter(torch.tensor([0.0, -0.0, 1.0, -2.0]))
    opt = torch.optim.AdamW([w], lr=0.1, weight_decay=0.5, amsgrad=True)
    for _ in range(25):
        w.grad = torch.tensor([0.0, -0.0, 3.0, -1e3])
        opt.step()
        assert w[0] == 0 and w[1] == 0  # -0.0 is acceptable: it equals 0
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert opt.state[w][key][:2].tolist() == [0.0, 0.0], key  # ==, so -0.0 passes too
    assert w[2] != 1.0 and w[3] != -2.0


def test_gradient_masking_keeps_the_second_moment_exactly_zero_never_denormal():
    """Masked positions hold exact zeros in exp_avg_sq (never tiny decaying values, which would be
    denormal after enough steps)."""
    model, x, y = make()
    mask = prune(model, "magnitude", 0.8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.98))
    enforcer = MaskEnforcer(model, mask, opt, strategy="gradient")
    train_protocol(model, x, y, opt, enforcer, 10)
    tiny = torch.finfo(torch.float32).tiny
    for name, param in model.named_parameters():
        if name in mask:
            v = opt.state[param]["exp_avg_sq"][~mask[name]]
            assert torch.count_nonzero(v) == 0
            assert not ((v.abs() > 0) & (v.abs() < tiny)).any()


class MyAdamW(torch.optim.AdamW):
    """A subclass may change step(): not trusted to keep zeros at zero."""


FALLBACK = {
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=1e-1, weight_decay=1e-3),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.5, centered=True),
    "subclass": lambda p: MyAdamW(p, lr=1e-2),
}


@pytest.mark.parametrize("opt_name", sorted(FALLBACK))
def test_other_optimizers_fall_back_to_post_step_enforcement_and_keep_zeros(opt_name):
    from smctune.errors import UserError
    from smctune.pruning import gradient_masking_blocker

    model, x, y = make()
    mask = prune(model, "magnitude", 0.8)
    opt = FALLBACK[opt_name](model.parameters())
    assert gradient_masking_blocker(opt) is not None
    with pytest.raises(UserError, match="strategy 'gradient' needs a zero-preserving optimizer"):
        MaskEnforcer(model, mask, opt, strategy="gradient")
    enforcer = MaskEnforcer(model, mask, opt)
    assert not enforcer.masks_gradients
    moved = []

    def optimizer_moved_pruned_weights():  # the fallback really has work to do after the step
        moved.append(sum(int(torch.count_nonzero(p[~mask[n]])) for n, p in model.named_parameters()
                         if n in mask))

    train_protocol(model, x, y, opt, enforcer, 15, between=optimizer_moved_pruned_weights)
    assert not enforcer.grads_masked
    assert max(moved) > 0
    assert_zero_at_pruned(model, mask, opt)


def test_auto_strategy_choice():
    from smctune.pruning import gradient_masking_blocker

    model, x, y = make()
    mask = prune(model, "magnitude", 0.5)
    assert gradient_masking_blocker(None) is not None
    # 0/0 at pruned positions, and a division by the learning rate: not zero-preserving
    assert "eps" in gradient_masking_blocker(torch.optim.Adam(model.parameters(), eps=0.0))
    assert "capturable" in gradient_masking_blocker(torch.optim.AdamW(model.parameters(), capturable=True))
    assert not MaskEnforcer(model, mask).masks_gradients  # no optimizer: weights re-zeroed after
    for make_opt in ZERO_PRESERVING.values():
        opt = make_opt(model.parameters())
        assert gradient_masking_blocker(opt) is None
        assert MaskEnforcer(model, mask, opt, strategy="gradient").masks_gradients
        assert not MaskEnforcer(model, mask, opt, strategy="post_step").masks_gradients
    assert MaskEnforcer(model, mask, torch.optim.SGD(model.parameters(), lr=0.1)).masks_gradients
    # Adam/AdamW on CPU: see enforce.py's docstring (sqrt over exact zeros is slow there)
    assert not MaskEnforcer(model, mask, torch.optim.AdamW(model.parameters())).masks_gradients
    # ... except the fused kernel, which has no such penalty (and is what smctune's trials build)
    assert MaskEnforcer(model, mask, torch.optim.Adam(model.parameters(), fused=True)).masks_gradients
    from smctune.errors import UserError
    with pytest.raises(UserError, match="unknown enforcement strategy"):
        MaskEnforcer(model, mask, strategy="lazy")


def test_an_added_param_group_with_eps_zero_switches_to_post_step():
    model, x, y = make()
    mask = prune(model, "magnitude", 0.5)
    opt = torch.optim.Adam(list(model[0].parameters()), lr=1e-2)
    enforcer = MaskEnforcer(model, mask, opt, strategy="gradient")
    train_protocol(model, x, y, opt, enforcer, 2)
    assert enforcer.masks_gradients and enforcer.grads_masked
    opt.add_param_group({"params": list(model[2].parameters()) + list(model[4].parameters()),
                         "eps": 0.0})
    nn.functional.mse_loss(model(x), y).backward()
    enforcer.before_step()
    assert not enforcer.masks_gradients and not enforcer.grads_masked
    assert torch.count_nonzero(model[0].weight.grad[~mask["0.weight"]]) > 0  # left dense


def test_first_before_step_zeroes_existing_state_and_a_loaded_state_is_zeroed_again():
    """Gradient masking only keeps zeros: weights and state that are not 0 when it starts (an
    optimizer that trained dense, a loaded optimizer state) are zeroed by a full apply() first."""
    model, x, y = make()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train(model, x, y, opt, 3)  # dense: state everywhere
    dense_state = copy.deepcopy(opt.state_dict())
    mask = compute_mask(model, "magnitude", 0.6)  # weights not zeroed yet either
    enforcer = MaskEnforcer(model, mask, opt, strategy="gradient")
    train_protocol(model, x, y, opt, enforcer, 2)
    assert_zero_at_pruned(model, mask, opt)
    opt.load_state_dict(dense_state)  # non-zero moments at pruned positions again
    assert any(torch.count_nonzero(opt.state[p]["exp_avg"][~mask[n]]) > 0
               for n, p in model.named_parameters() if n in mask)
    train_protocol(model, x, y, opt, enforcer, 2)
    assert_zero_at_pruned(model, mask, opt)


def test_after_step_without_before_step_enforces_in_full():
    model, x, y = make()
    mask = prune(model, "magnitude", 0.8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    enforcer = MaskEnforcer(model, mask, opt, strategy="gradient")
    for _ in range(5):  # forgot before_step: the gradients were dense
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        enforcer.after_step()
        assert_zero_at_pruned(model, mask, opt)


def test_sparse_gradients_fall_back_to_post_step_for_that_step():
    torch.manual_seed(0)
    emb = nn.Embedding(30, 8, sparse=True)
    model = nn.Sequential(emb, nn.Linear(8, 1))
    mask = prune(model, "magnitude", 0.7)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    enforcer = MaskEnforcer(model, mask, opt)
    assert enforcer.masks_gradients
    tokens = torch.arange(30)
    for _ in range(5):
        opt.zero_grad()
        model(tokens).square().mean().backward()
        assert emb.weight.grad.is_sparse
        enforcer.before_step()  # masks the dense gradients, leaves the sparse one
        assert emb.weight.grad.is_sparse
        assert torch.count_nonzero(model[1].weight.grad[~mask["1.weight"]]) == 0
        opt.step()  # moves pruned embedding entries: after_step enforces in full
        enforcer.after_step()
        assert_zero_at_pruned(model, mask, opt)


def test_update_under_gradient_masking_zeroes_newly_pruned_positions():
    model, x, y = make()
    params = select_prunable(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, amsgrad=True)
    enforcer = MaskEnforcer(model, Mask.ones(params), opt, strategy="gradient")
    train_protocol(model, x, y, opt, enforcer, 3)
    for target in (0.3, 0.6, 0.9):  # GMP-style ladder
        enforcer.update(compute_mask(model, "magnitude", target, current=enforcer.mask))
        assert_zero_at_pruned(model, enforcer.mask, opt)
        train_protocol(model, x, y, opt, enforcer, 3,
                       between=lambda: assert_zero_at_pruned(model, enforcer.mask, opt))


def test_chunked_cpu_multiply_matches_mask_apply(monkeypatch):
    """apply() converts the mask piece by piece on CPU (enforce._mul): chunk edges, several dtypes,
    and tensors it multiplies directly (complex, non-contiguous) all end up zeroed exactly like
    Mask.apply."""
    from smctune.pruning import enforce

    monkeypatch.setattr(enforce, "_CHUNK", 7)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(9, 5), nn.Linear(5, 3).to(torch.bfloat16), nn.Linear(3, 2).double())
    mask = compute_mask(model, "random", 0.6)
    expected = copy.deepcopy(model)
    mask.apply(expected)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        opt.state[p]["momentum_buffer"] = torch.randn(p.shape[::-1], dtype=p.dtype).t()  # strided
        opt.state[p]["complex"] = torch.randn(p.shape, dtype=torch.complex64)
    enforcer = MaskEnforcer(model, mask, opt)
    enforcer.apply()
    for (name, p), q in zip(model.named_parameters(), expected.parameters()):
        assert torch.equal(p, q), name
        if name in mask:
            for key in ("momentum_buffer", "complex"):
                value = opt.state[p][key]
                assert torch.count_nonzero(value[~mask[name]]) == 0
                assert torch.count_nonzero(value[mask[name]]) == int(mask[name].sum())
    for name, p in model.named_parameters():
        p.grad = torch.ones_like(p)
    assert enforcer.mask_gradients()
    for name, p in model.named_parameters():
        if name in mask:
            assert torch.equal(p.grad != 0, mask[name])
