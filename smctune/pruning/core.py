"""Exact-count mask computation (global or per layer) and one-shot pruning.

Allocation: ``k = num_pruned(n, sparsity)`` lowest-scoring entries are pruned, where ``n`` is the
total over all selected tensors (``scope="global"``) or each tensor's numel (``"layerwise"``);
``"erk"`` splits ``num_pruned(N, sparsity)`` over tensors by Erdős–Rényi-kernel densities and
``pattern="N:M"`` prunes N of every M consecutive weights per row (both in ``allocation``).
Scopes dispatch through ``ALLOCATORS``: a new scope is one function plus one entry there.
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
from .allocation import check_nm_sparsity, erk_pruned_counts, nm_pruned, parse_nm
from .criteria import CRITERIA, PruneProblem, Solution, is_solver
from .mask import Mask
from .select import PrunableParam, num_pruned, select_prunable

SCOPES = ("global", "layerwise", "erk")


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


def _score(model, params, fn, batches, loss_fn, generator, options) -> dict[str, torch.Tensor]:
    with _modes_restored(model):
        try:
            scores = fn(params, model=model, batches=batches, loss_fn=loss_fn, generator=generator,
                        **options)
        except TypeError as err:
            if options and "unexpected keyword argument" in str(err):
                raise UserError(f"criterion {getattr(fn, '__name__', fn)!r} does not take option(s) "
                                f"{', '.join(sorted(options))}: {err}") from None
            raise
    for p in params:
        s = scores.get(p.name)
        if s is None or tuple(s.shape) != p.shape:
            got = None if s is None else tuple(s.shape)
            raise ValueError(f"criterion {getattr(fn, '__name__', fn)!r} returned score shape "
                             f"{got} for {p.name!r}, expected {p.shape}")
    return scores


class _modes_restored:
    """Criteria may switch modules to eval (oBERT samples gradients in eval mode); undo that."""

    def __init__(self, model):
        self.modes = [(m, m.training) for m in model.modules()]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for module, training in self.modes:
            module.training = training
        return False


def _flat_scores(scores, p, dtype) -> torch.Tensor:
    """A private flat working copy of ``p``'s scores (selection modifies it in place)."""
    s = scores.pop(p.name)
    return s.reshape(-1).to(s.device, dtype, copy=True)


def _flat_keep(current: Optional[Mask], p, device) -> Optional[torch.Tensor]:
    return None if current is None else current[p.name].reshape(-1).to(device)


def _allocate_global(params, scores, current, sparsity, dtype) -> dict[str, torch.Tensor]:
    """One ranking over the concatenation of all selected tensors (flat-index tie rule)."""
    device = scores[params[0].name].device
    flat = torch.cat([scores.pop(p.name).reshape(-1).to(device, dtype) for p in params])
    keep_flat = None
    if current is not None:
        keep_flat = torch.cat([current[p.name].reshape(-1).to(device) for p in params])
    pruned = _select_pruned(flat, num_pruned(flat.numel(), sparsity), keep_flat, "global")
    del flat, keep_flat
    out, offset = {}, 0
    for p in params:
        out[p.name] = pruned[offset:offset + p.numel].view(p.shape)
        offset += p.numel
    return out


def _allocate_per_tensor(params, scores, current, dtype, counts) -> dict[str, torch.Tensor]:
    """Each tensor prunes its own ``counts[name]`` lowest scores (layerwise and ERK share this)."""
    out = {}
    for p in params:
        flat = _flat_scores(scores, p, dtype)
        keep = _flat_keep(current, p, flat.device)
        out[p.name] = _select_pruned(flat, counts[p.name], keep, repr(p.name)).view(p.shape)
    return out


def _allocate_layerwise(params, scores, current, sparsity, dtype) -> dict[str, torch.Tensor]:
    """Every tensor at ``sparsity``, rounded per tensor."""
    counts = {p.name: num_pruned(p.numel, sparsity) for p in params}
    return _allocate_per_tensor(params, scores, current, dtype, counts)


def _allocate_erk(params, scores, current, sparsity, dtype) -> dict[str, torch.Tensor]:
    """Erdős–Rényi-kernel budgets per tensor, exact total (see ``allocation``)."""
    counts = erk_pruned_counts({p.name: p.shape for p in params}, sparsity)
    return _allocate_per_tensor(params, scores, current, dtype, counts)


def _allocate_nm(params, scores, current, dtype, nm) -> dict[str, torch.Tensor]:
    """N:M groups along the last dim of every tensor; sparsity is implied by the pattern."""
    out = {}
    for p in params:
        s = _flat_scores(scores, p, dtype).view(p.shape)
        keep = None if current is None else current[p.name].to(s.device)
        out[p.name] = nm_pruned(s, nm[0], nm[1], keep, p.name)
    return out


ALLOCATORS = {"global": _allocate_global, "layerwise": _allocate_layerwise, "erk": _allocate_erk}


