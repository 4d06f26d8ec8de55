"""Problem text to word encodings: the pretrained backbone over subwords, word alignment, BiLSTM.

As in SVAMP's ``-embedding roberta`` setting, the whole pretrained transformer is the word embedding
and is fine-tuned with the rest. Differences from that code, on purpose:

- **word alignment.** SVAMP runs the LSTM over RoBERTa's subwords but gathers the numbers at *word*
  positions, so number encodings drift off their words once a word splits. Here every word's vector is
  the **mean of its subwords' hidden states** (``word_pooling: mean``, default) or its **first subword's**
  (``first``), so the LSTM, the attention and Graph2Tree's graphs all live on the problem's words.
- **problem vector.** GTS sums the forward state at the last *padded* position with the backward state at
  position 0, which for every problem shorter than the longest in its batch reads padding; here the
  forward half comes from each problem's own last word.

Quantities reach the backbone as the word ``NUM`` (SVAMP's ``transfer_num`` replaces every number by
``NUM`` in the input); the decoder copies them through their positions, never through their digits.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from smctune.errors import UserError

from .problem import Problem, is_number_slot

# Parameter names of the pretrained backbone start with this (the optimiser gives them their own lr).
BACKBONE_PREFIX = "embedder."
# What the backbone reads in place of ``numberK``.
NUMBER_WORD = "NUM"


@dataclass(frozen=True)
class TokenizedProblem:
    """One problem's backbone input: subword ids (with the tokenizer's special tokens) and, for each
    word, the subword positions that make it up (empty when truncation cut the word off)."""

    input_ids: tuple
    word_subwords: tuple    # per word: tuple of subword indices into input_ids

    @property
    def num_words(self) -> int:
        return len(self.word_subwords)


def backbone_words(problem: Problem) -> list[str]:
    """The problem's words as the backbone sees them (number slots become ``NUM``)."""
    return [NUMBER_WORD if is_number_slot(word) else word for word in problem.text]


def tokenize_problem(problem: Problem, tokenizer: Any, max_length: int) -> TokenizedProblem:
    """Subwords of the problem's words, aligned back to the words through the fast tokenizer's character
    offsets (works for WordPiece and byte-level BPE alike). Subwords past ``max_length`` are dropped;
    a word left without subwords gets a zero vector."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("the arithmetic models need a fast (Rust) tokenizer for word alignment; "
                        f"{type(tokenizer).__name__} is not one")
    words = backbone_words(problem)
    starts, position = [], 0
    for word in words:
        starts.append(position)
        position += len(word) + 1
    encoded = tokenizer(" ".join(words), return_offsets_mapping=True, truncation=True,
                        max_length=max_length)
    word_subwords: list[list[int]] = [[] for _ in words]
    for index, (begin, end) in enumerate(encoded["offset_mapping"]):
        if end <= begin:  # special tokens carry an empty span
            continue
        # By the token's last character: robust to byte-level BPE offsets that include the space.
        word = bisect.bisect_right(starts, end - 1) - 1
        if 0 <= word < len(words):
            word_subwords[word].append(index)
    return TokenizedProblem(tuple(encoded["input_ids"]), tuple(tuple(s) for s in word_subwords))


def word_map(items: list[TokenizedProblem], pooling: str) -> torch.Tensor:
    """(B, W, T) weights that turn subword states into word vectors by a batched matmul."""
    words = max(item.num_words for item in items)
    tokens = max(len(item.input_ids) for item in items)
    weights = torch.zeros(len(items), words, tokens)
    for b, item in enumerate(items):
        for w, subwords in enumerate(item.word_subwords):
            if not subwords:
                continue
            if pooling == "first":
                weights[b, w, subwords[0]] = 1.0
            else:
                weights[b, w, list(subwords)] = 1.0 / len(subwords)
    return weights


def embed_words(embedder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor:
    """(B, W, E) word vectors: the backbone's last hidden states pooled per word by ``weights``."""
    hidden = embedder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return torch.bmm(weights.to(hidden.dtype), hidden)


class SequenceEncoder(nn.Module):
    """Dropout over the word vectors, then a bidirectional LSTM whose two directions are summed (GTS's
    ``EncoderSeq``); returns (word encodings (B, W, H), problem vector (B, H))."""

    def __init__(self, input_size: int, hidden_size: int, depth: int, dropout: float) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.LSTM(input_size, hidden_size, num_layers=depth, bidirectional=True,
                           batch_first=True, dropout=dropout if depth > 1 else 0.0)

    def forward(self, embedded: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        packed = nn.utils.rnn.pack_padded_sequence(self.dropout(embedded), lengths.cpu(),
                                                   batch_first=True, enforce_sorted=False)
        output, _ = self.rnn(packed)
        output, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True,
                                                     total_length=embedded.size(1))
        forward, backward = output[..., :self.hidden_size], output[..., self.hidden_size:]
        last = (lengths.to(output.device) - 1).view(-1, 1, 1).expand(-1, 1, self.hidden_size)
        problem = forward.gather(1, last).squeeze(1) + backward[:, 0]
        return forward + backward, problem


def gather_numbers(outputs: torch.Tensor, positions: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(B, M, H) encodings of each problem's quantities at ``positions`` (B, M); zero where ``present``
    is False (slots beyond the problem's own numbers)."""
    index = positions.unsqueeze(-1).expand(-1, -1, outputs.size(-1))
    return outputs.gather(1, index) * present.unsqueeze(-1).to(outputs.dtype)
