"""Mask files of earlier smctune versions (``<trial_id>@<level>.npz``, formats 1 and 2), still read:
a run directory outlives the version that wrote it, and its report should keep its mask overlaps.

Both are numpy ``.npz`` archives, read with ``allow_pickle=False``: a ``meta`` entry (JSON text:
format, names, shapes) and the packed bits, one entry per tensor (format 1, ``bits<i>``) or one for
all of them (format 2, ``bits``, with each tensor's byte offset in the meta). They are slow to read
in bulk (a zip archive and two array headers per file: about five times the current format).
"""
from __future__ import annotations

import json
import os
from typing import Union

import numpy as np

from smctune.rundir.packed_mask import PackedMask, byte_ranges

SUFFIX = ".npz"
FORMAT_V2 = "smctune.masks/2"
FORMAT_V1 = "smctune.masks/1"


def read_npz_mask(path: Union[str, os.PathLike]) -> PackedMask:
    """The file's bits; ``ValueError``, ``KeyError``, ``OSError``, ... for anything malformed."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"][()]))
        shapes = dict(zip(meta["names"], (tuple(int(n) for n in shape) for shape in meta["shapes"])))
        if len(shapes) != len(meta["names"]) or len(shapes) != len(meta["shapes"]):
            raise ValueError("names and shapes do not pair up")
        ranges = byte_ranges(shapes.values())
        if meta.get("format") == FORMAT_V2:
            if [int(offset) for offset in meta["offsets"]] != [start for start, _ in ranges]:
                raise ValueError("byte offsets do not fit the shapes")
            return PackedMask.from_flat(shapes, np.asarray(data["bits"], dtype=np.uint8))
        if meta.get("format") != FORMAT_V1:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT_V2!r} or {FORMAT_V1!r}")
        bits = {name: np.asarray(data[f"bits{i}"], dtype=np.uint8) for i, name in enumerate(shapes)}
        for (name, shape), (start, end) in zip(shapes.items(), ranges):
            if bits[name].size != end - start:
                raise ValueError(f"{name}: {bits[name].size} bytes for shape {list(shape)}")
        return PackedMask(shapes, bits)
