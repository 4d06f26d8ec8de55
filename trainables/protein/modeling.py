"""The protein classifier: a pretrained backbone's final-layer states, mean-pooled over the residues,
through SMC-Bench's head (Linear, LayerNorm, ReLU, Linear).

The backbone is whatever ``backbones.load_backbone`` built (fair-esm or transformers); the classifier
reads it only through the backbone's ``represent`` function, so parameter names stay the library's own
under ``backbone.`` (``backbone.layers.0.fc1.weight``, ``backbone.encoder.layer.0.output.dense.weight``)
and the search space's prunable regexes can name them.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def residue_mask(tokens: torch.Tensor, special_ids: tuple) -> torch.Tensor:
    """(B, T) bool: True at residue positions, False at BOS/CLS, EOS/SEP and padding."""
    specials = torch.tensor(special_ids, dtype=tokens.dtype, device=tokens.device)
    return ~torch.isin(tokens, specials)


def mean_over_residues(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H) states averaged over the positions ``mask`` marks -> (B, H). Specials are left out
    so the same protein gives the same features however much padding its batch needs."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1)


class ProteinClassifier(nn.Module):
    """``(B, T)`` token ids -> ``(B, num_classes)`` logits.

    The head's weights use PyTorch's default initialisation, drawn from the global RNG, so the same
    torch seed gives the same head (LTH rewinds to it)."""

    def __init__(self, backbone: nn.Module, *, represent: Callable, hidden_size: int, special_ids: tuple,
                 head_hidden: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Linear(hidden_size, head_hidden), nn.LayerNorm(head_hidden), nn.ReLU(),
                                  nn.Linear(head_hidden, num_classes))
        self.represent = represent
        self.special_ids = tuple(int(i) for i in special_ids)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The pooled (B, H) features the head reads."""
        states = self.represent(self.backbone, tokens)
        return mean_over_residues(states, residue_mask(tokens, self.special_ids))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(tokens))
