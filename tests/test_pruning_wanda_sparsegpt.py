"""Wanda and SparseGPT solvers against hand-written references (no Cholesky, no lazy updates)."""
import copy
import math

import pytest
import torch
from torch import nn

from smctune.errors import UserError
from smctune.pruning import Mask, compute_mask, num_pruned, prune, select_prunable
from smctune.pruning.calibration import spread_counts
from smctune.pruning.sparsegpt import sparsegpt_layer
from toy_models import TiedLM


pytestmark = pytest.mark.usefixtures("single_thread")


def correlated_inputs(n=2048, d=64, rank=8, seed=0):
    """Strongly correlated columns (rank-8 signal + small noise) with unequal, shuffled scales."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, rank, generator=g) @ torch.randn(rank, d, generator=g)
    x = x + 0.05 * torch.randn(n, d, generator=g)
    scales = torch.logspace(-1, 1, d)[torch.randperm(d, generator=g)]
    return x * scales


def as_batches(x, size=256):
    return [x[i:i + size] for i in range(0, x.shape[0], size)]


def forward_loss(model, batch):
    return model(batch).sum()


def linear(d_in=64, d_out=32, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Linear(d_in, d_out).to(dtype)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k


# -------------------------------------------------------------------- references
def ref_wanda_pruned(weight, x, sparsity):
    """|W|·‖X_j‖₂; each row prunes k//rows (+1 for the first k%rows rows) of its lowest scores."""
    score = weight.abs() * x.reshape(-1, x.shape[-1]).norm(dim=0)
    rows, cols = weight.shape
    k = num_pruned(weight.numel(), sparsity)
    pruned = torch.zeros(rows, cols, dtype=torch.bool)
    for r in range(rows):
        count = k // rows + (1 if r < k % rows else 0)
        pruned[r, torch.topk(score[r], count, largest=False).indices] = True
    return pruned


def ref_sparsegpt(weight, x, sparsity=None, nm=None, blocksize=16, percdamp=0.01):
    """Column-by-column OBS with an explicit inverse of the remaining sub-Hessian, in float64.

    For column j, F = {j, ..., cols-1} and Hinv = inv(H[F, F]): score w²/Hinv[0, 0], update
    W[:, F] -= (w_pruned / Hinv[0, 0]) ⊗ Hinv[0, :]. Unstructured masks are chosen at each block
    start (blocksize must divide cols; equal per-block counts), N:M masks at each group start.
    """
    w = weight.detach().double().clone()
    x = x.detach().reshape(-1, x.shape[-1]).double()
    h = 2 * x.T @ x / x.shape[0]
    h += percdamp * h.diagonal().mean() * torch.eye(h.shape[0], dtype=torch.float64)
    rows, cols = w.shape
    inv_rest = [torch.linalg.inv(h[j:, j:]) for j in range(cols)]
    diag = torch.tensor([inv_rest[j][0, 0] for j in range(cols)], dtype=torch.float64)
    pruned = torch.zeros(rows, cols, dtype=torch.bool)
    if nm is None:
        per_block = num_pruned(w.numel(), sparsity) // (cols // blocksize)
    for j in range(cols):
        if nm is None and j % blocksize == 0:
            score = (w[:, j:j + blocksize] ** 2 / diag[j:j + blocksize]).reshape(-1)
            block = torch.zeros(rows * blocksize, dtype=torch.bool)
            block[torch.topk(score, per_block, largest=False).indices] = True
            pruned[:, j:j + blocksize] = block.view(rows, blocksize)
        if nm is not None and j % nm[1] == 0:
            score = w[:, j:j + nm[1]] ** 2 / diag[j:j + nm[1]]
            group = torch.zeros(rows, nm[1], dtype=torch.bool)
            group.scatter_(1, torch.topk(score, nm[0], dim=1, largest=False).indices, True)
            pruned[:, j:j + nm[1]] = group
        removed = torch.where(pruned[:, j], w[:, j], 0.0)
        w[:, j:] -= torch.outer(removed / inv_rest[j][0, 0], inv_rest[j][0, :])
    w[pruned] = 0
    return pruned, w


def recon_error(w_ref, w_new, x):
    return float((x @ w_ref.T - x @ w_new.T).norm())


