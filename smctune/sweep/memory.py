"""Expected peak memory of one trial, and how many trials share a GPU (``smctune plan``).

How many trials fit on one GPU decides a sweep's bill as much as step time does, so the plan shows it
before anything runs. The estimate is the sum of what a trial holds (``tests/test_trial_memory.py``
pins that it holds nothing else): fp32 weights, gradients and optimizer state (AdamW/Adam: two fp32
moments), the masks (a bool per prunable weight, two at once during GMP and RigL updates; every
parameter counted as prunable, an upper bound), the activations of one training batch (the search
space's measured ``activation_mb`` per example at ``max_length``, halved under 16-bit autocast), and
on a GPU the CUDA context of the trial's process. Activations are for full-length batches; real
batches are trimmed to their longest example, so this errs high. Torch-free: ``plan`` stays light.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

MB = 2**20
GB = 2**30
WEIGHT_BYTES = 4                       # fp32 weights; gradients the same
OPTIMIZER_STATE_BYTES = {"adamw": 8, "adam": 8}
MASK_BYTES = 2                         # a bool per prunable weight, two masks during updates
CUDA_CONTEXT_GB = 0.6                  # CUDA context and cuBLAS workspace of one process
GPU_HEADROOM = 0.9                     # share of a GPU's memory trials may plan to use (fragmentation)
# GB per device by Ray accelerator type (``accelerator_type:<name>``) or torch device name; an
# "A100" without its size is taken as the 40 GB part
GPU_MEMORY_GB = {"H100": 80, "A100-80G": 80, "A100-40G": 40, "A100": 40, "L40S": 48, "A6000": 48,
                 "A10G": 24, "L4": 24, "V100": 16, "T4": 16}


@dataclass(frozen=True)
class TrialMemory:
    """Bytes per component of one trial's peak."""

    weights: float
    gradients: float
    optimizer: float
    masks: float
    activations: float
    context: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.masks + self.activations + self.context

    def breakdown(self) -> str:
        parts = (("weights", self.weights), ("gradients", self.gradients), ("optimizer", self.optimizer),
                 ("masks", self.masks), ("activations", self.activations), ("CUDA context", self.context))
        return ", ".join(f"{name} {value / GB:.2f}" for name, value in parts if value)


def trial_memory(parameters: float, activation_mb: float, batch_size: int, optimizer: str,
                 on_gpu: bool, precision: str = "auto") -> TrialMemory:
    """The estimate for a trial of ``parameters`` weights. ``precision`` is ``train.precision``:
    ``auto`` is 16-bit on a GPU and fp32 on a CPU (``smctune.train.precision``)."""
    sixteen_bit = precision in ("bf16", "fp16") or (precision == "auto" and on_gpu)
    return TrialMemory(
        weights=parameters * WEIGHT_BYTES, gradients=parameters * WEIGHT_BYTES,
        optimizer=parameters * OPTIMIZER_STATE_BYTES.get(optimizer, 8), masks=parameters * MASK_BYTES,
        activations=batch_size * activation_mb * MB * (0.5 if sixteen_bit else 1.0),
        context=CUDA_CONTEXT_GB * GB if on_gpu else 0.0)


def gpu_memory_gb(device: str) -> Optional[float]:
    """Memory of a GPU named by a Ray accelerator type or a torch device name, if known."""
    for name, size in sorted(GPU_MEMORY_GB.items(), key=lambda item: -len(item[0])):
        if re.search(re.escape(name), device, flags=re.IGNORECASE):
            return float(size)
    return None


def trials_per_gpu(memory: TrialMemory, gpu_gb: float) -> int:
    return int(gpu_gb * GB * GPU_HEADROOM // memory.total) if memory.total else 0


def gpu_share(per_gpu: int) -> float:
    """The fractional GPU request that packs ``per_gpu`` trials on one GPU (1 when one or none fit;
    Ray needs shares like 0.5 or 0.25 whose multiples add up to whole GPUs)."""
    if per_gpu <= 1:
        return 1.0
    return 1.0 / 2 ** int(math.log2(per_gpu))
