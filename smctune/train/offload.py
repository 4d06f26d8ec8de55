"""Weights a trial needs again later, kept in a local file instead of in memory.

A trial holds one model, its optimizer state, the current batch and the masks. Everything else it may
need later (the starting weights every new model copies, LTH's rewind point, the dense run's best
evaluation) is read rarely, so it sits in a file on the worker's local disk and is memory-mapped back
when needed: an extra in-memory copy of RoBERTa-large is 1.4 GB of host RAM per trial, and on a CPU
run it competes with the model itself. Files hold tensors only and are read with ``weights_only``.
"""
from __future__ import annotations

import copy
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Optional

import torch


class StateFile:
    """One state dict (name -> tensor) in a private temporary file, deleted with this object."""

    def __init__(self, state: dict, prefix: str = "smctune-state-") -> None:
        self._dir = tempfile.mkdtemp(prefix=prefix)
        self.path = Path(self._dir) / "state.pt"
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self.replace(state)

    def replace(self, state: dict) -> None:
        """Overwrite the stored tensors (torch.save writes one storage at a time, so a GPU state
        passes through host memory a tensor at a time, never as a whole copy)."""
        partial = self.path.with_suffix(".partial")
        torch.save({name: tensor.detach() for name, tensor in state.items()}, partial)
        os.replace(partial, self.path)

    def load(self, map_location: Any = "cpu") -> dict:
        """The stored tensors, memory-mapped: pages are read as the caller copies them."""
        return torch.load(self.path, map_location=map_location, weights_only=True, mmap=True)

    def close(self) -> None:
        self._cleanup()


def module_tensors(module: torch.nn.Module) -> dict:
    """Every parameter and buffer (non-persistent buffers too) by name; a tied tensor once."""
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    return tensors


def copy_into(module: torch.nn.Module, tensors: dict) -> None:
    """Copy ``tensors`` into the module's parameters and buffers of the same names, in place (so
    tied parameters stay tied); every name must be there with its shape."""
    own = module_tensors(module)
    missing = sorted(set(own) - set(tensors))
    if missing:
        raise KeyError(f"stored weights lack {missing[0]} (and {len(missing) - 1} more)")
    with torch.no_grad():
        for name, tensor in own.items():
            tensor.copy_(tensors[name])


def _copy_with_tensors(module: torch.nn.Module, device: Any) -> torch.nn.Module:
    """A deep copy of ``module`` whose parameters and buffers are new, uninitialised tensors on
    ``device`` (the meta device: no storage at all). Going through ``deepcopy``'s memo keeps every
    shared tensor shared (a tied embedding and LM head) and never copies the data."""
    memo: dict = {}
    for parameter in module.parameters():
        memo[id(parameter)] = torch.nn.Parameter(torch.empty_like(parameter, device=device),
                                                 requires_grad=parameter.requires_grad)
    for buffer in module.buffers():
        memo[id(buffer)] = torch.empty_like(buffer, device=device)
    return copy.deepcopy(module, memo)


class ModuleTemplate:
    """The starting module a runtime copies for every new model: its structure on the meta device
    (no storage), its weights in a ``StateFile``. ``new()`` costs one read of the file instead of a
    resident copy for the life of the worker. The module given is left as it was; a runtime drops
    its own reference to it so its memory is freed."""

    def __init__(self, module: torch.nn.Module) -> None:
        self._weights = StateFile({name: t.to("cpu") for name, t in module_tensors(module).items()},
                                  prefix="smctune-template-")
        self._skeleton = _copy_with_tensors(module, "meta")

    @property
    def skeleton(self) -> torch.nn.Module:
        """The structure (config, submodule names, parameter shapes) without weights."""
        return self._skeleton

    def new(self, device: Any = "cpu") -> torch.nn.Module:
        module = _copy_with_tensors(self._skeleton, device)
        copy_into(module, self._weights.load(map_location="cpu"))
        return module


def snapshot(module: torch.nn.Module, previous: Optional[StateFile] = None) -> StateFile:
    """The module's state dict in a file (reusing ``previous``'s file when given)."""
    if previous is None:
        return StateFile(module.state_dict())
    previous.replace(module.state_dict())
    return previous
