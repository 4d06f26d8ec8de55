"""oBERT (Kurtić et al. 2022, "The Optimal BERT Surgeon"): block-Fisher OBS pruning as a solver.

Usage::

    def loss_fn(model, batch):                     # -> scalar loss
        x, y = batch
        return F.cross_entropy(model(x), y)

    batches = [next(it) for _ in range(32)]        # m gradients = one per batch
    mask = prune(model, "obert", 0.5, batches=batches, loss_fn=loss_fn,
                 options={"block_size": 50})        # scores, OBS update, zeroes pruned weights
    mask = compute_mask(model, "obert", 0.5, ...)  # mask only, model untouched

Every ``compute_mask`` / ``prune`` argument works as for other criteria (``scope``, ``pattern="2:4"``,
``current=`` for monotone masks, ``include``/``exclude``).

Options (``options={...}``):

* ``variant``: ``"paper"`` (default) uses ``block_size`` and ``update``; ``"smcbench"`` is what
  SMC-Bench's code runs: block size 1 (diagonal Fisher) and no weight update.
* ``block_size`` (default 50): B, the side of the diagonal Fisher blocks over each flattened tensor.
* ``damping`` (default 1e-7): λ in F = λI + (1/m) Σ g gᵀ.
* ``update`` (default True): apply the OBS update δw = −Σ_{q∈P} (w_q/[F⁻¹]_qq)·F⁻¹e_q to the
  surviving weights of each block for the newly pruned set P.
* ``max_block_bytes`` (default 1 GiB): memory budget for the F⁻¹ blocks (see below).
* ``dtype`` (``"float32"`` default, or ``"float64"``): accumulation precision of F⁻¹ and scores.

Per tensor the m gradients (one per batch, taken with the model in eval mode and multiplied by
``current``) give F⁻¹ block by block via Sherman–Morrison from F₀⁻¹ = I/λ; the score of weight q is
ρ_q = w_q² / (2·[F⁻¹]_qq), ranked by the library's exact-count allocation. Tensors are padded with
zeros to a multiple of B; a zero gradient / weight entry decouples exactly in the inverse, so padding
never changes a result. F⁻¹ diagonals are clamped to their exact-arithmetic bounds
[1/F_qq, 1/λ], which only removes round-off: with λ = 1e-7 the Sherman–Morrison subtraction cancels
most digits in float32 (as in sparseml); use ``dtype="float64"`` when that precision matters.

Memory and cost: F⁻¹ needs n·B floats (BERT-base, B = 50: ~17 GB in float32), which must not be
held at once on most machines. When they exceed ``max_block_bytes`` the blocks are split into
chunks processed one after the other, and every chunk re-runs the m forward/backward passes
(gradients are taken for that chunk's tensors only), keeping only the diagonal for scoring. Global
allocation needs all scores before any weight can be updated, so with the update each chunk's F⁻¹ is
rebuilt a second time after allocation (chunks without newly pruned weights are skipped). The
trade-off is therefore up to 2·(#chunks)·m forward/backward passes instead of m, in exchange for
peak memory of one chunk; when everything fits in one chunk, F⁻¹ is built once and kept. The
Sherman–Morrison updates themselves (O(n·B) per gradient) cost the same either way. Several passes
require the same batches each time, so ``batches`` is materialised into a list unless it already
is a list/tuple or one streaming pass (with ``len()``) suffices.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ..errors import UserError, choices
from .criteria import PruneProblem, Solution, _summed_gradients, register_solver

VARIANTS = ("paper", "smcbench")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEFAULTS = {"variant": "paper", "block_size": 50, "damping": 1e-7, "update": True,
            "max_block_bytes": 1 << 30, "dtype": "float32"}


@dataclass(frozen=True)
class OBertOptions:
    """Validated oBERT options (see the module docstring)."""

    block_size: int = 50
    damping: float = 1e-7
    update: bool = True
    max_block_bytes: int = 1 << 30
    dtype: torch.dtype = torch.float32


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def parse_options(options: Optional[Mapping]) -> OBertOptions:
    """Validate ``options`` (one-line ``UserError`` naming the valid choices / ranges)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise UserError(f"unknown obert option(s) {', '.join(unknown)}; valid options: "
                        f"{choices(DEFAULTS)}")
    variant = options.get("variant", DEFAULTS["variant"])
    if variant not in VARIANTS:
        raise UserError(f"obert option variant must be one of {choices(VARIANTS)}, got {variant!r}")
    block_size = options.get("block_size", DEFAULTS["block_size"])
    if not _is_int(block_size) or block_size < 1:
        raise UserError(f"obert option block_size must be an integer >= 1, got {block_size!r}")
    damping = options.get("damping", DEFAULTS["damping"])
    if (not isinstance(damping, numbers.Real) or isinstance(damping, bool)
            or not math.isfinite(damping) or damping <= 0):
        raise UserError(f"obert option damping must be a finite number > 0, got {damping!r}")
    update = options.get("update", DEFAULTS["update"])
    if not isinstance(update, bool):
        raise UserError(f"obert option update must be true or false, got {update!r}")
    max_bytes = options.get("max_block_bytes", DEFAULTS["max_block_bytes"])
    if not _is_int(max_bytes) or max_bytes < 1:
        raise UserError(f"obert option max_block_bytes must be an integer >= 1, got {max_bytes!r}")
    dtype = options.get("dtype", DEFAULTS["dtype"])
    if dtype not in DTYPES:
        raise UserError(f"obert option dtype must be one of {choices(DTYPES)}, got {dtype!r}")
    if variant == "smcbench":
        if block_size != 1 and "block_size" in options:
            raise UserError(f"obert variant 'smcbench' fixes block_size=1 (diagonal Fisher); "
                            f"got block_size={block_size!r} (use variant 'paper')")
        if update and "update" in options:
            raise UserError("obert variant 'smcbench' has no weight update; got update=True "
                            "(use variant 'paper')")
        block_size, update = 1, False
    return OBertOptions(int(block_size), float(damping), update, int(max_bytes), DTYPES[dtype])


