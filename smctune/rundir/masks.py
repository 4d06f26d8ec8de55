"""The final mask of every sweep level on disk: ``<run_dir>/masks/<trial_id>@<level>.mask``.

Per-layer sparsity says how much each method pruned where; only the masks say whether two methods
pruned the *same* weights (the paper's "lazy regime": magnitude methods converge to one mask). A mask
is one bit per weight, so it is stored bit-packed and compressed, and it is read with numpy alone:
the analysis runs where torch is not installed.

One file per (trial, level), because an IMP trial reaches several levels. A file is written
atomically (``layout.atomic_path``), so a retried trial overwrites it cleanly and a reader never sees
half a file.

The format (``smctune.masks/3``) is the magic line ``smctune-mask``, the length of a JSON header as
4 bytes little-endian, the header (format, trial_id, level, achieved sparsity, names, shapes, byte
offsets), then one zlib stream of every tensor's packed bits. A report of a 20,000-trial sweep reads
every file once; this is one read, one JSON parse and one inflate per file, about a fifth of what
numpy's ``.npz`` archive (a zip and two array headers) of formats 1 and 2 cost, which are still read.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

from smctune.errors import UserError
from smctune.rundir import masks_npz
from smctune.rundir.layout import RunDir, atomic_path, names_ending, plain_trial_id
from smctune.rundir.packed_mask import PackedMask, byte_ranges

FORMAT = "smctune.masks/3"
MAGIC = b"smctune-mask\n"
_HEADER_LENGTH_BYTES = 4
_SEPARATOR = "@"          # never in a trial id
SUFFIX = ".mask"
_READ_SUFFIXES = (SUFFIX, masks_npz.SUFFIX)   # a run written by an earlier version still has .npz
_ZLIB_LEVEL = 6

PathLike = Union[str, os.PathLike]


def mask_path(masks_dir: PathLike, trial_id: str, level: float) -> Path:
    """The file of ``trial_id`` at ``level``; four decimals, as in trial ids and grid matching."""
    return Path(masks_dir) / f"{plain_trial_id(trial_id)}{_SEPARATOR}{level:.4f}{SUFFIX}"


def save_mask(masks_dir: PathLike, trial_id: str, level: float, named_masks: Mapping[str, Any]) -> Path:
    """Write ``named_masks`` (name -> bool tensor or array, True = kept) for ``trial_id`` at ``level``.

    The names are the mask's own (a tied tensor once, under its canonical name), the names the
    records' per-layer sparsity uses, so a file and its record line up layer by layer."""
    packed = PackedMask.of(named_masks)
    total = sum(math.prod(shape) for shape in packed.shapes.values())
    kept = packed.kept()
    header = json.dumps({
        "format": FORMAT, "trial_id": trial_id, "level": float(level),
        "sparsity": (total - kept) / total if total else 0.0,
        "names": list(packed.shapes), "shapes": [list(shape) for shape in packed.shapes.values()],
        "offsets": [start for start, _ in byte_ranges(packed.shapes.values())]}).encode("utf-8")
    path = mask_path(masks_dir, trial_id, level)
    with atomic_path(path) as staging, open(staging, "wb") as handle:
        handle.write(MAGIC + len(header).to_bytes(_HEADER_LENGTH_BYTES, "little") + header)
        handle.write(zlib.compress(packed.flat, _ZLIB_LEVEL))
    return path


def load_mask(path: PathLike) -> dict[str, np.ndarray]:
    """Name -> bool array (True = kept), in the order saved, with the saved shapes."""
    return load_packed(path).unpacked()


def read_header(path: PathLike) -> dict:
    """A mask file's JSON header (what it is, without inflating its bits)."""
    return _guarded(path, lambda: _parse(path)[0])


def load_packed(path: PathLike) -> PackedMask:
    """A mask file's bits as saved (``PackedMask``; each tensor's bits a view of one array)."""
    if Path(path).suffix == masks_npz.SUFFIX:
        return _guarded(path, lambda: masks_npz.read_npz_mask(path))
    return _guarded(path, lambda: _read(path))


def mask_files(run_dir: PathLike) -> dict[tuple[str, float], Path]:
    """``(trial_id, level rounded to 4 decimals) -> file`` of a run; empty when it saved no masks
    (runs from before masks were saved, or a sweep that has not finished a sparse level yet). Where a
    level has a file of this version and one of an earlier version, this version's wins."""
    directory = RunDir(run_dir).masks_dir
    if not directory.is_dir():
        return {}
    found: dict[tuple[str, float], Path] = {}
    for name in names_ending(directory, _READ_SUFFIXES):
        stem, suffix = os.path.splitext(name)
        trial_id, separator, level = stem.rpartition(_SEPARATOR)
        try:
            value = round(float(level), 4)
        except ValueError:
            continue  # not a file this module wrote
        if separator and trial_id and (suffix == SUFFIX or (trial_id, value) not in found):
            found[(trial_id, value)] = directory / name
    return found


# every way a file can be malformed (zip and npy errors are the legacy reader's)
_MALFORMED = (OSError, ValueError, KeyError, TypeError, EOFError, zlib.error, zipfile.BadZipFile)


def _guarded(path: PathLike, read):
    """``read()``, with a missing or malformed file as a one-line ``UserError`` naming it."""
    try:
        return read()
    except FileNotFoundError:
        raise UserError(f"mask file not found: {path}") from None
    except _MALFORMED as err:
        raise UserError(f"not a smctune mask file: {path} ({type(err).__name__}: {err})") from None


def _read(path: PathLike) -> PackedMask:
    _, shapes, ranges, data, bits_start = _parse(path)
    expected = ranges[-1][1] if ranges else 0
    inflater = zlib.decompressobj()
    # at most one byte more than the shapes need: a hostile stream cannot inflate without bound
    flat = inflater.decompress(memoryview(data)[bits_start:], expected + 1)
    if len(flat) != expected or not inflater.eof or inflater.unused_data:
        raise ValueError(f"the bits do not fit the shapes ({expected} bytes expected)")
    return PackedMask.from_flat(shapes, np.frombuffer(flat, dtype=np.uint8), ranges)


def _parse(path: PathLike) -> tuple[dict, dict, list, bytes, int]:
    """(header, name -> shape, their byte ranges, the file's bytes, where the bits start)."""
    with open(path, "rb") as handle:
        data = handle.read()
    if not data.startswith(MAGIC):
        raise ValueError(f"it does not start with {MAGIC!r}")
    length_at = len(MAGIC)
    header_at = length_at + _HEADER_LENGTH_BYTES
    header_end = header_at + int.from_bytes(data[length_at:header_at], "little")
    if header_end > len(data):
        raise ValueError("the header runs past the end of the file")
    header = json.loads(data[header_at:header_end])
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise ValueError(f"format {found!r}, expected {FORMAT!r}")
    shapes = _shapes(header)
    ranges = byte_ranges(shapes.values())
    if header.get("offsets") != [start for start, _ in ranges]:
        raise ValueError("byte offsets do not fit the shapes")
    return header, shapes, ranges, data, header_end


def _shapes(header: dict) -> dict[str, tuple]:
    names, shapes = header.get("names"), header.get("shapes")
    if not isinstance(names, list) or not isinstance(shapes, list) or len(names) != len(shapes):
        raise ValueError("names and shapes do not pair up")
    out = {}
    for name, shape in zip(names, shapes):
        if (not isinstance(name, str) or name in out or not isinstance(shape, list)
                or not all(type(n) is int and n >= 0 for n in shape)):
            raise ValueError(f"bad name or shape: {name!r} {shape!r}")
        out[name] = tuple(shape)
    return out