# -------------------------------------------------------------------- reconstruction quality
@pytest.mark.parametrize("pattern", [None, "2:4"])
def test_reconstruction_error_sparsegpt_below_wanda_below_magnitude(pattern):
    x = correlated_inputs()
    model = linear()
    dense = model.weight.detach().clone()
    errors = {}
    for crit in ("magnitude", "wanda", "sparsegpt"):
        m = copy.deepcopy(model)
        data = {} if crit == "magnitude" else {"batches": as_batches(x), "loss_fn": forward_loss}
        prune(m, crit, 0.5, scope="layerwise", pattern=pattern, **data)
        assert int((m.weight == 0).sum()) == dense.numel() // 2
        errors[crit] = recon_error(dense, m.weight.detach(), x)
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"], errors


# -------------------------------------------------------------------- Wanda
def test_wanda_matches_hand_computed_row_topk():
    torch.manual_seed(1)
    model = nn.Linear(10, 6)
    x = torch.randn(3, 5, 10) * torch.linspace(0.2, 3.0, 10)     # (batch, seq, features)
    for sparsity in (0.3, 0.5, 0.75):
        mask = compute_mask(model, "wanda", sparsity, batches=[x[:2], x[2:]],
                            loss_fn=forward_loss, include=[r"weight"])
        assert torch.equal(~mask["weight"], ref_wanda_pruned(model.weight.detach(), x, sparsity))
        assert int((~mask["weight"]).sum()) == num_pruned(60, sparsity)


def test_wanda_ignores_scope_and_group_options():
    x = correlated_inputs(n=256)
    model = linear()
    data = {"batches": as_batches(x), "loss_fn": forward_loss}
    row = compute_mask(model, "wanda", 0.5, scope="global", **data)["weight"]
    assert torch.equal(row, compute_mask(model, "wanda", 0.5, scope="erk", **data)["weight"])
    assert torch.equal(~row, ref_wanda_pruned(model.weight.detach(), x, 0.5))
    score = model.weight.detach().abs() * x.norm(dim=0)
    layer = compute_mask(model, "wanda", 0.5, options={"group": "layer"}, **data)["weight"]
    expect = torch.zeros(score.numel(), dtype=torch.bool)
    expect[torch.topk(score.reshape(-1), 1024, largest=False).indices] = True
    assert torch.equal(~layer, expect.view(score.shape))


def test_wanda_global_group_and_tied_weight():
    model = TiedLM(vocab=20, d=8)
    tokens = [torch.randint(0, 20, (3, 7), generator=torch.Generator().manual_seed(i))
              for i in range(2)]
    mask = compute_mask(model, "wanda", 0.6, batches=tokens, loss_fn=forward_loss,
                        options={"group": "global"})
    with torch.no_grad():
        body_in = torch.cat([model.embed(t).reshape(-1, 8) for t in tokens])
        head_in = model.norm(torch.relu(model.body(body_in)))
    scores = torch.cat([(model.embed.weight.abs() * head_in.norm(dim=0)).reshape(-1),
                        (model.body.weight.abs() * body_in.norm(dim=0)).reshape(-1)]).detach()
    expect = torch.zeros(scores.numel(), dtype=torch.bool)
    expect[torch.topk(scores, num_pruned(scores.numel(), 0.6), largest=False).indices] = True
    got = torch.cat([(~mask["embed.weight"]).reshape(-1), (~mask["body.weight"]).reshape(-1)])
    assert list(mask.keys()) == ["embed.weight", "body.weight"]
    assert torch.equal(got, expect)


def two_layer(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 48), nn.Tanh(), nn.Linear(48, 32))


