"""SNIP (|g ⊙ w|) and gradient-magnitude (|Σg|) criteria against hand-computed references."""
import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from smctune.errors import UserError
from smctune.pruning import CRITERIA, compute_mask, num_pruned, prune, select_prunable


pytestmark = pytest.mark.usefixtures("single_thread")

SPARSITIES = [0.2, 0.5, 0.9]


def mlp(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    layers = [nn.Linear(6, 10), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, 4)]
    return nn.Sequential(*layers).double()


def make_batch(seed, n=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (n,), generator=g)
    return x, y


def ce_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def mse_loss(model, batch):
    x, y = batch
    return F.mse_loss(model(x), F.one_hot(y, 4).double())


def reference_grads(model, batches, loss_fn):
    """Gradients of the summed losses by plain ``backward()`` on a deep copy, by parameter name."""
    ref = copy.deepcopy(model)
    ref.zero_grad(set_to_none=True)
    for batch in batches:
        loss_fn(ref, batch).backward()          # .grad accumulates = sum over batches
    return {name: p.grad.detach().clone() for name, p in ref.named_parameters() if p.ndim >= 2}


def reference_kept_global(scores, sparsity):
    """Keep the top (n - k) of the concatenated scores (scores are tie-free)."""
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    k = num_pruned(flat.numel(), sparsity)
    kept = torch.zeros(flat.numel(), dtype=torch.bool)
    kept[torch.topk(flat, flat.numel() - k).indices] = True
    out, offset = {}, 0
    for name, s in scores.items():
        out[name] = kept[offset:offset + s.numel()].view(s.shape)
        offset += s.numel()
    return out


def reference_kept_layerwise(scores, sparsity):
    out = {}
    for name, s in scores.items():
        flat = s.reshape(-1)
        order = torch.sort(flat, descending=True).indices
        kept = torch.zeros(flat.numel(), dtype=torch.bool)
        kept[order[:flat.numel() - num_pruned(flat.numel(), sparsity)]] = True
        out[name] = kept.view(s.shape)
    return out


REFERENCE_KEPT = {"global": reference_kept_global, "layerwise": reference_kept_layerwise}


def assert_tie_free(scores):
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    assert torch.unique(flat).numel() == flat.numel()


def assert_mask_equals(mask, expected):
    assert set(mask.keys()) == set(expected)
    for name, kept in expected.items():
        assert torch.equal(mask[name].cpu(), kept), name


@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("loss_fn", [ce_loss, mse_loss], ids=["ce", "mse"])
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_snip_matches_hand_computed_topk(scope, loss_fn, sparsity):
    model = mlp(1)
    batch = make_batch(0)
    grads = reference_grads(model, [batch], loss_fn)
    weights = {name: p.detach() for name, p in model.named_parameters() if p.ndim >= 2}
    scores = {name: (grads[name] * weights[name]).abs() for name in grads}
    assert_tie_free(scores)
    mask = compute_mask(model, "snip", sparsity, scope=scope, batches=[batch], loss_fn=loss_fn)
    assert_mask_equals(mask, REFERENCE_KEPT[scope](scores, sparsity))


@pytest.mark.parametrize("criterion", ["snip", "gradient"])
def test_gradients_are_summed_over_batches(criterion):
    model = mlp(2)
    batches = [make_batch(10), make_batch(11, n=9)]
    grads = reference_grads(model, batches, ce_loss)
    weights = {name: p.detach() for name, p in model.named_parameters() if p.ndim >= 2}
    if criterion == "snip":
        scores = {name: (grads[name] * weights[name]).abs() for name in grads}
    else:
        scores = {name: grads[name].abs() for name in grads}
    assert_tie_free(scores)
    params = select_prunable(model)
    got = CRITERIA[criterion](params, model=model, batches=iter(batches), loss_fn=ce_loss,
                              generator=None)
    for name in scores:
        torch.testing.assert_close(got[name].double(), scores[name], rtol=1e-10, atol=1e-14)
    # The two-batch sum differs from either single batch (so the test above is not vacuous) ...
    one = reference_grads(model, batches[:1], ce_loss)
    assert not torch.allclose(one["0.weight"], grads["0.weight"])
    # ... and drives the mask.
    for sparsity in SPARSITIES:
        mask = compute_mask(model, criterion, sparsity, batches=batches, loss_fn=ce_loss)
        assert_mask_equals(mask, reference_kept_global(scores, sparsity))


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_gradient_criterion_matches_hand_computed_topk(sparsity):
    model = mlp(3)
    batch = make_batch(5)
    grads = reference_grads(model, [batch], mse_loss)
    scores = {name: g.abs() for name, g in grads.items()}
    assert_tie_free(scores)
    mask = compute_mask(model, "gradient", sparsity, batches=[batch], loss_fn=mse_loss)
    assert_mask_equals(mask, reference_kept_global(scores, sparsity))
    mask = compute_mask(model, "gradient", sparsity, scope="layerwise", batches=[batch],
                        loss_fn=mse_loss)
    assert_mask_equals(mask, reference_kept_layerwise(scores, sparsity))


