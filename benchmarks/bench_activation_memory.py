"""Activation memory per training example, measured: the ``activation_mb`` of a search space's
``memory:`` block (``smctune plan``'s peak-memory estimate, ``smctune.sweep.memory``).

For each task and preset, in a fresh process on one thread: build the task runtime and model, reset
the kernel's peak-RSS counter (``/proc/self/clear_refs``), and take AdamW steps on the task's real
batches. The peak's growth over the RSS before the first step, less the gradients and the two Adam
moments that the first step allocates (12 bytes per parameter), divided by the batch size, is the
activation memory of one example: fp32 on this CPU, with the first step's transients and what the
allocator keeps, which is what a trial's peak sees. Also prints the model's parameter count, the
other number of the ``memory:`` block.

Run: ``python benchmarks/bench_activation_memory.py [--tasks csqa,mawps,thermo,mt-2to2] [--presets smoke,small]``
(Linux only; a few minutes).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from peak_rss import memory_bytes, reset_peak  # beside this script (sys.path[0])

STEPS = 3
FOLDED = {"mawps", "asdiv-a", "svamp"}   # cross-validated tasks: fold 0


def measure(task: str, preset: str) -> dict:
    import dataclasses

    import torch

    from smctune.catalog import registry
    from smctune.config.search_space import load_search_space

    torch.set_num_threads(1)
    space = load_search_space(task)
    settings = space.resolve(preset, space.architectures[0] if space.architectures else None, "paper")
    train = dataclasses.replace(settings.train, max_steps=STEPS + 1)
    runtime = registry.load_task(task).build(preset=preset, model=settings.model, train=train, data_dir=None,
                                             device="cpu", fold=0 if task in FOLDED else None)
    torch.manual_seed(0)
    model = runtime.new_model().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr)
    batches = runtime.train_batches(0)

    def step() -> None:
        loss = runtime.loss(model, next(batches))
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()

    before = memory_bytes("VmRSS")
    reset_peak()
    for _ in range(STEPS):
        step()
    parameters = sum(p.numel() for p in model.parameters())
    growth_mb = (memory_bytes("VmHWM") - before) / 2**20 - parameters * 12 / 2**20
    return {"task": task, "preset": preset, "parameters": parameters, "batch_size": train.batch_size,
            "activation_mb": growth_mb / train.batch_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="csqa,mawps,thermo,mt-2to2")
    parser.add_argument("--presets", default="smoke,small")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    print(f"{'task':10} {'preset':7} {'parameters':>12} {'batch':>6} {'activation MB/example':>22}")
    for task in args.tasks.split(","):
        for preset in args.presets.split(","):
            out = subprocess.run([sys.executable, __file__, "--child", task, preset], capture_output=True,
                                 text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{task:10} {preset:7} {row['parameters']:12,d} {row['batch_size']:6d} "
                  f"{row['activation_mb']:22.2f}")


if __name__ == "__main__":
    main()
