"""Questions -> padded token tensors ``[n_questions, 5, L]``, tokenized once per trial.

Inputs follow SMC-Bench: each choice is the text pair ("Q: " + stem, "A: " + choice). Tensors are
padded to the longest pair over the split; ``select`` trims each batch to its own longest pair, which
on CPU saves most of the compute since CSQA pairs are short.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from .data import Question


@dataclass
class Encoded:
    """One split, tokenized. ``lengths`` is the longest choice per question, for trimming."""

    input_ids: torch.Tensor                 # [n, C, L] long
    attention_mask: torch.Tensor            # [n, C, L] long
    token_type_ids: Optional[torch.Tensor]  # [n, C, L] long, or None if the tokenizer has no segments
    labels: torch.Tensor                    # [n] long
    lengths: torch.Tensor                   # [n] long

    def __len__(self) -> int:
        return self.labels.shape[0]

    def select(self, index: Any, device: str) -> dict:
        """Rows ``index`` (a slice or index tensor) as a batch on ``device``, padding trimmed."""
        width = int(self.lengths[index].max())
        batch = {"input_ids": self.input_ids[index, :, :width],
                 "attention_mask": self.attention_mask[index, :, :width],
                 "labels": self.labels[index]}
        if self.token_type_ids is not None:
            batch["token_type_ids"] = self.token_type_ids[index, :, :width]
        return {key: value.to(device) for key, value in batch.items()}


def encode(questions: Sequence[Question], tokenizer: Any, max_length: int) -> Encoded:
    """Tokenize all (question, choice) pairs in one call (fast tokenizers batch this well)."""
    num_choices = len(questions[0].choices)
    firsts = [f"Q: {q.stem}" for q in questions for _ in q.choices]
    seconds = [f"A: {choice}" for q in questions for choice in q.choices]
    tokens = tokenizer(firsts, seconds, truncation=True, max_length=max_length, padding="longest",
                       return_tensors="pt")

    def shaped(name: str) -> torch.Tensor:
        return tokens[name].to(torch.long).view(len(questions), num_choices, -1)

    mask = shaped("attention_mask")
    return Encoded(input_ids=shaped("input_ids"), attention_mask=mask,
                   token_type_ids=shaped("token_type_ids") if "token_type_ids" in tokens else None,
                   labels=torch.tensor([q.label for q in questions], dtype=torch.long),
                   lengths=mask.sum(-1).amax(-1))
