"""``ProteinTask``: the protein thermostability tasks behind smctune's ``Task``.

The six tasks differ only in their classes (``classes.SCHEMES``) and in where their data may come
from: HotProtein and Meltome only from a user's ``--data-dir`` (none of them can be had offline), the
ThermoProt tasks also from the bundled sample. Loading, cropping, model and training are shared.

Torch-free at import; the model side is imported inside ``check_settings`` and ``build``.
"""
from __future__ import annotations

from typing import Optional

from smctune.config.settings import ModelSettings, TrainSettings
from smctune.errors import UserError
from smctune.catalog.task import DataReport, limited, no_folds, task_class

from . import data
from .classes import SCHEMES


class ProteinTask:
    """One task of the family; subclasses set ``name``."""

    name: str = ""
    metric = "accuracy"

    @property
    def scheme(self):
        return SCHEMES[self.name]

    @property
    def chance(self) -> float:
        return 1.0 / len(self.scheme.classes)

    def folds(self, preset: str, data_dir: Optional[str]) -> tuple:
        return ()

    def validate_data(self, preset: str, data_dir: Optional[str], fold: Optional[int] = None) -> DataReport:
        """Parse every record of both splits (sequences, labels, the split file's FASTA files)."""
        no_folds(self.scheme.label, fold)
        return data.load(self.name, data_dir).report()

    def check_settings(self, model: ModelSettings, train: TrainSettings) -> None:
        from .backbones import check_model, residue_limit

        check_model(model)
        limit = residue_limit(model)
        if not 1 <= train.max_length <= limit:
            raise UserError(f"train.max_length {train.max_length}: the {model.arch or 'model'} reads 1 to "
                            f"{limit} residues per sequence")

    def data_notes(self, preset: str, data_dir: Optional[str], fold: Optional[int],
                   model: ModelSettings, train: TrainSettings) -> tuple:
        """How many sequences the model's length cuts (SMC-Bench's ``--truncate``: the first residues
        are kept), so a user sees what the model does not read."""
        loaded = data.load(self.name, data_dir)
        parts = []
        for split, limit, field in (("train", train.train_limit, "train.train_limit"),
                                    ("dev", train.eval_limit, "train.eval_limit")):
            proteins = limited(list(loaded.splits[split]), limit, field)
            parts.append(f"{data.count_longer(proteins, train.max_length)} of {len(proteins)} {split}")
        return (f"sequences cropped to {train.max_length} residues: {', '.join(parts)}",)

    def build(self, *, preset: str, model: ModelSettings, train: TrainSettings,
              data_dir: Optional[str], device: str, fold: Optional[int] = None):
        """The splits, the backbone at its starting weights and the runtime of one trial."""
        no_folds(self.scheme.label, fold)
        from .backbones import head_hidden, load_backbone
        from .runtime import ProteinRuntime

        loaded = data.load(self.name, data_dir)
        train_set = limited(list(loaded.splits["train"]), train.train_limit, "train.train_limit")
        dev_set = limited(list(loaded.splits["dev"]), train.eval_limit, "train.eval_limit")
        if len(train_set) < train.batch_size:
            raise UserError(f"only {len(train_set)} training sequences for train.batch_size "
                            f"{train.batch_size}: no full batch can be formed")
        return ProteinRuntime(backbone=load_backbone(model, train), train_set=train_set, dev_set=dev_set,
                              num_classes=len(self.scheme.classes),
                              head_hidden=head_hidden(model), train=train, device=device)



HotProteinSTask = task_class(ProteinTask, "HotProteinSTask", "hp-s", __name__)
HotProteinS2C5Task = task_class(ProteinTask, "HotProteinS2C5Task", "hp-s2c5", __name__)
HotProteinS2C2Task = task_class(ProteinTask, "HotProteinS2C2Task", "hp-s2c2", __name__)
MeltomeTask = task_class(ProteinTask, "MeltomeTask", "meltome", __name__)
ThermoTask = task_class(ProteinTask, "ThermoTask", "thermo", __name__)
ThermoHotColdTask = task_class(ProteinTask, "ThermoHotColdTask", "thermo-hotcold", __name__)
