"""Calibration-input capture and shared helpers for the activation-aware solvers (Wanda, SparseGPT).

A selected parameter is a *Linear target* when it is the ``.weight`` of one or more ``nn.Linear``
modules (matched by identity, so a weight tied into several modules is one target fed by all of
them). Forward pre-hooks on those modules see each call's input, flattened to
``(tokens, in_features)``, while ``loss_fn(model, batch)`` runs on every calibration batch under
``torch.no_grad()`` in the model's current train/eval mode (its return value is not used).
Two statistics can be accumulated per target:

* ``"sumsq"``: per input column ``Σ x_j²`` and the token count (Wanda's ``‖X_j‖₂²``);
* ``"hessian"``: ``H = (2/n)·Σ x xᵀ`` kept as a running average (``H ← H·n/(n+t) + (2/(n+t))·XᵀX``),
  so it never holds a raw sum that grows with the data (SparseGPT's layer Hessian).

Hooks are always removed (try/finally). ``Scratch`` lets a solver write weights into the model
temporarily (sequential processing) and puts back the original values, and every buffer (e.g.
BatchNorm running statistics updated by train-mode forwards), when it exits. ``spread_counts`` and
``lowest_in_groups`` are the exact-count helpers both solvers use for their own comparison groups
(rows, column blocks).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..errors import UserError
from .allocation import largest_remainder, nm_pruned
from .select import num_pruned

KINDS = ("sumsq", "hessian")


# ------------------------------------------------------------------------------------ targets
def linear_targets(model: nn.Module, params) -> tuple[dict, list]:
    """(name -> [nn.Linear modules whose weight is that parameter], selected params that are not).

    Keys follow ``params`` order; a parameter tied into several Linear modules lists all of them.
    """
    by_id = {id(p.param): p for p in params}
    found: dict[str, list] = {}
    for module in model.modules():
        if isinstance(module, nn.Linear):
            p = by_id.get(id(module.weight))
            if p is not None:
                found.setdefault(p.name, []).append(module)
    targets = {p.name: found[p.name] for p in params if p.name in found}
    others = [p for p in params if p.name not in found]
    return targets, others


def calibration_batches(batches, loss_fn, method: str) -> list:
    """Validate ``batches``/``loss_fn`` and materialise the batches (solvers make several passes)."""
    if batches is None or loss_fn is None:
        raise UserError(f"criterion {method!r} needs calibration data: pass batches=[batch, ...] "
                        f"and loss_fn(model, batch) that runs the model forward")
    if isinstance(batches, (torch.Tensor, Mapping)):
        raise UserError(f"criterion {method!r}: batches must be an iterable of batches "
                        f"(e.g. [batch]), got a single {type(batches).__name__}")
    try:
        batches = list(batches)
    except TypeError:
        raise UserError(f"criterion {method!r}: batches must be an iterable of batches, got "
                        f"{type(batches).__name__}") from None
    if not batches:
        raise UserError(f"criterion {method!r} needs at least one calibration batch; "
                        f"batches was empty")
    return batches


# ------------------------------------------------------------------------------------ statistics
@dataclass
class InputStats:
    """Accumulated input statistics of one Linear target."""

    kind: str
    in_features: int
    dtype: torch.dtype
    tokens: int = 0
    value: Optional[torch.Tensor] = field(default=None, repr=False)  # sumsq (in,) or H (in, in)

    def add(self, x: torch.Tensor) -> None:
        """Fold in a (tokens, in_features) block of inputs."""
        t = x.shape[0]
        if t == 0:
            return
        x = x.to(self.dtype)
        if self.kind == "sumsq":
            if self.value is None:
                self.value = torch.zeros(self.in_features, dtype=self.dtype, device=x.device)
            self.value.add_(x.square().sum(dim=0))
            self.tokens += t
            return
        if self.value is None:
            self.value = torch.zeros(self.in_features, self.in_features, dtype=self.dtype,
                                     device=x.device)
        total = self.tokens + t
        self.value.mul_(self.tokens / total)
        x = x * math.sqrt(2.0 / total)
        self.value.addmm_(x.T, x)
        self.tokens = total


def _input_of(args: tuple, kwargs: dict) -> Optional[torch.Tensor]:
    if args:
        return args[0]
    return kwargs.get("input")


def capture(model: nn.Module, targets: Mapping[str, Sequence[nn.Module]], batches: list,
            loss_fn: Callable, kind: str, method: str, dtype: torch.dtype = torch.float32,
            only_first: bool = False) -> tuple[dict, list]:
    """Run the calibration batches once; returns (name -> InputStats, names in first-call order).

    ``only_first``: statistics only for the first target the forward reaches (the first layer of a
    sequential pass); the call order of all targets is still recorded. Every target that collects
    statistics must receive at least one token, else a UserError names it.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown statistic {kind!r}")
    stats: dict[str, InputStats] = {}
    order: list[str] = []
    handles = []

    def make_hook(name: str, module: nn.Module):
        def hook(mod, args, kwargs):
            if name not in order:
                order.append(name)
            if only_first and name != order[0]:
                return None
            x = _input_of(args, kwargs)
            if not isinstance(x, torch.Tensor):
                return None
            entry = stats.get(name)
            if entry is None:
                entry = stats[name] = InputStats(kind, module.in_features, dtype)
            entry.add(x.detach().reshape(-1, module.in_features))
            return None

        return hook

    try:
        for name, modules in targets.items():
            for module in modules:
                handles.append(module.register_forward_pre_hook(make_hook(name, module),
                                                                with_kwargs=True))
        with torch.no_grad():
            for batch in batches:
                loss_fn(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    for name in targets:
        if name not in order:
            raise UserError(f"criterion {method!r}: layer {name!r} is never called by loss_fn on "
                            f"the calibration batches (a weight used without calling its "
                            f"nn.Linear, e.g. nn.MultiheadAttention.out_proj?); exclude it")
    for name in (order[:1] if only_first else targets):
        entry = stats.get(name)
        if entry is None or entry.tokens == 0:
            raise UserError(f"criterion {method!r}: layer {name!r} received no calibration tokens "
                            f"(every input it was called with was empty); check the batches")
    return stats, order


# ------------------------------------------------------------------------------------ scratch
class Scratch:
    """Temporary weight writes into a model, undone (with all buffers) on exit.

    ``set(param, value)`` saves the original values the first time a parameter is written.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.saved: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.seen: set[int] = set()
        self.buffers: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __enter__(self) -> "Scratch":
        self.buffers = [(b, b.detach().clone()) for b in self.model.buffers()]
        return self

    def set(self, param: torch.Tensor, value: torch.Tensor) -> None:
        with torch.no_grad():
            if id(param) not in self.seen:
                self.seen.add(id(param))
                self.saved.append((param, param.detach().clone()))
            param.copy_(value)

    def __exit__(self, *exc) -> bool:
        with torch.no_grad():
            for param, original in self.saved:
                param.copy_(original)
            for buf, original in self.buffers:
                buf.copy_(original)
        self.saved, self.buffers, self.seen = [], [], set()
        return False


def sequential_solve(model: nn.Module, targets: Mapping[str, Sequence[nn.Module]], batches: list,
                     loss_fn: Callable, kind: str, method: str, dtype: torch.dtype,
                     solve_layer: Callable, scratch: Scratch) -> None:
    """Process the Linear targets in forward order, each calibrated on the already-pruned model.

    Pass 1 records the order of first forward calls and the statistics of the first layer; every
    later layer gets its own pass over the batches after the earlier ones were written into the
    model through ``scratch``. ``solve_layer(name, stats) -> new weight (or None = unchanged)``.
    """
    stats, order = capture(model, targets, batches, loss_fn, kind, method, dtype, only_first=True)
    for i, name in enumerate(order):
        if i > 0:
            stats, _ = capture(model, {name: targets[name]}, batches, loss_fn, kind, method, dtype)
        new = solve_layer(name, stats.pop(name))
        if new is not None:
            scratch.set(targets[name][0].weight, new)


# ------------------------------------------------------------------------------------ counts
def spread_counts(total: int, sizes: Sequence[int], floors: Optional[Sequence[int]] = None,
                  where: str = "?") -> list[int]:
    """Integers ``floors[i] <= c[i] <= sizes[i]`` summing to ``total``, proportional to ``sizes``.

    Without floors (or when every floor is below its proportional share) ``c[i]`` is
    ``total·sizes[i]/Σsizes`` rounded by largest remainder, extra units to lower indices among equal
    fractions (equal sizes: ``total // G`` each, the first ``total % G`` groups one more). Floors
    (entries already pruned) raise a group's count and the others share the rest proportionally
    (water filling). ``Σ floors > total`` is a UserError: sparsity may only increase.
    """
    sizes = [int(s) for s in sizes]
    cap = sum(sizes)
    if not 0 <= total <= cap:
        raise ValueError(f"cannot spread {total} over groups of total size {cap}")
    keys = list(range(len(sizes)))
    caps = dict(zip(keys, sizes))
    if cap == 0:
        return [0] * len(sizes)
    ideal = [total * s / cap for s in sizes]
    if floors is not None:
        floors = [int(f) for f in floors]
        if sum(floors) > total:
            raise UserError(f"target prunes {total} entries ({where}) but the current mask already "
                            f"prunes {sum(floors)}; sparsity may only increase")
        if any(f > v for f, v in zip(floors, ideal)):
            size_t = torch.tensor(sizes, dtype=torch.float64)
            floor_t = torch.tensor(floors, dtype=torch.float64)
            lo, hi = 0.0, 1.0            # level = pruned fraction of every unconstrained group
            for _ in range(64):
                mid = (lo + hi) / 2
                if float(torch.maximum(floor_t, mid * size_t).sum()) <= total:
                    lo = mid
                else:
                    hi = mid
            ideal = torch.minimum(torch.maximum(floor_t, lo * size_t), size_t).tolist()
    counts = largest_remainder(dict(zip(keys, ideal)), caps, total)
    return [counts[k] for k in keys]


def lowest_in_groups(scores: torch.Tensor, counts, keep: Optional[torch.Tensor],
                     where: str) -> torch.Tensor:
    """Bool (G, n), True = pruned: the ``counts[g]`` lowest scores of every row ``g`` of ``scores``.

    Positions not kept in ``keep`` score -inf (others are clamped to the finite minimum) so they
    are pruned first; ties go to the lower index (the library-wide rule). ``scores`` is not modified.
    """
    if torch.isnan(scores).any():
        raise UserError(f"pruning scores contain NaN ({where}); are the weights and calibration "
                        f"inputs finite?")
    s = scores
    if keep is not None:
        s = s.clamp(min=torch.finfo(s.dtype).min).masked_fill_(~keep, -math.inf)
    order = torch.sort(s, dim=1, stable=True).indices
    counts = torch.as_tensor(counts, device=s.device).reshape(-1, 1)
    ranks = torch.arange(s.shape[1], device=s.device).expand_as(s)
    pruned = torch.zeros(s.shape, dtype=torch.bool, device=s.device)
    pruned.scatter_(1, order, ranks < counts)
    return pruned


def layer_pruned(p, scores: torch.Tensor, sparsity: float, nm: Optional[tuple], current,
                 group: str = "row") -> torch.Tensor:
    """Bool (p's shape), True = pruned, for one tensor ranked by ``scores`` (not modified).

    ``nm``: the N lowest of every M consecutive entries per row (``allocation.nm_pruned``).
    Otherwise exactly ``num_pruned(numel, sparsity)`` entries: ``group="row"`` spreads them over the
    output rows with ``spread_counts`` and prunes the lowest of each row; ``group="layer"`` prunes
    the lowest of the whole tensor. ``current``'s pruned positions stay pruned.
    """
    scores = scores.detach().to(torch.promote_types(scores.dtype, torch.float32))
    keep = None if current is None else current[p.name].to(scores.device)
    if nm is not None:
        return nm_pruned(scores.clone(), nm[0], nm[1], keep, p.name)
    rows = as_rows(scores) if group == "row" else scores.reshape(1, -1)
    keep = None if keep is None else keep.reshape(rows.shape)
    floors = None if keep is None else (~keep).sum(dim=1).tolist()
    counts = spread_counts(num_pruned(p.numel, sparsity), [rows.shape[1]] * rows.shape[0], floors,
                           repr(p.name))
    return lowest_in_groups(rows, counts, keep, repr(p.name)).view(p.shape)


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """View a parameter-shaped tensor as (output rows, everything else); 0/1-d tensors as 1 row."""
    if t.ndim >= 2:
        return t.reshape(t.shape[0], -1)
    return t.reshape(1, -1)


def check_options(options: dict, allowed: Sequence[str], method: str) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserError(f"criterion {method!r} does not take option(s) {', '.join(unknown)}; "
                        f"valid options: {', '.join(allowed)}")
