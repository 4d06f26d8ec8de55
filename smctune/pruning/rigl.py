"""RigL dynamic sparse training (Evci et al. 2020), plus SMC-Bench's variant of it.

Every ``update_every`` optimizer steps, for each masked tensor independently (per-layer density is
fixed for the run): drop the ``k`` active entries with the smallest ``|w|``, then grow the ``k``
entries with the largest ``|grad|`` (dense gradient of the current batch) among the positions that
are inactive after the drop. ``k = floor(f * n_active)`` (paper) or ``ceil`` (SMC-Bench's code).

Variants (drop fraction ``f`` at optimizer step ``t``):

* ``"paper"``: ``f = alpha/2 * (1 + cos(pi * t / end_step))``, ``alpha = 0.3``; no updates from
  ``end_step`` on (the paper uses ``end_step = 0.75 * total steps``, ``update_every = 100``).
* ``"smcbench"``: SMC-Bench's ``CosineDecay`` (a ``CosineAnnealingLR`` over all ``total_steps``)
  from ``alpha = 0.5`` down to ``0.005``; never stops updating (no ``end_step``).

Driving it from a training loop: growth needs the *dense* gradient of the current batch, while the
enforcer may mask gradients before ``optimizer.step()`` (``MaskEnforcer.before_step``). So call
``rigl.before_step(step)`` in its place: on an update step it first keeps a copy of the dense
gradients of the masked tensors (one gradient-sized copy, on update steps only; the hot path is
untouched), then lets the enforcer mask them; ``maybe_update(step)`` grows by that copy::

    enforcer = MaskEnforcer(model, mask, optimizer)
    rigl = RigL(model, enforcer, optimizer, update_every=100, end_step=int(0.75 * total))
    for step in range(1, total + 1):
        optimizer.zero_grad()
        loss(model, batch).backward()
        rigl.before_step(step)         # dense-gradient copy if step is an update step; masking
        optimizer.step()
        enforcer.after_step()
        rigl.maybe_update(step)        # alias: rigl.on_step_end(step); returns the new Mask or None

(``smctune.pruning.hooks.SparseTraining`` bundles all of this.) Without ``before_step``, as in the
older protocol ``optimizer.step(); enforcer.apply(); rigl.maybe_update(step)``, ``maybe_update``
reads ``param.grad``, which then still holds the dense gradient; it refuses to grow from gradients
the enforcer masked. The copy is taken before any gradient clipping that follows ``before_step``;
clipping scales every entry alike, so the growth ranking is the same (up to rounding ties).

Weights that become active are initialised to exactly 0 and their optimizer state (every
floating-point tensor in ``optimizer.state[param]`` with the parameter's shape: Adam ``exp_avg``,
``exp_avg_sq``, ``max_exp_avg_sq``; SGD ``momentum_buffer``; ...) is reset to 0 there. Dropped
positions are zeroed (weights and state) through ``enforcer.update(new_mask)``.

A just-dropped entry may be regrown in the same update (as in the official TF code, rigl-torch and
SMC-Bench). Like those implementations, by default such an entry is *not* a new connection: it keeps
its weight and optimizer state (otherwise a dense or nearly dense layer would have weights reset to
0 at every update). ``zero_regrown=True`` instead re-initialises every grown entry (regrown ones
included) to 0 with fresh optimizer state, i.e. the literal "drop, then grow at 0".

Ties are broken deterministically by flat index: among equal ``|w|`` the lowest index is dropped
first, among equal ``|grad|`` the lowest index is grown first. NaN gradients never win growth.

Not handled: gradient accumulation across ranks (DDP users must all-reduce gradients before calling
``maybe_update`` and keep masks identical across ranks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import UserError, choices
from .checks import integer as _int, real as _real
from .enforce import MaskEnforcer
from .mask import Mask

VARIANTS = ("paper", "smcbench")
_DEFAULT_ALPHA = {"paper": 0.3, "smcbench": 0.5}


def _step(step) -> int:
    step = _int(step, "step")
    if step < 0:
        raise UserError(f"step must be >= 0, got {step}")
    return step


def rigl_drop_fraction(step: int, *, alpha: float = 0.3, end_step: int) -> float:
    """RigL cosine drop fraction: ``alpha/2 * (1 + cos(pi * step / end_step))`` for
    ``0 <= step < end_step``, exactly ``0.0`` from ``end_step`` on."""
    step = _step(step)
    alpha = _real(alpha, "RigL alpha")
    end_step = _int(end_step, "RigL end_step")
    if not 0 < alpha <= 1:
        raise UserError(f"RigL alpha must be in (0, 1], got {alpha!r}")
    if end_step < 1:
        raise UserError(f"RigL end_step must be >= 1, got {end_step}")
    if step >= end_step:
        return 0.0
    return alpha / 2 * (1 + math.cos(math.pi * step / end_step))


def smcbench_drop_fraction(step: int, *, total_steps: int, initial: float = 0.5,
                           minimum: float = 0.005) -> float:
    """SMC-Bench's drop ("prune") rate: ``CosineAnnealingLR`` from ``initial`` to ``minimum`` over
    ``total_steps``: ``minimum + (initial - minimum) * (1 + cos(pi * step / total_steps)) / 2``.

    Never reaches 0; steps past ``total_steps`` stay at ``minimum`` (clamped, where torch's
    closed form would start rising again)."""
    step = _step(step)
    total_steps = _int(total_steps, "RigL total_steps")
    initial = _real(initial, "RigL initial drop fraction")
    minimum = _real(minimum, "RigL minimum drop fraction")
    if total_steps < 1:
        raise UserError(f"RigL total_steps must be >= 1, got {total_steps}")
    if not 0 < initial <= 1:
        raise UserError(f"RigL initial drop fraction must be in (0, 1], got {initial!r}")
    if not 0 <= minimum <= initial:
        raise UserError(f"RigL minimum drop fraction must be in [0, initial={initial}], got {minimum!r}")
    step = min(step, total_steps)
    return minimum + (initial - minimum) * (1 + math.cos(math.pi * step / total_steps)) / 2


@dataclass(frozen=True)
class RigLConfig:
    """When RigL updates the mask and by how much.

    ``alpha`` is the initial drop fraction (default 0.3 for ``"paper"``, 0.5 for ``"smcbench"``).
    ``end_step`` is required for ``"paper"`` and rejected for ``"smcbench"`` (which never stops);
    ``total_steps`` is required for ``"smcbench"`` and unused by ``"paper"``.
    """

    update_every: int
    end_step: Optional[int] = None
    alpha: Optional[float] = None
    variant: str = "paper"
    total_steps: Optional[int] = None
    minimum: float = 0.005
    zero_regrown: bool = False

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise UserError(f"unknown RigL variant {self.variant!r} (choose from {choices(VARIANTS)})")
        if _int(self.update_every, "RigL update_every") < 1:
            raise UserError(f"RigL update_every must be >= 1, got {self.update_every}")
        if self.alpha is None:
            object.__setattr__(self, "alpha", _DEFAULT_ALPHA[self.variant])
        alpha = _real(self.alpha, "RigL alpha")
        if not 0 < alpha <= 1:
            raise UserError(f"RigL alpha must be in (0, 1], got {self.alpha!r}")
        if not isinstance(self.zero_regrown, bool):
            raise UserError(f"RigL zero_regrown must be True or False, got {self.zero_regrown!r}")
        if self.variant == "paper":
            if self.end_step is None:
                raise UserError("RigL variant 'paper' needs end_step (typically 0.75 * total steps)")
            if _int(self.end_step, "RigL end_step") < 1:
                raise UserError(f"RigL end_step must be >= 1, got {self.end_step}")
            if self.total_steps is not None and _int(self.total_steps, "RigL total_steps") < 1:
                raise UserError(f"RigL total_steps must be >= 1, got {self.total_steps}")
        else:
            if self.end_step is not None:
                raise UserError("RigL variant 'smcbench' has no end_step cutoff; pass total_steps only")
            if self.total_steps is None:
                raise UserError("RigL variant 'smcbench' needs total_steps (the cosine decay length)")
            # validates total_steps, alpha and minimum together
            smcbench_drop_fraction(0, total_steps=self.total_steps, initial=alpha, minimum=self.minimum)

    def is_update_step(self, step: int) -> bool:
        step = _step(step)
        if step % self.update_every:
            return False
        return self.variant == "smcbench" or step < self.end_step

    def drop_fraction(self, step: int) -> float:
        if self.variant == "paper":
            return rigl_drop_fraction(step, alpha=self.alpha, end_step=self.end_step)
        return smcbench_drop_fraction(step, total_steps=self.total_steps, initial=self.alpha,
                                      minimum=self.minimum)

    def n_swap(self, fraction: float, n_active: int) -> int:
        """Entries dropped (and grown) in a tensor with ``n_active`` kept entries."""
        raw = fraction * n_active
        k = math.floor(raw) if self.variant == "paper" else math.ceil(raw)
        return max(0, min(int(k), n_active))


@dataclass(frozen=True)
class LayerUpdate:
    """What one update did to one tensor (``dropped``/``grown`` before netting out regrowth;
    ``new_connections`` = grown entries that were inactive before the update)."""

    name: str
    n_active: int
    k: int
    new_connections: int


class RigL:
    """Drop-and-grow mask updater; see the module docstring for how to drive it."""

    def __init__(self, model: torch.nn.Module, enforcer: MaskEnforcer,
                 optimizer: Optional[torch.optim.Optimizer] = None, *, update_every: int,
                 end_step: Optional[int] = None, alpha: Optional[float] = None,
                 variant: str = "paper", total_steps: Optional[int] = None,
                 minimum: float = 0.005, zero_regrown: bool = False):
        if not isinstance(enforcer, MaskEnforcer):
            raise UserError(f"enforcer must be a MaskEnforcer, got {type(enforcer).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise UserError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if enforcer.model is not model:
            raise UserError("the enforcer was built for a different model")
        if optimizer is not enforcer.optimizer:
            raise UserError("RigL and its MaskEnforcer must share the same optimizer (the enforcer "
                            "zeroes the optimizer state of dropped weights)")
        self.config = RigLConfig(update_every=update_every, end_step=end_step, alpha=alpha,
                                 variant=variant, total_steps=total_steps, minimum=minimum,
                                 zero_regrown=zero_regrown)
        self.model = model
        self.enforcer = enforcer
        self.optimizer = optimizer
        self.last_update: list[LayerUpdate] = []
        self._dense: Optional[dict] = None  # name -> dense gradient copied by before_step
        self._dense_step: Optional[int] = None

    @property
    def mask(self) -> Mask:
        return self.enforcer.mask

    def before_step(self, step: int) -> None:
        """Call after ``backward()``, before ``optimizer.step()``, instead of
        ``enforcer.before_step()``: on an update step, copy the dense gradients of the masked
        tensors (for ``maybe_update(step)``); then let the enforcer mask the gradients."""
        self._dense, self._dense_step = None, None
        if self.config.is_update_step(step):
            with torch.no_grad():
                self._dense = {name: param.grad.detach().clone()
                               for name, param, _ in self.enforcer.mask.resolve(self.model)
                               if param.grad is not None}
            self._dense_step = step
        self.enforcer.before_step()

    def maybe_update(self, step: int) -> Optional[Mask]:
        """Update the mask if ``step`` is an update step; return the new Mask, else None.

        Grows by the dense gradients ``before_step(step)`` copied, else by ``param.grad``."""
        if not self.config.is_update_step(step):
            return None
        grads = self._dense if self._dense_step == step else None
        self._dense, self._dense_step = None, None
        if grads is None and self.enforcer.grads_masked:
            raise UserError("RigL grows by the dense gradient, but the enforcer masked the gradients "
                            "of this step: call rigl.before_step(step) instead of "
                            "enforcer.before_step()")
        return self.update(self.config.drop_fraction(step), grads=grads)

    on_step_end = maybe_update

    @torch.no_grad()
    def update(self, fraction: float, grads: Optional[dict] = None) -> Mask:
        """One drop-and-grow update with drop fraction ``fraction`` (ignores the schedule).

        ``grads``: mask name -> dense gradient to grow by (default: each parameter's ``.grad``)."""
        fraction = _real(fraction, "RigL drop fraction")
        if not 0 <= fraction <= 1:
            raise UserError(f"RigL drop fraction must be in [0, 1], got {fraction!r}")
        mask = self.enforcer.mask
        resolved = mask.resolve(self.model)
        if grads is None:
            grads = {name: param.grad for name, param, _ in resolved}
        missing = [name for name, _, _ in resolved if grads.get(name) is None]
        if missing and len(missing) == len(resolved):
            raise UserError(f"RigL needs the dense gradient of every masked tensor, but .grad is None "
                            f"for: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                            f"(call maybe_update after backward and before zero_grad)")
        # A tensor can take no part in one step's loss (a tree decoder's Merge when every equation
        # of the batch has one operator): no gradient says where to grow, so its mask is kept.
        for name, param, _ in resolved:
            if grads.get(name) is not None and tuple(grads[name].shape) != tuple(param.shape):
                raise UserError(f"gradient for {name!r} has shape {tuple(grads[name].shape)}, "
                                f"parameter has {tuple(param.shape)}")
        new_masks, stats, reinit = {}, [], []
        for name, param, m in resolved:
            old = m.to(param.device).reshape(-1)
            n_active = int(old.sum())
            k = self.config.n_swap(fraction, n_active) if grads.get(name) is not None else 0
            new = old.clone()
            if k:
                active = old.nonzero().squeeze(1)
                order = torch.sort(param.detach().reshape(-1)[active].abs(), stable=True).indices
                new[active[order[:k]]] = False
                candidates = (~new).nonzero().squeeze(1)
                scores = grads[name].detach().reshape(-1).to(old.device)[candidates].abs()
                scores = torch.nan_to_num(scores.float(), nan=-math.inf)
                order = torch.sort(scores, descending=True, stable=True).indices
                new[candidates[order[:k]]] = True
                # grown = new & ~(old minus dropped); with zero_regrown every grown entry, else only
                # the genuinely new connections (new & ~old)
                grown = new & ~old
                n_new = int(grown.sum())
                if self.config.zero_regrown:
                    grown = torch.zeros_like(new)
                    grown[candidates[order[:k]]] = True
                if bool(grown.any()):
                    reinit.append((param, grown.view(param.shape)))
            else:
                n_new = 0
            new_masks[name] = new.view(m.shape).to(m.device)
            stats.append(LayerUpdate(name, n_active, k, n_new))
        self._reinit(reinit)
        new_mask = Mask(new_masks, mask.aliases)
        self.enforcer.update(new_mask)
        self.last_update = stats
        return new_mask

    def _reinit(self, reinit) -> None:
        state = self.optimizer.state if self.optimizer is not None else {}
        for param, grown in reinit:
            param.masked_fill_(grown, 0)
            st = state.get(param)
            if not st:
                continue
            for key, value in st.items():
                if (key != "step" and isinstance(value, torch.Tensor) and value.shape == param.shape
                        and (value.is_floating_point() or value.is_complex())):
                    value.masked_fill_(grown, 0)
