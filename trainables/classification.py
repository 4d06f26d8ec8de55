"""What the classification runtimes share (commonsense multiple choice, protein thermostability):
accuracy and mean cross-entropy over an evaluation split.

Kept apart so the two families compute their metric one way; each runtime only says how a batch
becomes logits and in which order its dev batches come.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F


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
