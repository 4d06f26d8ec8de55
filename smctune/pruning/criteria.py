"""Pruning criteria: name -> scoring function (higher score = more important = kept).

Contract of a criterion::

    fn(params: list[PrunableParam], *, model, batches, loss_fn, generator)
        -> dict[str, Tensor] | LazyScores

returning one float score tensor per ``param.name`` with the parameter's shape: a dict, or a
``LazyScores`` whose entries are computed on access (an elementwise function of one tensor per
parameter, e.g. ``magnitude``'s |w|: no full score copies are held). Consumers accept both: entries
via ``scores[name]`` (a lazy entry is recomputed on each access, so read it once per pass),
shapes / dtypes of a lazy mapping via ``.shape(name)`` / ``.dtype(name)`` without computing it.
A criterion must not modify the model: no in-place writes to weights, no ``.backward()`` into
``.grad`` (use ``torch.autograd.grad``); ``compute_mask`` restores train/eval modes itself.
Randomness must come from ``generator`` (a seeded CPU ``torch.Generator``).

A criterion whose mask and weight update come from one joint computation (oBERT's OBS update,
SparseGPT's column-sequential reconstruction) registers a *solver* instead of a score function::

    @register_solver("name")
    def solve(problem: PruneProblem) -> Solution: ...

``problem.allocate(scores)`` applies the requested scope / N:M pattern / ``current`` rules to any
score dict or ``LazyScores``, so a solver ranking by a score reuses the exact-count allocation.
``compute_mask`` keeps only ``Solution.pruned``; ``prune`` also writes ``Solution.weights`` (the
updated values of the surviving weights) before zeroing the pruned ones. A solver must not modify
the model itself. Options of a criterion (``compute_mask(..., options={...})``) reach score
functions as keyword arguments and solvers as ``problem.options``.
Adding a criterion is one function plus its ``@register_criterion("name")`` line.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
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


class LazyScores(Mapping):
    """Read-only mapping name -> ``fn(sources[name])``, computed on every access, never cached.

    For scores that are an *elementwise* function of one tensor per parameter (``|w|``): entry
    ``i`` of the score may depend only on entry ``i`` of its source, so ``chunks`` can score a
    flat slice at a time and a consumer never needs a full score tensor. ``fn`` runs under
    ``torch.no_grad()``, must not modify its input and is called as ``fn(x)`` or, by ``chunks``,
    ``fn(x, out=buffer)`` (as torch's elementwise functions are, e.g. ``torch.abs``).
    """

    def __init__(self, sources: Mapping[str, torch.Tensor],
                 fn: Callable[[torch.Tensor], torch.Tensor]):
        self._sources = dict(sources)
        self._fn = fn

    def __getitem__(self, name: str) -> torch.Tensor:
        with torch.no_grad():
            return self._fn(self._sources[name].detach())

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)

    def __contains__(self, name: object) -> bool:   # Mapping's default would compute the score
        return name in self._sources

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._sources[name].shape)

    def dtype(self, name: str) -> torch.dtype:
        src = self._sources[name]
        with torch.no_grad():   # scoring an empty tensor: no data computed
            return self._fn(torch.empty(0, dtype=src.dtype, device=src.device)).dtype

    def device(self, name: str) -> torch.device:
        return self._sources[name].device

    def chunks(self, name: str, size: int,
               out: Optional[torch.Tensor] = None) -> Iterator[torch.Tensor]:
        """The flat score of ``name`` in order, at most ``size`` entries per chunk.

        With ``out`` (1-D, at least ``min(size, numel)`` entries, the score's dtype and device)
        chunks are written into it as ``fn(x, out=...)``, so each is valid until the next.
        """
        src = self._sources[name].detach()
        with torch.no_grad():
            if not src.is_contiguous():  # slicing would copy the source per chunk: score it once
                flat = self._fn(src).reshape(-1)
                for start in range(0, flat.numel(), size):
                    yield flat[start:start + size]
                return
            flat = src.view(-1)
            if out is not None and (out.dtype != self.dtype(name) or out.device != src.device):
                out = None
            for start in range(0, flat.numel(), size):
                part = flat[start:start + size]
                yield self._fn(part) if out is None else self._fn(part, out=out[:part.numel()])


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
              generator=None) -> LazyScores:
    """|w| (one-shot / iterative / gradual magnitude pruning), computed lazily: no |w| copies."""
    return LazyScores({p.name: p.param for p in params}, torch.abs)


@register_solver("random")
def random(problem: PruneProblem) -> Solution:
    """Random pruning; option ``mask``: ``"exact"`` (default) or ``"bernoulli"``.

    ``exact``: uniform scores through the requested allocation, i.e. an exact-count random mask.
    ``bernoulli``: SMC-Bench's draw, every entry pruned independently with probability
    ``sparsity`` (its sparsity is right only in expectation; ``scope`` and ``pattern`` do not
    apply). Scores are drawn on the CPU from the seeded generator in parameter order, so a seed
    gives the same mask on every device.
    """
    options = dict(problem.options)
    draw = options.pop("mask", "exact")
    if options:
        raise UserError(f"criterion 'random' does not take option(s) {', '.join(sorted(options))} "
                        f"(valid: mask)")
    if draw not in ("exact", "bernoulli"):
        raise UserError(f"random mask {draw!r} is not valid (valid: exact, bernoulli)")
    scores = {p.name: torch.rand(p.param.shape, generator=problem.generator).to(p.param.device)
              for p in problem.params}
    if draw == "exact":
        return Solution(pruned=problem.allocate(scores))
    if problem.nm is not None:
        raise UserError("random mask 'bernoulli' cannot follow an N:M pattern; use mask 'exact'")
    pruned = {}
    for p in problem.params:
        drawn = scores.pop(p.name) < problem.sparsity
        if problem.current is not None:
            drawn |= ~problem.current[p.name].to(drawn.device)
        pruned[p.name] = drawn
    return Solution(pruned=pruned)


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
