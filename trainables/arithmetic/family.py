"""``MathWordProblemTask``: MAWPS, ASDiv-A and SVAMP behind smctune's ``Task``.

The three datasets share everything but their layout: the CSVs of the SVAMP repository (bundled
real subset, or ``--data-dir``), a prefix equation to produce, value accuracy to report. MAWPS and
ASDiv-A are 5-fold cross-validated (each fold is its own trial; the sweep averages folds), SVAMP is
trained on MAWPS + ASDiv-A and tested on SVAMP (one split). The architecture (GTS or Graph2Tree) is
``model.arch``, chosen by ``--model``.

Torch-free at import; the model side is imported inside ``build``.
"""
from __future__ import annotations

from typing import Optional

from smctune.config.settings import ModelSettings, TrainSettings
from smctune.errors import UserError
from smctune.catalog.task import limited

from . import data


class MathWordProblemTask:
    """One dataset of the family; subclasses set ``name`` and ``label``."""

    name: str = ""
    label: str = ""
    chance = 0.0          # a random expression is essentially never right: collapse = value acc ~ 0
    metric = "accuracy"   # value accuracy (the expression evaluates to the answer)

    def folds(self, preset: str, data_dir: Optional[str]) -> tuple:
        return data.available_folds(self.name, data_dir)

    def validate_data(self, preset: str, data_dir: Optional[str], fold: Optional[int] = None):
        """Parse every row of the fold's (or split's) train and dev files."""
        return data.load_split(self.name, data_dir, fold).report()

    def check_settings(self, model: ModelSettings, train: TrainSettings) -> None:
        from .layers import resolve

        resolve(model.arch, model.layers)

    def build(self, *, preset: str, model: ModelSettings, train: TrainSettings,
              data_dir: Optional[str], device: str, fold: Optional[int] = None):
        """Problems, output vocabulary (from the training problems), backbone and runtime."""
        from smctune.trainables.backbone import load_backbone

        from .expressions import OutputVocab
        from .runtime import ArithmeticRuntime

        if not model.arch:
            raise UserError(f"{self.label}: no architecture given (search space models:, or --model)")
        split = data.load_split(self.name, data_dir, fold)
        train_problems = limited(split.train, train.train_limit, "train.train_limit")
        dev_problems = limited(split.dev, train.eval_limit, "train.eval_limit")
        vocab = OutputVocab.build(train_problems, extra_problems=dev_problems)
        usable = sum(1 for p in train_problems if vocab.usable_for_training(p))
        if usable < train.batch_size:
            raise UserError(f"{self.label}: only {usable} usable training problems for train.batch_size "
                            f"{train.batch_size}: no full batch can be formed")
        tokenizer, encoder = load_backbone(model, train)
        return ArithmeticRuntime(model.arch, tokenizer, encoder, train_problems, dev_problems, vocab,
                                 model.layers, train, device)


class MAWPSTask(MathWordProblemTask):
    name = "mawps"
    label = "MAWPS"


class ASDivATask(MathWordProblemTask):
    name = "asdiv-a"
    label = "ASDiv-A"


class SVAMPTask(MathWordProblemTask):
    name = "svamp"
    label = "SVAMP"
