"""One global magnitude mask over RoBERTa-large-shaped tensors: smctune vs torch.nn.utils.prune.

Tensors: a 50265x1024 embedding and 24 layers of 4x(1024x1024) + (4096x1024) + (1024x4096) Linear
weights (~355M parameters), float32 N(0, 0.02^2), seeded; ``--scale`` shrinks the vocabulary and
the layer count for quick runs. Sparsity 0.5, global scope. Each phase runs in a fresh subprocess
that builds the tensors, resets its peak-RSS mark (``/proc/self/clear_refs``) and reports time and
peak extra memory (VmHWM minus the RSS after building):

  read       one read pass over the weights, sum of |w| (``vector_norm(w, 1)``): the floor
  smctune    ``compute_mask(model, "magnitude", 0.5)`` (median of ``--repeats`` runs)
  torch      ``torch.nn.utils.prune.global_unstructured(..., L1Unstructured, amount=0.5)``
  kthvalue   ``torch.kthvalue`` over the concatenated magnitudes (the plain exact-count approach)

Float32 cannot hold ~355M normal samples without repeated values, so a ``prepare`` phase makes
the weights tie-free *at the threshold*: of the entries whose |w| equals the k-th smallest, those
beyond the first ``need`` (the ones a tie rule would decide) are moved up by one ulp, so every
exact-count method must produce the same mask. The parent then checks the exact count and that
smctune's mask equals torch.prune's (masks saved as packed bits to a temporary directory).

Run: ``python benchmarks/bench_global_mask.py [--scale 0.1] [--skip-torch] [--threads N]``.
The torch phase needs ~54 bytes/param with the weights (~19 GB at full size) and is skipped, with
a message, when MemAvailable is lower; ``--skip-kthvalue`` drops the ~21 bytes/param kthvalue
phase.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from peak_rss import memory_bytes, reset_peak  # beside this script (sys.path[0])

SPARSITY = 0.5
STD = 0.02
SEED = 0
D, FFN, VOCAB, LAYERS = 1024, 4096, 50265, 24
# Whole-process need per parameter (4 for the weights themselves) of the memory-hungry phases,
# checked against MemAvailable (plus MARGIN) before they start: a shared machine must not OOM.
TORCH_BYTES_PER_PARAM = 4 + 50      # global_unstructured measured ~47-50 bytes/param extra
KTHVALUE_BYTES_PER_PARAM = 4 + 17
MARGIN = 1 << 30


# ------------------------------------------------------------------------------ tensors
def sizes(scale: float) -> tuple[int, int]:
    return max(1, round(VOCAB * scale)), max(1, round(LAYERS * scale))


class RobertaShaped(nn.Module):
    """Only the prunable matrices of RoBERTa-large: embedding + 6 Linear weights per layer."""

    def __init__(self, vocab: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, D)
        self.layers = nn.ModuleList(
            nn.ModuleDict({name: nn.Linear(i, o, bias=False) for name, (i, o) in
                           [("q", (D, D)), ("k", (D, D)), ("v", (D, D)), ("o", (D, D)),
                            ("fc1", (D, FFN)), ("fc2", (FFN, D))]})
            for _ in range(layers))

    def targets(self) -> list[tuple[nn.Module, str]]:
        """(module, "weight") pairs in parameter order (torch.prune's input)."""
        mods = [self.embed] + [layer[n] for layer in self.layers
                               for n in ("q", "k", "v", "o", "fc1", "fc2")]
        return [(m, "weight") for m in mods]


def build(scale: float, fixup_path=None) -> RobertaShaped:
    """Seeded N(0, STD^2) weights filled in place (no full-size temporaries), then the fix-up."""
    with torch.device("meta"):
        model = RobertaShaped(*sizes(scale))
    model = model.to_empty(device="cpu").requires_grad_(False)
    gen = torch.Generator().manual_seed(SEED)
    weights = [m.weight for m, _ in model.targets()]
    for w in weights:
        w.normal_(0.0, STD, generator=gen)
    if fixup_path is not None:
        fix = torch.load(fixup_path)
        offsets = [0]
        for w in weights:
            offsets.append(offsets[-1] + w.numel())
        for pos, value in zip(fix["positions"].tolist(), fix["values"].tolist()):
            i = next(j for j in range(len(weights)) if offsets[j] <= pos < offsets[j + 1])
            flat = weights[i].view(-1)
            flat[pos - offsets[i]] = value if flat[pos - offsets[i]] >= 0 else -value
    return model


def num_params(model) -> int:
    return sum(m.weight.numel() for m, _ in model.targets())


# ------------------------------------------------------------------------------ memory


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


# ------------------------------------------------------------------------------ phases (children)
def write_bits(path: Path, masks) -> None:
    """Kept masks (bool tensors, in order) as one packed-bit file."""
    import numpy as np

    with open(path, "wb") as f:
        for m in masks:
            f.write(np.packbits(m.reshape(-1).numpy()).tobytes())


def phase_prepare(args) -> dict:
    from smctune.pruning.select import num_pruned
    from smctune.pruning.selection import kth_smallest

    model = build(args.scale)
    flats = [m.weight.view(-1) for m, _ in model.targets()]
    n = sum(f.numel() for f in flats)
    k = num_pruned(n, SPARSITY)
    step = 1 << 22

    def chunks():
        for f in flats:
            for a in range(0, f.numel(), step):
                yield f[a:a + step].abs()

    kth = kth_smallest(chunks, k, torch.float32)
    need = k - kth.below
    positions, offset = [], 0
    for f in flats:
        positions.append((f.abs() == kth.value).nonzero().squeeze(1) + offset)
        offset += f.numel()
    tied = torch.cat(positions)
    moved = tied[need:]          # the first ``need`` stay at the threshold (pruned), the rest go up
    up = torch.nextafter(torch.tensor(kth.value), torch.tensor(float("inf"))).item()
    torch.save({"positions": moved, "values": torch.full((moved.numel(),), up)}, args.fixup)
    return {"n": n, "k": k, "threshold": kth.value, "tied": int(tied.numel()),
            "moved": int(moved.numel())}


def phase_read(args) -> dict:
    model = build(args.scale, args.fixup)
    weights = [m.weight for m, _ in model.targets()]
    base = memory_bytes("VmRSS")
    reset_peak()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        total = sum(float(torch.linalg.vector_norm(w, 1)) for w in weights)
        times.append(time.perf_counter() - t0)
    return {"time": statistics.median(times), "times": times, "extra": memory_bytes("VmHWM") - base,
            "sum_abs": total}


def phase_smctune(args) -> dict:
    from smctune.pruning import compute_mask

    model = build(args.scale, args.fixup)
    names = [n for n, p in model.named_parameters()]
    base = memory_bytes("VmRSS")
    reset_peak()
    times, mask = [], None
    for _ in range(args.repeats):
        del mask
        t0 = time.perf_counter()
        mask = compute_mask(model, "magnitude", SPARSITY)
        times.append(time.perf_counter() - t0)
    extra = memory_bytes("VmHWM") - base
    pruned, total = mask.counts()
    write_bits(Path(args.out), [mask[n] for n in names])
    return {"time": statistics.median(times), "times": times, "extra": extra,
            "pruned": pruned, "total": total}


def phase_torch(args) -> dict:
    from torch.nn.utils import prune as torch_prune

    model = build(args.scale, args.fixup)
    base = memory_bytes("VmRSS")
    reset_peak()
    t0 = time.perf_counter()
    torch_prune.global_unstructured(model.targets(), pruning_method=torch_prune.L1Unstructured,
                                    amount=SPARSITY)
    elapsed = time.perf_counter() - t0
    extra = memory_bytes("VmHWM") - base
    masks = [m.weight_mask.bool() for m, _ in model.targets()]
    pruned = sum(int((~m).sum()) for m in masks)
    write_bits(Path(args.out), masks)
    return {"time": elapsed, "times": [elapsed], "extra": extra, "pruned": pruned,
            "total": num_params(model)}


def phase_kthvalue(args) -> dict:
    from smctune.pruning.select import num_pruned

    model = build(args.scale, args.fixup)
    weights = [m.weight for m, _ in model.targets()]
    base = memory_bytes("VmRSS")
    reset_peak()
    t0 = time.perf_counter()
    flat = torch.cat([w.reshape(-1).abs() for w in weights])
    value = torch.kthvalue(flat, num_pruned(flat.numel(), SPARSITY)).values
    elapsed = time.perf_counter() - t0
    return {"time": elapsed, "times": [elapsed], "extra": memory_bytes("VmHWM") - base,
            "threshold": float(value)}


PHASES = {"prepare": phase_prepare, "read": phase_read, "smctune": phase_smctune,
          "torch": phase_torch, "kthvalue": phase_kthvalue}


# ------------------------------------------------------------------------------ parent
def run_phase(name: str, args, tmp: Path) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--scale", str(args.scale),
           "--repeats", str(args.repeats), "--fixup", str(tmp / "fixup.pt"),
           "--out", str(tmp / f"{name}.bits")]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])
                               + os.pathsep + os.environ.get("PYTHONPATH", "")})
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"phase {name} failed (exit {proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - start
    return result


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the full size (vocabulary rows and layers), default 1")
    parser.add_argument("--skip-torch", action="store_true",
                        help="skip the slow torch.nn.utils.prune baseline (~80 s and ~19 GB "
                             "with the weights at full size)")
    parser.add_argument("--skip-kthvalue", action="store_true",
                        help="skip the plain kthvalue-over-concatenation phase")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice, capped at the "
                             "number of idle cores when the machine is busy)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of the fast phases (read, smctune); the median is reported")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--fixup", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.phase:   # child process
        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(PHASES[args.phase](args)))
        return

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    cores = os.cpu_count() or 1
    idle = max(1, round(cores - load))
    if args.threads is None and torch.get_num_threads() > idle:
        # Multi-threaded torch ops on oversubscribed cores stall in OpenMP barriers (seconds per
        # pass, measured): with other jobs running, use only the idle cores, for every phase.
        args.threads = idle
        print(f"machine busy (load {load:.1f} on {cores} cores): using {idle} thread(s) "
              f"(pass --threads N to override)")
    threads = args.threads or torch.get_num_threads()
    vocab, layers = sizes(args.scale)
    with tempfile.TemporaryDirectory(prefix="bench_global_mask_") as tmpdir:
        tmp = Path(tmpdir)
        prep = run_phase("prepare", args, tmp)
        n, k = prep["n"], prep["k"]
        print(f"torch {torch.__version__}, {threads} thread(s); {n / 1e6:.1f}M params "
              f"(embedding {vocab}x{D} + {layers} layers), global magnitude, sparsity {SPARSITY}, "
              f"k = {k}")
        print(f"tie-free at the threshold: {prep['tied']} entries had |w| = {prep['threshold']:.9g}"
              f", {prep['moved']} moved up one ulp")
        results = {}
        plan = []   # memory-hungry phases first, right after the MemAvailable checks
        if args.skip_torch:
            print("torch.prune phase skipped (--skip-torch)")
        elif mem_available() < TORCH_BYTES_PER_PARAM * n + MARGIN:
            print(f"torch.prune phase skipped: needs ~{TORCH_BYTES_PER_PARAM * n / 2**30:.1f} GiB "
                  f"(+1 GiB margin), MemAvailable is {mem_available() / 2**30:.1f} GiB")
        else:
            plan.append(("torch", "torch.prune global_unstructured"))
        if not args.skip_kthvalue:
            if mem_available() < KTHVALUE_BYTES_PER_PARAM * n + MARGIN:
                print(f"kthvalue phase skipped: needs ~{KTHVALUE_BYTES_PER_PARAM * n / 2**30:.1f} "
                      f"GiB (+1 GiB margin), MemAvailable is {mem_available() / 2**30:.1f} GiB")
            else:
                plan.append(("kthvalue", "kthvalue over concatenation"))
        plan += [("read", "read pass sum|w| (floor)"), ("smctune", "smctune compute_mask")]
        print(f"{'phase':34s} {'time (s)':>10s} {'peak extra':>12s} {'bytes/param':>12s}")
        for name, label in plan:
            r = results[name] = run_phase(name, args, tmp)
            runs = "" if len(r["times"]) == 1 else \
                f"   (runs: {', '.join(f'{t:.3f}' for t in r['times'])})"
            print(f"{label:34s} {r['time']:10.3f} {r['extra'] / 2**20:8.0f} MiB "
                  f"{r['extra'] / n:12.2f}{runs}", flush=True)

        ours = results["smctune"]
        ok = ours["pruned"] == k and ours["total"] == n
        print(f"exact count: smctune prunes {ours['pruned']} of {ours['total']} "
              f"(k = {k}): {ok}")
        if "torch" in results:
            same = file_digest(tmp / "smctune.bits") == file_digest(tmp / "torch.bits")
            print(f"torch.prune prunes {results['torch']['pruned']}; "
                  f"smctune mask == torch.prune mask: {same}")
        if "kthvalue" in results:
            kv = results["kthvalue"]
            print(f"kthvalue threshold {kv['threshold']:.9g} == prepare's radix threshold "
                  f"{prep['threshold']:.9g}: {kv['threshold'] == prep['threshold']}")
        print(f"ratios: smctune/read = {ours['time'] / results['read']['time']:.1f}x", end="")
        if "torch" in results:
            print(f"; torch.prune/smctune = {results['torch']['time'] / ours['time']:.1f}x "
                  f"(goal >= 20x)", end="")
        if "kthvalue" in results:
            print(f"; kthvalue/smctune = {results['kthvalue']['time'] / ours['time']:.1f}x", end="")
        print()
        print(f"smctune extra memory: {ours['extra'] / n:.2f} bytes/param (goal <= 2: bool masks "
              f"are 1)")


if __name__ == "__main__":
    main()
