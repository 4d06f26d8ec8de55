"""Exact-count mask computation (global or per layer) and one-shot pruning.

Allocation: ``k = num_pruned(n, sparsity)`` lowest-scoring entries are pruned, where ``n`` is the
total over all selected tensors (``scope="global"``) or each tensor's numel (``"layerwise"``).
The threshold comes from a selection pass (``torch.kthvalue``), never a full sort. Ties at the
threshold are broken by position: among equal scores, lower flat index (concatenation order of the
selected parameters) is pruned first. Positions pruned in ``current`` score -inf and every other
score is clamped to the dtype's finite minimum, so they are always pruned first (monotone masks).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable, Optional, Sequence

import torch

from ..errors import UserError, choices
from .criteria import CRITERIA, weight_update
from .mask import Mask
from .select import PrunableParam, num_pruned, select_prunable

SCOPES = ("global", "layerwise")


def _check_sparsity(sparsity: Any) -> float:
    ok = (isinstance(sparsity, numbers.Real) and not isinstance(sparsity, bool)
          and math.isfinite(sparsity) and 0 <= sparsity < 1)
    if not ok:
        raise UserError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    return float(sparsity)


def _check_current(current: Optional[Mask], params: list[PrunableParam]) -> None:
    if current is None:
        return
    if not isinstance(current, Mask):
        raise UserError(f"current must be a Mask or None, got {type(current).__name__}")
    names = [p.name for p in params]
    if set(current.keys()) != set(names):
        extra = sorted(set(current.keys()) - set(names))
        missing = sorted(set(names) - set(current.keys()))
        raise UserError(f"current mask does not cover the selected parameters "
                        f"(missing: {', '.join(missing[:3]) or '-'}; not selected: "
                        f"{', '.join(extra[:3]) or '-'}); use the same include/exclude as before")
    for p in params:
        if tuple(current[p.name].shape) != p.shape:
            raise UserError(f"current mask for {p.name!r} has shape {tuple(current[p.name].shape)}, "
                            f"parameter has {p.shape}")


def _select_pruned(flat: torch.Tensor, k: int, keep_mask: Optional[torch.Tensor],
                   where: str) -> torch.Tensor:
    """Bool tensor (flat's shape): exactly ``k`` True = pruned. ``flat`` is owned and modified."""
    if torch.isnan(flat).any():
        raise UserError(f"pruning scores contain NaN ({where}); are the weights or gradients finite?")
    if keep_mask is not None:
        already = keep_mask.numel() - int(keep_mask.sum())
        if k < already:
            raise UserError(f"target prunes {k} entries ({where}) but the current mask already "
                            f"prunes {already}; sparsity may only increase")
        flat.clamp_(min=torch.finfo(flat.dtype).min)
        flat.masked_fill_(~keep_mask, -math.inf)
    n = flat.numel()
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=flat.device)
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=flat.device)
    threshold = torch.kthvalue(flat, k).values
    pruned = flat < threshold
    need = k - int(pruned.sum())
    ties = flat == threshold
    if need == int(ties.sum()):
        pruned |= ties
    else:  # keep only the first ``need`` tied positions
        pruned[ties.nonzero().squeeze(1)[:need]] = True
    return pruned


def _work_dtype(scores: Iterable[torch.Tensor]) -> torch.dtype:
    return torch.float64 if any(s.dtype == torch.float64 for s in scores) else torch.float32


def _score(model, params, fn, batches, loss_fn, generator) -> dict[str, torch.Tensor]:
    modes = [(m, m.training) for m in model.modules()]
    try:
        scores = fn(params, model=model, batches=batches, loss_fn=loss_fn, generator=generator)
    finally:
        for module, training in modes:
            module.training = training
    for p in params:
        s = scores.get(p.name)
        if s is None or tuple(s.shape) != p.shape:
            got = None if s is None else tuple(s.shape)
            raise ValueError(f"criterion {getattr(fn, '__name__', fn)!r} returned score shape "
                             f"{got} for {p.name!r}, expected {p.shape}")
    return scores


