"""``CSQATask``: CommonsenseQA as SMC-Bench fine-tunes it, behind smctune's ``Task`` protocol.

This module is imported by the torch-free CLI driver, so it imports only ``data`` at module level;
tokenizer, model and tensors are built in ``build`` inside the Ray worker.
"""
from __future__ import annotations

from typing import Optional

from smctune.config import ModelSettings, TrainSettings
from smctune.errors import UserError
from smctune.task import DataReport

from . import data


class CSQATask:
    """5-way multiple choice; accuracy on the dev split (the official test set has no labels)."""

    name = "csqa"
    chance = 0.2
    metric = "accuracy"

    def validate_data(self, preset: str, data_dir: Optional[str]) -> DataReport:
        """Parse every line of the split files (the hub dataset is only checked when a trial loads it)."""
        if data.uses_hub(preset, data_dir):
            return data.hub_report()
        return data.load_local(data_dir).report()

    def build(self, *, preset: str, model: ModelSettings, train: TrainSettings,
              data_dir: Optional[str], device: str):
        """Load the data and backbone, tokenize both splits once, return the trial's runtime."""
        from .backbone import load_backbone
        from .features import encode
        from .runtime import CSQARuntime

        loaded = data.load_hub() if data.uses_hub(preset, data_dir) else data.load_local(data_dir)
        train_questions = _first(loaded.splits["train"], train.train_limit, "train.train_limit")
        dev_questions = _first(loaded.splits["dev"], train.eval_limit, "train.eval_limit")
        if len(train_questions) < train.batch_size:
            raise UserError(f"only {len(train_questions)} training questions for train.batch_size "
                            f"{train.batch_size}: no full batch can be formed")
        tokenizer, encoder = load_backbone(model, train)
        return CSQARuntime(encoder=encoder,
                           train_set=encode(train_questions, tokenizer, train.max_length),
                           dev_set=encode(dev_questions, tokenizer, train.max_length),
                           train=train, device=device)


def _first(questions: list, limit: Optional[int], field: str) -> list:
    """The first ``limit`` questions (all when ``limit`` is None)."""
    if limit is None:
        return questions
    if limit < 1:
        raise UserError(f"{field} must be at least 1, got {limit}")
    return questions[:limit]
