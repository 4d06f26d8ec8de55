"""Tensors read back from a run directory or the dense cache, never code.

Everything smctune reads back from shared storage that torch wrote (trial checkpoints, dense-cache
weights) goes through ``torch.load(weights_only=True)``: tensors and plain containers only, so a
pickle planted by anyone who can write the storage is refused instead of run. torch words a refusal
as a page of advice (including "re-run with ``weights_only=False``", exactly what must not be done);
``load_tensors`` turns it into one line naming the file and what it held.
"""
from __future__ import annotations

import os
import re
import warnings
from typing import Any, Union

from smctune.errors import UserError


class UnsafeOrBrokenFile(UserError):
    """A file smctune wrote once that now is not plain tensors: damaged, or replaced."""


def load_tensors(path: Union[str, os.PathLike], map_location: Any = "cpu", error: type = UnsafeOrBrokenFile) -> Any:
    """``torch.load(path, weights_only=True)``; ``error`` (a ``UserError``) naming ``path`` when the
    file is missing, broken, or holds anything but tensors and plain containers."""
    import torch

    try:
        with warnings.catch_warnings():   # a foreign pickle's protocol: the refusal says enough
            warnings.filterwarnings("ignore", message=r".*pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise error(f"{path}: missing") from None
    except Exception as err:   # torch reports a refused or broken file as many types
        raise error(f"{path}: refused to load, not plain tensors ({refusal_reason(err)}); "
                    "smctune never unpickles other objects, which could run code") from None


def refusal_reason(err: BaseException) -> str:
    """The one informative clause of torch's refusal (the global it would have had to import, or
    the pickle opcode it does not admit), else the first line of the error."""
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it names the Python object {found.group(1)!r}"
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+?)\s*(?:\n|$)", text)
    if found and found.group(1).strip():
        return found.group(1).strip()[:160]
    found = re.search(r"WeightsUnpickler error:\s*\n+\s*([^\n]+)", text)
    if found:
        return found.group(1).strip()[:160]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:160]}" if lines else type(err).__name__
