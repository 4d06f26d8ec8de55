"""Wanda (Sun et al. 2023): prune by |weight| × input-activation norm, no weight update.

Score ``S_ij = |W_ij| · ‖X_j‖₂`` for the weight of an ``nn.Linear`` (``X_j``: column ``j`` of the
layer's inputs over all calibration tokens, see ``calibration``). The paper's comparison group is
each output row, so by default every selected tensor prunes exactly
``k = num_pruned(numel, sparsity)`` entries spread over its rows as evenly as possible (each row
``floor(k/rows)`` or one more, lower-indexed rows first) and each row prunes its lowest scores.
**The ``scope`` argument of compute_mask/prune is ignored** (it defaults to "global", which is not
Wanda); ``options={"group": ...}`` chooses the comparison group instead:

* ``"row"`` (default): per output row, as above (the paper and its code);
* ``"layer"``: the lowest ``k`` of each whole tensor (layer-wise, no per-row evenness);
* ``"global"``: one ranking of all scores across tensors (exact global count, library tie rule).

``pattern="N:M"`` always means the N lowest scores of every M consecutive inputs per row (the
paper's N:M variant); ``group`` is then unused. Positions pruned in ``current`` stay pruned (they
score -inf, and a row that already has more pruned entries than its share keeps them and the others
share the rest). Ties: lower index first.

``options={"sequential": True}`` calibrates the Linear layers one at a time in forward order, each
on the model with the earlier layers already pruned (what the reference code does per transformer
block); it needs ``group`` "row" or "layer" and costs one pass over the batches per layer. The
default (False) is one pass over the batches with the dense model.

Selected parameters that are not an ``nn.Linear`` weight (embeddings, convolutions, HF ``Conv1D``)
have no captured activations: they fall back to ``|W|`` (``‖X‖ = 1``) with the same allocation (in
sequential mode they are pruned first and stay pruned while the Linear layers are calibrated).
The model is left unmodified (weights, buffers); ``Solution.weights`` is None (no update).
"""
from __future__ import annotations

import torch

from ..errors import UserError, choices
from .calibration import (Scratch, calibration_batches, capture, check_options, layer_pruned,
                          linear_targets, sequential_solve)
from .core import ALLOCATORS
from .criteria import PruneProblem, Solution, register_solver

GROUPS = ("row", "layer", "global")
OPTIONS = ("group", "sequential")


def _options(options: dict) -> tuple[str, bool]:
    check_options(options, OPTIONS, "wanda")
    group = options.get("group", "row")
    if not isinstance(group, str) or group not in GROUPS:
        raise UserError(f"wanda option group must be one of: {choices(GROUPS)}; got {group!r}")
    sequential = options.get("sequential", False)
    if not isinstance(sequential, bool):
        raise UserError(f"wanda option sequential must be true or false, got {sequential!r}")
    return group, sequential


def wanda_scores(weight: torch.Tensor, sumsq: torch.Tensor) -> torch.Tensor:
    """``|W_ij| · sqrt(Σ_tokens x_j²)`` in at least float32 (``sumsq``: per input column)."""
    w = weight.detach()
    w = w.to(torch.promote_types(w.dtype, torch.float32)).abs()
    return w * sumsq.to(w.device, w.dtype).sqrt().unsqueeze(0)


def _magnitude(p) -> torch.Tensor:
    w = p.param.detach()
    return w.to(torch.promote_types(w.dtype, torch.float32)).abs()


@register_solver("wanda")
def wanda(problem: PruneProblem) -> Solution:
    """Wanda mask (see the module docstring); no weight update."""
    group, sequential = _options(problem.options)
    if problem.nm is not None:
        group = "row"
    if sequential and group == "global":
        raise UserError("wanda option sequential=True needs group 'row' or 'layer' "
                        "(a global ranking needs every layer's scores at once)")
    batches = calibration_batches(problem.batches, problem.loss_fn, "wanda")
    model, params = problem.model, problem.params
    targets, others = linear_targets(model, params)
    by_name = {p.name: p for p in params}

    def pruned_for(p, scores):
        return layer_pruned(p, scores, problem.sparsity, problem.nm, problem.current, group)

    if not sequential:
        with Scratch(model):          # restores buffers a train-mode forward may update
            stats, _ = capture(model, targets, batches, problem.loss_fn, "sumsq", "wanda")
        scores = {p.name: (wanda_scores(p.param, stats.pop(p.name).value) if p.name in targets
                           else _magnitude(p)) for p in params}
        if problem.nm is not None:
            return Solution(problem.allocate(scores))
        if group == "global":
            dtype = (torch.float64 if any(s.dtype == torch.float64 for s in scores.values())
                     else torch.float32)
            return Solution(ALLOCATORS["global"](params, scores, problem.current,
                                                 problem.sparsity, dtype))
        return Solution({p.name: pruned_for(p, scores.pop(p.name)) for p in params})

    pruned = {}
    with Scratch(model) as scratch:
        for p in others:
            pruned[p.name] = pruned_for(p, _magnitude(p))
            scratch.set(p.param, p.param.detach().masked_fill(pruned[p.name], 0))

        def solve_layer(name, stats):
            p = by_name[name]
            pruned[name] = pruned_for(p, wanda_scores(p.param, stats.value))
            return p.param.detach().masked_fill(pruned[name], 0)

        sequential_solve(model, targets, batches, problem.loss_fn, "sumsq", "wanda",
                         torch.float32, solve_layer, scratch)
    return Solution({p.name: pruned[p.name] for p in params})
