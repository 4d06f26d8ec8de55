"""Content-addressed cache of dense fine-tuned checkpoints.

Every "after" method and LTH start from the same dense fine-tuned weights. Training them once per
(task, seed, preset, model, training settings, data) and reusing them is both the largest saving of a
sweep and what makes "after" methods comparable: they prune the very model the dense baseline reports.
The key is ``TrialSpec.dense_key()``; an entry is a directory built under a temporary name and
renamed into place whole, so a crash mid-write never leaves a half entry that a later trial would
trust. The cache sits beside the run directories (``RunDir.dense_cache_dir``): every run of the same
storage shares it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from smctune.rundir.layout import write_atomic

META = "meta.json"


class DenseCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        return (self.entry(key) / META).is_file()

    def meta(self, key: str) -> Optional[dict]:
        path = self.entry(key) / META
        return json.loads(path.read_text()) if path.is_file() else None

    def save(self, key: str, state_dict: dict, meta: dict, best_state: Optional[dict] = None) -> Path:
        """``state_dict``: the final weights (what "after" methods start from by default);
        ``best_state``: the weights at the best evaluation, kept for ``dense_checkpoint: best``
        (SMC-Bench's choice)."""
        import torch

        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.root))
        for name, state in (("model.pt", state_dict), ("best.pt", best_state)):
            if state is not None:
                torch.save({k: tensor.detach().cpu() for k, tensor in state.items()}, staging / name)
        write_atomic(staging / META, json.dumps(meta, indent=2, sort_keys=True))
        target = self.entry(key)
        try:
            staging.rename(target)
        except OSError:  # another trial won the race: keep its entry, drop ours
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def load_state(self, key: str, map_location: str = "cpu", which: str = "final") -> dict:
        """The dense weights: ``which="final"`` (end of fine-tuning) or ``"best"`` (best evaluation;
        the final weights when the best evaluation was the last one)."""
        import torch

        path = self.entry(key) / ("best.pt" if which == "best" else "model.pt")
        if which == "best" and not path.is_file():
            path = self.entry(key) / "model.pt"
        return torch.load(path, map_location=map_location, weights_only=True)
