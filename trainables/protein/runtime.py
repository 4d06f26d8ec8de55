"""The per-trial protein classification runtime: model factory, seeded batch stream, loss and
evaluation, behind ``smctune.catalog.task.TaskRuntime``.

Sequences are cropped to ``train.max_length`` residues (their first residues, as SMC-Bench's
``--truncate``) and tokenized once in the constructor; a batch is only padded to its longest sequence
and moved to the device, because protein lengths vary tenfold and padding every batch to the crop would
multiply the cost of short ones. ``new_model`` copies a cached starting backbone, because pruning
methods such as LTH rebuild the model many times per trial.

A batch is ``{"tokens": (B, T) long, padded with the backbone's pad id, "labels": (B,) long}``.
"""
from __future__ import annotations

import dataclasses

from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from smctune.config.settings import TrainSettings
from smctune.errors import UserError
from smctune.trainables.classification import evaluate_classifier
from smctune.train.offload import ModuleTemplate

from .backbones import ProteinBackbone, check_crop
from .modeling import ProteinClassifier

TOKENIZE_CHUNK = 256  # sequences per tokenizer call: bounds the padded temporary, not the result


class ProteinRuntime:
    """Implements ``smctune.catalog.task.TaskRuntime`` for sequence classification (metric: accuracy).
    Mixed precision is the trial loop's (``smctune.train.precision``), not the runtime's."""

    backbone_prefix = "backbone."

    def __init__(self, *, backbone: ProteinBackbone, train_set: Sequence, dev_set: Sequence, num_classes: int,
                 head_hidden: int, train: TrainSettings, device: Any) -> None:
        check_crop(backbone, train.max_length)
        if len(train_set) < train.batch_size:
            raise UserError(f"only {len(train_set)} training sequences for train.batch_size "
                            f"{train.batch_size}: no full batch can be formed")
        if not dev_set:
            raise UserError("the evaluation split has no sequences")
        # the starting backbone every new model copies, kept in a file (smctune.train.offload); the
        # runtime keeps the backbone's tokenizer and facts, not its weights
        self._template = ModuleTemplate(backbone.module.train())
        self.backbone = dataclasses.replace(backbone, module=None)
        self.num_classes = num_classes
        self.head_hidden = head_hidden
        self.settings = train
        self.device = device
        limit = train.max_length
        self.cropped = {"train": sum(len(p.sequence) > limit for p in train_set),
                        "dev": sum(len(p.sequence) > limit for p in dev_set), "limit": limit}
        self.train_tokens, self.train_labels = self._encode(train_set, "train")
        self.dev_tokens, self.dev_labels = self._encode(dev_set, "dev")

    def _encode(self, proteins: Sequence, split: str) -> tuple:
        """Cropped, tokenized sequences (one unpadded 1-D tensor each) and their labels."""
        labels = [int(p.label) for p in proteins]
        bad = next((i for i, label in enumerate(labels) if not 0 <= label < self.num_classes), None)
        if bad is not None:
            raise UserError(f"{split} sequence {bad + 1}: label {labels[bad]} outside 0..{self.num_classes - 1}")
        crops = [p.sequence[:self.settings.max_length] for p in proteins]
        rows = []
        for start in range(0, len(crops), TOKENIZE_CHUNK):
            tokens = self.backbone.tokenize(crops[start:start + TOKENIZE_CHUNK])
            lengths = tokens.ne(self.backbone.padding_idx).sum(1).tolist()  # padding only trails
            rows += [row[:n].clone() for row, n in zip(tokens, lengths)]
        return rows, torch.tensor(labels, dtype=torch.long)

    def new_model(self) -> ProteinClassifier:
        """Copy of the cached starting backbone plus a head drawn from the global torch RNG."""
        model = ProteinClassifier(self._template.new(self.device), represent=self.backbone.represent,
                                  hidden_size=self.backbone.hidden_size, special_ids=self.backbone.special_ids,
                                  head_hidden=self.head_hidden, num_classes=self.num_classes)
        return model.to(self.device).train()

    def _batch(self, rows: list, labels: torch.Tensor, indices: Sequence) -> dict:
        tokens = pad_sequence([rows[i] for i in indices], batch_first=True,
                              padding_value=self.backbone.padding_idx)
        return {"tokens": tokens.to(self.device), "labels": labels[list(indices)].to(self.device)}

    def train_batches(self, seed: int) -> Iterator[dict]:
        """Endless epochs; epoch ``e`` is the permutation seeded ``seed * 1000 + e``. The incomplete
        last batch of an epoch is dropped so every step sees ``batch_size`` sequences."""
        size, total = self.settings.batch_size, len(self.train_tokens)
        epoch = 0
        while True:
            order = torch.randperm(total, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()
            for start in range(0, total - size + 1, size):
                yield self._batch(self.train_tokens, self.train_labels, order[start:start + size])
            epoch += 1

    def _logits(self, model: Any, batch: dict) -> torch.Tensor:
        return model(batch["tokens"]).float()

    def loss(self, model: Any, batch: dict) -> torch.Tensor:
        """Cross-entropy over the classes."""
        return F.cross_entropy(self._logits(model, batch), batch["labels"])

    def evaluate(self, model: Any, final: bool = False) -> dict:
        """Accuracy and mean loss over the whole dev split, in batches of ``eval_batch_size`` sequences
        sorted by length (less padding); the model's train/eval mode is restored."""
        order = sorted(range(len(self.dev_tokens)), key=lambda i: len(self.dev_tokens[i]))
        size = self.settings.eval_batch_size
        batches = (self._batch(self.dev_tokens, self.dev_labels, order[start:start + size])
                   for start in range(0, len(order), size))
        return evaluate_classifier(model, batches, self._logits, len(order))
