"""SparseGPT (Frantar & Alistarh 2023): layer-wise OBS pruning with column-sequential updates.

For the weight ``W`` (rows × cols) of every selected ``nn.Linear``:

1. ``H = (2/n)·Σ x xᵀ`` over the layer's calibration inputs (``calibration``); dead inputs
   (``H_ii = 0``) get ``H_ii = 1`` and ``W[:, i] = 0``; ``H += λ·I`` with
   ``λ = percdamp · mean(diag H)``.
2. ``U`` = upper Cholesky factor of ``H⁻¹``, ``d = diag U``.
3. Columns are processed in blocks of ``blocksize``. At the start of a block the mask of the whole
   block is chosen from the current (already updated) weights: the lowest ``w²/d²`` are pruned, the
   block's count being its share of the layer's ``num_pruned(numel, sparsity)`` proportional to its
   width (largest remainder, so the layer total is exact). Then for each column ``i``:
   ``err = (w_i − q_i)/d_i`` (``q_i`` = ``w_i`` with the pruned entries zeroed),
   ``W[:, i+1:block_end] −= err ⊗ U[i, i+1:block_end]``, and after the block the remaining columns
   get the lazy batch update ``W[:, block_end:] −= Err · U[block, block_end:]``.
4. ``pattern="N:M"``: instead, at every M-th column the N lowest ``w²/d²`` of the next M columns are
   pruned in every row (the block size is rounded down to a multiple of M, at least M).

Positions pruned in ``current`` score -inf, so they stay pruned (their weights are treated as
removed, and the update compensates for them). Ties: lower index first.

Layers are solved in forward order (the order of first calls in the first calibration pass); with
``sequential=True`` (default) each layer's ``H`` is computed on the model in which the earlier
layers already carry their pruned-and-updated weights (one pass over the batches per layer).
``sequential=False`` computes every ``H`` in one pass on the dense model (faster, more memory).

**Budgets are per layer**: every tensor prunes ``num_pruned(numel, sparsity)``; the ``scope``
argument of compute_mask/prune is ignored. Selected parameters that are not an ``nn.Linear``
weight (embeddings, convolutions, HF ``Conv1D``) are magnitude-pruned at the same per-tensor count
(N:M per row with a pattern), without an update; in sequential mode they are pruned first.

The model is never left modified: weights are written only temporarily (sequential mode) and
restored with all buffers; the new weights are returned in ``Solution.weights`` (pruned entries 0)
and ``prune`` writes them. Options: ``percdamp`` (0.01), ``blocksize`` (128), ``dtype``
("float32" or "float64", for H and the solve), ``sequential`` (True). A Cholesky failure is retried
once with ``max(10·percdamp, 0.01)``, then raises a UserError naming the layer.
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Optional

import torch

from ..errors import UserError
from .allocation import nm_pruned
from .calibration import (Scratch, calibration_batches, capture, check_options, layer_pruned,
                          linear_targets, lowest_in_groups, sequential_solve, spread_counts)
from .criteria import PruneProblem, Solution, register_solver
from .select import num_pruned

OPTIONS = ("percdamp", "blocksize", "dtype", "sequential")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _options(options: dict) -> tuple[float, int, torch.dtype, bool]:
    check_options(options, OPTIONS, "sparsegpt")
    percdamp = options.get("percdamp", 0.01)
    if (isinstance(percdamp, bool) or not isinstance(percdamp, numbers.Real)
            or not math.isfinite(percdamp) or percdamp < 0):
        raise UserError(f"sparsegpt option percdamp must be a finite number >= 0, got {percdamp!r}")
    blocksize = options.get("blocksize", 128)
    if isinstance(blocksize, bool) or not isinstance(blocksize, numbers.Integral) or blocksize < 1:
        raise UserError(f"sparsegpt option blocksize must be an integer >= 1, got {blocksize!r}")
    dtype = options.get("dtype", "float32")
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).replace("torch.", "")
    if dtype not in _DTYPES:
        raise UserError(f"sparsegpt option dtype must be 'float32' or 'float64', got {dtype!r}")
    sequential = options.get("sequential", True)
    if not isinstance(sequential, bool):
        raise UserError(f"sparsegpt option sequential must be true or false, got {sequential!r}")
    return float(percdamp), int(blocksize), _DTYPES[dtype], sequential


def _inverse_cholesky(h: torch.Tensor, percdamp: float, name: str) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + λI)⁻¹``; one retry with more damping."""
    mean_diag = h.diagonal().mean()
    tries = (percdamp, max(10 * percdamp, 0.01))
    for attempt, damp in enumerate(tries):
        damped = h.clone()
        damped.diagonal().add_(damp * mean_diag)
        lower, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
            if int(info) == 0 and bool(torch.isfinite(upper).all()):
                if attempt:
                    warnings.warn(f"sparsegpt: layer {name!r}: Hessian not positive definite with "
                                  f"percdamp={percdamp:g}; used {damp:g}", RuntimeWarning,
                                  stacklevel=2)
                return upper
    raise UserError(f"sparsegpt: Cholesky of the Hessian of layer {name!r} failed even with "
                    f"percdamp={tries[-1]:g}; raise option percdamp or use dtype='float64'")


