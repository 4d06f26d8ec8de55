import math

import pytest
import torch
from torch import nn

from smctune.errors import UserError
from smctune.pruning import (CRITERIA, Mask, compute_mask, imp_sparsity, num_pruned, prune,
                             select_prunable)
from smctune.pruning import core as pruning_core
from smctune.pruning.criteria import LazyScores
from smctune.pruning.selection import key_to_float, kth_smallest, order_keys


pytestmark = pytest.mark.usefixtures("single_thread")


SPARSITIES = [0.0, 0.1, 0.2, 0.36, 0.5, 0.6666, 0.893, 0.95, 0.999]


def integer_model(seed=0):
    """Linear stack whose weights are small integers: lots of exactly tied |w|."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(7, 13), nn.ReLU(), nn.Linear(13, 11), nn.ReLU(), nn.Linear(11, 3))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-3, 4, p.shape, generator=g).float())
    return model


def oracle_pruned(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Reference: stable sort => equal scores ordered by index; the first k are pruned."""
    order = torch.sort(scores, stable=True).indices
    pruned = torch.zeros(scores.numel(), dtype=torch.bool)
    pruned[order[:k]] = True
    return pruned


def flat_kept(mask, model):
    return torch.cat([mask[p.name].reshape(-1) for p in select_prunable(model)])


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_global_exact_count_and_tie_rule(sparsity):
    model = integer_model()
    mask = compute_mask(model, "magnitude", sparsity)
    weights = [p.param.detach().reshape(-1) for p in select_prunable(model)]
    scores = torch.cat(weights).abs()
    n = scores.numel()
    pruned, total = mask.counts()
    assert total == n and pruned == num_pruned(n, sparsity)
    assert int((~flat_kept(mask, model)).sum()) == num_pruned(n, sparsity)
    assert torch.equal(~flat_kept(mask, model), oracle_pruned(scores, num_pruned(n, sparsity)))


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_layerwise_exact_count_and_tie_rule(sparsity):
    model = integer_model(1)
    mask = compute_mask(model, "magnitude", sparsity, scope="layerwise")
    for p in select_prunable(model):
        kept = mask[p.name]
        assert kept.dtype == torch.bool and kept.shape == p.param.shape
        k = num_pruned(p.numel, sparsity)
        assert int((~kept).sum()) == k
        assert torch.equal(~kept.reshape(-1), oracle_pruned(p.param.detach().abs().reshape(-1), k))


def test_tie_rule_prunes_lower_flat_index_first():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].weight.fill_(1.0)
    mask = compute_mask(model, "magnitude", 0.375)     # 8 * 0.375 = 3 pruned, all tied
    assert mask["0.weight"].tolist() == [[False, False], [False, True]]
    assert mask["1.weight"].all()


def test_global_allocation_follows_scale():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64))
    with torch.no_grad():
        model[1].weight.mul_(10)
    glob = {s.name: s.sparsity for s in compute_mask(model, "magnitude", 0.5).layerwise()}
    assert glob["0.weight"] > 0.7 and glob["1.weight"] < 0.3
    layer = {s.name: s.sparsity for s in compute_mask(model, "magnitude", 0.5, scope="layerwise").layerwise()}
    assert layer == {"0.weight": 0.5, "1.weight": 0.5}


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_random_exact_count_and_seeding(scope):
    model = integer_model()
    for sparsity in (0.2, 0.5, 0.9):
        a = compute_mask(model, "random", sparsity, scope=scope, seed=3)
        if scope == "layerwise":
            for p in select_prunable(model):
                assert int((~a[p.name]).sum()) == num_pruned(p.numel, sparsity)
        else:
            assert a.counts()[0] == num_pruned(a.counts()[1], sparsity)
        assert a == compute_mask(model, "random", sparsity, scope=scope, seed=3)
        assert a != compute_mask(model, "random", sparsity, scope=scope, seed=4)
    # random ignores the weights: the integer ties do not shape the mask like magnitude would
    assert compute_mask(model, "random", 0.5, seed=0) != compute_mask(model, "magnitude", 0.5)


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_current_keeps_pruned_positions_pruned(scope):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 8))
    g = torch.Generator().manual_seed(1)
    params = select_prunable(model)
    mask = Mask.ones(params)
    for rnd in range(1, 6):
        target = imp_sparsity(rnd)
        new = prune(model, "magnitude", target, scope=scope, current=mask)
        for p in params:
            assert not (new[p.name] & ~mask[p.name]).any(), "a pruned weight was revived"
            if scope == "layerwise":
                assert int((~new[p.name]).sum()) == num_pruned(p.numel, target)
        if scope == "global":
            assert new.counts()[0] == num_pruned(new.counts()[1], target)
        # "retrain": pruned weights come back with LARGE values; only `current` keeps them pruned
        with torch.no_grad():
            for p in params:
                big = 100 + torch.rand(p.param.shape, generator=g)
                p.param.copy_(torch.where(new[p.name], p.param, big))
        without = compute_mask(model, "magnitude", imp_sparsity(rnd + 1), scope=scope)
        assert any((without[p.name] & ~new[p.name]).any() for p in params)  # control: would revive
        mask = new


