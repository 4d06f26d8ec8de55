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