def _compute(model, criterion, sparsity, scope, include, exclude, batches, loss_fn, current, seed):
    if not isinstance(criterion, str) or criterion not in CRITERIA:
        raise UserError(f"unknown pruning criterion {criterion!r}; choose from: {choices(CRITERIA)}")
    if scope not in SCOPES:
        raise UserError(f"unknown pruning scope {scope!r}; choose from: {choices(SCOPES)}")
    sparsity = _check_sparsity(sparsity)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise UserError(f"seed must be an integer, got {seed!r}")
    params = select_prunable(model, include, exclude)
    _check_current(current, params)
    fn = CRITERIA[criterion]
    generator = torch.Generator().manual_seed(int(seed))
    scores = _score(model, params, fn, batches, loss_fn, generator)
    dtype = _work_dtype(scores.values())

    kept: dict[str, torch.Tensor] = {}
    if scope == "global":
        device = scores[params[0].name].device
        flat = torch.cat([scores.pop(p.name).reshape(-1).to(device, dtype) for p in params])
        keep_flat = None
        if current is not None:
            keep_flat = torch.cat([current[p.name].reshape(-1).to(device) for p in params])
        k = num_pruned(flat.numel(), sparsity)
        pruned = _select_pruned(flat, k, keep_flat, "global")
        del flat, keep_flat
        offset = 0
        for p in params:
            n = p.numel
            kept[p.name] = (~pruned[offset:offset + n]).view(p.shape).to(p.param.device)
            offset += n
    else:
        for p in params:
            s = scores.pop(p.name)
            flat = s.reshape(-1).to(s.device, dtype, copy=True)
            keep = None if current is None else current[p.name].reshape(-1).to(s.device)
            pruned = _select_pruned(flat, num_pruned(p.numel, sparsity), keep, repr(p.name))
            kept[p.name] = (~pruned).view(p.shape).to(p.param.device)
    mask = Mask(kept, {p.name: p.aliases for p in params})
    return mask, params, fn, generator


def compute_mask(model: torch.nn.Module, criterion: str, sparsity: float, *,
                 scope: str = "global", include: Optional[Sequence[str]] = None,
                 exclude: Optional[Sequence[str]] = None, batches=None,
                 loss_fn: Optional[Callable] = None, current: Optional[Mask] = None,
                 seed: int = 0) -> Mask:
    """Mask pruning exactly ``num_pruned(n, sparsity)`` entries; the model is left untouched.

    ``criterion``: a name in ``CRITERIA``. ``scope``: ``"global"`` (one ranking over all selected
    tensors) or ``"layerwise"`` (each tensor at ``sparsity``). ``current``: a Mask whose pruned
    positions stay pruned. ``batches``/``loss_fn``: data for data-driven criteria. ``seed``: seeds
    the generator handed to the criterion.
    """
    mask, _, _, _ = _compute(model, criterion, sparsity, scope, include, exclude, batches,
                             loss_fn, current, seed)
    return mask


def prune(model: torch.nn.Module, criterion: str, sparsity: float, *,
          scope: str = "global", include: Optional[Sequence[str]] = None,
          exclude: Optional[Sequence[str]] = None, batches=None,
          loss_fn: Optional[Callable] = None, current: Optional[Mask] = None,
          seed: int = 0) -> Mask:
    """``compute_mask``, then the criterion's weight update (if any), then zero pruned weights."""
    mask, params, fn, generator = _compute(model, criterion, sparsity, scope, include, exclude,
                                           batches, loss_fn, current, seed)
    update = weight_update(fn)
    if update is not None:
        update(params, mask, model=model, batches=batches, loss_fn=loss_fn, generator=generator)
    with torch.no_grad():
        for p in params:
            p.param.masked_fill_(~mask[p.name], 0)
    return mask