@pytest.mark.parametrize("criterion", ["snip", "gradient"])
@pytest.mark.parametrize("preset_grad", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_no_side_effects(criterion, preset_grad, training):
    model = mlp(4, dropout=0.3)
    model.train(training)
    model[2].train(not training)           # mixed modes must survive too
    modes = [m.training for m in model.modules()]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    if preset_grad:
        for p in model.parameters():
            p.grad = torch.full_like(p, 0.25)
    grads_before = {name: None if p.grad is None else p.grad.clone()
                    for name, p in model.named_parameters()}
    compute_mask(model, criterion, 0.5, batches=[make_batch(0)], loss_fn=ce_loss)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name
        if grads_before[name] is None:
            assert p.grad is None, name
        else:
            assert torch.equal(p.grad, grads_before[name]), name
        assert p.requires_grad
    assert [m.training for m in model.modules()] == modes


@pytest.mark.parametrize("training", [False, True])
def test_uses_current_mode(training):
    """Eval: dropout off. Train: dropout on, with the same draws as the reference (same seed)."""
    model = mlp(5, dropout=0.5).train(training)
    batch = make_batch(1)
    torch.manual_seed(123)
    grads = reference_grads(model, [batch], ce_loss)
    weights = {name: p.detach() for name, p in model.named_parameters() if p.ndim >= 2}
    scores = {name: (grads[name] * weights[name]).abs() for name in grads}
    torch.manual_seed(123)
    got = CRITERIA["snip"](select_prunable(model), model=model, batches=[batch],
                           loss_fn=ce_loss, generator=None)
    for name in scores:
        torch.testing.assert_close(got[name].double(), scores[name])
    eval_grads = reference_grads(model.eval(), [batch], ce_loss)
    assert torch.allclose(eval_grads["0.weight"], grads["0.weight"]) != training


class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp(6)
        self.unused = nn.Linear(3, 3).double()      # never reached by the loss

    def forward(self, x):
        return self.net(x)


def test_frozen_and_unused_parameters():
    model = WithUnused()
    model.net[0].weight.requires_grad_(False)      # frozen: still scored, flag restored
    batch = make_batch(2)
    ref = copy.deepcopy(model.net)
    ref[0].weight.requires_grad_(True)
    grads = reference_grads(ref, [batch], ce_loss)
    got = CRITERIA["gradient"](select_prunable(model), model=model, batches=[batch],
                               loss_fn=ce_loss, generator=None)
    torch.testing.assert_close(got["net.0.weight"].double(), grads["0.weight"].abs())
    torch.testing.assert_close(got["net.2.weight"].double(), grads["2.weight"].abs())
    assert not model.net[0].weight.requires_grad
    assert torch.equal(got["unused.weight"], torch.zeros_like(got["unused.weight"]))
    assert model.unused.weight.grad is None and model.net[0].weight.grad is None


def test_prune_zeroes_lowest_snip_scores():
    model = mlp(7)
    batch = make_batch(3)
    mask = prune(model, "snip", 0.5, batches=[batch], loss_fn=ce_loss)
    for p in select_prunable(model):
        assert torch.all(p.param[~mask[p.name]] == 0)
    assert mask.counts()[0] == num_pruned(mask.counts()[1], 0.5)


@pytest.mark.parametrize("criterion", ["snip", "gradient"])
def test_user_errors(criterion):
    model = mlp(0)
    batch = make_batch(0)
    with pytest.raises(UserError, match=f"criterion '{criterion}' needs batches and loss_fn"):
        compute_mask(model, criterion, 0.5)
    with pytest.raises(UserError, match="needs batches and loss_fn"):
        compute_mask(model, criterion, 0.5, batches=[batch])
    with pytest.raises(UserError, match="needs batches and loss_fn"):
        compute_mask(model, criterion, 0.5, loss_fn=ce_loss)
    with pytest.raises(UserError, match="at least one batch"):
        compute_mask(model, criterion, 0.5, batches=[], loss_fn=ce_loss)
    with pytest.raises(UserError, match="iterable of batches"):
        compute_mask(model, criterion, 0.5, batches={"x": batch[0]}, loss_fn=ce_loss)
    with pytest.raises(UserError, match="scalar"):
        compute_mask(model, criterion, 0.5, batches=[batch],
                     loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1], reduction="none"))
    with pytest.raises(UserError, match="does not depend"):
        compute_mask(model, criterion, 0.5, batches=[batch],
                     loss_fn=lambda m, b: ce_loss(m, b).detach())
    # errors leave no trace either
    assert all(p.grad is None for p in model.parameters())
