"""oBERT solver: block Fisher inverse, scores, OBS update and allocation rules against references
computed here with plain ``backward()`` and ``torch.linalg.inv``."""
import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from smctune.errors import UserError
from smctune.pruning import Mask, compute_mask, num_pruned, prune
from smctune.pruning.obert import block_fisher_inverse

from toy_models import TiedLM

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = {"dtype": "float64"}


# ---------------------------------------------------------------------------------- fixtures
def mlp(seed=0):
    """Float64 MLP with dropout (oBERT must sample gradients in eval mode); 7*9 and 9*5 weights."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(7, 9), nn.Tanh(), nn.Dropout(0.5), nn.Linear(9, 5)).double()


def make_batches(m=6, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 7, generator=g, dtype=torch.float64),
             torch.randint(0, 5, (n,), generator=g)) for _ in range(m)]


def ce_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def per_batch_grads(model, batches, loss_fn, keep=None):
    """name -> (m, numel) gradients, one row per batch, by ``backward()`` on an eval-mode copy."""
    ref = copy.deepcopy(model).eval()
    rows = {}
    for batch in batches:
        ref.zero_grad(set_to_none=True)
        loss_fn(ref, batch).backward()
        for name, p in ref.named_parameters():
            if p.ndim >= 2:
                g = p.grad.detach().reshape(-1).clone()
                if keep is not None:
                    g = g * keep[name].reshape(-1)
                rows.setdefault(name, []).append(g)
    return {name: torch.stack(r) for name, r in rows.items()}


def explicit_block_inverses(G, block_size, damping):
    """List of inv(λI + (1/m) Σ g gᵀ) per block of the (m, n) gradient matrix (last block short)."""
    m, n = G.shape
    out = []
    for s in range(0, n, block_size):
        Gb = G[:, s:s + block_size]
        Fb = damping * torch.eye(Gb.shape[1], dtype=G.dtype) + Gb.T @ Gb / m
        out.append(torch.linalg.inv(Fb))
    return out


def pruned_lowest_global(scores, sparsity):
    """name -> bool (True = pruned): the k lowest of the concatenated (tie-free) scores."""
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    k = num_pruned(flat.numel(), sparsity)
    pruned = torch.zeros(flat.numel(), dtype=torch.bool)
    pruned[torch.topk(flat, k, largest=False).indices] = True
    out, offset = {}, 0
    for name, s in scores.items():
        out[name] = pruned[offset:offset + s.numel()].view(s.shape)
        offset += s.numel()
    return out


def weights_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.ndim >= 2}


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------------------------- Fisher inverse
@pytest.mark.parametrize("damping,dtype,scale,tol", [(1e-3, torch.float64, 0.1, 1e-5),
                                                     (1e-7, torch.float64, 0.01, 1e-5),
                                                     (1e-3, torch.float32, 0.1, 1e-5),
                                                     (1e-7, torch.float32, 0.01, None)])
def test_block_fisher_inverse_equals_explicit_inverse(damping, dtype, scale, tol):
    """float32 at λ = 1e-7: Sherman–Morrison subtracts from I/λ, so its relative error is bounded
    by ~ m·eps32·(1/λ)/‖F⁻¹‖ (cancellation), not by eps; the check uses that bound (×4)."""
    g = torch.Generator().manual_seed(1)
    m, n, B = 8, 23, 10                        # 23 = 2 full blocks + a padded one
    G = torch.randn(m, n, generator=g, dtype=torch.float64) * scale
    finv = block_fisher_inverse(list(G.reshape(m, 23, 1)), B, damping, dtype).double()
    assert finv.shape == (3, B, B)
    for b, ref in enumerate(explicit_block_inverses(G, B, damping)):
        k = ref.shape[0]
        bound = tol
        if bound is None:
            eps = torch.finfo(torch.float32).eps
            bound = 4 * m * eps / (damping * float(torch.linalg.matrix_norm(ref, 2)))
            assert bound < 0.05                         # still a meaningful check
        assert rel_err(finv[b, :k, :k], ref) < bound
    # padding: exactly I/λ on padded coordinates, exactly 0 coupling to the real ones
    eye = torch.eye(7, dtype=dtype) * (1 / damping)
    assert torch.equal(finv[2, 3:, 3:], eye.double())
    assert not finv[2, :3, 3:].any() and not finv[2, 3:, :3].any()


def test_block_fisher_inverse_padding_does_not_change_results():
    g = torch.Generator().manual_seed(2)
    G = torch.randn(5, 13, generator=g, dtype=torch.float64)
    padded = block_fisher_inverse(list(G), 13 + 7, 1e-2, torch.float64)[0, :13, :13]
    exact = block_fisher_inverse(list(G), 13, 1e-2, torch.float64)[0]
    assert torch.allclose(padded, exact, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------- full solver
def reference_obert(model, batches, sparsity, block_size, damping, current=None):
    """Scores, global allocation and OBS update computed explicitly (dense inverses per block)."""
    keep = None if current is None else {n: current[n] for n in current.keys()}
    grads = per_batch_grads(model, batches, ce_loss, keep)
    weights = weights_of(model)
    if keep is not None:
        weights = {n: w * keep[n] for n, w in weights.items()}
    invs, scores = {}, {}
    for name, w in weights.items():
        invs[name] = explicit_block_inverses(grads[name], block_size, damping)
        diag = torch.cat([inv.diagonal() for inv in invs[name]])
        scores[name] = (w.reshape(-1) ** 2 / (2 * diag)).view(w.shape)
    if keep is not None:  # already pruned go first
        scores = {n: s.masked_fill(~keep[n], -1.0) for n, s in scores.items()}
    pruned = pruned_lowest_global(scores, sparsity)
    new = {}
    for name, w in weights.items():
        flat = w.reshape(-1).clone()
        newly = pruned[name].reshape(-1) & (keep[name].reshape(-1) if keep else True)
        for b, inv in enumerate(invs[name]):
            s = b * block_size
            wb = flat[s:s + inv.shape[0]]
            v = torch.where(newly[s:s + inv.shape[0]], wb / inv.diagonal(), torch.zeros(()).double())
            flat[s:s + inv.shape[0]] = wb - inv @ v
        flat[pruned[name].reshape(-1)] = 0
        new[name] = flat.view(w.shape)
    return pruned, new


def test_paper_variant_matches_explicit_reference():
    model, batches = mlp(), make_batches()
    model.train()
    pruned, new = reference_obert(model, batches, 0.5, 10, 1e-3)
    opts = {"block_size": 10, "damping": 1e-3, **F64}
    pruned_model = copy.deepcopy(model)
    mask = prune(pruned_model, "obert", 0.5, batches=batches, loss_fn=ce_loss, options=opts)
    assert pruned_model.training and pruned_model[2].training        # modes restored
    for name, w in weights_of(pruned_model).items():
        assert torch.equal(~mask[name], pruned[name])
        assert torch.allclose(w, new[name], rtol=1e-8, atol=1e-10)
        assert not w[~mask[name]].any()
    # the update changed survivors (it is not a plain masking)
    assert not torch.equal(weights_of(pruned_model)["0.weight"],
                           weights_of(model)["0.weight"] * mask["0.weight"])


def lsq_problem(seed):
    """A least-squares fit on strongly correlated inputs (4 latent factors -> 16 columns)."""
    g = torch.Generator().manual_seed(seed)
    n, d, k = 512, 16, 4
    X = torch.randn(n, 4, generator=g) @ torch.randn(4, d, generator=g)
    X += 0.05 * torch.randn(n, d, generator=g)
    Y = X @ torch.randn(k, d, generator=g).T + 0.1 * torch.randn(n, k, generator=g)
    lin = nn.Linear(d, k, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.linalg.lstsq(X, Y).solution.T)
    return lin, X, Y


def mse_loss(model, batch):
    x, y = batch
    return F.mse_loss(model(x), y)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_obs_update_beats_magnitude_and_no_update_on_correlated_least_squares(seed):
    lin, X, Y = lsq_problem(seed)
    batches = list(zip(X.split(8), Y.split(8)))            # m = 64 minibatch gradients
    losses = {}
    for label, criterion, opts in [("magnitude", "magnitude", None),
                                   ("obert", "obert", {"block_size": 16}),
                                   ("no_update", "obert", {"block_size": 16, "update": False})]:
        model = copy.deepcopy(lin)
        mask = prune(model, criterion, 0.5, batches=batches, loss_fn=mse_loss, options=opts)
        assert int((~mask["weight"]).sum()) == 32 and not model.weight[~mask["weight"]].any()
        with torch.no_grad():
            losses[label] = float(mse_loss(model, (X, Y)))
    assert losses["obert"] < losses["magnitude"]
    assert losses["obert"] < losses["no_update"]


# ---------------------------------------------------------------------------------- allocation
@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("sparsity", [0.3, 0.75])
def test_exact_counts(scope, sparsity):
    model, batches = mlp(), make_batches()
    mask = prune(model, "obert", sparsity, scope=scope, batches=batches, loss_fn=ce_loss)
    sizes = {name: w.numel() for name, w in weights_of(model).items()}
    pruned = {name: int((~mask[name]).sum()) for name in sizes}
    if scope == "global":
        assert sum(pruned.values()) == num_pruned(sum(sizes.values()), sparsity)
    else:
        assert pruned == {name: num_pruned(n, sparsity) for name, n in sizes.items()}
    for name, w in weights_of(model).items():
        assert not w[~mask[name]].any()


def test_nm_pattern_prunes_exactly_two_of_four():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 4)).double()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 8, generator=g, dtype=torch.float64),
                torch.randint(0, 4, (4,), generator=g)) for _ in range(4)]
    mask = prune(model, "obert", 0.5, pattern="2:4", batches=batches, loss_fn=ce_loss,
                 options={"block_size": 8})
    for name, w in weights_of(model).items():
        groups = (~mask[name]).reshape(-1, 4)
        assert torch.equal(groups.sum(dim=1), torch.full((groups.shape[0],), 2))
        assert not w[~mask[name]].any()


def test_compute_mask_leaves_model_untouched():
    model, batches = mlp(), make_batches()
    model.train()
    before = copy.deepcopy(model.state_dict())
    mask = compute_mask(model, "obert", 0.5, batches=batches, loss_fn=ce_loss)
    assert int(sum((~t).sum() for t in mask.values())) > 0
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert all(p.grad is None for p in model.parameters())
    assert all(m.training for m in model.modules())


def test_current_positions_stay_pruned_and_zero():
    model, batches = mlp(), make_batches()
    first = compute_mask(model, "magnitude", 0.3)           # model weights are NOT zeroed
    pruned, new = reference_obert(model, batches, 0.6, 10, 1e-3, current=first)
    mask = prune(model, "obert", 0.6, batches=batches, loss_fn=ce_loss, current=first,
                 options={"block_size": 10, "damping": 1e-3, **F64})
    for name, w in weights_of(model).items():
        assert not (mask[name] & ~first[name]).any()       # monotone
        assert torch.all(w[~first[name]] == 0)
        assert torch.equal(~mask[name], pruned[name])
        assert torch.allclose(w, new[name], rtol=1e-8, atol=1e-10)


def test_smcbench_variant_is_diagonal_score_without_update():
    model, batches = mlp(), make_batches()
    G = per_batch_grads(model, batches, ce_loss)
    W = weights_of(model)
    lam = 1e-7
    diag = {n: 1 / (lam + (G[n] ** 2).mean(0).view(W[n].shape)) for n in W}   # B = 1: exact
    scores = {n: W[n] ** 2 / (2 * diag[n]) for n in W}
    expected = pruned_lowest_global(scores, 0.5)
    mask = prune(model, "obert", 0.5, batches=batches, loss_fn=ce_loss,
                 options={"variant": "smcbench", **F64})
    for name, w in weights_of(model).items():
        assert torch.equal(~mask[name], expected[name])
        assert torch.equal(w[mask[name]], W[name][mask[name]])   # survivors unchanged
        assert not w[~mask[name]].any()


@pytest.mark.parametrize("max_block_bytes", [1, 5 * 10 * 10 * 8])
def test_chunked_equals_unchunked(max_block_bytes):
    model, batches = mlp(), make_batches(m=4)
    opts = {"block_size": 10, "damping": 1e-4, **F64}
    whole = copy.deepcopy(model)
    mask_whole = prune(whole, "obert", 0.5, batches=batches, loss_fn=ce_loss, options=opts)
    chunked = copy.deepcopy(model)
    mask_chunked = prune(chunked, "obert", 0.5, batches=iter(batches), loss_fn=ce_loss,
                         options={**opts, "max_block_bytes": max_block_bytes})
    assert mask_whole == mask_chunked
    for (name, a), b in zip(weights_of(whole).items(), weights_of(chunked).values()):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), name


def test_tied_parameters_are_handled_once():
    torch.manual_seed(0)
    model = TiedLM().double()
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 20, (6,), generator=g) for _ in range(5)]

    def lm_loss(m, tokens):
        return F.cross_entropy(m(tokens), tokens)

    G = per_batch_grads(model, batches, lm_loss)                # grads sum both uses
    assert "head.weight" not in G
    W = weights_of(model)
    scores = {n: W[n] ** 2 / (2 / (1e-7 + (G[n] ** 2).mean(0).view(W[n].shape))) for n in W}
    expected = pruned_lowest_global(scores, 0.5)
    mask = compute_mask(model, "obert", 0.5, batches=batches, loss_fn=lm_loss,
                        options={"variant": "smcbench", **F64})
    assert sorted(mask.keys()) == ["body.weight", "embed.weight"]
    assert mask.aliases["embed.weight"] == ("head.weight",)
    for name in mask.keys():
        assert torch.equal(~mask[name], expected[name])
    mask = prune(model, "obert", 0.5, batches=batches, loss_fn=lm_loss)
    assert model.head.weight is model.embed.weight
    assert int((model.embed.weight == 0).sum()) >= int((~mask["embed.weight"]).sum())
    assert sum(int((~t).sum()) for t in mask.values()) == num_pruned(20 * 8 + 8 * 8, 0.5)


def test_frozen_parameter_is_scored_and_stays_frozen():
    model, batches = mlp(), make_batches()
    model[0].weight.requires_grad_(False)
    reference = copy.deepcopy(model)
    reference[0].weight.requires_grad_(True)
    opts = {"block_size": 10, "damping": 1e-3, **F64}
    mask = prune(model, "obert", 0.5, batches=batches, loss_fn=ce_loss, options=opts)
    expected = prune(reference, "obert", 0.5, batches=batches, loss_fn=ce_loss, options=opts)
    assert mask == expected and not model[0].weight.requires_grad
    assert torch.allclose(model[0].weight, reference[0].weight, rtol=1e-12, atol=0)


def test_float32_default_close_to_float64():
    model, batches = mlp(), make_batches()
    opts = {"block_size": 10, "damping": 1e-3}
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    prune(a, "obert", 0.5, batches=batches, loss_fn=ce_loss, options=opts)
    prune(b, "obert", 0.5, batches=batches, loss_fn=ce_loss, options={**opts, **F64})
    for (name, wa), wb in zip(weights_of(a).items(), weights_of(b).values()):
        assert wa.dtype == torch.float64
        assert rel_err(wa, wb) < 1e-4, name


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs,match", [
    ({"options": {"blocksize": 4}}, "valid options"),
    ({"options": {"variant": "sparseml"}}, "paper, smcbench"),
    ({"options": {"block_size": 0}}, "block_size"),
    ({"options": {"block_size": 2.5}}, "block_size"),
    ({"options": {"damping": -1.0}}, "damping"),
    ({"options": {"damping": float("nan")}}, "damping"),
    ({"options": {"update": "yes"}}, "update"),
    ({"options": {"dtype": "float16"}}, "float32, float64"),
    ({"options": {"max_block_bytes": 0}}, "max_block_bytes"),
    ({"options": {"variant": "smcbench", "block_size": 50}}, "block_size=1"),
    ({"options": {"variant": "smcbench", "update": True}}, "no weight update"),
    ({"batches": None}, "needs batches and loss_fn"),
    ({"loss_fn": None}, "needs batches and loss_fn"),
    ({"batches": []}, "at least one batch"),
    ({"batches": iter([])}, "at least one batch"),
    ({"batches": torch.zeros(3, 7)}, "iterable of batches"),
    ({"loss_fn": lambda m, b: m(b[0])}, "scalar"),
])
def test_bad_input_raises_one_line_user_error(kwargs, match):
    model = mlp()
    args = {"batches": make_batches(m=2), "loss_fn": ce_loss, **kwargs}
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UserError, match=match) as err:
        prune(model, "obert", 0.5, **args)
    assert "\n" not in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_mask_type_is_library_mask():
    model, batches = mlp(), make_batches(m=2)
    assert isinstance(compute_mask(model, "obert", 0.2, batches=batches, loss_fn=ce_loss), Mask)