# ------------------------------------------------------------------------------ Fisher inverse
def _identity_blocks(nblocks: int, block_size: int, damping: float, dtype, device) -> torch.Tensor:
    """F₀⁻¹ = I/λ for ``nblocks`` blocks, shape (nblocks, B, B)."""
    finv = torch.zeros(nblocks, block_size, block_size, dtype=dtype, device=device)
    finv.diagonal(dim1=1, dim2=2).fill_(1.0 / damping)
    return finv


def _sherman_morrison_(finv: torch.Tensor, g: torch.Tensor, m: int) -> None:
    """In place: F⁻¹ ← F⁻¹ − (F⁻¹g)(F⁻¹g)ᵀ / (m + gᵀF⁻¹g) for every block; ``g`` is (nblocks, B)."""
    if finv.shape[-1] == 1:  # diagonal Fisher: plain elementwise arithmetic
        f = finv.view(-1)
        u = f * g.reshape(-1)
        f.sub_(u * u / (m + g.reshape(-1) * u))
        return
    u = _block_matvec(finv, g)                                  # (nb, 1, B) = (F⁻¹g)ᵀ
    denom = torch.bmm(u, g.unsqueeze(2)).add_(m).sqrt_()        # (nb, 1, 1)
    u.div_(denom)
    finv.addcmul_(u.transpose(1, 2), u, value=-1)             # rank-1, no (nb, B, B) temporary