def test_current_above_target_and_mismatched_current_are_errors():
    model = integer_model()
    high = compute_mask(model, "magnitude", 0.8)
    with pytest.raises(UserError, match="sparsity may only increase"):
        compute_mask(model, "magnitude", 0.5, current=high)
    assert compute_mask(model, "magnitude", 0.8, current=high) == high
    with pytest.raises(UserError, match="current mask does not cover"):
        compute_mask(model, "magnitude", 0.9, current=high, exclude=[r"^4\."])


def test_compute_mask_has_no_side_effects():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.1), nn.Linear(8, 4))
    model.eval()
    model[1].train()  # mixed modes must survive too
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    modes = [m.training for m in model.modules()]

    def flips_mode(params, *, model, batches, loss_fn, generator):
        model.train()
        return {p.name: p.param.detach().abs() for p in params}

    CRITERIA["_test_flips_mode"] = flips_mode
    try:
        for crit in ("magnitude", "random", "_test_flips_mode"):
            for scope in ("global", "layerwise"):
                compute_mask(model, crit, 0.7, scope=scope)
                compute_mask(model, crit, 0.9, scope=scope, current=compute_mask(model, crit, 0.7, scope=scope))
    finally:
        del CRITERIA["_test_flips_mode"]
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]) and torch.equal(p.grad, grads[n])
    assert [m.training for m in model.modules()] == modes


def test_solver_weights_written_by_prune_only_and_pruned_zeroed():
    from smctune.pruning import Solution, register_solver

    seen = []

    @register_solver("_test_solver")
    def solve(problem):
        seen.append((problem.batches, problem.options, problem.sparsity))
        scores = {p.name: p.param.detach().abs() for p in problem.params}
        weights = {p.name: p.param.detach() + 1000.0 for p in problem.params}
        return Solution(pruned=problem.allocate(scores), weights=weights)

    try:
        model = integer_model()
        before = {p.name: p.param.detach().clone() for p in select_prunable(model)}
        mask_only = compute_mask(model, "_test_solver", 0.5, batches="B", options={"k": 1})
        for p in select_prunable(model):  # compute_mask never touches the model
            assert torch.equal(p.param.detach(), before[p.name])
        mask = prune(model, "_test_solver", 0.5, batches="B", options={"k": 1})
    finally:
        del CRITERIA["_test_solver"]
    assert seen == [("B", {"k": 1}, 0.5)] * 2
    assert all(torch.equal(mask[n], mask_only[n]) for n in mask)
    n = sum(p.numel for p in select_prunable(model))
    assert sum(int((~mask[k]).sum()) for k in mask) == num_pruned(n, 0.5)
    for p in select_prunable(model):
        w, m = p.param.detach(), mask[p.name]
        assert (w[~m] == 0).all() and (w[m] >= 997).all()


def test_unknown_criterion_option_is_a_user_error():
    with pytest.raises(UserError, match="does not take option"):
        compute_mask(integer_model(), "magnitude", 0.5, options={"block_size": 4})


def test_plain_magnitude_prune_keeps_survivors_untouched():
    # plain magnitude prune: no update, exact zeros at pruned positions, kept weights untouched
    model = integer_model()
    before = {p.name: p.param.detach().clone() for p in select_prunable(model)}
    mask = prune(model, "magnitude", 0.6)
    for p in select_prunable(model):
        m = mask[p.name]
        assert (p.param[~m] == 0).all() and torch.equal(p.param[m], before[p.name][m])


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, math.nan, math.inf, True, "0.5", None])
def test_bad_sparsity(bad):
    with pytest.raises(UserError, match=r"sparsity must be a number in \[0, 1\)"):
        compute_mask(integer_model(), "magnitude", bad)


