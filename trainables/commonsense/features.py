"""Text pairs -> padded token tensors ``[n_questions, n_choices, L]``, tokenized once per trial.

Each choice of a question is one (first, second) text pair built by the task (``pairs``). Tensors are
padded to the longest pair over the split and stored compactly (int32 ids, int8 masks: RACE with 512
tokens per choice would otherwise take gigabytes); ``select`` trims each batch to its own longest pair
and widens to int64 on the way to the device, which on CPU saves most of the compute for short pairs.

Truncation to ``max_length``:
- ``longest_first``: the tokenizer trims whichever segment is longer (CSQA, WinoGrande: short pairs);
- ``first``: only the first segment is cut (RACE's article); the second (question + option) is kept
  whole up to ``second_budget(max_length)`` tokens (fairseq's ``--max-option-length`` is 128).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

MAX_SECOND_TOKENS = 128   # fairseq RACE recipe: --max-option-length 128
CHUNK = 2048              # pairs per tokenizer call: bounds the tokenizer's per-call memory


@dataclass
class Encoded:
    """One split, tokenized. ``lengths`` is the longest choice per question, for trimming."""

    input_ids: torch.Tensor                 # [n, C, L] int32
    attention_mask: torch.Tensor            # [n, C, L] int8
    token_type_ids: Optional[torch.Tensor]  # [n, C, L] int8, or None if the tokenizer has no segments
    labels: torch.Tensor                    # [n] long
    lengths: torch.Tensor                   # [n] long

    def __len__(self) -> int:
        return self.labels.shape[0]

    def select(self, index: Any, device: str) -> dict:
        """Rows ``index`` (a slice or index tensor) as a batch on ``device``, padding trimmed."""
        width = int(self.lengths[index].max())
        batch = {"input_ids": self.input_ids[index, :, :width],
                 "attention_mask": self.attention_mask[index, :, :width]}
        if self.token_type_ids is not None:
            batch["token_type_ids"] = self.token_type_ids[index, :, :width]
        batch = {key: value.to(device=device, dtype=torch.long) for key, value in batch.items()}
        batch["labels"] = self.labels[index].to(device)
        return batch


def second_budget(max_length: int) -> int:
    """Most tokens the second segment may keep under ``first`` truncation: fairseq's 128, and never
    more than half the length, so the first segment (the article) always keeps the other half."""
    return max(1, min(MAX_SECOND_TOKENS, max_length // 2))


def cap_tokens(texts: Sequence[str], tokenizer: Any, limit: int) -> list[str]:
    """Each text cut at a token boundary so it tokenizes to at most ``limit`` tokens."""
    out = list(texts)
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    for i, (ids, offsets) in enumerate(zip(encoded["input_ids"], encoded["offset_mapping"])):
        if len(ids) > limit:
            out[i] = texts[i][:offsets[limit - 1][1]]
    return out


def encode(pairs: Sequence[Sequence[tuple[str, str]]], labels: Sequence[int], tokenizer: Any,
           max_length: int, truncation: str = "longest_first") -> Encoded:
    """Tokenize every (first, second) pair; ``pairs[q]`` holds one pair per choice of question q."""
    if truncation not in ("longest_first", "first"):
        raise ValueError(f"unknown truncation {truncation!r}")
    n, num_choices = len(pairs), len(pairs[0])
    if any(len(choice_pairs) != num_choices for choice_pairs in pairs):
        raise ValueError("every question must have the same number of choices")
    firsts = [first for choice_pairs in pairs for first, _ in choice_pairs]
    seconds = [second for choice_pairs in pairs for _, second in choice_pairs]
    mode: Any = True
    if truncation == "first":
        seconds = cap_tokens(seconds, tokenizer, second_budget(max_length))
        mode = "only_first"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((n * num_choices, max_length), pad, dtype=torch.int32)
    attention = torch.zeros((n * num_choices, max_length), dtype=torch.int8)
    segments = None
    for start in range(0, len(firsts), CHUNK):
        stop = start + CHUNK
        tokens = tokenizer(firsts[start:stop], seconds[start:stop], truncation=mode, max_length=max_length)
        if segments is None and "token_type_ids" in tokens:
            segments = torch.zeros((n * num_choices, max_length), dtype=torch.int8)
        for offset, ids in enumerate(tokens["input_ids"]):
            row = start + offset
            input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.int32)
            attention[row, :len(ids)] = 1
            if segments is not None:
                segments[row, :len(ids)] = torch.tensor(tokens["token_type_ids"][offset], dtype=torch.int8)
    width = int(attention.sum(-1).max())

    def shaped(tensor: torch.Tensor) -> torch.Tensor:
        return tensor[:, :width].reshape(n, num_choices, width).contiguous()

    mask = shaped(attention)
    return Encoded(input_ids=shaped(input_ids), attention_mask=mask,
                   token_type_ids=shaped(segments) if segments is not None else None,
                   labels=torch.tensor(list(labels), dtype=torch.long),
                   lengths=mask.sum(-1, dtype=torch.long).amax(-1))
