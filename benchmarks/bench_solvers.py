"""Cost of the data-driven criteria per million parameters, against magnitude pruning in the same run.

A stack of transformer-FFN-shaped Linear layers (``--layers`` x (d->4d, 4d->d), d = ``--hidden``),
calibration batches of ``--batch`` x ``--tokens`` inputs, sparsity 0.5, one ``prune`` per method:

  magnitude   the baseline: global |w|, no data
  wanda       one forward pass per batch with hooks on every Linear
  sparsegpt   layer by layer, inputs recomputed through the pruned layers, Cholesky + OBS update
  obert       one gradient per batch, block Fisher inverse (B = 50) by Sherman-Morrison, OBS update
  obert B=1   SMC-Bench's diagonal variant (no update)

Prints seconds per million pruned parameters and the ratio to magnitude. Run:
``python benchmarks/bench_solvers.py [--hidden 512 --layers 4 --batches 16 --threads 2]``.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from smctune.pruning import prune, select_prunable


def build(hidden: int, layers: int) -> nn.Module:
    torch.manual_seed(0)
    blocks = []
    for _ in range(layers):
        blocks += [nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden)]
    return nn.Sequential(*blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batches", type=int, default=16, help="calibration batches (= oBERT's m)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(1)
    mixing = torch.randn(args.hidden, args.hidden, generator=gen) / args.hidden ** 0.5
    batches = [torch.randn(args.batch, args.tokens, args.hidden, generator=gen) @ mixing
               for _ in range(args.batches)]
    target = [torch.randn(args.batch, args.tokens, args.hidden, generator=gen) for _ in batches]
    by_id = {id(b): t for b, t in zip(batches, target)}

    def loss_fn(model, batch):
        return nn.functional.mse_loss(model(batch), by_id[id(batch)])

    runs = [("magnitude", "magnitude", {}), ("wanda", "wanda", {}), ("sparsegpt", "sparsegpt", {}),
            ("obert", "obert", {"block_size": 50}), ("obert B=1", "obert", {"variant": "smcbench"})]
    n_params = sum(p.numel for p in select_prunable(build(args.hidden, args.layers)))
    print(f"{args.layers} x (Linear {args.hidden}->{4 * args.hidden}, {4 * args.hidden}->{args.hidden}): "
          f"{n_params / 1e6:.2f}M prunable parameters; {args.batches} calibration batches of "
          f"{args.batch}x{args.tokens}; {args.threads} thread(s); sparsity 0.5")
    base = None
    print(f"{'method':<11} {'seconds':>8} {'s / M params':>13} {'x magnitude':>12}")
    for label, criterion, options in runs:
        model = build(args.hidden, args.layers)
        data = {} if criterion == "magnitude" else {"batches": batches, "loss_fn": loss_fn}
        start = time.perf_counter()
        mask = prune(model, criterion, 0.5, scope="layerwise", options=options or None, **data)
        seconds = time.perf_counter() - start
        assert abs(mask.sparsity() - 0.5) < 1e-6, (label, mask.sparsity())
        base = base or seconds
        print(f"{label:<11} {seconds:>8.2f} {seconds / (n_params / 1e6):>13.3f} {seconds / base:>12.0f}")


if __name__ == "__main__":
    main()