def test_bad_criterion_and_scope():
    with pytest.raises(UserError, match="unknown pruning criterion 'snap'; choose from: .*magnitude.*random"):
        compute_mask(integer_model(), "snap", 0.5)
    with pytest.raises(UserError, match="unknown pruning scope 'local'.*global, layerwise"):
        prune(integer_model(), "magnitude", 0.5, scope="local")


def test_nan_scores_are_reported():
    model = integer_model()
    with torch.no_grad():
        model[0].weight[0, 0] = math.nan
    with pytest.raises(UserError, match="NaN"):
        compute_mask(model, "magnitude", 0.5)


def test_current_wins_over_minus_inf_scores():
    """A criterion may score -inf itself; positions pruned in `current` must still go first."""
    model = nn.Sequential(nn.Linear(4, 4, bias=False))

    def minus_inf_first_row(params, *, model, batches, loss_fn, generator):
        scores = {p.name: torch.ones(p.param.shape) for p in params}
        scores["0.weight"][0] = -math.inf
        return scores

    current = Mask({"0.weight": torch.ones(4, 4, dtype=torch.bool)})
    current["0.weight"][3] = False                      # last row pruned: 4 of 16 = 0.25
    CRITERIA["_test_minus_inf"] = minus_inf_first_row
    try:
        for scope in ("global", "layerwise"):
            same = compute_mask(model, "_test_minus_inf", 0.25, scope=scope, current=current)
            assert same == current
            more = compute_mask(model, "_test_minus_inf", 0.5, scope=scope, current=current)
            assert (~more["0.weight"]).sum() == 8
            assert not more["0.weight"][0].any() and not more["0.weight"][3].any()
    finally:
        del CRITERIA["_test_minus_inf"]


# ------------------------------------------------------------------ radix selection (large inputs)


@pytest.fixture
def radix_path(monkeypatch):
    """Force the chunked radix path on tiny inputs, with chunks splitting tensors unevenly."""
    monkeypatch.setattr(pruning_core, "KTHVALUE_MAX", 0)
    monkeypatch.setattr(pruning_core, "CHUNK", 5)


