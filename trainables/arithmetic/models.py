"""GTS and Graph2Tree as single ``nn.Module``s: backbone (``embedder.``), sequence encoder (``encoder.``),
for Graph2Tree a graph encoder (``graph.``), and the tree decoder (``decoder.``).

``forward(batch)`` is the teacher-forced training loss of a batch (see ``runtime.collate`` for the
dict layout); ``predict(batch)`` beam-searches every problem of a batch and returns output tokens.

Parameters that are not 2-D matrices: biases, LayerNorm weights (1-D) and ``decoder.predict.
constant_embedding`` (3-D, shape (1, C, H); GTS's ``Prediction.embedding_weight``, which SMC-Bench's
masking skips because it only takes 2-D and 4-D tensors). LSTM weights are the usual 2-D
``weight_ih_l*`` / ``weight_hh_l*`` matrices.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from . import layers as layer_settings
from .beam import beam_search
from .encoder import SequenceEncoder, embed_words, gather_numbers
from .graph_encoder import GraphEncoder, pool_nodes
from .graphs import REFERENCE_HEADS, graph_index
from .tree_decoder import Memory, TreeDecoder

# GTS's MAX_OUTPUT_LENGTH: the beam bound when neither ``layers`` nor the caller gives one.
DEFAULT_MAX_OUTPUT_LENGTH = 45


class TreeModel(nn.Module):
    """GTS: pretrained backbone, BiLSTM, goal-driven tree decoder."""

    # Indices into ``graphs.build_graphs``' output of the graphs a batch must carry (None: no graphs).
    graph_indices: Optional[tuple] = None

    def __init__(self, embedder: nn.Module, vocab: Any, settings: dict, dropout: float) -> None:
        super().__init__()
        width = int(embedder.config.hidden_size)
        hidden = settings["hidden_size"]
        self.vocab = vocab
        self.settings = dict(settings)
        self.embedder = embedder  # parameter names "embedder.*" = encoder.BACKBONE_PREFIX
        self.encoder = SequenceEncoder(width, hidden, settings["depth"], dropout)
        self.decoder = TreeDecoder(hidden, settings["embedding_size"] or width, vocab.num_operators,
                                   vocab.num_constants, vocab.size - vocab.number_offset, dropout)

    @property
    def num_slots(self) -> int:
        return self.decoder.num_slots

    def word_encodings(self, batch: dict, outputs: torch.Tensor, problem: torch.Tensor, pad: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hook for Graph2Tree: (word encodings, problem vector) after the BiLSTM."""
        return outputs, problem

    def encode(self, batch: dict) -> Memory:
        embedded = embed_words(self.embedder, batch["input_ids"], batch["attention_mask"], batch["word_map"])
        outputs, problem = self.encoder(embedded, batch["word_lengths"])
        positions = torch.arange(outputs.size(1), device=outputs.device)
        pad = positions.unsqueeze(0) >= batch["word_lengths"].to(outputs.device).unsqueeze(1)
        outputs, problem = self.word_encodings(batch, outputs, problem, pad)
        numbers = gather_numbers(outputs, batch["number_positions"], batch["number_present"])
        return Memory(outputs, pad, problem, numbers, batch["number_present"])

    def forward(self, batch: dict) -> torch.Tensor:
        """Mean token cross-entropy of the teacher-forced prefix targets."""
        return self.decoder.loss(self.encode(batch), batch["targets"], batch["target_lengths"])

    @torch.no_grad()
    def predict(self, batch: dict, beam_size: Optional[int] = None,
                max_length: Optional[int] = None) -> list[list[str]]:
        """Best expression (output tokens, prefix order) for every problem of ``batch``; call in eval
        mode."""
        return self.decode(self.encode(batch), batch, beam_size, max_length)

    @torch.no_grad()
    def evaluate_batch(self, batch: dict, beam_size: Optional[int] = None,
                       max_length: Optional[int] = None) -> tuple[list[list[str]], float, int]:
        """(predictions, summed teacher-forced token cross-entropy, number of target tokens) from one
        encoder pass; problems with ``target_lengths`` 0 add nothing to the loss."""
        memory = self.encode(batch)
        loss = self.decoder.loss(memory, batch["targets"], batch["target_lengths"], reduction="sum")
        return (self.decode(memory, batch, beam_size, max_length), float(loss),
                int(batch["target_lengths"].sum()))

    def decode(self, memory: Memory, batch: dict, beam_size: Optional[int] = None,
               max_length: Optional[int] = None) -> list[list[str]]:
        """Beam search per problem (a batch of one, as GTS) on its unpadded encodings."""
        beam = beam_size or self.settings["beam_size"]
        limit = max_length or self.settings["max_output_length"] or DEFAULT_MAX_OUTPUT_LENGTH
        results = []
        for b, length in enumerate(batch["word_lengths"].tolist()):
            one = Memory(memory.outputs[b:b + 1, :length], memory.pad[b:b + 1, :length],
                         memory.problem[b:b + 1], memory.numbers[b:b + 1], memory.number_present[b:b + 1])
            tokens = beam_search(self.decoder, one, beam, limit)
            results.append([self.vocab.token(i) for i in tokens])
        return results


class Graph2TreeModel(TreeModel):
    """Graph2Tree: GTS with a graph transformer over the BiLSTM's word encodings. Batches carry
    ``graphs`` (B, G, W, W): the graphs ``graph_indices`` of ``graphs.build_graphs``, in that order
    (the two the reference uses, ``greater`` and ``attribute_between``)."""

    graph_indices = tuple(sorted({graph_index(name) for name in REFERENCE_HEADS}))

    def __init__(self, embedder: nn.Module, vocab: Any, settings: dict, dropout: float) -> None:
        super().__init__(embedder, vocab, settings, dropout)
        heads = [self.graph_indices.index(graph_index(name)) for name in REFERENCE_HEADS]
        self.graph = GraphEncoder(settings["hidden_size"], heads)

    def word_encodings(self, batch: dict, outputs: torch.Tensor, problem: torch.Tensor, pad: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        nodes = self.graph(outputs, batch["graphs"])
        how = self.settings["graph_pooling"]
        return nodes, problem if how == "rnn" else pool_nodes(nodes, pad, how)


ARCHITECTURES = {"gts": TreeModel, "graph2tree": Graph2TreeModel}


def build_model(arch: str, backbone_encoder: nn.Module, vocab: Any, layers: dict, dropout: float) -> TreeModel:
    """A fresh model around ``backbone_encoder`` (used as is, not copied); the task layers draw their
    initial weights from the global torch RNG. ``layers`` is checked by ``layers.resolve``; its
    ``dropout`` (when set) overrides ``dropout`` for the task layers."""
    settings = layer_settings.resolve(arch, layers)
    task_dropout = dropout if settings["dropout"] is None else settings["dropout"]
    return ARCHITECTURES[arch](backbone_encoder, vocab, settings, float(task_dropout))
