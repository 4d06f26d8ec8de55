import math

import pytest
import torch
from torch import nn

from smctune.errors import UserError
from smctune.pruning import Mask, compute_mask, num_pruned, prune, select_prunable


pytestmark = pytest.mark.usefixtures("single_thread")


class Bag(nn.Module):
    """Bare parameters of the given shapes, named w0, w1, ... (random normal values)."""

    def __init__(self, shapes, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        for i, shape in enumerate(shapes):
            setattr(self, f"w{i}", nn.Parameter(torch.randn(shape, generator=g)))


MIXES = [
    [(64, 32), (32, 64), (10, 64)],
    [(16, 3, 3, 3), (32, 16, 3, 3), (64, 32), (10, 64)],
    [(200, 100), (7, 5), (100, 50, 1), (3, 200)],
]
SPARSITIES = [0.1, 0.5, 0.8, 0.9, 0.95, 0.99]


def raw_weight(shape):
    return sum(shape) / math.prod(shape)


def reference_erk(shapes, density):
    """Independent reference: bisection on eps for sum_l min(1, eps*raw_l)*n_l = density*N."""
    raws = [raw_weight(s) for s in shapes]
    ns = [math.prod(s) for s in shapes]
    target = density * sum(ns)
    lo, hi = 0.0, 1.0
    while sum(min(1.0, hi * r) * n for r, n in zip(raws, ns)) < target:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if sum(min(1.0, mid * r) * n for r, n in zip(raws, ns)) < target:
            lo = mid
        else:
            hi = mid
    return [min(1.0, hi * r) for r in raws]


def pruned_per_layer(mask, model):
    return [int((~mask[p.name]).sum()) for p in select_prunable(model)]


# ---------------------------------------------------------------------------------------- ERK
@pytest.mark.parametrize("shapes", MIXES)
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_erk_exact_total_and_erk_proportions(shapes, sparsity):
    model = Bag(shapes)
    mask = compute_mask(model, "magnitude", sparsity, scope="erk")
    total = sum(math.prod(s) for s in shapes)
    assert mask.counts() == (num_pruned(total, sparsity), total)
    ref = reference_erk(shapes, 1 - sparsity)
    kept = [math.prod(s) - k for s, k in zip(shapes, pruned_per_layer(mask, model))]
    for shape, d_ref, k in zip(shapes, ref, kept):
        n = math.prod(shape)
        if d_ref >= 1 - 1e-9:
            assert k == n                                   # saturated layers stay dense
        else:
            # largest remainder: within 1 entry, 1.5 if the global rounding went down
            assert abs(k - d_ref * n) <= 1.5 + 1e-6
    # ratio of densities of two non-saturated layers follows the ratio of raw ERK weights
    free = [i for i, d in enumerate(ref) if d < 1 - 1e-9]
    for a, b in zip(free, free[1:]):
        na, nb = math.prod(shapes[a]), math.prod(shapes[b])
        if kept[a] >= 20 and kept[b] >= 20:
            ratio = (kept[a] / na) / (kept[b] / nb)
            expected = raw_weight(shapes[a]) / raw_weight(shapes[b])
            bound = (1 + 1.5 / kept[a]) * (1 + 1.5 / kept[b]) - 1 + 1e-9
            assert abs(ratio / expected - 1) <= bound


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9])
def test_erk_prunes_lowest_scores_within_each_layer(sparsity):
    shapes = MIXES[1]
    model = Bag(shapes, seed=3)
    mask = compute_mask(model, "magnitude", sparsity, scope="erk")
    for p in select_prunable(model):
        pruned = ~mask[p.name].reshape(-1)
        k = int(pruned.sum())
        order = torch.sort(p.param.detach().abs().reshape(-1), stable=True).indices
        expected = torch.zeros_like(pruned)
        expected[order[:k]] = True
        assert torch.equal(pruned, expected)


def test_erk_small_layer_saturates_and_total_stays_exact():
    shapes = [(512, 256), (256, 512), (4, 3)]               # raw(4x3) = 7/12: dense below ~0.58*eps
    model = Bag(shapes)
    sparsity = 0.9
    ref = reference_erk(shapes, 1 - sparsity)
    assert ref[2] == 1.0 and ref[0] < 1 and ref[1] < 1
    mask = compute_mask(model, "magnitude", sparsity, scope="erk")
    assert mask["w2"].all()                                  # density 1.0, nothing pruned
    total = sum(math.prod(s) for s in shapes)
    assert mask.counts()[0] == num_pruned(total, sparsity)
    # naive ERK without the rebalancing loop would give the big layers too little density
    raws = [raw_weight(s) for s in shapes]
    eps_naive = (1 - sparsity) * total / sum(r * math.prod(s) for r, s in zip(raws, shapes))
    assert mask["w0"].float().mean().item() > eps_naive * raws[0] + 1e-4


