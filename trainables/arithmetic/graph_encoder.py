"""Graph2Tree's graph transformer (Zhang et al., ACL 2020) over the BiLSTM's word encodings.

Structure as in the reference code's ``Graph_Module`` (SVAMP / SMC-Bench ``graph2tree``):

- 4 heads, each a two-layer GCN (``relu(A X W1 + b1)``, dropout 0.3, ``A . W2 + b2``) from H to H/4,
  each run on one graph: the reference feeds ``greater`` (quantity comparison) to two heads and
  ``attribute_between`` (quantity cells) to the other two (``graphs.REFERENCE_HEADS``);
- the heads' outputs concatenated, layer-normalised and added to the input (residual);
- a position-wise feed-forward block (H -> H -> H, relu, dropout 0.3) with a residual.

The adjacency matrices are used as given (0/1 with self-loops on the words), without normalisation, as
the reference does for its prebuilt graphs. ``nn.LayerNorm`` replaces the reference's hand-written one
(which divides by the unbiased std plus eps); every GCN weight is a plain 2-D ``nn.Linear`` matrix,
initialised uniform(±1/sqrt(out)) like the reference's ``GraphConvolution``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# The reference's ``Graph_Module`` dropout.
GRAPH_DROPOUT = 0.3


class GraphConvolution(nn.Module):
    """``A (X W) + b`` (Kipf & Welling's layer without normalisation)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bias = nn.Parameter(torch.empty(out_features))
        bound = 1.0 / math.sqrt(out_features)
        nn.init.uniform_(self.linear.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, nodes: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        return torch.bmm(adjacency, self.linear(nodes)) + self.bias


class GCNHead(nn.Module):
    def __init__(self, in_features: int, hidden: int, out_features: int, dropout: float) -> None:
        super().__init__()
        self.gc1 = GraphConvolution(in_features, hidden)
        self.gc2 = GraphConvolution(hidden, out_features)
        self.dropout = nn.Dropout(dropout)

    def forward(self, nodes: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        return self.gc2(self.dropout(F.relu(self.gc1(nodes, adjacency))), adjacency)


class GraphEncoder(nn.Module):
    """(B, W, H) word encodings and (B, G, W, W) graphs -> (B, W, H) graph-aware word encodings; head
    ``i`` convolves over graph ``head_graphs[i]`` of the batch's G graphs."""

    def __init__(self, hidden_size: int, head_graphs: Sequence[int], dropout: float = GRAPH_DROPOUT) -> None:
        super().__init__()
        heads = len(head_graphs)
        if not heads or hidden_size % heads:
            raise ValueError(f"hidden_size {hidden_size} cannot be split over {heads} graph heads")
        self.head_graphs = tuple(head_graphs)
        self.heads = nn.ModuleList(GCNHead(hidden_size, hidden_size, hidden_size // heads, dropout)
                                   for _ in range(heads))
        self.norm = nn.LayerNorm(hidden_size)
        self.w_1 = nn.Linear(hidden_size, hidden_size)
        self.w_2 = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, nodes: torch.Tensor, graphs: torch.Tensor) -> torch.Tensor:
        graphs = graphs.to(nodes.dtype)
        heads = [head(nodes, graphs[:, g]) for head, g in zip(self.heads, self.head_graphs)]
        features = self.norm(torch.cat(heads, dim=-1)) + nodes
        return self.w_2(self.dropout(F.relu(self.w_1(features)))) + features


def pool_nodes(nodes: torch.Tensor, pad: torch.Tensor, how: str) -> torch.Tensor:
    """(B, H) min / max / mean over each problem's real words (``pad`` True at padding)."""
    keep = (~pad).unsqueeze(-1)
    return POOLS[how](nodes, keep)


def _min(nodes: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return nodes.masked_fill(~keep, float("inf")).amin(dim=1)


def _max(nodes: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return nodes.masked_fill(~keep, float("-inf")).amax(dim=1)


def _mean(nodes: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    weights = keep.to(nodes.dtype)
    return (nodes * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


POOLS = {"min": _min, "max": _max, "mean": _mean}
