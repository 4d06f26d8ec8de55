"""Cost of smctune's pruning library against in-run baselines (ratios only, no timed assertions).

1. A training step followed by ``MaskEnforcer.apply()`` (weights + AdamW moments re-zeroed) vs the
   same dense step, on a ~7.9M-parameter stack of transformer-shaped Linear blocks at sparsity 0.9.
2. ``compute_mask`` + ``Mask.apply`` (global magnitude) vs ``torch.nn.utils.prune.global_unstructured``
   with ``L1Unstructured`` at the same sparsity: time, and persistent extra bytes per pruned parameter.

Run: ``python benchmarks/bench_masking.py [--threads N]`` (about 15-40 s on 2 idle CPU cores;
both phases stop early on a time budget when the machine is busy).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from smctune.pruning import MaskEnforcer, compute_mask, prune, select_prunable

SPARSITY = 0.9


class Block(nn.Module):
    """Transformer-shaped block of Linear layers (q/k/v/out + 2-layer FFN, pre-LayerNorm)."""

    def __init__(self, d: int, ffn: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, x):
        h = self.ln1(x)
        mix = torch.softmax(self.q(h) @ self.k(h).transpose(-1, -2) / h.shape[-1] ** 0.5, dim=-1)
        x = x + self.o(mix @ self.v(h))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))


def build(d=256, ffn=1024, layers=10, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(*(Block(d, ffn) for _ in range(layers)))


def bench_training_step(steps=40, warmup=3, batch=4, seq=32, d=256, budget_s=25.0):
    dense = build(d=d)
    masked = copy.deepcopy(dense)
    n_params = sum(p.numel() for p in dense.parameters())
    # Layerwise: on this randomly initialised stack a *global* 0.9 magnitude mask removes every
    # fc2 entirely (smaller init scale), fc1 then gets all-zero gradients and AdamW's sqrt over
    # all-zero moments hits a slow CPU path: that would measure layer collapse, not the enforcer.
    mask = prune(masked, "magnitude", SPARSITY, scope="layerwise")
    opt_dense = torch.optim.AdamW(dense.parameters(), lr=1e-4, weight_decay=0.01)
    opt_masked = torch.optim.AdamW(masked.parameters(), lr=1e-4, weight_decay=0.01)
    enforcer = MaskEnforcer(masked, mask, opt_masked)
    x = torch.randn(batch, seq, d)
    target = torch.randn(batch, seq, d)

    def step(model, opt, enf=None):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), target).backward()
        opt.step()
        t1 = time.perf_counter()
        if enf is not None:
            enf.apply()
        t2 = time.perf_counter()
        return t2 - t0, t2 - t1

    dense_t, masked_t, apply_t, optstep_t = [], [], [], []
    start = time.perf_counter()
    for i in range(warmup + steps):  # interleaved, so machine noise hits both equally
        if i % 2:  # alternate the order too, so cache/turbo effects do not favour one arm
            d_time, _ = step(dense, opt_dense)
            m_time, a_time = step(masked, opt_masked, enforcer)
        else:
            m_time, a_time = step(masked, opt_masked, enforcer)
            d_time, _ = step(dense, opt_dense)
        if i >= warmup:
            dense_t.append(d_time)
            masked_t.append(m_time)
            apply_t.append(a_time)
        elapsed = time.perf_counter() - start
        if (len(dense_t) >= 3 and elapsed > budget_s) or (dense_t and elapsed > 1.5 * budget_s):
            break  # a busy (shared) machine: keep the whole benchmark under a minute
    steps = len(dense_t)
    for _ in range(steps):  # the optimizer step alone, for scale
        t0 = time.perf_counter()
        opt_dense.step()
        optstep_t.append(time.perf_counter() - t0)

    pruned_ok = all(torch.count_nonzero(p.param[~mask[p.name]]) == 0 for p in select_prunable(masked))
    st = opt_masked.state[select_prunable(masked)[0].param]
    m0 = mask[select_prunable(masked)[0].name]
    state_ok = all(torch.count_nonzero(st[k][~m0]) == 0 for k in ("exp_avg", "exp_avg_sq"))
    # Enforcer memory beyond the Mask itself (its keep masks are uint8 views of the Mask's tensors).
    mask_storages = {m.untyped_storage().data_ptr() for m in mask.values()}
    enforcer_bytes = sum(keep.numel() * keep.element_size() for _, keep in enforcer._pairs
                         if keep.untyped_storage().data_ptr() not in mask_storages)
    mask_bytes = sum(m.numel() * m.element_size() for m in mask.values())
    masked_numel = mask.counts()[1]
    med = statistics.median
    print(f"[1] training step, {n_params / 1e6:.2f}M params, {len(mask)} masked tensors, layerwise "
          f"sparsity {mask.sparsity():.3f}, AdamW, batch {batch}x{seq}, {steps} steps (median)")
    print(f"    dense step  {med(dense_t) * 1e3:8.2f} ms")
    print(f"    masked step {med(masked_t) * 1e3:8.2f} ms  (of which MaskEnforcer.apply "
          f"{med(apply_t) * 1e3:.2f} ms; AdamW.step alone {med(optstep_t) * 1e3:.2f} ms)")
    paired = med([m / d for m, d in zip(masked_t, dense_t)])  # each pair ran back to back
    print(f"    masked_step/dense_step = {paired:.2f}  (median of paired ratios; ratio of medians "
          f"{med(masked_t) / med(dense_t):.2f})")
    print(f"    enforcer.apply/AdamW.step = {med(apply_t) / med(optstep_t):.2f}")
    print(f"    memory: Mask {mask_bytes / masked_numel:.2f} + enforcer extra "
          f"{enforcer_bytes / masked_numel:.2f} bytes/masked param; "
          f"pruned weights zero: {pruned_ok}; AdamW moments zero at pruned positions: {state_ok}")


def bench_one_shot(repeats=3, budget_s=8.0):
    base = build(seed=1)
    targets = [(m, "weight") for m in base.modules() if isinstance(m, nn.Linear)]
    n_pruned_params = sum(m.weight.numel() for m, _ in targets)

    ours_t, torch_t = [], []
    ours_model = torch_model = mask = None
    start = time.perf_counter()
    for _ in range(repeats):
        if ours_t and time.perf_counter() - start > budget_s:
            break
        ours_model = copy.deepcopy(base)
        t0 = time.perf_counter()
        mask = compute_mask(ours_model, "magnitude", SPARSITY)
        mask.apply(ours_model)
        ours_t.append(time.perf_counter() - t0)

        torch_model = copy.deepcopy(base)
        params = [(m, "weight") for m in torch_model.modules() if isinstance(m, nn.Linear)]
        t0 = time.perf_counter()
        torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured,
                                        amount=SPARSITY)
        torch_t.append(time.perf_counter() - t0)

    # Persistent extra memory: ours = the bool mask; torch.prune = float `weight_mask` buffer plus
    # the recomputed `weight` tensor next to `weight_orig` (the original Parameter).
    ours_bytes = sum(m.numel() * m.element_size() for m in mask.values())
    torch_bytes = 0
    same = True
    for name, module in torch_model.named_modules():
        if isinstance(module, nn.Linear):
            torch_bytes += module.weight_mask.numel() * module.weight_mask.element_size()
            torch_bytes += module.weight.numel() * module.weight.element_size()
            same &= torch.equal(module.weight_mask.bool(), mask[f"{name}.weight"])
    med = statistics.median
    print(f"[2] one-shot global magnitude at {SPARSITY}, {n_pruned_params / 1e6:.2f}M prunable params, "
          f"median of {len(ours_t)}")
    print(f"    smctune compute_mask+apply {med(ours_t) * 1e3:8.1f} ms; "
          f"torch.prune global_unstructured {med(torch_t) * 1e3:8.1f} ms; identical masks: {same}")
    print(f"    smctune_prune/torch_prune time = {med(ours_t) / med(torch_t):.2f}")
    print(f"    extra bytes/param: smctune {ours_bytes / n_pruned_params:.2f} vs "
          f"torch.prune {torch_bytes / n_pruned_params:.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 is steadier on a "
                             "machine shared with other jobs")
    args = parser.parse_args(argv)
    threads = args.threads
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    cores = os.cpu_count() or 1
    if threads is None and load >= cores and torch.get_num_threads() > 1:
        # Two multi-threaded jobs on the same cores make OpenMP barriers stall for seconds per
        # step; both arms of every ratio use the same setting, so one thread keeps them comparable.
        threads = 1
        print(f"machine busy (load {load:.1f} on {cores} cores): using 1 thread "
              f"(pass --threads N to override)")
    if threads:
        torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    start = time.perf_counter()
    bench_training_step()
    print(f"    ({time.perf_counter() - start:.1f} s)")
    mid = time.perf_counter()
    bench_one_shot()
    print(f"    ({time.perf_counter() - mid:.1f} s)")
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
