"""Pruning criteria: name -> scoring function (higher score = more important = kept).

Contract of a criterion::

    fn(params: list[PrunableParam], *, model, batches, loss_fn, generator) -> dict[str, Tensor]

returning one float score tensor per ``param.name`` with the parameter's shape. A criterion must
not modify the model: no in-place writes to weights, no ``.backward()`` into ``.grad`` (use
``torch.autograd.grad``); ``compute_mask`` restores train/eval modes itself. Randomness must come
from ``generator`` (a seeded CPU ``torch.Generator``).

A criterion whose mask and weight update come from one joint computation (oBERT's OBS update,
SparseGPT's column-sequential reconstruction) registers a *solver* instead of a score function::

    @register_solver("name")
    def solve(problem: PruneProblem) -> Solution: ...

``problem.allocate(scores)`` applies the requested scope / N:M pattern / ``current`` rules to any
score dict, so a solver that ranks by a score reuses the library's exact-count allocation.
``compute_mask`` keeps only ``Solution.pruned``; ``prune`` also writes ``Solution.weights`` (the
updated values of the surviving weights) before zeroing the pruned ones. A solver must not modify
the model itself. Options of a criterion (``compute_mask(..., options={...})``) reach score
functions as keyword arguments and solvers as ``problem.options``.
Adding a criterion is one function plus its ``@register_criterion("name")`` line.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..errors import UserError
from .select import PrunableParam

ScoreFn = Callable[..., "dict[str, torch.Tensor]"]


@dataclass(frozen=True)
class PruneProblem:
    """Everything a solver needs: what to prune, how much, under which allocation rules."""

    params: list
    sparsity: float
    scope: str
    nm: Optional[tuple]              # (N, M) when a pattern was requested
    current: Optional[object]        # Mask whose pruned positions stay pruned
    model: torch.nn.Module
    batches: object
    loss_fn: Optional[Callable]
    generator: torch.Generator
    options: dict
    allocate: Callable[["dict[str, torch.Tensor]"], "dict[str, torch.Tensor]"]  # scores -> pruned


@dataclass
class Solution:
    """``pruned``: name -> bool tensor, True = pruned. ``weights``: name -> new values (or None)."""

    pruned: dict
    weights: Optional[dict] = None


SolveFn = Callable[[PruneProblem], Solution]

CRITERIA: dict[str, Callable] = {}


def register_criterion(name: str):
    """Decorator: register a score function under ``name``."""

    def deco(fn: ScoreFn) -> ScoreFn:
        CRITERIA[name] = fn
        return fn

    return deco


def register_solver(name: str):
    """Decorator: register a joint mask + weight-update solver under ``name``."""

    def deco(fn: SolveFn) -> SolveFn:
        fn.is_solver = True
        CRITERIA[name] = fn
        return fn

    return deco


def is_solver(criterion: Callable) -> bool:
    return bool(getattr(criterion, "is_solver", False))


@register_criterion("magnitude")
def magnitude(params: list[PrunableParam], *, model=None, batches=None, loss_fn=None,
              generator=None) -> dict[str, torch.Tensor]:
    """|w| (one-shot / iterative / gradual magnitude pruning)."""
    with torch.no_grad():
        return {p.name: p.param.detach().abs() for p in params}


@register_criterion("random")
def random(params: list[PrunableParam], *, model=None, batches=None, loss_fn=None,
           generator: Optional[torch.Generator] = None) -> dict[str, torch.Tensor]:
    """Uniform random scores; exact top-k of them is an exact-count random mask.

    Scores are drawn on the CPU from ``generator`` in parameter order, so a seed gives the same
    mask on every device.
    """
    return {p.name: torch.rand(p.param.shape, generator=generator).to(p.param.device)
            for p in params}


def _summed_gradients(params: list[PrunableParam], model, batches, loss_fn,
                      criterion: str) -> dict[str, torch.Tensor]:
    """Σ over ``batches`` of d loss_fn(model, batch) / d param, per selected parameter.

    Uses ``torch.autograd.grad`` so the model's ``.grad`` fields are never touched; the model is
    used in its current train/eval mode. Parameters the loss does not reach get zero gradients.
    Selected parameters with ``requires_grad=False`` (frozen) get it enabled for the duration of
    the call and restored afterwards. Accumulation is in at least float32.
    """
    if batches is None or loss_fn is None:
        raise UserError(f"criterion {criterion!r} needs batches and loss_fn (pass batches=[batch] "
                        f"and loss_fn(model, batch) -> scalar loss)")
    if isinstance(batches, (torch.Tensor, Mapping)):
        raise UserError(f"criterion {criterion!r}: batches must be an iterable of batches "
                        f"(e.g. [batch]), got a single {type(batches).__name__}")
    tensors = [p.param for p in params]
    frozen = [t for t in tensors if not t.requires_grad]
    sums: list[Optional[torch.Tensor]] = [None] * len(tensors)
    seen = 0
    try:
        for t in frozen:
            t.requires_grad_(True)
        with torch.enable_grad():
            for batch in batches:
                loss = loss_fn(model, batch)
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    got = type(loss).__name__ if not isinstance(loss, torch.Tensor) \
                        else f"tensor of shape {tuple(loss.shape)}"
                    raise UserError(f"criterion {criterion!r}: loss_fn must return a scalar "
                                    f"tensor, got {got}")
                if not loss.requires_grad:
                    raise UserError(f"criterion {criterion!r}: the loss does not depend on any "
                                    f"parameter with gradients (computed under torch.no_grad() "
                                    f"or detached?)")
                grads = torch.autograd.grad(loss.reshape(()), tensors, allow_unused=True)
                for i, (t, g) in enumerate(zip(tensors, grads)):
                    if g is None:
                        continue
                    g = g.detach().to(torch.promote_types(g.dtype, torch.float32))
                    sums[i] = g if sums[i] is None else sums[i].add_(g)
                del loss, grads
                seen += 1
    finally:
        for t in frozen:
            t.requires_grad_(False)
    if seen == 0:
        raise UserError(f"criterion {criterion!r} needs at least one batch; batches was empty")
    out = {}
    for p, s in zip(params, sums):
        if s is None:
            s = torch.zeros(p.param.shape, device=p.param.device,
                            dtype=torch.promote_types(p.param.dtype, torch.float32))
        out[p.name] = s
    return out


@register_criterion("snip")
def snip(params: list[PrunableParam], *, model=None, batches=None, loss_fn=None,
         generator=None) -> dict[str, torch.Tensor]:
    """SNIP connection sensitivity |g ⊙ w|, g summed over ``batches`` (SMC-Bench: one batch).

    The normalisation by Σ|g ⊙ w| of the paper does not change the ranking and is omitted.
    """
    grads = _summed_gradients(params, model, batches, loss_fn, "snip")
    with torch.no_grad():
        return {p.name: (grads.pop(p.name) * p.param.detach()).abs_() for p in params}


@register_criterion("gradient")
def gradient(params: list[PrunableParam], *, model=None, batches=None, loss_fn=None,
             generator=None) -> dict[str, torch.Tensor]:
    """|Σ_batches g| (SMC-Bench's protein variant: accumulated gradient magnitude, no |w|)."""
    grads = _summed_gradients(params, model, batches, loss_fn, "gradient")
    return {name: g.abs_() for name, g in grads.items()}
