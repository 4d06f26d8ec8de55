"""``SparseTraining``: sparse training from your own loop (one-shot mask, GMP or RigL), two calls a step.

::

    sparse = SparseTraining(model, optimizer, mask=prune(model, "magnitude", 0.9))      # one-shot
    sparse = SparseTraining(model, optimizer, gmp=GMPSchedule(final=0.9, start_step=100,
                            end_step=800, frequency=50), criterion="magnitude", scope="global")
    sparse = SparseTraining(model, optimizer, mask=prune(model, "random", 0.9),
                            rigl=RigLConfig(update_every=100, end_step=750))         # or a dict

    for step, batch in enumerate(loader, 1):        # step: this optimizer step's number, from 1
        loss = loss_fn(model, batch)
        loss.backward()
        sparse.before_step(step)    # RigL update step: copy the dense gradients; mask gradients
        sparse.clip_grad_norm_(1.0) # optional: clips by the norm of the sparse network's gradient
        optimizer.step()
        optimizer.zero_grad()       # may come before on_step_end: RigL uses its own gradient copy
        sparse.on_step_end(step)    # post-step enforcement if needed; GMP prune step; RigL update

``before_step``/``on_step_end`` take the same ``step``. Enforcement follows ``MaskEnforcer``'s
strategy (gradient masking for optimizers proven to keep zeros at zero where that is faster, else
post-step multiplication; ``strategy=`` overrides), so pruned weights and their optimizer state
stay exactly 0 either way, and the kept weights train identically. On a GMP step the new mask
prunes ``gmp.target(step)`` given the current mask (sparsity only grows; exactly ``gmp.final`` at
``end_step``); weights and optimizer state at the newly pruned positions are zeroed. RigL moves the
mask at constant per-tensor sparsity; grown weights start at exactly 0 with zero optimizer state
(see ``smctune.pruning.rigl``).

Gradient clipping: ``sparse.clip_grad_norm_`` clips by the norm of the *sparse network's* gradient
(the pruned entries are not parameters of it, and the threshold should not depend on how much was
pruned), whichever the strategy. ``torch.nn.utils.clip_grad_norm_`` called before ``before_step``
clips by the dense gradient's norm (what SMC-Bench's fairseq loop did); called after it, it sees
masked gradients only if the enforcer masks them (``sparse.enforcer.masks_gradients``).

How GMP prunes: ``prune_fn(target_sparsity, current_mask) -> Mask`` when given (it must zero the
pruned weights or leave that to the enforcer, which zeroes them anyway), else
``prune(model, criterion, target, current=current_mask, scope=scope, **prune_kwargs)``
(``include``, ``exclude``, ``seed``, ``batches``/``loss_fn`` for data-driven criteria, ``options``...).
Without ``mask``, GMP starts from ``prune_fn(gmp.initial, None)``.

Checkpoints: save ``sparse.mask`` (``Mask.save``) with the model and optimizer; to resume, build the
optimizer, load its state, and pass the loaded mask as ``mask=`` (with the same ``gmp``/``rigl``);
the next ``before_step`` re-applies the mask to weights and optimizer state.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional, Union

import torch

from ..errors import UserError
from .core import prune
from .enforce import MaskEnforcer
from .mask import Mask
from .rigl import RigL, RigLConfig
from .schedules import GMPSchedule

PruneFn = Callable[[float, Optional[Mask]], Mask]


class SparseTraining:
    """Mask enforcement plus an optional GMP schedule or RigL updater, driven by ``before_step``
    and ``on_step_end``; see the module docstring."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                 mask: Optional[Mask] = None, gmp: Optional[GMPSchedule] = None,
                 rigl: Union[RigLConfig, Mapping, None] = None, prune_fn: Optional[PruneFn] = None,
                 criterion: str = "magnitude", scope: str = "global", strategy: str = "auto",
                 **prune_kwargs):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise UserError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if gmp is not None and not isinstance(gmp, GMPSchedule):
            raise UserError(f"gmp must be a GMPSchedule, got {type(gmp).__name__}")
        if gmp is not None and rigl is not None:
            raise UserError("pass gmp or rigl, not both (GMP grows the sparsity, RigL keeps it fixed)")
        if prune_fn is not None and prune_kwargs:
            raise UserError(f"prune_fn replaces the pruning arguments; got both prune_fn and "
                            f"{', '.join(sorted(prune_kwargs))}")
        if prune_fn is None:
            def prune_fn(target: float, current: Optional[Mask]) -> Mask:
                return prune(model, criterion, target, current=current, scope=scope, **prune_kwargs)
        elif not callable(prune_fn):
            raise UserError(f"prune_fn must be callable, got {type(prune_fn).__name__}")
        self.model = model
        self.optimizer = optimizer
        self.gmp = gmp
        self.prune_fn = prune_fn
        if mask is None:
            if gmp is None:
                raise UserError("SparseTraining needs a mask (one-shot, or RigL's starting mask) or "
                                "a gmp schedule")
            mask = self._checked(prune_fn(gmp.initial, None))
        self.enforcer = MaskEnforcer(model, mask, optimizer, strategy=strategy)
        self.enforcer.apply()  # pruned weights are 0 from the first forward on
        self.rigl: Optional[RigL] = None
        if rigl is not None:
            if isinstance(rigl, RigLConfig):
                rigl = dataclasses.asdict(rigl)
            elif not isinstance(rigl, Mapping):
                raise UserError(f"rigl must be a RigLConfig or a dict of its fields, got "
                                f"{type(rigl).__name__}")
            self.rigl = RigL(model, self.enforcer, optimizer, **rigl)

    @property
    def mask(self) -> Mask:
        """The current mask (changes at GMP and RigL update steps)."""
        return self.enforcer.mask

    def before_step(self, step: int) -> None:
        """After ``backward()``, before ``optimizer.step()`` (and before ``clip_grad_norm_``)."""
        if self.rigl is not None:
            self.rigl.before_step(step)
        else:
            self.enforcer.before_step()

    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0, parameters=None) -> torch.Tensor:
        """``torch.nn.utils.clip_grad_norm_`` over the model's parameters (or ``parameters``) by the
        norm of the *sparse network's* gradient, whatever the enforcement strategy: call it after
        ``before_step``. With gradient masking the gradients are already masked; with post-step
        enforcement they are masked first (one extra pass, only when clipping). Returns the total
        norm (of the masked gradient)."""
        if not self.enforcer.grads_masked:
            self.enforcer.mask_gradients()
        params = self.model.parameters() if parameters is None else parameters
        return torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)

    def on_step_end(self, step: int) -> Optional[Mask]:
        """After ``optimizer.step()``; returns the new mask when it changed at this step, else None."""
        self.enforcer.after_step()
        if self.rigl is not None:
            return self.rigl.maybe_update(step)
        if self.gmp is not None and self.gmp.is_update_step(step):
            new = self._checked(self.prune_fn(self.gmp.target(step), self.enforcer.mask))
            self.enforcer.update(new)
            return new
        return None

    @staticmethod
    def _checked(mask) -> Mask:
        if not isinstance(mask, Mask):
            raise UserError(f"prune_fn must return a smctune Mask, got {type(mask).__name__}")
        return mask