def test_erk_with_current_is_monotone():
    shapes = MIXES[1]
    model = Bag(shapes, seed=1)
    mask = None
    for sparsity in [0.3, 0.5, 0.7, 0.9]:
        new = prune(model, "magnitude", sparsity, scope="erk", current=mask)
        total = sum(math.prod(s) for s in shapes)
        assert new.counts()[0] == num_pruned(total, sparsity)
        if mask is not None:
            for name in mask:
                assert not (new[name] & ~mask[name]).any()  # pruned stays pruned
        with torch.no_grad():                        # "retrain": pruned weights return large
            for p in model.parameters():
                p.add_(torch.where(p == 0, torch.full_like(p, 100.0), torch.zeros_like(p)))
        mask = new


def test_erk_current_above_layer_target_is_an_error():
    model = Bag(MIXES[0])
    current = compute_mask(model, "magnitude", 0.9, scope="layerwise")
    # at 0.5 ERK gives the smallest-raw layer fewer than 90% pruned
    with pytest.raises(UserError, match="sparsity may only increase"):
        compute_mask(model, "magnitude", 0.5, scope="erk", current=current)


def test_erk_zero_sparsity_is_dense_and_scalar_is_rejected():
    model = Bag(MIXES[1])
    assert compute_mask(model, "magnitude", 0.0, scope="erk").counts()[0] == 0
    model.s = nn.Parameter(torch.tensor(1.0))
    with pytest.raises(UserError, match="scalar"):
        compute_mask(model, "magnitude", 0.5, scope="erk", include=[r"^s$", r"^w"])


def test_erk_one_dim_tensor_follows_formula():
    model = Bag([(64, 64), (64,)])
    mask = compute_mask(model, "magnitude", 0.5, scope="erk", include=[r"^w"])
    assert mask["w1"].all()                                  # raw = 1: saturates, stays dense
    assert mask.counts()[0] == num_pruned(64 * 64 + 64, 0.5)


# ---------------------------------------------------------------------------------------- N:M
def reference_nm(scores, n, m):
    """Loop over every group of m along the last dim; the n lowest (stable) are pruned."""
    rows = scores.reshape(-1, scores.shape[-1])
    pruned = torch.zeros(rows.shape, dtype=torch.bool)
    for r in range(rows.shape[0]):
        for start in range(0, rows.shape[1], m):
            group = rows[r, start:start + m]
            low = torch.topk(group, n, largest=False).indices
            pruned[r, start + low] = True
    return pruned.view(scores.shape)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_nm_groups_exact_and_lowest(n, m):
    model = Bag([(12, 32), (6, 16, 3, 8), (5, 24)], seed=2)
    mask = compute_mask(model, "magnitude", n / m, pattern=f"{n}:{m}")
    for p in select_prunable(model):
        pruned = ~mask[p.name]
        per_group = pruned.reshape(-1, m).sum(dim=1)
        assert (per_group == n).all()
        assert torch.equal(pruned, reference_nm(p.param.detach().abs(), n, m))


def test_nm_scope_is_irrelevant():
    model = Bag([(8, 16)], seed=4)
    masks = [compute_mask(model, "magnitude", 0.5, scope=s, pattern="2:4")
             for s in ("global", "layerwise", "erk")]
    assert masks[0] == masks[1] == masks[2]


def test_prune_with_pattern_zeroes_exactly_those_weights():
    model = Bag([(8, 16), (4, 8)], seed=5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask = prune(model, "magnitude", 0.5, pattern="2:4")
    for name, p in model.named_parameters():
        expected_pruned = reference_nm(before[name].abs(), 2, 4)
        assert torch.equal(~mask[name], expected_pruned)
        assert torch.equal(p.detach(), torch.where(expected_pruned, 0.0, before[name]))


def test_nm_errors():
    model = Bag([(8, 16), (4, 6)])
    with pytest.raises(UserError, match="sparsity"):
        compute_mask(model, "magnitude", 0.6, pattern="2:4", include=[r"^w0$"])
    with pytest.raises(UserError, match="w1"):
        compute_mask(model, "magnitude", 0.5, pattern="2:4")
    for bad in ["3:2", "a:b", "0:4", "4:4", "2-4", "", 2]:
        with pytest.raises(UserError, match="pattern"):
            compute_mask(model, "magnitude", 0.5, pattern=bad, include=[r"^w0$"])


def test_nm_current_counts_towards_group():
    model = Bag([(4, 8)], seed=6)
    keep = torch.ones(4, 8, dtype=torch.bool)
    keep[0, 0] = False                                      # one already pruned in the first group
    with torch.no_grad():
        model.w0[0, 0] = 100.0                              # large now: only `current` prunes it
    mask = compute_mask(model, "magnitude", 0.5, pattern="2:4", current=Mask({"w0": keep}))
    pruned = ~mask["w0"]
    assert pruned[0, 0] and (pruned.reshape(-1, 4).sum(dim=1) == 2).all()
    scores = model.w0.detach().abs().clone()
    scores[0, 0] = -math.inf
    assert torch.equal(pruned, reference_nm(scores, 2, 4))
    keep[0, 1] = keep[0, 2] = False                          # three of four already pruned
    with pytest.raises(UserError, match="more than 2"):
        compute_mask(model, "magnitude", 0.5, pattern="2:4", current=Mask({"w0": keep}))
