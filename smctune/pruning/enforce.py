"""Keep pruned weights and their optimizer state at exactly zero during training.

Driving it from a training loop::

    enforcer = MaskEnforcer(model, mask, optimizer)
    for batch in loader:
        optimizer.zero_grad()
        loss(model, batch).backward()
        enforcer.before_step()         # gradient strategy: mask the gradients; else nothing
        optimizer.step()
        enforcer.after_step()          # post-step strategy: apply(); else nothing

``optimizer.step(); enforcer.apply()`` after every step (the protocol before ``before_step``
existed) still works with any optimizer: it is the post-step strategy. Call ``apply()`` after
changing weights behind the enforcer's back (``model.load_state_dict``); a replaced optimizer state
(``optimizer.load_state_dict``) is noticed (identity of ``optimizer.state``) and zeroed by a full
``apply()`` in the next ``before_step()``.

Two strategies
--------------
``"post_step"`` (any optimizer): after ``optimizer.step()``, multiply every pruned weight and every
same-shaped floating-point optimizer state tensor by the keep mask: 1 + (number of state tensors)
passes over the masked entries per step, 3 for Adam/AdamW, 2 for SGD with momentum.

``"gradient"`` (exact types ``torch.optim.SGD``, ``Adam``, ``AdamW``; for the Adam pair ``eps > 0``
and not ``capturable``): before ``optimizer.step()``, multiply the *gradients* of the pruned tensors
by the keep mask: one pass. These updates are elementwise and map (weight, gradient, every state
entry) = (0, 0, 0) to (0, 0, 0) at every position, for-loop, foreach and fused implementations alike:

* SGD: ``d = g + wd*w = 0``; momentum ``buf = mu*buf + (1-damp)*d = 0`` (first step ``buf = d``);
  nesterov ``d + mu*buf = 0``; ``w -= lr*d`` stays 0. ``maximize`` negates 0.
* Adam/AdamW (amsgrad, ``maximize``, L2 or decoupled decay): the decoupled decay ``w *= 1 - lr*wd``
  multiplies 0; the L2 term adds ``wd*0``; ``m.lerp_(g, 1-b1) = 0``; ``v = b2*v + (1-b2)*g*g = 0``;
  ``max_v = max(max_v, v) = 0``; ``w -= step_size * m / (sqrt(v)/bc2 + eps)`` is ``0/eps = 0``.
  With ``eps = 0`` that is ``0/0 = NaN``, and ``capturable=True`` divides by ``-lr`` (NaN when the
  learning rate is 0): those use post-step enforcement.

So once weights and state are 0 at the pruned positions (``apply()``: done by ``update`` and by the
first ``before_step``), masking the gradient keeps them exactly 0 (``-0.0`` may appear; it equals 0
everywhere) for the rest of the run, and the kept entries get bit-for-bit the updates post-step
enforcement gives them. A mask change (``update``) zeroes weights and state at the newly pruned
positions with one full ``apply()``. Any other optimizer (Adagrad, RMSprop, ..., or a subclass of
the three, whose ``step`` may differ) is not known to be zero-preserving and gets post-step
enforcement. Not detected: optimizer step hooks that write into weights or state.

Gradient masking means clipping called after ``before_step()`` sees the gradient of the sparse
network (``SparseTraining.clip_grad_norm_`` gives that with either strategy), and RigL, which grows
by the *dense* gradient, copies it first (``RigL.before_step``, on update steps only).

Which strategy ``"auto"`` picks, and why
----------------------------------------
Gradient masking for SGD on every device, for fused Adam/AdamW (``fused=True``, what
``smctune.train.optim`` builds) everywhere and for the other Adam/AdamW off the CPU; post-step
enforcement for non-fused Adam/AdamW on CPU and for every other optimizer. The CPU exception is a slow
path in the for-loop implementation's separate square-root pass: gradient masking keeps Adam's pruned
second moments at exact zeros, and the step takes ``exp_avg_sq.sqrt()`` over all of them, which over
zeros is far slower than over normal floats (32.5M parameters at 50 %, one CPU thread: dense step
125 ms, post-step 138 ms, gradient masking 278 ms). Post-step enforcement holds
``(1-b2)*g*g`` of the dense gradient at the pruned positions during the step (normal floats; zeroed
right after), so its sqrt stays fast, and that outweighs its extra passes. The fused kernel does the
whole update in one pass over each tensor and shows no such penalty (32.5M parameters at 50 %, one
CPU thread: dense 18 ms, gradient masking 27 ms, post-step 40 ms per optimizer step). Accelerators
have no such slow path and every pass is memory-bound, so there one pass beats three.
``benchmarks/bench_masking.py`` measures both strategies against a dense step on a BERT-base-shaped
model. Override with ``strategy="gradient"`` (still requires a zero-preserving optimizer) or
``"post_step"``.

Denormals do not arise at pruned positions with either strategy (exact zeros, or normal values
zeroed every step), and none appeared in the benchmark's gradients or moments (counted), so nothing
here sets ``torch.set_flush_denormal``: it is a process-wide floating-point mode a library should not
flip, and it does not help the zero slow path (measured: sqrt of zeros as slow with it on).

Cost of one pass: the keep mask is the Mask's own bool tensor viewed as ``uint8`` (0/1), moved to the
parameter's device once (no copy when it is already there; at most 1 byte per entry). On CPU,
``float *= uint8`` takes torch's mixed-dtype path, several times slower than ``float *= float`` (and
bf16/f16/bool/int8 masks are no better), so ``_mul`` converts the mask in 1M-entry pieces into a
reusable 4 MB buffer that stays in cache and multiplies every tensor of the parameter by the piece.
Why multiply and not ``masked_fill_``: on CPU ``masked_fill_`` is a per-element branch, far slower
than a vectorised multiply; on GPU both are memory-bound and equal. The multiply writes ``-0.0`` for
negative pruned values (equal to 0 in every comparison, ``count_nonzero`` and ``to_sparse``) and keeps
a NaN/inf (``Mask.apply`` uses ``masked_fill_`` and clears those): post-step enforcement one the
optimizer wrote at a pruned position, gradient masking a non-finite gradient entry at a pruned
position.
Sparse-layout gradients (``nn.Embedding(sparse=True)`` with SGD) are not masked; a step with one
gets the post-step ``apply()`` as well.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..errors import UserError, choices
from .mask import Mask

STRATEGIES = ("auto", "gradient", "post_step", "weights_only")
_CHUNK = 1 << 20  # mask piece converted at a time on CPU: 4 MB as float32, fits in the L3 cache

# Exact types only: a subclass may override step().
_SGD = torch.optim.SGD
_ADAM_FAMILY = (torch.optim.Adam, torch.optim.AdamW)


def gradient_masking_blocker(optimizer: Optional[torch.optim.Optimizer]) -> Optional[str]:
    """``None`` when masking the gradients provably keeps zero weights and zero state at zero under
    ``optimizer`` (see the module docstring), else the reason it does not."""
    if optimizer is None:
        return "no optimizer was given, so how the weights are updated is unknown"
    kind = type(optimizer)
    if kind is _SGD:
        return None
    if kind not in _ADAM_FAMILY:
        return (f"{kind.__name__} is not known to keep zero weights and state at zero (only the "
                f"exact types SGD, Adam and AdamW are)")
    for group in optimizer.param_groups:
        eps = group.get("eps")
        if isinstance(eps, torch.Tensor) or not isinstance(eps, (int, float)) or not eps > 0:
            return f"{kind.__name__} with eps={eps!r} divides 0 by 0 at pruned positions (needs eps > 0)"
        if group.get("capturable"):
            return f"{kind.__name__}(capturable=True) divides by the learning rate (NaN when it is 0)"
    return None


def _auto_masks_gradients(optimizer: torch.optim.Optimizer, pairs) -> bool:
    """The ``"auto"`` choice (module docstring): gradient masking unless a non-fused Adam on CPU."""
    if type(optimizer) is _SGD or all(group.get("fused") for group in optimizer.param_groups):
        return True
    return not any(param.device.type == "cpu" for param, _ in pairs)


class MaskEnforcer:
    """Zero pruned weights and the optimizer state at pruned positions.

    Optimizer state handled: every tensor in ``optimizer.state[param]`` with the parameter's shape
    (Adam/AdamW ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``; SGD ``momentum_buffer``; ...).
    State that does not exist yet (before the first step) is simply skipped.
    Create the enforcer after moving the model to its device.

    ``strategy``: ``"auto"`` (default), ``"gradient"``, ``"post_step"`` or ``"weights_only"``
    (SMC-Bench's enforcement, optimizer state untouched); see the module docstring.
    ``masks_gradients`` tells which one ``before_step``/``after_step`` carry out.
    """

    __slots__ = ("model", "optimizer", "strategy", "_mask", "_pairs", "_synced_state", "_pending",
                 "_masks_gradients", "_scratch", "grads_masked")

    def __init__(self, model: torch.nn.Module, mask: Mask,
                 optimizer: Optional[torch.optim.Optimizer] = None, *, strategy: str = "auto"):
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise UserError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if strategy not in STRATEGIES:
            raise UserError(f"unknown enforcement strategy {strategy!r} (choose from {choices(STRATEGIES)})")
        if strategy == "gradient":
            reason = gradient_masking_blocker(optimizer)
            if reason is not None:
                raise UserError(f"strategy 'gradient' needs a zero-preserving optimizer: {reason}")
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self._mask: Optional[Mask] = None
        self._pairs: tuple = ()
        self._synced_state = None  # the optimizer.state object the last apply() zeroed
        self._pending = False  # before_step() masked the gradients of the step about to run
        self._masks_gradients = False
        self._scratch: dict = {}  # dtype -> _CHUNK-entry CPU buffer for the mask pieces (_mul)
        #: True when this step's ``.grad`` were masked in place (by ``before_step()`` or
        #: ``mask_gradients()``; reset by a ``before_step()`` that does not mask). RigL checks it: it
        #: grows by the dense gradient (see ``RigL.before_step``).
        self.grads_masked = False
        self._set(mask)

    @property
    def mask(self) -> Mask:
        return self._mask

    @property
    def masks_gradients(self) -> bool:
        """True when ``before_step`` masks gradients (and ``after_step`` then has nothing to do),
        False when ``after_step`` enforces after the optimizer step."""
        return self._masks_gradients

    def _set(self, mask: Mask) -> None:
        if not isinstance(mask, Mask):
            raise UserError(f"mask must be a smctune Mask, got {type(mask).__name__}")
        pairs = []
        for _, param, m in mask.resolve(self.model):
            # Tensors with nothing pruned need no work at all on the hot path.
            if bool(m.all()):
                continue
            pairs.append((param, m.to(param.device).view(torch.uint8)))
        self._mask = mask
        self._pairs = tuple(pairs)
        self._masks_gradients = self._choose()

    def _choose(self) -> bool:
        if (self.strategy in ("post_step", "weights_only")
                or gradient_masking_blocker(self.optimizer) is not None):
            return False
        return self.strategy == "gradient" or _auto_masks_gradients(self.optimizer, self._pairs)

    @torch.no_grad()
    def apply(self) -> None:
        """Zero pruned weights and optimizer state at pruned positions (idempotent).

        ``strategy="weights_only"`` reproduces SMC-Bench: the weights only, the optimizer state at
        pruned positions keeps evolving (Adam's moments then push the zeroed weights away from 0
        at every step, which the next ``apply`` undoes)."""
        keep_state = self.optimizer is not None and self.strategy != "weights_only"
        state = self.optimizer.state if keep_state else {}
        for param, keep in self._pairs:
            tensors = [param]
            st = state.get(param)
            if st:
                shape = param.shape
                tensors.extend(value for key, value in st.items()
                               if key != "step" and isinstance(value, torch.Tensor)
                               and value.shape == shape
                               and (value.is_floating_point() or value.is_complex()))
            self._mul(tensors, keep)
        if keep_state:
            self._synced_state = state

    def _mul(self, tensors, keep: torch.Tensor) -> None:
        """``t *= keep`` for same-shaped ``tensors``. On CPU, ``float *= uint8`` takes torch's slow
        mixed-dtype path (and bf16/f16/bool/int8 masks are as slow as uint8). So the mask is converted to the tensors' dtype in ``_CHUNK``-entry pieces into a small
        reusable scratch buffer that stays in cache, and every tensor is multiplied by the piece:
        same-dtype multiplies, the mask still stored at 1 byte per entry."""
        if keep.device.type != "cpu":  # memory-bound on accelerators: the plain multiply is as fast
            for t in tensors:
                t.mul_(keep)
            return
        flat_keep = keep.view(-1)
        n = flat_keep.numel()
        groups: dict = {}
        for t in tensors:
            if t.is_floating_point() and t.is_contiguous() and t.device == keep.device:
                groups.setdefault(t.dtype, []).append(t.view(-1))
            else:  # complex, strided or elsewhere: the plain (slower) multiply
                t.mul_(keep)
        for dtype, flats in groups.items():
            scratch = self._scratch.get(dtype)
            if scratch is None or scratch.numel() < _CHUNK:
                scratch = self._scratch[dtype] = torch.empty(_CHUNK, dtype=dtype)
            for start in range(0, n, _CHUNK):
                stop = min(start + _CHUNK, n)
                piece = scratch[:stop - start]
                piece.copy_(flat_keep[start:stop])
                for flat in flats:
                    flat[start:stop].mul_(piece)

    @torch.no_grad()
    def mask_gradients(self) -> bool:
        """``grad *= keep`` for every pruned tensor that has a gradient (one pass); False when some
        gradient has a sparse layout and was left as it is. Sets ``grads_masked``."""
        masked = True
        for param, keep in self._pairs:
            grad = param.grad
            if grad is None:
                continue
            if grad.layout is not torch.strided:
                masked = False
                continue
            self._mul((grad,), keep)
        self.grads_masked = True
        return masked

    def before_step(self) -> None:
        """Call after ``backward()`` (and gradient accumulation), before ``optimizer.step()``.

        Gradient strategy: masks the gradients (after a full ``apply()`` the first time, and after
        the optimizer's state was replaced, so weights and state start at 0). Post-step strategy:
        does nothing."""
        self._refresh()
        if not self._masks_gradients:
            self._pending = self.grads_masked = False
            return
        if self._synced_state is not self.optimizer.state:
            self.apply()
        self._pending = self.mask_gradients()

    def after_step(self) -> None:
        """Call after ``optimizer.step()``: nothing when ``before_step`` masked this step's
        gradients, else ``apply()`` (post-step strategy, or ``before_step`` was not called)."""
        if self._pending:
            self._pending = False
            return
        self.apply()

    def _refresh(self) -> None:
        # param groups may be added or changed (eps) during a run: recheck (a few dict lookups)
        if self._masks_gradients and gradient_masking_blocker(self.optimizer) is not None:
            self._masks_gradients = False

    def update(self, mask: Mask) -> None:
        """Swap in a new mask (GMP step, IMP round, RigL) and apply it: weights and state at newly
        pruned positions become 0, which gradient masking then keeps."""
        self._set(mask)
        self.apply()
