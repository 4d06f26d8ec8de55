"""Non-uniform allocations: Erdős–Rényi-kernel (ERK) layer budgets and N:M groups.

Kept separate from ``core`` because both are pure functions of shapes / scores: they can be tested
without a model, and ``core`` only glues them to criteria and masks.

ERK (Evci et al., RigL; SMC-Bench uses ITOP's implementation): a tensor of shape
``(n_out, n_in, *k)`` gets density proportional to ``raw = sum(shape) / prod(shape)``; ``eps`` is
solved so that ``sum_l min(1, eps * raw_l) * n_l = density * N``, removing saturated (dense) layers
and re-solving until none saturates (the loop sparseml's version lacks, see anchors.md). The real
densities are then turned into integer per-layer counts whose total pruned is exactly
``num_pruned(N, sparsity)`` (largest remainder), so ERK obeys the same single rounding rule.
1-D tensors (only selectable with an explicit ``include``) use the same formula, which gives
``raw = 1``: they saturate (stay dense) unless the target is very sparse. 0-d tensors are rejected.

N:M: in every group of ``M`` consecutive entries along the last (input) dimension of each row, the
``N`` lowest scores are pruned (ties: lower index first, the library-wide tie rule).
"""
from __future__ import annotations

import math
import re
from typing import Mapping, Optional

import torch

from ..errors import UserError
from .select import num_pruned

_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


# ---------------------------------------------------------------------------------------- ERK
def erk_raw(shape: tuple[int, ...], name: str = "?") -> float:
    """ERK's unnormalised density ``(n_out + n_in + sum k) / (n_out * n_in * prod k)``."""
    if len(shape) == 0:
        raise UserError(f"ERK allocation needs tensors with at least one dimension; "
                        f"{name!r} is a scalar")
    numel = math.prod(shape)
    return sum(shape) / numel if numel else 0.0