def _block_matvec(finv: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(F⁻¹v)ᵀ per block as (nb, 1, B): vᵀ(F⁻¹)ᵀ is several times faster than bmm(F⁻¹, v) on CPU."""
    return torch.bmm(v.unsqueeze(1), finv.transpose(1, 2))


def _padded_blocks(flat: torch.Tensor, block_size: int) -> torch.Tensor:
    """(ceil(n/B), B) view of ``flat`` padded with zeros at the end."""
    pad = (-flat.numel()) % block_size
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, block_size)


def block_fisher_inverse(grads: Sequence[torch.Tensor], block_size: int = 50,
                         damping: float = 1e-7, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverse of the empirical block Fisher λI + (1/m) Σ g gᵀ of m same-shaped gradients.

    Each gradient is flattened and split into consecutive blocks of ``block_size`` entries (the
    last one zero-padded); returns the (ceil(n/B), B, B) stack of block inverses, computed by
    Sherman–Morrison from I/λ. Padded rows/columns of the last block hold exactly I/λ and are
    decoupled from the real entries.
    """
    grads = list(grads)
    if not grads:
        raise UserError("block_fisher_inverse needs at least one gradient")
    parse_options({"block_size": block_size, "damping": damping})  # same range checks
    m = len(grads)
    n = grads[0].numel()
    finv = _identity_blocks(-(-n // block_size), block_size, damping, dtype, grads[0].device)
    for g in grads:
        if g.numel() != n:
            raise UserError(f"block_fisher_inverse: gradients have {g.numel()} and {n} entries")
        _sherman_morrison_(finv, _padded_blocks(g.detach().reshape(-1).to(dtype), block_size), m)
    return finv


# ------------------------------------------------------------------------------ chunking
@dataclass(frozen=True)
class _Segment:
    """Blocks ``[start, stop)`` of parameter ``index`` (blocks of its flattened, padded tensor)."""

    index: int
    start: int
    stop: int

    @property
    def nblocks(self) -> int:
        return self.stop - self.start


def _plan_chunks(params: list, block_size: int, itemsize: int, max_bytes: int) -> list[list]:
    """Consecutive runs of blocks whose F⁻¹ fits ``max_bytes`` (at least one block), one device each."""
    cap = max(1, max_bytes // (block_size * block_size * itemsize))
    chunks: list[list[_Segment]] = []
    used, device = cap, None
    for i, p in enumerate(params):
        nb = -(-p.numel // block_size)
        start = 0
        while start < nb:
            if used >= cap or p.param.device != device:
                chunks.append([])
                used, device = 0, p.param.device
            take = min(nb - start, cap - used)
            chunks[-1].append(_Segment(i, start, start + take))
            used += take
            start += take
    return chunks


# ------------------------------------------------------------------------------ solver
class _Batches:
    """The m batches, re-iterable the same way on every pass, with m known up front."""

    def __init__(self, batches, passes: int):
        if isinstance(batches, (torch.Tensor, Mapping)):
            raise UserError(f"criterion 'obert': batches must be an iterable of batches (e.g. "
                            f"[batch]), got a single {type(batches).__name__}")
        try:
            iter(batches)
        except TypeError:
            raise UserError(f"criterion 'obert': batches must be an iterable of batches, "
                            f"got {type(batches).__name__}") from None
        if not isinstance(batches, (list, tuple)) and (passes > 1 or not hasattr(batches, "__len__")):
            batches = list(batches)
        self.batches = batches
        self.m = len(batches)
        if self.m == 0:
            raise UserError("criterion 'obert' needs at least one batch; batches was empty")


def _for_each_gradient(problem: PruneProblem, data: _Batches, chunk_params: list,
                       fn: Callable[[dict], None]) -> None:
    """Call ``fn({name: gradient})`` once per batch, gradients w.r.t. ``chunk_params`` only."""
    seen = 0
    for batch in data.batches:
        fn(_summed_gradients(chunk_params, problem.model, [batch], problem.loss_fn, "obert"))
        seen += 1
    if seen != data.m:
        raise UserError(f"criterion 'obert': batches yielded {seen} batches but has length "
                        f"{data.m}; pass a list of batches")


class _Solver:
    def __init__(self, problem: PruneProblem, opts: OBertOptions):
        self.problem, self.opts = problem, opts
        self.params = problem.params
        self.B, self.dtype = opts.block_size, opts.dtype
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        self.chunks = _plan_chunks(self.params, self.B, itemsize, opts.max_block_bytes)
        passes = len(self.chunks) * (2 if opts.update and len(self.chunks) > 1 else 1)
        if problem.batches is None or problem.loss_fn is None:
            raise UserError("criterion 'obert' needs batches and loss_fn (pass batches=[batch, ...] "
                            "and loss_fn(model, batch) -> scalar loss)")
        self.data = _Batches(problem.batches, passes)
        current = problem.current
        # flat kept-mask per parameter (None = everything kept)
        self.keep = [None if current is None else current[p.name].reshape(-1).to(p.param.device)
                     for p in self.params]

    def _flat(self, i: int, t: torch.Tensor) -> torch.Tensor:
        """Flat working-dtype copy of ``t`` (a gradient or weight of param i), times the mask."""
        flat = t.detach().reshape(-1).to(self.dtype, copy=True)
        if self.keep[i] is not None:
            flat.mul_(self.keep[i])
        return flat

    def _segment_blocks(self, i: int, flat: torch.Tensor, seg: _Segment) -> torch.Tensor:
        """(seg.nblocks, B) zero-padded blocks of ``flat`` for the segment."""
        return _padded_blocks(flat[seg.start * self.B: seg.stop * self.B], self.B)

    def fisher_inverse(self, chunk: list, with_sumsq: bool):
        """(F⁻¹ of the chunk's blocks, Σ g² per entry or None), re-sampling the m gradients."""
        params = [self.params[s.index] for s in chunk]
        device = params[0].param.device
        nb = sum(s.nblocks for s in chunk)
        finv = _identity_blocks(nb, self.B, self.opts.damping, self.dtype, device)
        sumsq = torch.zeros(nb, self.B, dtype=self.dtype, device=device) if with_sumsq else None
        m = self.data.m

        def add(grads: dict) -> None:
            g = torch.cat([self._segment_blocks(s.index, self._flat(s.index, grads[p.name]), s)
                           for s, p in zip(chunk, params)])
            _sherman_morrison_(finv, g, m)
            if sumsq is not None:
                sumsq.addcmul_(g, g)

        _for_each_gradient(self.problem, self.data, params, add)
        return finv, sumsq

    def solve(self) -> Solution:
        problem, B = self.problem, self.B
        problem.model.eval()  # oBERT samples gradients in eval mode; compute_mask restores modes
        weights = [self._flat(i, p.param) for i, p in enumerate(self.params)]
        diags = [torch.empty(-(-p.numel // B) * B, dtype=self.dtype, device=p.param.device)
                 for p in self.params]
        kept_finv = None
        for chunk in self.chunks:
            finv, sumsq = self.fisher_inverse(chunk, with_sumsq=True)
            # exact-arithmetic bounds 1/F_qq <= [F⁻¹]_qq <= 1/λ; clamping only removes round-off
            lower = sumsq.div_(self.data.m).add_(self.opts.damping).reciprocal_()
            diag = torch.maximum(finv.diagonal(dim1=1, dim2=2), lower)
            diag.clamp_(max=1.0 / self.opts.damping)
            offset = 0
            for s in chunk:
                diags[s.index][s.start * B: s.stop * B] = diag[offset:offset + s.nblocks].reshape(-1)
                offset += s.nblocks
            del sumsq, lower, diag
            kept_finv = finv if self.opts.update and len(self.chunks) == 1 else None
            del finv
        scores = {}
        for i, p in enumerate(self.params):
            w = weights[i]
            scores[p.name] = (w * w / (2 * diags[i][:p.numel])).view(p.shape)
        pruned = problem.allocate(scores)
        del scores
        if not self.opts.update:
            return Solution(pruned=pruned, weights=None)
        newly = []
        for i, p in enumerate(self.params):
            new = pruned[p.name].reshape(-1).to(p.param.device)
            if self.keep[i] is not None:
                new = new & self.keep[i]
            newly.append(new)
        for chunk in self.chunks:
            if not any(bool(newly[s.index][s.start * B: s.stop * B].any()) for s in chunk):
                continue
            finv = kept_finv if kept_finv is not None else self.fisher_inverse(chunk, False)[0]
            self._update_chunk(chunk, finv, weights, diags, newly)
            del finv
        kept_finv = None
        out = {}
        for i, p in enumerate(self.params):
            w = weights[i].view(p.shape)
            w.masked_fill_(pruned[p.name].to(w.device), 0)
            out[p.name] = w.to(p.param.dtype)
        return Solution(pruned=pruned, weights=out)

    def _update_chunk(self, chunk, finv, weights, diags, newly) -> None:
        """w ← w − F⁻¹ (w ⊙ 1_P / diag F⁻¹), block by block (independent OBS approximation)."""
        B, offset = self.B, 0
        for s in chunk:
            lo, hi = s.start * B, min(s.stop * B, self.params[s.index].numel)
            w = weights[s.index]
            v = torch.where(newly[s.index][lo:hi], w[lo:hi] / diags[s.index][lo:hi],
                            torch.zeros((), dtype=w.dtype, device=w.device))
            delta = _block_matvec(finv[offset:offset + s.nblocks], _padded_blocks(v, B))
            w[lo:hi] -= delta.reshape(-1)[:hi - lo]
            offset += s.nblocks


@register_solver("obert")
def obert(problem: PruneProblem) -> Solution:
    """oBERT: block empirical-Fisher OBS scores w²/(2·[F⁻¹]_qq) and OBS weight update."""
    return _Solver(problem, parse_options(problem.options)).solve()
