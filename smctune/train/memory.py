"""Giving memory back between trials of a reused Ray worker.

With ``reuse_actors`` one worker process runs many trials. Python frees a finished trial's tensors,
but neither allocator returns the pages by itself: PyTorch's CUDA caching allocator keeps its blocks
for the next allocation, and glibc's malloc keeps freed heap (in up to 8 arenas per core) for the
process. The next trial's peak then stacks on the last one's leftovers, which is how workers were
seen holding several times their model's footprint.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from typing import Any, Optional

import torch


@functools.cache
def _libc() -> Optional[Any]:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_memory(device: Any = None) -> None:
    """Collect garbage, empty the CUDA cache and return free heap pages to the OS (glibc only)."""
    gc.collect()
    if torch.cuda.is_available() and (device is None or str(device).startswith("cuda")):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def cuda_peak_mb(device: Any) -> float:
    """Peak CUDA memory allocated by tensors on ``device`` since the last reset (0 on a CPU)."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return 0.0
    return torch.cuda.max_memory_allocated(device) / 2**20