@pytest.mark.parametrize("sparsity, pattern", [(0.9, None), (0.5, "2:4")])
def test_wanda_sequential_sees_pruned_first_layer(sparsity, pattern):
    x = correlated_inputs(n=512, seed=4)
    model = two_layer()
    before = snapshot(model)
    data = {"pattern": pattern, "batches": as_batches(x), "loss_fn": forward_loss}
    mask = compute_mask(model, "wanda", sparsity, options={"sequential": True}, **data)
    assert_unchanged(model, before)
    dense = compute_mask(model, "wanda", sparsity, **data)
    assert torch.equal(mask["0.weight"], dense["0.weight"])
    with torch.no_grad():
        hidden = torch.tanh(x @ model[0].weight.masked_fill(~mask["0.weight"], 0).T + model[0].bias)
    w2 = model[2].weight.detach()
    if pattern is None:
        expect = ref_wanda_pruned(w2, hidden, sparsity)
    else:
        score = (w2.abs() * hidden.norm(dim=0)).reshape(-1, 4)
        expect = torch.zeros(score.shape, dtype=torch.bool)
        expect.scatter_(1, torch.topk(score, 2, dim=1, largest=False).indices, True)
        expect = expect.view(w2.shape)
    assert torch.equal(~mask["2.weight"], expect)
    assert not torch.equal(mask["2.weight"], dense["2.weight"])   # the test can tell them apart


