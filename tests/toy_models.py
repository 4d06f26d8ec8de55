"""Small models shared by the pruning tests."""
import torch
from torch import nn


class TiedLM(nn.Module):
    """Embedding tied to the output projection (as in RoBERTa's LM head): one Parameter, two names."""

    def __init__(self, vocab=20, d=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.body = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(self.norm(torch.relu(self.body(self.embed(tokens)))))
