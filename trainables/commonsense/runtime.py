"""The per-trial multiple-choice runtime (every commonsense task): model factory, seeded batch stream,
loss and evaluation.

Everything expensive (tokenization, reading the pretrained weights) happens once in the constructor;
``new_model`` only copies cached tensors, because pruning methods such as LTH rebuild the model many
times per trial.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn.functional as F

from smctune.config.settings import TrainSettings
from smctune.trainables.classification import evaluate_classifier
from smctune.train.offload import ModuleTemplate

from .features import Encoded
from .modeling import MultipleChoiceModel


class MultipleChoiceRuntime:
    """Implements ``smctune.catalog.task.TaskRuntime`` for k-way multiple choice (k from the encoded data).
    Mixed precision is the trial loop's (``smctune.train.precision``), not the runtime's."""

    def __init__(self, *, encoder: Any, train_set: Encoded, dev_set: Encoded,
                 train: TrainSettings, device: str, pooling: str = "first") -> None:
        # the starting encoder every new model copies, kept in a file (smctune.train.offload)
        self._encoder = ModuleTemplate(encoder.train())
        self.train_set = train_set
        self.dev_set = dev_set
        self.settings = train
        self.device = device
        self.pooling = pooling

    def new_model(self) -> MultipleChoiceModel:
        """Copy of the cached starting encoder plus a head drawn from the global torch RNG."""
        model = MultipleChoiceModel(self._encoder.new(self.device), self.settings.dropout, self.pooling)
        return model.to(self.device).train()

    def train_batches(self, seed: int) -> Iterator[dict]:
        """Endless epochs; epoch ``e`` is the permutation seeded ``seed * 1000 + e``. The incomplete
        last batch of an epoch is dropped so every step sees ``batch_size`` questions."""
        size, total = self.settings.batch_size, len(self.train_set)
        epoch = 0
        while True:
            order = torch.randperm(total, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
            for start in range(0, total - size + 1, size):
                yield self.train_set.select(order[start:start + size], self.device)
            epoch += 1

    def _logits(self, model: Any, batch: dict) -> torch.Tensor:
        return model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")).float()

    def loss(self, model: Any, batch: dict) -> torch.Tensor:
        """Softmax cross-entropy over the choice scores (fairseq's ``sentence_ranking``)."""
        return F.cross_entropy(self._logits(model, batch), batch["labels"])

    def evaluate(self, model: Any, final: bool = False) -> dict:
        """Accuracy and mean loss on the dev split; the model's train/eval mode is restored."""
        size, total = self.settings.eval_batch_size, len(self.dev_set)
        batches = (self.dev_set.select(slice(start, start + size), self.device) for start in range(0, total, size))
        return evaluate_classifier(model, batches, self._logits, total)
