"""Pruning criteria: name -> scoring function (higher score = more important = kept).

Contract of a criterion::

    fn(params: list[PrunableParam], *, model, batches, loss_fn, generator) -> dict[str, Tensor]

returning one float score tensor per ``param.name`` with the parameter's shape. A criterion must
not modify the model: no in-place writes to weights, no ``.backward()`` into ``.grad`` (use
``torch.autograd.grad``); ``compute_mask`` restores train/eval modes itself. Randomness must come
from ``generator`` (a seeded CPU ``torch.Generator``).

A criterion that also moves the surviving weights (e.g. the OBS update of oBERT) carries an
``update`` attribute::

    fn.update(params, mask, *, model, batches, loss_fn, generator) -> None   # in place

which ``prune()`` calls after the mask is computed and before pruned weights are zeroed.
Adding a criterion is one function plus its ``@register_criterion("name")`` line.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .select import PrunableParam

ScoreFn = Callable[..., "dict[str, torch.Tensor]"]
UpdateFn = Callable[..., None]

CRITERIA: dict[str, ScoreFn] = {}


def register_criterion(name: str, update: Optional[UpdateFn] = None):
    """Decorator: register ``fn`` under ``name`` (optionally with a weight ``update``)."""

    def deco(fn: ScoreFn) -> ScoreFn:
        if update is not None:
            fn.update = update
        CRITERIA[name] = fn
        return fn

    return deco


def weight_update(criterion: ScoreFn) -> Optional[UpdateFn]:
    """The criterion's weight update, or None (magnitude, random)."""
    return getattr(criterion, "update", None)


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
