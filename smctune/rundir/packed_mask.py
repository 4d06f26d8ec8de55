"""A mask as its files hold it, one bit per weight: what the overlap counts of a report need, at an
eighth of the memory of bool arrays and without unpacking. numpy only: the analysis runs where torch
is not installed."""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np

from smctune.errors import UserError


class PackedMask:
    """Each tensor's bits in ``np.packbits`` order, its last byte zero-padded. ``flat``: every
    tensor's bytes in one array (``bits`` are views of it), or None."""

    __slots__ = ("shapes", "bits", "flat", "_kept", "_layout")

    def __init__(self, shapes: Mapping[str, tuple], bits: Mapping[str, np.ndarray],
                 flat: Optional[np.ndarray] = None):
        self.shapes = {name: tuple(shape) for name, shape in shapes.items()}
        self.bits = dict(bits)
        self.flat = flat
        self._kept: dict[str, int] = {}
        self._layout: Optional[tuple] = None

    @classmethod
    def of(cls, named_masks: Mapping[str, Any]) -> "PackedMask":
        """From name -> bool tensor or array (True = kept)."""
        arrays = {name: as_bool_array(name, mask) for name, mask in named_masks.items()}
        pieces = [np.packbits(a.ravel()) for a in arrays.values()]
        return cls.from_flat({name: a.shape for name, a in arrays.items()},
                             np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint8))

    @classmethod
    def from_flat(cls, shapes: Mapping[str, tuple], flat: np.ndarray,
                  ranges: Optional[list] = None) -> "PackedMask":
        """From every tensor's packed bytes one after the other, in the order of ``shapes``
        (``ranges``: their ``byte_ranges`` when the caller has them); a ``ValueError`` when the bytes
        do not fit the shapes."""
        ranges = byte_ranges(shapes.values()) if ranges is None else ranges
        expected = ranges[-1][1] if ranges else 0
        if flat.size != expected:
            raise ValueError(f"{flat.size} bytes for shapes that pack into {expected}")
        return cls(shapes, {name: flat[start:end] for name, (start, end) in zip(shapes, ranges)}, flat)

    @property
    def layout(self) -> tuple:
        """(name, shape) of every tensor in order: two masks with the same layout line up byte for byte."""
        if self._layout is None:
            self._layout = tuple(self.shapes.items())
        return self._layout

    def kept(self, name: Optional[str] = None) -> int:
        """Weights kept in ``name``, or in the whole mask (counted once per mask, not once per pair
        it is in)."""
        if name not in self._kept:
            bits = self.flat if name is None else self.bits[name]
            self._kept[name] = int(np.bitwise_count(bits).sum(dtype=np.int64))
        return self._kept[name]

    def unpacked(self) -> dict[str, np.ndarray]:
        """Name -> bool array (True = kept), with the saved shapes."""
        return {name: np.unpackbits(bits, count=math.prod(self.shapes[name])).view(np.bool_)
                .reshape(self.shapes[name]) for name, bits in self.bits.items()}


def byte_ranges(shapes) -> list[tuple[int, int]]:
    """(start, end) of each tensor's bytes in the joined array: ``np.packbits`` pads every tensor to a
    whole byte, so a reader finds each tensor from the shapes alone and can check saved offsets."""
    ranges, start = [], 0
    for shape in shapes:
        end = start + (math.prod(shape) + 7) // 8
        ranges.append((start, end))
        start = end
    return ranges


def as_bool_array(name: str, mask: Any) -> np.ndarray:
    """A torch tensor on any device, or an array, as a numpy bool array (torch is never imported)."""
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask)
    if array.dtype != np.bool_:
        raise UserError(f"mask for {name!r} must be boolean, got {array.dtype}")
    return array