def awkward_values(n, dtype, generator):
    """Negatives, +-0.0, +-inf, finite extremes, denormals, heavy ties, tiny and huge values."""
    finfo = torch.finfo(dtype)
    special = torch.tensor([-math.inf, math.inf, finfo.min, finfo.max, -0.0, 0.0, -0.0, finfo.tiny,
                            -finfo.tiny, finfo.tiny / 8, -finfo.tiny / 8, 1.0, -1.0], dtype=dtype)
    spread = torch.randn(n, generator=generator, dtype=dtype) * \
        10.0 ** torch.randint(-30, 30, (n,), generator=generator).to(dtype)
    ties = torch.randint(-3, 4, (n,), generator=generator).to(dtype)
    close = 1 + torch.randint(0, 4, (n,), generator=generator).to(dtype) * finfo.eps
    normal = torch.randn(n, generator=generator, dtype=dtype)
    values = torch.cat([special, spread, ties, close, normal])
    return values[torch.randperm(values.numel(), generator=generator)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_order_keys_follow_the_float_order(dtype):
    values = awkward_values(300, dtype, torch.Generator().manual_seed(0)).sort().values
    keys = order_keys(values)
    assert keys.dtype == (torch.int32 if dtype == torch.float32 else torch.int64)
    assert bool((keys[1:] >= keys[:-1]).all())
    assert torch.equal(keys[1:] == keys[:-1], values[1:] == values[:-1])   # -0.0 == +0.0 too
    assert order_keys(torch.tensor([-0.0, 0.0], dtype=dtype)).tolist() == [0, 0]
    for key, value in zip(keys.tolist(), values.tolist()):
        assert key_to_float(key, dtype) == value


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("limit", [0, 5, None])   # 0: every histogram level; None: default band
def test_kth_smallest_equals_kthvalue(dtype, limit):
    g = torch.Generator().manual_seed(1)
    values = awkward_values(40, dtype, g)
    sizes = [0, 1, 17, 64, values.numel() - 82]
    parts = list(values.split(sizes))
    for k in range(1, values.numel() + 1):
        got = kth_smallest(lambda: iter(parts), k, dtype, limit=limit)
        want = torch.kthvalue(values, k).values
        assert got.value == float(want), k
        assert got.below == int((values < want).sum()) and got.ties == int((values == want).sum())


def scored_model():
    return nn.Sequential(nn.Linear(9, 7, bias=False), nn.Linear(7, 13, bias=False),
                         nn.Linear(13, 3, bias=False))


def awkward_scores(params, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    flat = awkward_values(60, dtype, g)
    flat = flat[torch.randint(0, flat.numel(), (sum(p.numel for p in params),), generator=g)]
    return {p.name: part.view(p.shape).clone()
            for p, part in zip(params, flat.split([p.numel for p in params]))}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gather", [0, 1 << 20])   # 0: bands narrowed to one value (ties in order)
def test_radix_masks_equal_kthvalue_masks(radix_path, monkeypatch, dtype, gather):
    """Same masks (exact count, flat-index tie rule, `current` rules) as the kthvalue path."""
    monkeypatch.setattr(pruning_core, "GATHER", gather)
    model = scored_model()
    params = select_prunable(model)
    scores = awkward_scores(params, dtype, seed=2)
    CRITERIA["_test_fixed"] = lambda params, **_: {n: s.clone() for n, s in scores.items()}

    def both(*args, **kwargs):
        radix = compute_mask(model, "_test_fixed", *args, **kwargs)
        monkeypatch.setattr(pruning_core, "KTHVALUE_MAX", 1 << 30)
        small = compute_mask(model, "_test_fixed", *args, **kwargs)
        monkeypatch.setattr(pruning_core, "KTHVALUE_MAX", 0)
        assert radix == small, (args, kwargs)
        return radix

    try:
        for scope in ("global", "layerwise", "erk"):
            current = None
            for sparsity in SPARSITIES:
                mask = both(sparsity, scope=scope)
                if scope == "global":   # and against the stable-sort oracle directly
                    flat = torch.cat([scores[p.name].reshape(-1) for p in params])
                    want = oracle_pruned(flat, num_pruned(flat.numel(), sparsity))
                    assert torch.equal(~flat_kept(mask, model), want)
                current = both(sparsity, scope=scope, current=current)
    finally:
        del CRITERIA["_test_fixed"]


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.9])
def test_global_magnitude_equals_torch_prune_global_unstructured(sparsity):
    """Tie-free weights, large enough for the radix path: torch.prune's L1 mask, bit for bit."""
    from torch.nn.utils import prune as torch_prune

    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(300, 64), nn.Linear(64, 256, bias=False),
                          nn.Linear(256, 128, bias=False), nn.Linear(128, 64, bias=False))
    params = select_prunable(model)
    n = sum(p.numel for p in params)
    assert n > pruning_core.KTHVALUE_MAX
    g = torch.Generator().manual_seed(3)
    magnitudes = (torch.randperm(n, generator=g) + 1).float() * 1e-6     # distinct, exact
    signs = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
    with torch.no_grad():
        for p, part in zip(params, (magnitudes * signs).split([p.numel for p in params])):
            p.param.copy_(part.view(p.shape))
    ours = compute_mask(model, "magnitude", sparsity)
    targets = [(m, "weight") for m in model]
    torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured,
                                    amount=sparsity)
    for p, (module, _) in zip(params, targets):
        assert torch.equal(ours[p.name], module.weight_mask.bool()), p.name
    assert ours.counts()[0] == num_pruned(n, sparsity)