def sparsegpt_layer(weight: torch.Tensor, hessian: torch.Tensor, count: int,
                    keep: Optional[torch.Tensor] = None, nm: Optional[tuple] = None,
                    blocksize: int = 128, percdamp: float = 0.01,
                    name: str = "?") -> tuple[torch.Tensor, torch.Tensor]:
    """(pruned bool, new weight) for one Linear weight (rows × cols) and its input Hessian.

    Prunes exactly ``count`` entries (or N of every M per row with ``nm``); ``keep``: False where
    already pruned. Works in ``hessian.dtype``; the new weight has ``weight``'s dtype and exact
    zeros at the pruned positions. Neither input is modified.
    """
    dtype = hessian.dtype
    w = weight.detach().to(hessian.device, dtype, copy=True)
    rows, cols = w.shape
    h = hessian.clone()
    if not bool(torch.isfinite(h).all()) or not bool(torch.isfinite(w).all()):
        raise UserError(f"sparsegpt: layer {name!r} has non-finite weights or calibration inputs")
    dead = h.diagonal() == 0
    h.diagonal()[dead] = 1
    w[:, dead] = 0
    u = _inverse_cholesky(h, percdamp, name)
    del h
    if keep is not None:
        keep = keep.to(w.device)
    if nm is not None:
        n, m = nm
        if cols % m:
            raise UserError(f"pattern '{n}:{m}': last dimension of {name!r} is {cols}, "
                            f"not divisible by {m}")
        blocksize = max(m, blocksize // m * m)
    starts = list(range(0, cols, blocksize))
    counts = None
    if nm is None:
        widths = [min(blocksize, cols - s) for s in starts]
        floors = None if keep is None else [int((~keep[:, s:s + b]).sum())
                                             for s, b in zip(starts, widths)]
        counts = spread_counts(count, [rows * b for b in widths], floors, repr(name))
    pruned = torch.zeros(rows, cols, dtype=torch.bool, device=w.device)
    for b, i1 in enumerate(starts):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2]                              # a view: updated in place
        u1 = u[i1:i2, i1:i2]
        d1 = u1.diagonal()
        keep1 = None if keep is None else keep[:, i1:i2]
        p1 = pruned[:, i1:i2]
        if nm is None:
            score = (w1 / d1).square().reshape(1, -1)
            p1.copy_(lowest_in_groups(score, [counts[b]], None if keep1 is None
                                      else keep1.reshape(1, -1), repr(name)).view(p1.shape))
        err1 = torch.zeros(rows, i2 - i1, dtype=dtype, device=w.device)
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                score = (w1[:, i:i + m] / d1[i:i + m]).square()
                p1[:, i:i + m] = nm_pruned(score, n, m, None if keep1 is None
                                           else keep1[:, i:i + m], name)
            col = p1[:, i]
            if not bool(col.any()):
                continue
            err = torch.where(col, w1[:, i], 0) / d1[i]
            w1[:, i].masked_fill_(col, 0)
            if i + 1 < i2 - i1:
                w1[:, i + 1:].addr_(err, u1[i, i + 1:], alpha=-1)
            err1[:, i] = err
        if i2 < cols:
            w[:, i2:].addmm_(err1, u[i1:i2, i2:], alpha=-1)
    w.masked_fill_(pruned, 0)
    return pruned, w.to(weight.device, weight.dtype)


@register_solver("sparsegpt")
def sparsegpt(problem: PruneProblem) -> Solution:
    """SparseGPT masks and reconstructed weights (see the module docstring)."""
    percdamp, blocksize, dtype, sequential = _options(problem.options)
    batches = calibration_batches(problem.batches, problem.loss_fn, "sparsegpt")
    model, params, current, nm = problem.model, problem.params, problem.current, problem.nm
    targets, others = linear_targets(model, params)
    by_name = {p.name: p for p in params}
    pruned, weights = {}, {}

    def solve_layer(name, stats):
        p = by_name[name]
        if p.param.ndim != 2:
            raise ValueError(f"{name!r}: nn.Linear weight of shape {p.shape}")
        keep = None if current is None else current[name]
        pruned[name], new = sparsegpt_layer(p.param, stats.value, num_pruned(p.numel,
                                            problem.sparsity), keep, nm, blocksize, percdamp, name)
        weights[name] = new
        return new

    for name in list(targets):       # nothing to prune: skip its calibration, keep its weights
        keep = None if current is None else current[name]
        if nm is None and num_pruned(by_name[name].numel, problem.sparsity) == 0 \
                and (keep is None or bool(keep.all())):
            pruned[name] = torch.zeros(by_name[name].shape, dtype=torch.bool,
                                       device=by_name[name].param.device)
            del targets[name]

    with Scratch(model) as scratch:
        for p in others:
            pruned[p.name] = layer_pruned(p, p.param.detach().abs(), problem.sparsity, nm,
                                          current, group="layer")
            if sequential:
                scratch.set(p.param, p.param.detach().masked_fill(pruned[p.name], 0))
        if sequential:
            sequential_solve(model, targets, batches, problem.loss_fn, "hessian", "sparsegpt",
                             dtype, solve_layer, scratch)
        else:
            stats, order = capture(model, targets, batches, problem.loss_fn, "hessian",
                                   "sparsegpt", dtype)
            for name in order:
                solve_layer(name, stats.pop(name))
    return Solution({p.name: pruned[p.name] for p in params}, weights or None)
