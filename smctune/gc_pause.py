"""Python's cyclic garbage collector and the driver's large, long-lived data.

A full (generation 2) collection walks every live container, and Python starts one each time the
long-lived objects have grown by a quarter. So reading 20,000 trial records (each a few hundred dicts
and lists once parsed) or running a searcher over 10,000 cells cost more per item the more items
there were. Measured on this project's machine: records read and kept at 89 us each for 1k of them,
158 us each for 20k, and a flat 47 us with the collector paused; the cell searcher's suggest loop at
93 us per cell for 1k cells and 121 us for 10k, 108 us with its cells frozen (``benchmarks/bench_scale.py``
measures both paths). Two remedies, each used only where it is safe:

- ``paused()`` around bulk reads of JSON: parsed JSON holds no reference cycles, so nothing the
  collector could free is made while it is paused; it runs again afterwards (if it was on).
- ``long_lived()`` around a stage's Tuner: what exists when the stage starts (the plan's specs, the
  searcher's cells, the records read so far) is collected once and moved out of the collector's
  generations (``gc.freeze``) for the stage, so its collections walk only what the stage makes.
  Frozen objects are still freed by reference counting, and they are unfrozen when the stage ends.
"""
from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def paused():
    """No automatic collection inside (for building acyclic data such as parsed JSON)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextlib.contextmanager
def long_lived():
    """Everything alive on entry is left out of collections until the exit."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
