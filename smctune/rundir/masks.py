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
from typing import Any, Mapping, Union

import numpy as np

from smctune.errors import UserError
from smctune.rundir.layout import RunDir, atomic_path

FORMAT = "smctune.masks/1"
_SEPARATOR = "@"          # never in a trial id
_SUFFIX = ".npz"
_META = "meta"            # the JSON entry: format, trial_id, level, achieved sparsity, names, shapes

PathLike = Union[str, os.PathLike]


def mask_path(masks_dir: PathLike, trial_id: str, level: float) -> Path:
    """The file of ``trial_id`` at ``level``; four decimals, as in trial ids and grid matching."""
    return Path(masks_dir) / f"{trial_id}{_SEPARATOR}{level:.4f}{_SUFFIX}"


def save_mask(masks_dir: PathLike, trial_id: str, level: float, named_masks: Mapping[str, Any]) -> Path:
    """Write ``named_masks`` (name -> bool tensor or array, True = kept) for ``trial_id`` at ``level``.

    The names are the mask's own (a tied tensor once, under its canonical name), the names the
    records' per-layer sparsity uses, so a file and its record line up layer by layer."""
    packed = PackedMask.of(named_masks)
    total = sum(math.prod(shape) for shape in packed.shapes.values())
    kept = sum(packed.kept(name) for name in packed.bits)
    meta = {"format": FORMAT, "trial_id": trial_id, "level": float(level),
            "sparsity": (total - kept) / total if total else 0.0,
            "names": list(packed.shapes), "shapes": [list(shape) for shape in packed.shapes.values()]}
    entries = {_bits_key(i): bits for i, bits in enumerate(packed.bits.values())}
    entries[_META] = np.array(json.dumps(meta))
    path = mask_path(masks_dir, trial_id, level)
    with atomic_path(path) as staging, open(staging, "wb") as handle:
        np.savez_compressed(handle, **entries)   # a file object: numpy appends no ".npz" to it
    return path


def load_mask(path: PathLike) -> dict[str, np.ndarray]:
    """Name -> bool array (True = kept), in the order saved, with the saved shapes."""
    packed = load_packed(path)
    return {name: np.unpackbits(bits, count=math.prod(packed.shapes[name])).view(np.bool_)
            .reshape(packed.shapes[name]) for name, bits in packed.bits.items()}


class PackedMask:
    """A mask as saved, one bit per weight (``np.packbits`` order, the last byte zero-padded): what
    overlap counts need, at an eighth of the memory of bool arrays and without unpacking."""

    __slots__ = ("shapes", "bits", "_kept")

    def __init__(self, shapes: Mapping[str, tuple], bits: Mapping[str, np.ndarray]):
        self.shapes = {name: tuple(shape) for name, shape in shapes.items()}
        self.bits = dict(bits)
        self._kept: dict[str, int] = {}

    @classmethod
    def of(cls, named_masks: Mapping[str, Any]) -> "PackedMask":
        """From name -> bool tensor or array (True = kept)."""
        arrays = {name: _as_bool_array(name, mask) for name, mask in named_masks.items()}
        return cls({name: a.shape for name, a in arrays.items()},
                   {name: np.packbits(a.ravel()) for name, a in arrays.items()})

    def kept(self, name: str) -> int:
        """Weights kept in ``name`` (counted once per mask, not once per pair it is in)."""
        if name not in self._kept:
            self._kept[name] = int(np.bitwise_count(self.bits[name]).sum(dtype=np.int64))
        return self._kept[name]


def load_packed(path: PathLike) -> PackedMask:
    """A mask file's bits as saved (``PackedMask``)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data[_META][()]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
            names, shapes = meta["names"], [tuple(int(n) for n in shape) for shape in meta["shapes"]]
            bits = {name: np.asarray(data[_bits_key(i)], dtype=np.uint8) for i, name in enumerate(names)}
            for name, shape in zip(names, shapes):
                if bits[name].size != (math.prod(shape) + 7) // 8:
                    raise ValueError(f"{name}: {bits[name].size} bytes for shape {list(shape)}")
            return PackedMask(dict(zip(names, shapes)), bits)
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
    for path in sorted(directory.glob(f"*{_SUFFIX}")):
        trial_id, separator, level = path.stem.rpartition(_SEPARATOR)
        try:
            value = round(float(level), 4)
        except ValueError:
            continue  # not a file this module wrote
        if separator and trial_id:
            found[(trial_id, value)] = path
    return found


def _bits_key(index: int) -> str:
    return f"bits{index}"


def _as_bool_array(name: str, mask: Any) -> np.ndarray:
    """A torch tensor on any device, or an array, as a numpy bool array (torch is never imported)."""
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask)
    if array.dtype != np.bool_:
        raise UserError(f"mask for {name!r} must be boolean, got {array.dtype}")
    return array
