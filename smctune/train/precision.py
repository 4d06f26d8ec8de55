"""Mixed precision of a trial, one way for every task family (``train.precision``).

The trial loop, not each runtime, wraps forward passes (training loss and evaluation) in autocast,
so a family cannot forget it. bf16 keeps fp32's exponent range and needs no loss scaling; fp16
(GPUs without bf16, e.g. V100 or T4) needs a gradient scaler, which the loop applies around
``backward`` and the optimizer step and checkpoints with the trial. Weights, gradients, optimizer
state and masks stay fp32 in every mode, so a pruned weight is still exactly zero.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ContextManager, Optional

import torch

from smctune.config.settings import PRECISIONS

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """A resolved precision (``fp32``, ``bf16`` or ``fp16``) on one device type."""

    name: str
    device_type: str

    def autocast(self) -> ContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=DTYPES[self.name])

    def scaler(self) -> Optional[Any]:
        """A gradient scaler for fp16 (None otherwise): small gradients would underflow to zero."""
        if self.name != "fp16":
            return None
        return torch.amp.GradScaler(self.device_type)


def resolve(setting: str, device: Any) -> Precision:
    """``auto``: bf16 on CUDA devices that support it, fp16 on older CUDA devices, fp32 on CPUs (CPU
    autocast is slower than fp32 on most CPUs). An explicit bf16 or fp16 is used as asked."""
    if setting not in PRECISIONS:
        raise ValueError(f"train.precision: unknown '{setting}' (valid: {', '.join(PRECISIONS)})")
    device_type = torch.device(device).type
    if setting != "auto":
        return Precision(setting, device_type)
    if device_type != "cuda":
        return Precision("fp32", device_type)
    return Precision("bf16" if torch.cuda.is_bf16_supported() else "fp16", device_type)
