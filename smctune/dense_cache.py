"""Content-addressed cache of dense fine-tuned checkpoints.

Every "after" method and LTH start from the same dense fine-tuned weights. Training them once per
(task, seed, preset, model, training settings, data) and reusing them is both the largest saving of a
sweep and what makes "after" methods comparable: they prune the very model the dense baseline reports.
The key is ``TrialSpec.dense_key()``; an entry is written atomically (temp dir + rename), so a crash
mid-write never leaves a half entry that a later trial would trust.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional


class DenseCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        return (self.entry(key) / "meta.json").is_file()

    def meta(self, key: str) -> Optional[dict]:
        path = self.entry(key) / "meta.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def save(self, key: str, state_dict: dict, meta: dict) -> Path:
        import torch

        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.root))
        torch.save({name: tensor.detach().cpu() for name, tensor in state_dict.items()},
                   staging / "model.pt")
        (staging / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        target = self.entry(key)
        try:
            staging.rename(target)
        except OSError:  # another trial won the race: keep its entry, drop ours
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def load_state(self, key: str, map_location: str = "cpu") -> dict:
        import torch

        return torch.load(self.entry(key) / "model.pt", map_location=map_location, weights_only=True)