@pytest.mark.parametrize("crit", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_nm_groups_hold_exactly_n_pruned(crit, pattern):
    n, m = map(int, pattern.split(":"))
    x = correlated_inputs(n=512)
    model = two_layer()
    mask = compute_mask(model, crit, n / m, pattern=pattern, batches=as_batches(x),
                        loss_fn=forward_loss)
    for name in ("0.weight", "2.weight"):
        per_group = (~mask[name]).reshape(-1, m).sum(dim=1)
        assert torch.all(per_group == n), name


@pytest.mark.parametrize("crit", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_exact_counts_per_layer_and_model_untouched(crit, sparsity):
    x = correlated_inputs(n=512)
    model = two_layer()
    before = snapshot(model)
    mask = compute_mask(model, crit, sparsity, batches=as_batches(x), loss_fn=forward_loss,
                        options={"blocksize": 24} if crit == "sparsegpt" else None)
    assert_unchanged(model, before)
    for p in select_prunable(model):
        assert int((~mask[p.name]).sum()) == num_pruned(p.numel, sparsity), p.name
    if crit == "wanda":                   # row rule: every row prunes floor(k/rows) or one more
        for p in select_prunable(model):
            per_row = (~mask[p.name]).sum(dim=1)
            k, rows = num_pruned(p.numel, sparsity), p.shape[0]
            assert per_row.tolist() == [k // rows + (r < k % rows) for r in range(rows)]


@pytest.mark.parametrize("crit", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", [None, "2:4"])
def test_current_positions_stay_pruned(crit, pattern):
    x = correlated_inputs(n=512)
    model = two_layer()
    g = torch.Generator().manual_seed(3)
    keep = {}
    for p in select_prunable(model):
        if pattern is None:      # 30 % random, with row 0 of the first layer far beyond its share
            k = torch.rand(p.shape, generator=g) > 0.3
            if p.name == "0.weight":
                k[0, :60] = False
        else:                    # one pruned entry in some groups of 4
            k = torch.ones(p.shape, dtype=torch.bool)
            k.view(-1, 4)[::3, 1] = False
        keep[p.name] = k
    current = Mask(keep)
    mask = compute_mask(model, crit, 0.5, pattern=pattern, batches=as_batches(x),
                        loss_fn=forward_loss, current=current)
    for p in select_prunable(model):
        assert not torch.any(mask[p.name] & ~current[p.name]), p.name
        assert int((~mask[p.name]).sum()) == num_pruned(p.numel, 0.5)


def test_spread_counts():
    assert spread_counts(10, [4, 4, 4]) == [4, 3, 3]
    assert spread_counts(6, [4, 4, 4], floors=[4, 0, 0]) == [4, 1, 1]
    assert spread_counts(7, [4, 4, 4], floors=[4, 0, 0]) == [4, 2, 1]
    assert spread_counts(10, [2, 4, 4]) == [2, 4, 4]
    with pytest.raises(UserError, match="may only increase"):
        spread_counts(3, [4, 4], floors=[2, 2])


# -------------------------------------------------------------------- SparseGPT
@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_sparsegpt_layer_matches_explicit_obs_reference(nm):
    x = correlated_inputs(n=1024).double()
    model = linear(dtype=torch.float64)
    h = 2 * x.T @ x / x.shape[0]
    count = num_pruned(model.weight.numel(), 0.5)
    pruned, new = sparsegpt_layer(model.weight, h, count, nm=nm, blocksize=16)
    ref_pruned, ref_new = ref_sparsegpt(model.weight, x, 0.5, nm=nm, blocksize=16)
    assert torch.equal(pruned, ref_pruned)
    torch.testing.assert_close(new, ref_new, rtol=1e-7, atol=1e-9)
    assert torch.all(new[pruned] == 0)


def test_prune_writes_sparsegpt_weights_and_exact_zeros():
    x = correlated_inputs(n=1024)
    model = linear(dtype=torch.float64)
    dense = model.weight.detach().clone()
    bias = model.bias.detach().clone()
    mask = prune(model, "sparsegpt", 0.5, batches=as_batches(x.double()), loss_fn=forward_loss,
                 options={"blocksize": 16, "dtype": "float64"})
    ref_pruned, ref_new = ref_sparsegpt(dense, x, 0.5, blocksize=16)
    assert torch.equal(~mask["weight"], ref_pruned)
    assert torch.all(model.weight[~mask["weight"]] == 0)
    torch.testing.assert_close(model.weight.detach(), ref_new, rtol=1e-7, atol=1e-9)
    assert not torch.equal(model.weight[mask["weight"]], dense[mask["weight"]])  # updated
    assert torch.equal(model.bias, bias)


def test_sparsegpt_second_layer_sees_pruned_first_layer():
    x = correlated_inputs(n=1024, seed=5).double()
    model = two_layer().double()
    dense = copy.deepcopy(model)
    data = {"batches": as_batches(x), "loss_fn": forward_loss}
    opts = {"blocksize": 16, "dtype": "float64"}
    before = snapshot(model)
    mask = compute_mask(model, "sparsegpt", 0.5, options=opts, **data)
    assert_unchanged(model, before)
    prune(model, "sparsegpt", 0.5, options=opts, **data)

    p1, w1 = ref_sparsegpt(dense[0].weight, x, 0.5, blocksize=16)
    hidden = torch.tanh(x @ w1.T + dense[0].bias)              # pruned + updated layer 1
    p2, w2 = ref_sparsegpt(dense[2].weight, hidden, 0.5, blocksize=16)
    assert torch.equal(~mask["0.weight"], p1) and torch.equal(~mask["2.weight"], p2)
    torch.testing.assert_close(model[0].weight.detach(), w1, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(model[2].weight.detach(), w2, rtol=1e-7, atol=1e-9)

    dense_hidden = torch.tanh(dense[0](x))                     # what a non-sequential run sees
    _, w2_dense = ref_sparsegpt(dense[2].weight, dense_hidden, 0.5, blocksize=16)
    assert not torch.allclose(w2, w2_dense, rtol=1e-4, atol=1e-6)
    oneshot = copy.deepcopy(dense)
    prune(oneshot, "sparsegpt", 0.5, options={**opts, "sequential": False}, **data)
    torch.testing.assert_close(oneshot[2].weight.detach(), w2_dense, rtol=1e-7, atol=1e-9)


def test_sparsegpt_layer_order_is_forward_order():
    """Modules registered in reverse order: layer 'first' is called first and solved first."""

    class Reversed(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.second = nn.Linear(48, 32).double()
            self.first = nn.Linear(64, 48).double()

        def forward(self, x):
            return self.second(torch.tanh(self.first(x)))

    x = correlated_inputs(n=512, seed=2).double()
    model = Reversed()
    dense = copy.deepcopy(model)
    prune(model, "sparsegpt", 0.5, batches=as_batches(x), loss_fn=forward_loss,
          options={"blocksize": 16, "dtype": "float64"})
    _, w1 = ref_sparsegpt(dense.first.weight, x, 0.5, blocksize=16)
    _, w2 = ref_sparsegpt(dense.second.weight, torch.tanh(x @ w1.T + dense.first.bias), 0.5,
                          blocksize=16)
    torch.testing.assert_close(model.second.weight.detach(), w2, rtol=1e-7, atol=1e-9)


def test_sparsegpt_dead_inputs_and_cholesky_retry():
    x = correlated_inputs(n=512)
    x[:, 5] = 0
    model = linear()
    mask = prune(model, "sparsegpt", 0.5, batches=as_batches(x), loss_fn=forward_loss)
    assert torch.all(model.weight[:, 5] == 0)
    assert int((~mask["weight"]).sum()) == 1024
    few = torch.randn(4, 64)                  # rank 4: H singular without damping
    with pytest.warns(RuntimeWarning, match="not positive definite"):
        compute_mask(linear(), "sparsegpt", 0.5, batches=[few], loss_fn=forward_loss,
                     options={"percdamp": 0.0})
    with pytest.raises(UserError, match="Cholesky.*'bad'"):
        sparsegpt_layer(torch.randn(4, 8), -torch.eye(8), 16, name="bad")


def test_train_mode_buffers_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.Linear(32, 8)).train()
    before = snapshot(model)
    x = correlated_inputs(n=256)
    for crit in ("wanda", "sparsegpt"):
        compute_mask(model, crit, 0.5, batches=as_batches(x, 64), loss_fn=forward_loss)
        assert_unchanged(model, before)
        assert model.training


# -------------------------------------------------------------------- fallbacks and errors
class EmbedLinear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(12, 8)
        self.proj = nn.Linear(8, 8)

    def forward(self, tokens):
        return self.proj(self.embed(tokens))


def test_embeddings_fall_back_to_magnitude():
    model = EmbedLinear()
    tokens = [torch.randint(0, 12, (4, 6), generator=torch.Generator().manual_seed(i))
              for i in range(3)]
    data = {"batches": tokens, "loss_fn": forward_loss}
    emb = model.embed.weight.detach()
    wanda = compute_mask(model, "wanda", 0.5, **data)
    assert torch.equal(~wanda["embed.weight"], ref_wanda_pruned(emb, torch.ones(1, 8), 0.5))
    before = snapshot(model)
    sgpt = compute_mask(model, "sparsegpt", 0.5, **data)
    assert_unchanged(model, before)
    expect = torch.zeros(emb.numel(), dtype=torch.bool)
    expect[torch.topk(emb.abs().reshape(-1), 48, largest=False).indices] = True
    assert torch.equal(~sgpt["embed.weight"], expect.view(emb.shape))
    # the Linear layer is calibrated on the pruned embedding's outputs (sequential)
    pruned_emb = emb.masked_fill(~sgpt["embed.weight"], 0)
    hidden = torch.cat([pruned_emb[t].reshape(-1, 8) for t in tokens])
    ref_pruned, _ = ref_sparsegpt(model.proj.weight, hidden, 0.5, blocksize=8)
    assert torch.equal(~sgpt["proj.weight"], ref_pruned)


@pytest.mark.parametrize("crit, options, match", [
    ("wanda", {"group": "column"}, "group"),
    ("wanda", {"sequential": "yes"}, "sequential"),
    ("wanda", {"group": "global", "sequential": True}, "sequential"),
    ("wanda", {"blocksize": 4}, "does not take"),
    ("sparsegpt", {"percdamp": -1}, "percdamp"),
    ("sparsegpt", {"percdamp": math.nan}, "percdamp"),
    ("sparsegpt", {"blocksize": 0}, "blocksize"),
    ("sparsegpt", {"blocksize": 2.5}, "blocksize"),
    ("sparsegpt", {"dtype": "float16"}, "dtype"),
    ("sparsegpt", {"group": "row"}, "does not take"),
])
def test_bad_options(crit, options, match):
    x = correlated_inputs(n=64)
    with pytest.raises(UserError, match=match):
        compute_mask(linear(), crit, 0.5, batches=[x], loss_fn=forward_loss, options=options)


@pytest.mark.parametrize("crit", ["wanda", "sparsegpt"])
def test_missing_or_empty_calibration(crit):
    model = linear()
    x = correlated_inputs(n=64)
    for kwargs in ({}, {"batches": [x]}, {"loss_fn": forward_loss},
                   {"batches": [], "loss_fn": forward_loss},
                   {"batches": x, "loss_fn": forward_loss},
                   {"batches": [x[:0]], "loss_fn": forward_loss},
                   {"batches": [x], "loss_fn": lambda m, b: None}):
        with pytest.raises(UserError) as err:
            compute_mask(model, crit, 0.5, **kwargs)
        assert "\n" not in str(err.value)
