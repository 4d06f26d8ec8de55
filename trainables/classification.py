"""What the classification runtimes share (commonsense multiple choice, protein thermostability): bf16
autocast on GPUs that support it, and accuracy and mean cross-entropy over an evaluation split.

Kept apart so the two families compute their metric and their mixed precision one way; each runtime
only says how a batch becomes logits and in which order its dev batches come.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch
import torch.nn.functional as F


def autocast_dtype(device: Any) -> Optional[torch.dtype]:
    """bfloat16 on CUDA devices that support it, else None (full precision). Weights, gradients and
    optimizer state stay fp32 either way, so no loss scaling is needed and masks are unaffected."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else None


def logits_in(dtype: Optional[torch.dtype], forward: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``forward()`` under autocast to ``dtype`` (plain when None), returned as fp32 logits."""
    if dtype is None:
        return forward()
    with torch.autocast(device_type="cuda", dtype=dtype):
        logits = forward()
    return logits.float()


def evaluate_classifier(model: Any, batches: Iterable[dict], logits: Callable[[Any, dict], torch.Tensor],
                        total: int) -> dict:
    """``{"accuracy", "loss"}`` over ``total`` examples in ``batches`` (dicts with ``labels``), in
    eval mode without gradients; the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    try:
        with torch.no_grad():
            for batch in batches:
                scores = logits(model, batch)
                loss_sum += float(F.cross_entropy(scores, batch["labels"], reduction="sum"))
                correct += int((scores.argmax(-1) == batch["labels"]).sum())
    finally:
        model.train(was_training)
    return {"accuracy": correct / total, "loss": loss_sum / total}