def test_magnitude_scores_are_lazy_and_consumed_chunk_by_chunk(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 300))
    params = select_prunable(model)
    scores = CRITERIA["magnitude"](params)
    assert isinstance(scores, LazyScores) and list(scores) == [p.name for p in params]
    for p in params:
        assert scores.shape(p.name) == p.shape and scores.dtype(p.name) == torch.float32
        first, second = scores[p.name], scores[p.name]
        assert first is not second and torch.equal(first, p.param.detach().abs())  # on access
        assert not first.requires_grad
        chunks = list(scores.chunks(p.name, 1000, out=torch.empty(1000)))
        assert [c.numel() for c in chunks[:-1]] == [1000] * (len(chunks) - 1)
        assert torch.equal(torch.cat([c.clone() for c in scores.chunks(p.name, 1000)]),
                           p.param.detach().abs().reshape(-1))
    # Non-contiguous sources (a transposed view) are scored once, then sliced.
    t = torch.randn(40, 30)
    lazy = LazyScores({"t": t.T}, torch.abs)
    assert torch.equal(torch.cat(list(lazy.chunks("t", 7))), t.T.abs().reshape(-1))

    def plain_abs(params, **_):
        return {p.name: p.param.detach().abs() for p in params}

    CRITERIA["_test_plain_abs"] = plain_abs
    try:
        expected = {scope: compute_mask(model, "_test_plain_abs", 0.7, scope=scope)
                    for scope in ("global", "layerwise", "erk")}
        # Allocation never asks a LazyScores for a whole tensor: no full |w| copy exists.
        def refuse(self, name):
            raise AssertionError(f"full score tensor of {name!r} materialised")

        monkeypatch.setattr(LazyScores, "__getitem__", refuse)
        for scope, want in expected.items():
            assert compute_mask(model, "magnitude", 0.7, scope=scope) == want
            current = compute_mask(model, "magnitude", 0.5, scope=scope)
            assert compute_mask(model, "magnitude", 0.7, scope=scope, current=current) == \
                compute_mask(model, "_test_plain_abs", 0.7, scope=scope, current=current)
    finally:
        del CRITERIA["_test_plain_abs"]


def test_lazy_scores_through_solver_allocate_and_half_precision():
    from smctune.pruning import Solution, register_solver

    @register_solver("_test_lazy_solver")
    def solve(problem):
        lazy = problem.allocate(LazyScores({p.name: p.param for p in problem.params}, torch.abs))
        plain = problem.allocate({p.name: p.param.detach().abs() for p in problem.params})
        assert all(torch.equal(lazy[n], plain[n]) for n in plain)
        return Solution(pruned=lazy)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256, bias=False), nn.Linear(256, 64, bias=False))
    try:
        for pattern in (None, "2:4"):
            mask = compute_mask(model, "_test_lazy_solver", 0.5, pattern=pattern)
            assert mask == compute_mask(model, "magnitude", 0.5, pattern=pattern)
    finally:
        del CRITERIA["_test_lazy_solver"]
    half = nn.Sequential(nn.Linear(256, 256, bias=False), nn.Linear(256, 64, bias=False)).half()
    single = nn.Sequential(nn.Linear(256, 256, bias=False), nn.Linear(256, 64, bias=False))
    single.load_state_dict({k: v.float() for k, v in half.state_dict().items()})
    for scope in ("global", "layerwise"):   # half |w| scored in float32 working chunks
        assert compute_mask(half, "magnitude", 0.6, scope=scope) == \
            compute_mask(single, "magnitude", 0.6, scope=scope)


def test_radix_path_nan_and_infinities(radix_path):
    model = scored_model()
    params = select_prunable(model)
    values = {p.name: torch.randn(p.shape, generator=torch.Generator().manual_seed(i))
              for i, p in enumerate(params)}
    values["1.weight"][0, 0], values["2.weight"][1, 1] = math.inf, -math.inf   # no NaN: fine
    CRITERIA["_test_fixed"] = lambda params, **_: {n: v.clone() for n, v in values.items()}
    try:
        mask = compute_mask(model, "_test_fixed", 0.5)
        assert mask["1.weight"][0, 0] and not mask["2.weight"][1, 1]
        current = mask
        for sparsity in (0.0, 0.5, 0.7):
            values["2.weight"][2, 2] = math.nan
            with pytest.raises(UserError, match="NaN"):
                compute_mask(model, "_test_fixed", max(sparsity, 0.6), current=current)
            with pytest.raises(UserError, match="NaN"):
                compute_mask(model, "_test_fixed", sparsity, scope="layerwise")
            values["2.weight"][2, 2] = 0.0
        # NaN where `current` already prunes is still reported (as on the kthvalue path)
        pruned_at = (~current["0.weight"]).nonzero()[0].tolist()
        values["0.weight"][tuple(pruned_at)] = math.nan
        with pytest.raises(UserError, match="NaN"):
            compute_mask(model, "_test_fixed", 0.7, current=current)
        values["0.weight"][tuple(pruned_at)] = 0.0
        with pytest.raises(UserError, match="sparsity may only increase"):
            compute_mask(model, "_test_fixed", 0.3, current=current)
    finally:
        del CRITERIA["_test_fixed"]


def test_radix_path_current_wins_over_minus_inf_scores(radix_path):
    test_current_wins_over_minus_inf_scores()
