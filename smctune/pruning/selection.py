"""Exact k-th smallest value over many score tensors, without concatenating or sorting them.

Radix selection on the float bits. ``order_keys`` maps float32 / float64 values to int32 / int64
keys with the same order (sign-magnitude bits with the negatives negated, so -0.0 and +0.0 share
key 0, as they compare equal; -inf and the finite extremes map like any other value). A pass
histograms the top 16 bits of every key (``torch.bincount``, 65536 bins), which gives the *band*
(the range of values sharing those bits) holding the k-th smallest, how many values lie below it
and how many inside. That is usually a few thousandths of the values; only when more than a
limit share the band (heavy ties) does a further pass histogram the next 16 bits of the band's
members, and so on (at most 2 passes for float32, 4 for float64). The caller then finishes in one
more pass: everything below the band is selected outright and the band's few members are
collected, or, for a one-value band, its ties are taken in order (``kth_smallest`` collects them
for ``torch.kthvalue``; the pruning allocator writes its masks in that same pass).

Inputs come as ``chunks()``, a callable returning a fresh iterable of 1-D chunks each time it is
called (the same values in the same order on every call), so a pass holds only one chunk's
temporaries and the total is never materialised. Per-chunk temporaries live in a ``Workspace``
that is reused from chunk to chunk: a fresh multi-megabyte tensor per operation costs more in
page faults than the operation itself. NaN must be rejected by the caller (NaN keys sort beyond
+-inf and would be counted like numbers).
"""
from __future__ import annotations

from typing import Callable, Iterable, NamedTuple, Optional

import torch

DIGIT_BITS = 16
BINS = 1 << DIGIT_BITS
GATHER = 1 << 20        # default band size below which no further histogram pass is made

_KEYS = {torch.float32: (torch.int32, 32), torch.float64: (torch.int64, 64)}


class Kth(NamedTuple):
    """``value``: the k-th smallest (a Python float, exact for float32/float64 values);
    ``below``: how many values are strictly smaller; ``ties``: how many equal it."""

    value: float
    below: int
    ties: int


class Workspace:
    """Named scratch tensors reused across chunks (grown on demand, never shrunk)."""

    def __init__(self):
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, tag: str, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A 1-D tensor of ``n`` entries, uninitialised; valid until ``tag`` is requested again."""
        buf = self._buffers.get(tag)
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != device:
            buf = self._buffers[tag] = torch.empty(n, dtype=dtype, device=device)
        return buf[:n]


def _key_type(dtype: torch.dtype) -> tuple[torch.dtype, int]:
    try:
        return _KEYS[dtype]
    except KeyError:
        raise TypeError(f"radix selection takes float32 or float64 scores, got {dtype}") from None


def _keys(x: torch.Tensor, ws: Optional[Workspace]) -> tuple[torch.Tensor, bool]:
    """(keys of ``x``, whether all keys are >= 0). The keys may alias ``x`` or ``ws`` buffers."""
    itype, bits = _key_type(x.dtype)
    i = x.view(itype)
    if i.numel() == 0 or bool(i.amin() >= 0):   # no sign bit set: the bits already are the keys
        return i, True
    n, dev = i.numel(), i.device
    sign = torch.bitwise_right_shift(i, bits - 1,                        # 0 for +, -1 for -
                                     out=ws.get("sign", n, itype, dev) if ws else None)
    key = torch.bitwise_and(i, (1 << (bits - 1)) - 1,
                            out=ws.get("key", n, itype, dev) if ws else None)
    return key.bitwise_xor_(sign).sub_(sign), False                      # +magnitude / -magnitude


def order_keys(x: torch.Tensor) -> torch.Tensor:
    """Integer keys (int32 for float32, int64 for float64) ordered like the floats ``x``.

    -0.0 and +0.0 both map to 0; NaN maps beyond +-inf. May share memory with ``x``.
    """
    return _keys(x, None)[0]


def key_to_float(key: int, dtype: torch.dtype) -> float:
    """Inverse of ``order_keys`` for one key (key 0 gives +0.0)."""
    itype, bits = _key_type(dtype)
    raw = key if key >= 0 else (-key) | (1 << (bits - 1))   # sign-magnitude bit pattern
    if raw >= 1 << (bits - 1):
        raw -= 1 << bits                                    # as a signed integer of that width
    return float(torch.tensor(raw, dtype=itype).view(dtype))


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the True entries of a 1-D bool tensor; fast when they are few.

    Reads 8 bools as one int64 word and expands only the nonzero words: ``nonzero`` over the
    bools themselves costs ~6x more when under a few percent are True.
    """
    n = mask.numel()
    body = n - n % 8
    if body == 0 or mask.storage_offset() % 8:
        return mask.nonzero().squeeze(1)
    words = mask[:body].view(torch.int64).nonzero().squeeze(1)
    if words.numel() * 32 > body:   # dense: expanding the words would not pay off
        return mask.nonzero().squeeze(1)
    cand = (words.unsqueeze(1) * 8 + torch.arange(8, device=mask.device)).reshape(-1)
    pos = cand[mask[cand]]
    if body < n:
        pos = torch.cat([pos, mask[body:].nonzero().squeeze(1) + body])
    return pos


