"""Names of cells and of the trials in them, from ``TrialSpec`` dicts (no Ray, no Optuna).

* a **member** is one planned trial: method x sparsity x seed [x fold] [x architecture];
* a **cell** is (architecture, method, level): its members differ only in seed and fold. Its key
  (``cell_key``) names its Optuna study;
* a **tuning** k > 0 of a member carries ``-t<k>`` in its trial id (``trial_id_from``); tuning 0
  keeps the planned id.
"""
from __future__ import annotations

from typing import Mapping

from smctune.config.specs import level_label, row_label, trial_id_from


def _arch(trial: Mapping) -> str:
    return (trial.get("model") or {}).get("arch") or ""


def _row(trial: Mapping) -> str:
    return row_label(trial["method"], trial.get("group") or "")


def cell_key(trial: Mapping) -> str:
    """``[arch/]method/level`` of a TrialSpec dict: the study name of its cell."""
    arch = _arch(trial)
    return f"{arch + '/' if arch else ''}{_row(trial)}/{level_label(trial)}"


def member_key(trial: Mapping) -> tuple:
    """What ``CellASHA`` compares within: the cell plus seed and fold (never across them)."""
    return (trial.get("task"), _arch(trial), _row(trial), level_label(trial), trial.get("seed"),
            trial.get("fold"))


def base_trial_id(trial: Mapping) -> str:
    """The trial id of a planned trial dict at tuning 0 (the member ids and the keys of ``done``)."""
    return trial_id_from({**trial, "tuning": 0})


def trial_id_of(config: Mapping) -> str:
    """The smctune trial id of a Tune config emitted by ``CellSearcher`` (``TrialSpec.trial_id``,
    which carries ``-t<k>`` for tuning k > 0): for Tune's ``trial_name_creator`` and
    ``trial_dirname_creator``, and the driver's records."""
    return trial_id_from(config["trial"])