def _check_args(criterion, sparsity, scope, pattern, seed) -> tuple[float, Optional[tuple]]:
    """Validate the user-facing arguments; returns (sparsity, parsed N:M pattern or None)."""
    if not isinstance(criterion, str) or criterion not in CRITERIA:
        raise UserError(f"unknown pruning criterion {criterion!r}; choose from: {choices(CRITERIA)}")
    if scope not in SCOPES:
        raise UserError(f"unknown pruning scope {scope!r}; choose from: {choices(SCOPES)}")
    nm = None if pattern is None else parse_nm(pattern)
    sparsity = _check_sparsity(sparsity)
    if nm is not None:
        check_nm_sparsity(sparsity, *nm)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise UserError(f"seed must be an integer, got {seed!r}")
    return sparsity, nm


def _allocator(params, sparsity, scope, nm, current):
    """scores -> pruned bool tensors under the requested scope / pattern / ``current`` rules."""

    def allocate(scores: dict) -> dict:
        scores = dict(scores)  # allocation pops entries; leave the caller's dict intact
        dtype = _work_dtype(scores.values())
        if nm is not None:
            return _allocate_nm(params, scores, current, dtype, nm)
        return ALLOCATORS[scope](params, scores, current, sparsity, dtype)

    return allocate


def _compute(model, criterion, sparsity, scope, include, exclude, batches, loss_fn, current, seed,
             pattern=None, options=None) -> tuple[Mask, list, Optional[dict]]:
    """(mask, selected params, new weights from a solver or None)."""
    sparsity, nm = _check_args(criterion, sparsity, scope, pattern, seed)
    if options is not None and not isinstance(options, dict):
        raise UserError(f"options must be a dict of criterion options, got {type(options).__name__}")
    options = dict(options or {})
    params = select_prunable(model, include, exclude)
    _check_current(current, params)
    fn = CRITERIA[criterion]
    generator = torch.Generator().manual_seed(int(seed))
    allocate = _allocator(params, sparsity, scope, nm, current)
    weights = None
    if is_solver(fn):
        problem = PruneProblem(params=params, sparsity=sparsity, scope=scope, nm=nm, current=current,
                               model=model, batches=batches, loss_fn=loss_fn, generator=generator,
                               options=options, allocate=allocate)
        with _modes_restored(model):
            solution: Solution = fn(problem)
        pruned, weights = solution.pruned, solution.weights
    else:
        pruned = allocate(_score(model, params, fn, batches, loss_fn, generator, options))
    kept = {p.name: (~pruned.pop(p.name)).to(p.param.device) for p in params}
    mask = Mask(kept, {p.name: p.aliases for p in params})
    return mask, params, weights


def compute_mask(model: torch.nn.Module, criterion: str, sparsity: float, *,
                 scope: str = "global", include: Optional[Sequence[str]] = None,
                 exclude: Optional[Sequence[str]] = None, batches=None,
                 loss_fn: Optional[Callable] = None, current: Optional[Mask] = None,
                 seed: int = 0, pattern: Optional[str] = None,
                 options: Optional[dict] = None) -> Mask:
    """Mask pruning exactly ``num_pruned(n, sparsity)`` entries; the model is left untouched.

    ``criterion``: a name in ``CRITERIA``. ``scope``: ``"global"`` (one ranking over all selected
    tensors), ``"layerwise"`` (each tensor at ``sparsity``) or ``"erk"`` (Erdős–Rényi-kernel
    per-tensor budgets, exact total). ``pattern``: ``"N:M"`` prunes the N lowest of every M
    consecutive weights along the last dim (``sparsity`` must be N/M; ``scope`` is then unused).
    ``current``: a Mask whose pruned positions stay pruned. ``batches``/``loss_fn``: data for
    data-driven criteria. ``seed``: seeds the generator handed to the criterion. ``options``:
    criterion options (e.g. ``{"block_size": 50}`` for oBERT).
    """
    mask, _, _ = _compute(model, criterion, sparsity, scope, include, exclude, batches,
                          loss_fn, current, seed, pattern, options)
    return mask


def prune(model: torch.nn.Module, criterion: str, sparsity: float, *,
          scope: str = "global", include: Optional[Sequence[str]] = None,
          exclude: Optional[Sequence[str]] = None, batches=None,
          loss_fn: Optional[Callable] = None, current: Optional[Mask] = None,
          seed: int = 0, pattern: Optional[str] = None, options: Optional[dict] = None) -> Mask:
    """``compute_mask``, then a solver's weight update (oBERT, SparseGPT), then zero pruned weights."""
    mask, params, weights = _compute(model, criterion, sparsity, scope, include, exclude,
                                     batches, loss_fn, current, seed, pattern, options)
    with torch.no_grad():
        for p in params:
            if weights is not None and p.name in weights:
                p.param.copy_(weights[p.name])
            p.param.masked_fill_(~mask[p.name], 0)
    return mask
