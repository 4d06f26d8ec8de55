"""Run in a fresh interpreter by ``test_trial_memory.py``: CSQA trials of a mid-sized random BERT
(about 4.3M parameters, so its weights dominate anything else a trial might hold) through the real
training loop, measuring at every report

- the bytes of every live tensor storage (each counted once), beyond what was alive before the trial
  (the interpreter, the task runtime with its tokenized data): what the trial holds, exactly;
- the process's peak RSS during the method trials beyond its RSS once the first (warm-up) trial has
  loaded everything loaded once per worker (the tokenizer, transformers' model code).

Prints one JSON line: the model's parameter bytes, the largest batch, and per method the largest
census and the RSS growth.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import sys
import tempfile
import warnings

import torch

from smctune.catalog import registry
from smctune.config.search_space import load_search_space
from smctune.config.specs import TrialSpec
from smctune.train.costs import current_rss_mb
from smctune.train.trial import _RUNTIMES, CallbackReporter, Trial

TASK = "csqa"
MODEL_CONFIG = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "intermediate_size": 512, "max_position_embeddings": 64}
METHODS = ("dense", "omp_before", "lth", "gmp")


def live_tensor_bytes() -> int:
    """Bytes of every distinct tensor storage reachable from Python objects (meta tensors have none)."""
    gc.collect()
    seen, total = set(), 0
    with warnings.catch_warnings():   # isinstance() on torch's deprecated module proxies warns
        warnings.simplefilter("ignore", FutureWarning)
        tensors = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]
    for obj in tensors:
        if obj.device.type == "meta":
            continue
        storage = obj.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() == 0:
            continue
        seen.add(storage.data_ptr())
        total += storage.nbytes()
    return total


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS (Linux)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def peak_rss_since_reset_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def spec_for(method: str, cache_root: str) -> TrialSpec:
    space = load_search_space(TASK)
    smoke = space.preset("smoke")
    model = dataclasses.replace(smoke.model, config=dict(smoke.model.config, **MODEL_CONFIG))
    train = dataclasses.replace(smoke.train, max_steps=4, eval_every=2, eval_limit=20, train_limit=80,
                                checkpoint_every_s=0)
    entry = registry.method_spec(method)
    tunables = dict(space.tunables(method, "smoke", entry.defaults("paper"), "paper"))
    for key in ("frequency", "update_every"):
        if key in tunables:
            tunables[key] = 1
    levels = (0.2, 0.36) if method == "lth" else ()
    return TrialSpec(task=TASK, method=method, sparsity=None if method == "dense" else (0.36 if levels else 0.5),
                     seed=0, preset="smoke", model=model, train=train, tunables=tunables,
                     prunable=space.prunable_rules(method=method, faithful="paper"), data_dir=None,
                     cache_root=cache_root, levels=levels)


def main() -> None:
    torch.set_num_threads(1)
    cache = tempfile.mkdtemp(prefix="smctune-memtest-")
    before_runtime = live_tensor_bytes()
    # a first dense trial builds the runtime (kept for the next trials, as in a reused Ray worker)
    # and the dense checkpoint the "after" methods start from
    warm = Trial(spec_for("dense", cache), CallbackReporter(), device="cpu")
    warm.run()
    parameter_bytes = sum(p.numel() * p.element_size() for p in warm.model.parameters())
    runtime = next(iter(_RUNTIMES.values()))
    batch = next(runtime.train_batches(0))
    batch_bytes = sum(t.numel() * t.element_size() for t in batch.values())
    data_bytes = sum(t.numel() * t.element_size() for split in (runtime.train_set, runtime.dev_set)
                     for t in vars(split).values() if isinstance(t, torch.Tensor))
    prunable = sum(p.numel() for name, p in warm.model.named_parameters() if p.dim() >= 2)
    del warm, batch
    baseline = live_tensor_bytes()
    out = {"parameter_bytes": parameter_bytes, "prunable_elements": prunable, "batch_bytes": batch_bytes,
           "data_bytes": data_bytes, "runtime_bytes": baseline - before_runtime,
           "methods": {}}
    gc.collect()
    warm_rss = current_rss_mb()
    reset_peak_rss()
    for method in METHODS:
        census = []
        root = tempfile.mkdtemp(prefix="smctune-memtest-") if method == "dense" else cache
        Trial(spec_for(method, root), CallbackReporter(callback=lambda m: census.append(live_tensor_bytes())),
              device="cpu").run()
        out["methods"][method] = {"held_bytes": max(census) - baseline, "reports": len(census),
                                  "after_bytes": live_tensor_bytes() - baseline}
    out["peak_rss_growth_mb"] = peak_rss_since_reset_mb() - warm_rss
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
