"""The final mask of every sweep level on disk: ``<run_dir>/masks/<trial_id>@<level>.npz``.

Per-layer sparsity says how much each method pruned where; only the masks say whether two methods
pruned the *same* weights (the paper's "lazy regime": magnitude methods converge to one mask). A mask
is one bit per weight, so it is stored bit-packed and compressed, and it is read with numpy alone:
the analysis runs where torch is not installed.

One file per (trial, level), because an IMP trial reaches several levels. A file is written
atomically (``layout.atomic_path``), so a retried trial overwrites it cleanly and a reader never sees
half a file.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from smctune.errors import UserError
from smctune.rundir.layout import RunDir, atomic_path, plain_trial_id

FORMAT = "smctune.masks/2"   # every tensor's bits in one entry (``_BITS``), byte offsets in the meta
FORMAT_V1 = "smctune.masks/1"   # one entry per tensor (``bits<i>``): still read
_SEPARATOR = "@"          # never in a trial id
_SUFFIX = ".npz"
_META = "meta"            # the JSON entry: format, trial_id, level, achieved sparsity, names, shapes, offsets
_BITS = "bits"            # every tensor's packed bits, one after the other (each padded to a byte)

PathLike = Union[str, os.PathLike]


def mask_path(masks_dir: PathLike, trial_id: str, level: float) -> Path:
    """The file of ``trial_id`` at ``level``; four decimals, as in trial ids and grid matching."""
    return Path(masks_dir) / f"{plain_trial_id(trial_id)}{_SEPARATOR}{level:.4f}{_SUFFIX}"


def save_mask(masks_dir: PathLike, trial_id: str, level: float, named_masks: Mapping[str, Any]) -> Path:
    """Write ``named_masks`` (name -> bool tensor or array, True = kept) for ``trial_id`` at ``level``.

    The names are the mask's own (a tied tensor once, under its canonical name), the names the
    records' per-layer sparsity uses, so a file and its record line up layer by layer."""
    packed = PackedMask.of(named_masks)
    total = sum(math.prod(shape) for shape in packed.shapes.values())
    kept = packed.kept()
    # one entry for all tensors: a reader opens two zip members per file, not one per tensor (a
    # report of a 20k-trial RoBERTa sweep reads tens of thousands of files of ~150 tensors each)
    meta = {"format": FORMAT, "trial_id": trial_id, "level": float(level),
            "sparsity": (total - kept) / total if total else 0.0,
            "names": list(packed.shapes), "shapes": [list(shape) for shape in packed.shapes.values()],
            "offsets": [start for start, _ in _byte_ranges(packed.shapes.values())]}
    path = mask_path(masks_dir, trial_id, level)
    with atomic_path(path) as staging, open(staging, "wb") as handle:
        # a file object: numpy appends no ".npz" to it
        np.savez_compressed(handle, **{_BITS: packed.flat, _META: np.array(json.dumps(meta))})
    return path


def load_mask(path: PathLike) -> dict[str, np.ndarray]:
    """Name -> bool array (True = kept), in the order saved, with the saved shapes."""
    packed = load_packed(path)
    return {name: np.unpackbits(bits, count=math.prod(packed.shapes[name])).view(np.bool_)
            .reshape(packed.shapes[name]) for name, bits in packed.bits.items()}


class PackedMask:
    """A mask as saved, one bit per weight (``np.packbits`` order, each tensor's last byte
    zero-padded): what overlap counts need, at an eighth of the memory of bool arrays and without
    unpacking. ``flat``: every tensor's bytes in one array (``bits`` are views of it), or None."""

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
        arrays = {name: _as_bool_array(name, mask) for name, mask in named_masks.items()}
        return cls.joined({name: a.shape for name, a in arrays.items()},
                          [np.packbits(a.ravel()) for a in arrays.values()])

    @classmethod
    def joined(cls, shapes: Mapping[str, tuple], pieces: list) -> "PackedMask":
        """From each tensor's packed bytes, in the order of ``shapes``, copied into one array."""
        return cls.from_flat(shapes, np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint8))

    @classmethod
    def from_flat(cls, shapes: Mapping[str, tuple], flat: np.ndarray) -> "PackedMask":
        """From every tensor's packed bytes one after the other, in the order of ``shapes``; a
        ``ValueError`` when the bytes do not fit the shapes."""
        ranges = _byte_ranges(shapes.values())
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


def load_packed(path: PathLike) -> PackedMask:
    """A mask file's bits as saved (``PackedMask``; each tensor's bits a view of one array)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data[_META][()]))
            shapes = dict(zip(meta["names"], (tuple(int(n) for n in shape) for shape in meta["shapes"])))
            if len(shapes) != len(meta["names"]) or len(shapes) != len(meta["shapes"]):
                raise ValueError("names and shapes do not pair up")
            ranges = _byte_ranges(shapes.values())
            if meta.get("format") == FORMAT:
                if [int(offset) for offset in meta["offsets"]] != [start for start, _ in ranges]:
                    raise ValueError("byte offsets do not fit the shapes")
                return PackedMask.from_flat(shapes, np.asarray(data[_BITS], dtype=np.uint8))
            if meta.get("format") != FORMAT_V1:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
            bits = {name: np.asarray(data[f"bits{i}"], dtype=np.uint8) for i, name in enumerate(shapes)}
            for (name, shape), (start, end) in zip(shapes.items(), ranges):
                if bits[name].size != end - start:
                    raise ValueError(f"{name}: {bits[name].size} bytes for shape {list(shape)}")
            return PackedMask(shapes, bits)
    except FileNotFoundError:
        raise UserError(f"mask file not found: {path}") from None
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
        raise UserError(f"not a smctune mask file: {path} ({type(err).__name__}: {err})") from None


def mask_files(run_dir: PathLike) -> dict[tuple[str, float], Path]:
    """``(trial_id, level rounded to 4 decimals) -> file`` of a run; empty when it saved no masks
    (runs from before masks were saved, or a sweep that has not finished a sparse level yet)."""
    directory = RunDir(run_dir).masks_dir
    if not directory.is_dir():
        return {}
    found = {}
    # names sorted as strings (sorting Path objects cost more than the rest at 20k files)
    for name in sorted(entry.name for entry in os.scandir(directory) if entry.name.endswith(_SUFFIX)):
        trial_id, separator, level = name[:-len(_SUFFIX)].rpartition(_SEPARATOR)
        try:
            value = round(float(level), 4)
        except ValueError:
            continue  # not a file this module wrote
        if separator and trial_id:
            found[(trial_id, value)] = directory / name
    return found


def _byte_ranges(shapes) -> list[tuple[int, int]]:
    """(start, end) of each tensor's bytes in the joined array: ``np.packbits`` pads every tensor to a
    whole byte, so a reader finds each tensor from the shapes alone and can check the saved offsets."""
    ranges, start = [], 0
    for shape in shapes:
        end = start + (math.prod(shape) + 7) // 8
        ranges.append((start, end))
        start = end
    return ranges


def _as_bool_array(name: str, mask: Any) -> np.ndarray:
    """A torch tensor on any device, or an array, as a numpy bool array (torch is never imported)."""
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask)
    if array.dtype != np.bool_:
        raise UserError(f"mask for {name!r} must be boolean, got {array.dtype}")
    return array
