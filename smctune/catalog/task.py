"""The contract between the task-agnostic core and a task family in ``trainables/``.

The core never imports a trainable directly: the registry names a ``module:Class`` implementing
``Task``, and the training loop talks only to the ``TaskRuntime`` it builds. A new task family is one
module implementing these two protocols plus a search-space YAML.

This module is torch-free so the CLI can import it; the runtime side uses torch types only in hints.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Protocol

from smctune.errors import UserError

if TYPE_CHECKING:  # annotations only: the configuration reads the catalog, not the other way round
    from smctune.config.settings import ModelSettings, TrainSettings


@dataclass(frozen=True)
class DataReport:
    """What ``Task.validate_data`` found: shown by ``plan`` and recorded with the sweep."""

    source: str          # "bundled sample" or the data directory
    splits: dict         # split name -> number of examples
    files: dict          # split name -> file path
    notes: tuple = ()    # facts about the data a user should see (labels remapped, rows left out, ...)


class Task(Protocol):
    """A task as the core sees it before any heavy import (driver side, torch-free)."""

    name: str
    chance: float        # metric value of a random guess (0.2 for 5-way multiple choice)
    metric: str          # name of the metric reported, e.g. "accuracy"; higher is better

    def folds(self, preset: str, data_dir: Optional[str]) -> tuple:
        """Cross-validation folds the data offers (``()`` for a task evaluated on one split). The
        sweep runs every fold as its own trial, like a seed, and a cell's value is the fold mean."""

    def validate_data(self, preset: str, data_dir: Optional[str], fold: Optional[int] = None) -> DataReport:
        """Parse the data files fully and raise ``UserError`` naming file, line and field on a problem.

        Runs in the driver before any trial starts, so a bad file fails in seconds, not after Ray
        has scheduled a hundred trials."""

    def check_settings(self, model: ModelSettings, train: TrainSettings) -> None:
        """Reject family-specific model settings (``model.layers``, ``model.config`` keys) in the
        driver, with a one-line ``UserError``, before any trial is scheduled."""

    def build(self, *, preset: str, model: ModelSettings, train: TrainSettings,
              data_dir: Optional[str], device: str, fold: Optional[int] = None) -> "TaskRuntime":
        """Tokenizer, tensors and model factory for one trial (inside the Ray worker)."""

    # Optional: ``data_notes(preset, data_dir, fold, model, train) -> tuple[str, ...]``: what the
    # data looks like under these settings (the protein family: how many sequences are cropped to the
    # model's length), printed by ``plan`` and ``sweep`` before any trial starts.


class TaskRuntime(Protocol):
    """The per-trial half: everything the training loop needs, nothing it must know about the task."""

    def new_model(self) -> Any:
        """A fresh model at its starting ("pretrained") weights; the head's random init follows the
        global torch seed the caller set, so the same seed gives the same starting point (LTH rewinds
        to it)."""

    def train_batches(self, seed: int) -> Iterator[Any]:
        """An endless, seeded stream of training batches already on the trial's device."""

    def loss(self, model: Any, batch: Any) -> Any:
        """Scalar training loss (a torch tensor) for one batch."""

    def evaluate(self, model: Any, final: bool = False) -> dict:
        """Metrics on the evaluation split: at least ``{<metric>: float, "loss": float}``; the metric
        is a fraction in [0, 1]. Other float entries (translation: BLEU and chrF per direction) are
        details, recorded with the level and logged to MLflow. ``final`` marks the last evaluation of a
        level: a family whose evaluation is expensive (beam search over 20 translation directions)
        may evaluate a capped subset before it and the whole split then."""


def limited(items: list, limit: Optional[int], field: str) -> list:
    """The first ``limit`` items (all when ``limit`` is None): ``train.train_limit`` and
    ``train.eval_limit`` cut every task's splits the same way."""
    if limit is None:
        return items
    if limit < 1:
        raise UserError(f"{field} must be at least 1, got {limit}")
    return items[:limit]


def no_folds(label: str, fold: Optional[int]) -> None:
    """Refuse a fold for a task evaluated on one split (the driver only asks for folds a task
    offers; this guards direct callers)."""
    if fold is not None:
        raise UserError(f"{label} has no cross-validation folds (got fold {fold})")


def resolved_data_dir(data_dir: Optional[str]) -> Optional[str]:
    """``--data-dir`` as the absolute path families memoize their parsed data under (None: the
    bundled sample), or a one-line error when it is missing or not a directory."""
    if data_dir is None:
        return None
    directory = Path(data_dir).expanduser()
    if not directory.exists():
        raise UserError(f"data directory not found: {data_dir}")
    if not directory.is_dir():
        raise UserError(f"data directory is not a directory: {data_dir}")
    return str(directory.resolve())


def task_class(base: type, class_name: str, name: str, module: str) -> type:
    """A family's task class for the registry's ``module:Class`` reference, when tasks of a family
    differ only in their ``name``."""
    return type(class_name, (base,), {"name": name, "__module__": module})
