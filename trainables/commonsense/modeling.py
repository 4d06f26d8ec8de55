"""The multiple-choice model: a transformer encoder scoring each (question, choice) pair with one logit.

This mirrors SMC-Bench's fairseq setup (a sentence-classification head with ``num_classes=1`` on the
first token, softmax over the 5 scores), so pruning sees the same kinds of matrices: the encoder's and
the head's ``dense``/``out_proj``.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

HEAD_INIT_STD = 0.02  # BERT/fairseq initialiser range for new linear layers


class ChoiceScoringHead(nn.Module):
    """First-token features -> one score, like fairseq's classification head:
    dropout -> dense(h, h) -> tanh -> dropout -> out_proj(h, 1)."""

    def __init__(self, hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, 1)
        for layer in (self.dense, self.out_proj):  # draws from the global RNG: follows the caller's seed
            nn.init.normal_(layer.weight, std=HEAD_INIT_STD)
            nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.dropout(features)
        x = torch.tanh(self.dense(x))
        return self.out_proj(self.dropout(x)).squeeze(-1)


class MultipleChoiceModel(nn.Module):
    """``[B, C, L]`` token tensors -> ``[B, C]`` logits; each choice is encoded independently.

    ``pooling`` picks the features the head scores: the ``first`` token's (fairseq/SMC-Bench) or the
    ``mean`` over non-padding tokens (sentence-transformers checkpoints). No parameters either way."""

    def __init__(self, encoder: Any, dropout: float, pooling: str = "first") -> None:
        super().__init__()
        if pooling not in ("first", "mean"):
            raise ValueError(f"unknown pooling {pooling!r}")
        self.encoder = encoder
        self.pooling = pooling
        self.head = ChoiceScoringHead(encoder.config.hidden_size, dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        batch, num_choices, length = input_ids.shape
        flat = {"input_ids": input_ids.reshape(-1, length),
                "attention_mask": attention_mask.reshape(-1, length)}
        if token_type_ids is not None:
            flat["token_type_ids"] = token_type_ids.reshape(-1, length)
        hidden = self.encoder(**flat).last_hidden_state
        if self.pooling == "mean":
            weights = flat["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            features = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        else:
            features = hidden[:, 0]
        return self.head(features).view(batch, num_choices)
