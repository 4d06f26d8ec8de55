"""Exact-count mask computation (global or per layer) and one-shot pruning.

Allocation: ``k = num_pruned(n, sparsity)`` lowest-scoring entries are pruned, where ``n`` is the
total over all selected tensors (``scope="global"``) or each tensor's numel (``"layerwise"``);
``"erk"`` splits ``num_pruned(N, sparsity)`` over tensors by Erdős–Rényi-kernel densities and
``pattern="N:M"`` prunes N of every M consecutive weights per row (both in ``allocation``).
Scopes dispatch through ``ALLOCATORS``: a new scope is one function plus one entry there.
The threshold comes from a radix selection over the tensors chunk by chunk (``selection``: one
histogram pass, then one pass writing the masks; ``torch.kthvalue`` below ``KTHVALUE_MAX``
entries), never a sort or a concatenation of the scores, so beyond the bool masks only one
chunk's temporaries are held (and one tensor's scores, unless the criterion's are ``LazyScores``).
Ties at the threshold are broken by position: among equal scores, lower flat index (concatenation
order of the selected parameters) is pruned first. Positions pruned in ``current`` score -inf and
every other score is clamped to the dtype's finite minimum, so they are always pruned first
(monotone masks).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import torch

from ..errors import UserError, choices
from .allocation import check_nm_sparsity, erk_pruned_counts, nm_pruned, parse_nm
from .criteria import CRITERIA, LazyScores, PruneProblem, Solution, is_solver
from .mask import Mask
from .select import PrunableParam, num_pruned, select_prunable
from .selection import GATHER, Band, Workspace, band_positions, narrow

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
    """Bool tensor (flat's shape): exactly ``k`` True = pruned. ``flat`` is owned and modified.

    The small-input path (one ``torch.kthvalue`` over a concatenation); ``_prune_lowest`` uses it
    below ``KTHVALUE_MAX`` entries and the radix selection above.
    """
    if torch.isnan(flat).any():
        raise _nan_error(where)
    if keep_mask is not None:
        _check_already(keep_mask.numel() - int(keep_mask.sum()), k, where)
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


def _nan_error(where: str) -> UserError:
    return UserError(f"pruning scores contain NaN ({where}); are the weights or gradients finite?")


def _check_already(already: int, k: int, where: str) -> None:
    if k < already:
        raise UserError(f"target prunes {k} entries ({where}) but the current mask already "
                        f"prunes {already}; sparsity may only increase")


# Selections over at most this many entries concatenate and use ``torch.kthvalue``; larger ones
# use the chunked radix selection (``selection``): its fixed cost dominates on small inputs, and on
# large ones it beats a full kthvalue without concatenating every score (benchmarks/bench_global_mask.py).
KTHVALUE_MAX = 1 << 15
CHUNK = 1 << 20      # entries per working chunk of the radix path (bounds its temporaries)


def _take(scores, name: str) -> torch.Tensor:
    """``scores[name]``, dropping a plain dict's reference (a lazy mapping holds nothing)."""
    return scores.pop(name) if isinstance(scores, dict) else scores[name]


def _raw_chunks(scores, name: str, last: bool, out: torch.Tensor) -> Iterator[torch.Tensor]:
    """Flat chunks (at most ``CHUNK`` entries, in order) of one tensor's scores, not to be modified.

    A ``LazyScores`` computes them chunk by chunk (into ``out`` when the dtypes match); otherwise
    the score tensor is sliced (``last``: this is the final read, a plain dict's entry is dropped).
    """
    if isinstance(scores, LazyScores):
        yield from scores.chunks(name, CHUNK, out=out)
        return
    flat = (_take(scores, name) if last else scores[name]).reshape(-1)
    for start in range(0, flat.numel(), CHUNK):
        yield flat[start:start + CHUNK]


class _Working:
    """Working scores of ``params`` as one ranking, chunk by chunk (never concatenated).

    Chunks are in ``dtype``; with ``current``, positions it prunes are -inf and every other score
    is clamped to the finite minimum (the criterion's scores are never modified). Every pass
    re-reads the scores, so a lazy mapping recomputes them and a pass holds at most one tensor's
    scores (none for ``LazyScores``) plus one chunk's temporaries in the reused workspace ``ws``.
    A yielded chunk is valid until the next one is requested.
    """

    def __init__(self, params, scores, current: Optional[Mask], dtype: torch.dtype, where: str,
                 ws: Workspace):
        self.params, self.scores, self.current = params, scores, current
        self.dtype, self.where, self.ws = dtype, where, ws
        self.devices = {p.name: _device_of(scores, p.name) for p in params}
        self.check_nan = True  # the first pass over the raw scores rejects NaN

    def tensor(self, p, last: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
        """(offset, chunk) over ``p``'s flat working scores."""
        keep = None if self.current is None else self.current[p.name].reshape(-1)
        out = self.ws.get("score", min(CHUNK, p.numel), self.dtype, self.devices[p.name])
        start = 0
        for raw in _raw_chunks(self.scores, p.name, last, out):
            n = raw.numel()
            c = raw if raw.dtype == self.dtype else out[:n].copy_(raw)
            # NaN check: a sum is cheap and NaN if any entry is (or if both +inf and -inf occur)
            if self.check_nan and torch.isnan(c.sum()) and torch.isnan(c).any():
                raise _nan_error(self.where)
            if keep is not None:
                pruned = torch.logical_not(keep[start:start + n].to(c.device),
                                           out=self.ws.get("pruned", n, torch.bool, c.device))
                c = torch.clamp(c, min=torch.finfo(self.dtype).min,
                                out=self.ws.get("kept", n, self.dtype, c.device))
                c.masked_fill_(pruned, -math.inf)
            yield start, c
            start += n

    def __call__(self) -> Iterator[torch.Tensor]:
        for p in self.params:
            for _, c in self.tensor(p):
                yield c
        self.check_nan = False  # only once a full pass has completed


def _prune_lowest(params, scores, current: Optional[Mask], k: int, dtype: torch.dtype,
                  where: str, ws: Optional[Workspace] = None) -> dict[str, torch.Tensor]:
    """name -> bool (True = pruned): the ``k`` lowest working scores of ``params`` ranked as one
    concatenation (ties: lower flat index first); exact count."""
    n = sum(p.numel for p in params)
    if n <= KTHVALUE_MAX:
        device = _device_of(scores, params[0].name)
        flat = torch.cat([_take(scores, p.name).reshape(-1).to(device, dtype) for p in params])
        keep = None
        if current is not None:
            keep = torch.cat([current[p.name].reshape(-1).to(device) for p in params])
        pruned = _select_pruned(flat, k, keep, where)
        return {p.name: part.view(p.shape)
                for p, part in zip(params, pruned.split([p.numel for p in params]))}
    work = _Working(params, scores, current, dtype, where, ws if ws is not None else Workspace())
    already = 0 if current is None else \
        sum(p.numel - int(torch.count_nonzero(current[p.name])) for p in params)
    if k <= 0 or k >= n or k < already:
        for _ in work():   # NaN check first, as on the small path
            pass
        _check_already(already, k, where)
        return {p.name: torch.full(p.shape, k > 0, dtype=torch.bool, device=work.devices[p.name])
                for p in params}
    # One histogram pass finds the band of values holding the k-th (a few thousandths of them
    # unless ties are heavy); the final pass prunes everything below it and picks within it.
    band = narrow(work, k, dtype, work.ws, limit=max(GATHER, n >> 8))
    return _final_pass(work, band)


def _final_pass(work: _Working, band: Band) -> dict[str, torch.Tensor]:
    """Masks: every score below the band pruned, plus the band's ``rank`` lowest members (ties by
    position). A many-valued band's members (at most ``limit``) are collected with their positions
    and ranked by ``kthvalue`` at the end; a one-valued band's are all ties, taken in order."""
    single = band.lo == band.hi
    need, ties_left = band.rank, band.count     # one-valued band: tied members still to prune
    members = []                                # many-valued band: (mask part, positions, values)
    out = {}
    for p in work.params:
        pruned = torch.empty(p.numel, dtype=torch.bool, device=work.devices[p.name])
        for start, c in work.tensor(p, last=True):  # every chunk writes its whole ``part``
            part = pruned[start:start + c.numel()]
            if not single:
                torch.lt(c, band.lo, out=part)
                pos = band_positions(c, band, part, work.ws)
                if pos.numel():
                    members.append((part, pos, c[pos].cpu()))
            elif need == 0 or need == ties_left:
                op = torch.lt if need == 0 else torch.le   # le: every tie is pruned
                op(c, band.lo, out=part)
            else:
                torch.lt(c, band.lo, out=part)
                ties = c == band.lo
                found = int(torch.count_nonzero(ties))
                if found <= need:
                    part |= ties
                else:
                    part[ties.nonzero().squeeze(1)[:need]] = True
                need -= min(found, need)
                ties_left -= found
        out[p.name] = pruned.view(p.shape)
    if members:
        values = torch.cat([v for _, _, v in members])
        kth = torch.kthvalue(values, band.rank).values
        chosen = values < kth
        tied = (values == kth).nonzero().squeeze(1)
        chosen[tied[:band.rank - int(chosen.sum())]] = True   # ties: concatenation order
        offset = 0
        for part, pos, v in members:
            part[pos[chosen[offset:offset + v.numel()].to(pos.device)]] = True
            offset += v.numel()
    return out


def _device_of(scores, name: str) -> torch.device:
    if isinstance(scores, LazyScores):
        return scores.device(name)
    return scores[name].device


def _work_dtype(dtypes: Iterable[torch.dtype]) -> torch.dtype:
    return torch.float64 if any(d == torch.float64 for d in dtypes) else torch.float32


def _score(model, params, fn, batches, loss_fn, generator, options):
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
        got = _score_shape(scores, p.name)
        if got != p.shape:
            raise ValueError(f"criterion {getattr(fn, '__name__', fn)!r} returned score shape "
                             f"{got} for {p.name!r}, expected {p.shape}")
    return scores


def _score_shape(scores, name: str) -> Optional[tuple]:
    """Shape of ``scores[name]`` (None if missing) without computing a lazy score."""
    if name not in scores:
        return None
    if isinstance(scores, LazyScores):
        return scores.shape(name)
    return tuple(scores[name].shape)


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
    s = _take(scores, p.name)
    return s.reshape(-1).to(s.device, dtype, copy=True)


def _allocate_global(params, scores, current, sparsity, dtype) -> dict[str, torch.Tensor]:
    """One ranking over the concatenation of all selected tensors (flat-index tie rule)."""
    k = num_pruned(sum(p.numel for p in params), sparsity)
    return _prune_lowest(params, scores, current, k, dtype, "global")


def _allocate_per_tensor(params, scores, current, dtype, counts) -> dict[str, torch.Tensor]:
    """Each tensor prunes its own ``counts[name]`` lowest scores (layerwise and ERK share this)."""
    out, ws = {}, Workspace()
    for p in params:
        out.update(_prune_lowest([p], scores, current, counts[p.name], dtype, repr(p.name), ws))
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

    def allocate(scores) -> dict:
        """``scores``: a dict of tensors or a ``LazyScores`` (computed tensor by tensor)."""
        if isinstance(scores, LazyScores):
            dtype = _work_dtype(scores.dtype(p.name) for p in params)
        else:
            scores = dict(scores)  # allocation pops entries; leave the caller's dict intact
            dtype = _work_dtype(s.dtype for s in scores.values())
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
