"""The cell searcher's Optuna studies on disk, and what a driver that died left in them.

The studies live in one text journal per run (``RunDir.optuna_journal``, Optuna's ``JournalStorage``
with the file backend): appends only, readable by a new driver on the same run directory, so a
resumed sweep continues every study where the last driver stopped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from smctune.errors import UserError


def open_journal(path: Path):
    """The ``JournalStorage`` of ``path``, after dropping a torn last line (``repair_journal``)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_journal(path)
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except ValueError as err:   # JSONDecodeError, UnicodeDecodeError, "Invalid log format."
        raise UserError(f"{path}: not an Optuna journal ({type(err).__name__}); move it aside to start "
                        "the cell searches afresh") from None


def repair_journal(path: Path) -> None:
    """Drop a torn last line (the driver killed mid-append): later appends would glue onto it and
    make the journal unreadable."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return
        handle.truncate(data.rfind(b"\n") + 1)


class StoredTrial:
    """A study trial a dead driver left RUNNING, continued under its own number.

    Its number is its tuning, so it is already in the finished members' trial ids, MLflow runs and
    records: failing it and asking its values again would give them a new number and orphan those.
    ``study.ask`` never returns a running trial, and ``optuna.trial.Trial`` is built by ``ask`` only
    (its constructor also re-runs the sampler's ``before_trial``), so the members' outcomes go through
    the storage's public trial interface, which is where a ``Trial`` writes them too; the study is
    told by number (``Study.tell`` takes one)."""

    def __init__(self, storage, study_name: str, number: int):
        self.storage = storage
        self.trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study_name), number)

    def set_user_attr(self, key: str, value: Any) -> None:
        self.storage.set_trial_user_attr(self.trial_id, key, value)

    def report(self, value: float, step: int) -> None:
        self.storage.set_trial_intermediate_value(self.trial_id, step, float(value))
