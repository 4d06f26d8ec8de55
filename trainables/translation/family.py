"""``TranslationTask``: SMC-Bench's multilingual translation settings behind smctune's ``Task``.

The three tasks differ only in the languages they fine-tune on (``languages.SUBGROUPS``); all are
scored on the same 20 directions, the ten languages to and from English, so the paper's point (fewer
training languages make a harder task) is visible in one number. Data, model and runtime are shared.

Torch-free at import; the model side is imported inside ``build``.
"""
from __future__ import annotations

from typing import Optional

from smctune.config.settings import ModelSettings, TrainSettings
from smctune.catalog.task import DataReport, limited, no_folds, task_class

from . import data
from .languages import EVAL_LANGUAGES, LANGUAGES, eval_directions, training_directions


class TranslationTask:
    """One task of the family; ``_task`` below makes the registered classes."""

    name: str = ""
    metric = "bleu"       # mean BLEU over the 20 evaluation directions, as a fraction (BLEU / 100)
    chance = 0.0          # a model that emits nothing useful scores ~0 BLEU

    def folds(self, preset: str, data_dir: Optional[str]) -> tuple:
        return ()

    def validate_data(self, preset: str, data_dir: Optional[str], fold: Optional[int] = None) -> DataReport:
        """Read every file the task needs (UTF-8, alignment, empty lines) before any trial starts."""
        no_folds(self.name, fold)
        if data.uses_hub(preset, data_dir):
            return data.hub_report(self.name)
        return data.load(self.name, data_dir).report()

    def data_notes(self, preset: str, data_dir: Optional[str], fold: Optional[int],
                   model: ModelSettings, train: TrainSettings) -> tuple:
        """How the metric is computed (sacrebleu's signatures per target tokenizer): BLEU is only
        comparable between runs that tokenized the same way."""
        from .metrics import recipe

        return (recipe({code: LANGUAGES[code].bleu_tokenizer for code in EVAL_LANGUAGES}),)

    def check_settings(self, model: ModelSettings, train: TrainSettings) -> None:
        from .models import check_model

        check_model(model, train)

    def build(self, *, preset: str, model: ModelSettings, train: TrainSettings,
              data_dir: Optional[str], device: str, fold: Optional[int] = None):
        """The sentence pairs of every direction (cut per direction by ``train_limit`` and
        ``eval_limit``), the vocabulary and starting model, and the runtime of one trial."""
        no_folds(self.name, fold)
        from .models import decoding, load_translator
        from .runtime import TranslationRuntime

        corpus = data.load(self.name, data_dir, preset)
        train_pairs = {d: limited(corpus.train.pairs(d), train.train_limit, "train.train_limit")
                       for d in training_directions(self.name)}
        eval_pairs = {d: limited(corpus.eval.pairs(d), train.eval_limit, "train.eval_limit")
                      for d in eval_directions()}
        translator = load_translator(model, train, corpus.train.text(),
                                     [LANGUAGES[code].mbart for code in LANGUAGES])
        return TranslationRuntime(translator=translator, train_pairs=train_pairs, eval_pairs=eval_pairs,
                                  decoding=decoding(model), train=train, device=device)



TwoToTwoTask = task_class(TranslationTask, "TwoToTwoTask", "mt-2to2", __name__)
FiveToFiveTask = task_class(TranslationTask, "FiveToFiveTask", "mt-5to5", __name__)
TenToTenTask = task_class(TranslationTask, "TenToTenTask", "mt-10to10", __name__)