def erk_densities(shapes: Mapping[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """Per-tensor ERK densities in [0, 1] with ``sum d_l * n_l == density * N`` (up to float error).

    Saturated layers are fixed at 1.0 and eps re-solved over the rest: any layer saturating at the
    current eps also saturates at the true solution (eps only grows), so the loop is exact.
    """
    raw = {name: erk_raw(shape, name) for name, shape in shapes.items()}
    numel = {name: math.prod(shape) for name, shape in shapes.items()}
    budget = density * sum(numel.values())
    dense = {name for name in shapes if numel[name] == 0}   # nothing to prune: trivially dense
    eps = 0.0
    while True:
        pool = [n for n in shapes if n not in dense]
        if not pool:
            break
        eps = (budget - sum(numel[n] for n in dense)) / sum(raw[n] * numel[n] for n in pool)
        saturated = {n for n in pool if eps * raw[n] >= 1}
        if not saturated:
            break
        dense |= saturated
    return {n: 1.0 if n in dense else min(1.0, max(0.0, eps * raw[n])) for n in shapes}


def largest_remainder(ideal: Mapping[str, float], caps: Mapping[str, int],
                      total: int) -> dict[str, int]:
    """Integers ``0 <= c_l <= caps[l]`` summing to ``total``, each close to ``ideal[l]``.

    Floors first, then the missing units go to the largest fractional parts (ties: earlier layer);
    a surplus (the global rounding went down) is taken from the smallest fractional parts. When
    ``total`` is within 0.5 of ``sum(ideal)`` (ERK) every count is within 1.5 of its ideal, and
    within 1 unless ``total`` rounds below ``sum(ideal)`` by more than the floors' slack.
    """
    if not 0 <= total <= sum(caps.values()):
        raise ValueError(f"cannot distribute {total} over capacities {dict(caps)}")
    counts = {n: min(caps[n], max(0, math.floor(v))) for n, v in ideal.items()}
    frac = {n: ideal[n] - math.floor(ideal[n]) for n in ideal}
    missing = total - sum(counts.values())
    step = 1 if missing > 0 else -1
    order = sorted(ideal, key=lambda n: -frac[n] if step > 0 else frac[n])  # sorted() is stable
    while missing:
        for name in order:
            if missing and 0 <= counts[name] + step <= caps[name]:
                counts[name] += step
                missing -= step
    return counts


def erk_pruned_counts(shapes: Mapping[str, tuple[int, ...]], sparsity: float) -> dict[str, int]:
    """Entries to prune per tensor: ERK proportions, total exactly ``num_pruned(N, sparsity)``.

    Saturated (density 1.0) tensors prune nothing; the rounding slack is spread over the others.
    """
    densities = erk_densities(shapes, 1.0 - sparsity)
    numel = {name: math.prod(shape) for name, shape in shapes.items()}
    total = sum(numel.values())
    keep_total = total - num_pruned(total, sparsity)
    dense = [n for n in shapes if densities[n] >= 1.0]
    sparse = [n for n in shapes if densities[n] < 1.0]
    kept = {n: numel[n] for n in dense}
    kept.update(largest_remainder({n: densities[n] * numel[n] for n in sparse},
                                  {n: numel[n] for n in sparse},
                                  keep_total - sum(kept.values())))
    return {n: numel[n] - kept[n] for n in shapes}


# ---------------------------------------------------------------------------------------- N:M
def parse_nm(pattern: str) -> tuple[int, int]:
    """``"2:4"`` -> ``(2, 4)``; requires integers ``0 < N < M`` (N = entries pruned per group)."""
    match = _NM.match(pattern) if isinstance(pattern, str) else None
    if match is None:
        raise UserError(f"pattern must be a string 'N:M' (e.g. '2:4'), got {pattern!r}")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise UserError(f"pattern {pattern!r} needs 0 < N < M (N of every M weights are pruned)")
    return n, m


def check_nm_sparsity(sparsity: float, n: int, m: int) -> None:
    """N:M fixes the sparsity at N/M; a different requested value is almost surely a config slip."""
    if abs(sparsity - n / m) > 1e-9:
        raise UserError(f"pattern '{n}:{m}' prunes exactly {n}/{m} = {n / m:g} of the weights, "
                        f"but sparsity={sparsity!r} was requested; pass sparsity={n / m:g}")


def nm_pruned(scores: torch.Tensor, n: int, m: int, keep: Optional[torch.Tensor],
              name: str) -> torch.Tensor:
    """Bool tensor (scores' shape), True = pruned: N lowest of each M-group along the last dim.

    ``scores`` is owned and modified. Positions not kept in ``keep`` score -inf (others are clamped
    to the finite minimum) so they fill their group's N first; a group with more than N already
    pruned cannot be an N:M group, which is an error rather than a silent densification.
    """
    if scores.ndim == 0 or scores.shape[-1] % m:
        last = scores.shape[-1] if scores.ndim else "none (scalar)"
        raise UserError(f"pattern '{n}:{m}': last dimension of {name!r} is {last}, "
                        f"not divisible by {m}")
    if torch.isnan(scores).any():
        raise UserError(f"pruning scores contain NaN ({name!r}); "
                        f"are the weights or gradients finite?")
    groups = scores.reshape(-1, m)
    if keep is not None:
        already = (~keep.reshape(-1, m)).sum(dim=1)
        if already.numel() and int(already.max()) > n:
            raise UserError(f"current mask already prunes more than {n} of some group of {m} in "
                            f"{name!r}; it cannot be refined to pattern '{n}:{m}'")
        groups.clamp_(min=torch.finfo(groups.dtype).min)
        groups.masked_fill_(~keep.reshape(-1, m), -math.inf)
    order = torch.sort(groups, dim=1, stable=True).indices[:, :n]
    pruned = torch.zeros(groups.shape, dtype=torch.bool, device=groups.device)
    pruned.scatter_(1, order, True)
    return pruned.view(scores.shape)
