"""``MultipleChoiceTask``: what CSQA, WinoGrande and RACE have in common, behind smctune's ``Task``.

Every task of the family is multiple choice with one score per candidate (SMC-Bench's fairseq
``sentence_ranking`` setup). A task module only says where its data lives (official layouts, hub
name, bundled sample), how a ``Question`` becomes one text pair per choice, and which segment may be
truncated; loading, limits, tokenization, model and training loop are shared.

Torch-free at import: the CLI driver imports task classes to validate data and plan sweeps. The model
side (``smctune.trainables.backbone``, ``modeling``, ``features``, ``runtime``) is imported inside ``build``.
"""
from __future__ import annotations

from typing import Any, Optional

from smctune.config.settings import ModelSettings, TrainSettings
from smctune.errors import UserError
from smctune.catalog.task import DataReport, limited, no_folds

from . import data
from .data import Question, TaskData


class MultipleChoiceTask:
    """Base class; subclasses set the attributes and implement the three data hooks and ``pairs``."""

    name: str = ""
    label: str = ""            # human name used in messages, e.g. "CSQA"
    chance: float = 0.0
    metric: str = "accuracy"
    num_choices: int = 0
    bundled: Optional[str] = None   # folder under data/ with train.jsonl and dev.jsonl, if any
    # How ``features.encode`` shortens a pair longer than ``train.max_length``: "longest_first" trims
    # whichever segment is longer (short pairs: CSQA, WinoGrande); "first" trims only the first
    # segment (RACE's article), never the question and option.
    truncation: str = "longest_first"
    split_files: dict = {}          # split -> candidate file names in a user's directory

    # ------------------------------------------------------------------ hooks
    def parse_record(self, record: Any, where: str) -> Question:
        """One line of the bundled jsonl sample (the task's own official or export layout)."""
        raise NotImplementedError

    def parse_file(self, path) -> list[Question]:
        """One split file of a user's directory (default: jsonl records through ``parse_record``)."""
        return data.parse_jsonl_file(path, self.parse_record)

    def load_directory(self, data_dir: str) -> TaskData:
        """A user's directory with one file per split, the first of ``split_files[split]`` found (tasks
        whose official layout is a tree of files, such as RACE, override this)."""
        directory = data.data_directory(data_dir)
        files = {split: data.find_file(directory, names) for split, names in self.split_files.items()}
        return TaskData(source=str(directory),
                        splits={split: self.parse_file(path) for split, path in files.items()},
                        files={split: str(path) for split, path in files.items()})

    def load_hub(self) -> TaskData:
        """The full dataset from the hub (``paper`` preset without ``--data-dir``)."""
        raise NotImplementedError

    def hub_report(self) -> DataReport:
        raise NotImplementedError

    def pairs(self, question: Question) -> list[tuple[str, str]]:
        """The model's input for each choice: (first segment, second segment)."""
        raise NotImplementedError

    def no_bundled_sample(self) -> UserError:
        return UserError(f"no bundled {self.label} sample exists; pass --data-dir with {self.label} "
                         "in its official layout")

    # ------------------------------------------------------------------ shared behaviour
    def load_bundled(self) -> TaskData:
        if self.bundled is None:
            raise self.no_bundled_sample()
        return data.load_bundled(self.bundled, self.label, self.parse_record)

    def load_local(self, data_dir: Optional[str]) -> TaskData:
        """The bundled sample when ``data_dir`` is None, else the directory."""
        return self.load_bundled() if data_dir is None else self.load_directory(data_dir)

    def load(self, preset: str, data_dir: Optional[str]) -> TaskData:
        return self.load_hub() if data.uses_hub(preset, data_dir) else self.load_local(data_dir)

    def folds(self, preset: str, data_dir: Optional[str]) -> tuple:
        """One train/dev split, no cross-validation."""
        return ()

    def validate_data(self, preset: str, data_dir: Optional[str], fold: Optional[int] = None) -> DataReport:
        """Parse every record of the split files (the hub dataset is only checked when a trial loads it)."""
        no_folds(self.label, fold)
        if data.uses_hub(preset, data_dir):
            return self.hub_report()
        return self.load_local(data_dir).report()

    def check_settings(self, model: ModelSettings, train: TrainSettings) -> None:
        from smctune.trainables.backbone import pooling

        pooling(model)
        if model.layers:
            raise UserError(f"model.layers: the {self.label} model has no task layers to configure "
                            f"(got '{sorted(model.layers)[0]}')")

    def build(self, *, preset: str, model: ModelSettings, train: TrainSettings,
              data_dir: Optional[str], device: str, fold: Optional[int] = None):
        """Load the data and backbone, tokenize both splits once, return the trial's runtime."""
        no_folds(self.label, fold)
        from smctune.trainables.backbone import load_backbone, pooling
        from .features import encode
        from .runtime import MultipleChoiceRuntime

        head_pooling = pooling(model)  # a bad model.config fails before the data is read
        loaded = self.load(preset, data_dir)
        train_questions = limited(loaded.splits["train"], train.train_limit, "train.train_limit")
        dev_questions = limited(loaded.splits["dev"], train.eval_limit, "train.eval_limit")
        if len(train_questions) < train.batch_size:
            raise UserError(f"only {len(train_questions)} training questions for train.batch_size "
                            f"{train.batch_size}: no full batch can be formed")
        tokenizer, encoder = load_backbone(model, train)

        def encoded(questions: list[Question]):
            return encode([self.pairs(q) for q in questions], [q.label for q in questions], tokenizer,
                          train.max_length, truncation=self.truncation)

        return MultipleChoiceRuntime(encoder=encoder, train_set=encoded(train_questions),
                                     dev_set=encoded(dev_questions), train=train, device=device,
                                     pooling=head_pooling)