def _matching(key: torch.Tensor, shift: int, prefix: int, ws: Workspace) -> torch.Tensor:
    """The keys whose bits above ``shift`` equal ``prefix`` (a new, usually small, tensor)."""
    n, dev = key.numel(), key.device
    high = torch.bitwise_right_shift(key, shift, out=ws.get("high", n, key.dtype, dev))
    return key[positions(torch.eq(high, prefix, out=ws.get("match", n, torch.bool, dev)))]


class Band(NamedTuple):
    """The values ``v`` with ``lo <= v <= hi``: ``count`` of them, ``below`` values are smaller than
    ``lo``, and the k-th smallest overall is the ``rank``-th smallest of the band. ``lo == hi``
    when the band is a single value (then all ``count`` of its members are ties)."""

    lo: float
    hi: float
    below: int
    count: int
    rank: int


def narrow(chunks: Callable[[], Iterable[torch.Tensor]], k: int, dtype: torch.dtype,
           ws: Optional[Workspace] = None, limit: Optional[int] = None) -> Band:
    """A band of at most ``limit`` (default ``GATHER``) values, or of one value, holding the
    ``k``-th smallest.

    ``chunks()`` yields 1-D tensors of ``dtype`` (any split, any devices), the same values in the
    same order on every call; it is called once per pass: one pass unless the top-16-bit bin of
    the k-th holds more than ``limit`` values (heavy ties), at most 2 for float32 and 4 for
    float64. ``1 <= k <= total`` is the caller's responsibility. ``ws``: scratch buffers to reuse
    (the chunks must not live in its buffers ``sign``, ``key``, ``high``, ``match``, ``digit``).
    """
    itype, bits = _key_type(dtype)
    ws = ws if ws is not None else Workspace()
    limit = GATHER if limit is None else limit
    infinity = int(torch.tensor(float("inf"), dtype=dtype).view(itype))   # key of +inf
    prefix = None            # the k-th key's bits above ``shift + DIGIT_BITS`` (signed), once known
    shift = bits - DIGIT_BITS
    rank = k                 # rank of the k-th among the keys still matching ``prefix``
    below = 0                # keys already known to be smaller
    while True:
        hist = torch.zeros(BINS, dtype=torch.int64)
        for c in chunks():
            key, nonnegative = _keys(c, ws)
            if prefix is None:   # top digit, signed: bin = digit + BINS/2
                digit = torch.bitwise_right_shift(
                    key, shift, out=ws.get("digit", key.numel(), itype, key.device))
                offset = BINS // 2
                if not nonnegative:
                    digit += BINS // 2
                    offset = 0
            else:
                digit = _matching(key, shift + DIGIT_BITS, prefix, ws)
                digit = (digit >> shift).bitwise_and_(BINS - 1) if shift else digit & (BINS - 1)
                offset = 0
            counts = torch.bincount(digit).cpu()   # no minlength: it makes bincount ~1.6x slower
            hist[offset:offset + counts.numel()] += counts
        cum = hist.cumsum(0)
        d = int(torch.searchsorted(cum, rank))      # first bin whose cumulative count >= rank
        before = int(cum[d - 1]) if d else 0
        below += before
        rank -= before
        count = int(hist[d])
        prefix = d - BINS // 2 if prefix is None else prefix * BINS + d
        if shift == 0 or count <= limit:
            lo = max(prefix << shift, -infinity)            # (keys beyond +-inf are NaN: absent)
            hi = min((prefix << shift) + (1 << shift) - 1, infinity)
            return Band(key_to_float(lo, dtype), key_to_float(hi, dtype), below, count, rank)
        shift -= DIGIT_BITS


def band_positions(c: torch.Tensor, band: Band, below: torch.Tensor,
                   ws: Workspace) -> torch.Tensor:
    """Positions in chunk ``c`` of the band's members, given ``below = c < band.lo``."""
    inside = torch.le(c, band.hi, out=ws.get("inside", c.numel(), torch.bool, c.device))
    return positions(inside.bitwise_xor_(below))


def kth_smallest(chunks: Callable[[], Iterable[torch.Tensor]], k: int, dtype: torch.dtype,
                 ws: Optional[Workspace] = None, limit: Optional[int] = None) -> Kth:
    """The ``k``-th smallest (1-based) of all values yielded by ``chunks()``, exactly.

    ``narrow`` (one or more histogram passes), then, unless the band is one value, one pass
    collecting the band's members for ``torch.kthvalue``. Arguments as for ``narrow``.
    """
    ws = ws if ws is not None else Workspace()
    band = narrow(chunks, k, dtype, ws, limit)
    if band.lo == band.hi:
        return Kth(band.lo, band.below, band.count)
    found = []
    for c in chunks():
        below = torch.lt(c, band.lo, out=ws.get("below", c.numel(), torch.bool, c.device))
        found.append(c[band_positions(c, band, below, ws)].cpu())
    members = torch.cat(found)
    del found
    kth = torch.kthvalue(members, band.rank).values
    smaller = int(torch.count_nonzero(members < kth))
    ties = int(torch.count_nonzero(members == kth))
    return Kth(float(kth), band.below + smaller, ties)
