"""A resolved sweep and one trial of it, and the stable ids derived from them.

Frozen, so a trial id is a hash of what determines the trial (open_lth's idea): the same cell planned
twice gets the same id, which is what makes resume and the dense cache work.
"""
from __future__ import annotations
import dataclasses
import functools
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Optional
from smctune.config.settings import ModelSettings, StopSettings, TrainSettings


@dataclass(frozen=True)
class SweepSpec:
    """A resolved sweep: what the CLI hands to ``sweep.run``. Recorded as ``sweep.json`` in the run dir."""

    task: str
    methods: tuple
    sparsities: tuple
    seeds: tuple
    preset: str
    preset_reason: str
    name: str
    run_dir: str
    mlflow_uri: str
    data_dir: Optional[str] = None
    keep_dense: tuple = ()       # --keep-dense groups (prunable.groups) excluded from pruning
    max_concurrent: int = 0
    max_failures: int = 2
    search_space_file: str = ""
    verbosity: int = 1
    faithful: str = "paper"      # "smcbench": SMC-Bench's values for every tunable that departs
    models: tuple = ()           # --model architectures (empty: the task has one)
    folds: tuple = ()            # cross-validation folds, an axis like seeds (empty: no folds)
    trials_per_cell: int = 0     # --trials-per-cell: tunings per searched cell (0 = the search space's)
    asha: bool = False           # --asha: stop weak tunings early, compared within their cell only
    search: str = "grid"         # --search: "grid" (every level) or "threshold" (bisect for the failing level)
    gpus_per_trial: Optional[float] = None  # --gpus-per-trial: overrides the preset's gpu; None = preset's
    # --prune-only: module sensitivity, each entry a prunable group (or groups joined by "+") pruned
    # alone; every method runs once per entry and the report has one row per (method, entry)
    prune_only: tuple = ()
    train_examples: Optional[int] = None   # training split size the data check found (train.epochs)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "SweepSpec":
        return from_plain(SweepSpec, json.loads(text))


@dataclass(frozen=True)
class TrialSpec:
    """One Ray Tune trial: a (method, sparsity, seed[, fold]) cell with everything needed to run it
    anywhere (the architecture is ``model.arch``).

    ``sparsity`` is ``None`` for dense; LTH carries its whole ladder in ``levels``.
    """

    task: str
    method: str
    sparsity: Optional[float]
    seed: int
    preset: str
    model: ModelSettings
    train: TrainSettings
    tunables: dict
    prunable: dict
    data_dir: Optional[str]
    cache_root: str
    levels: tuple = ()
    fold: Optional[int] = None
    stop: StopSettings = field(default_factory=StopSettings)
    tuning: int = 0              # which tuning of a searched cell (0 = the search space's defaults)
    masks_dir: str = ""          # where each level's final mask is saved (smctune.rundir.masks); "" = nowhere
    group: str = ""              # --prune-only: the prunable group(s) this trial prunes alone ("q", "q+k")

    @functools.cached_property
    def trial_id(self) -> str:
        """Computed once per spec from the few fields it names (not ``to_dict()``: a sweep start
        asks for the ids of every planned trial several times)."""
        return trial_id_from({"model": {"arch": self.model.arch}, "method": self.method,
                              "levels": self.levels, "sparsity": self.sparsity, "seed": self.seed,
                              "fold": self.fold, "tuning": self.tuning, "group": self.group})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: dict) -> "TrialSpec":
        return from_plain(TrialSpec, data)

    def dense_key(self) -> str:
        """Hash of everything that determines the dense fine-tuned checkpoint this trial starts from."""
        payload = {
            "task": self.task, "seed": self.seed, "preset": self.preset,
            "model": dataclasses.asdict(self.model), "train": _cache_relevant(self.train),
            "data_dir": self.data_dir or "bundled",
        }
        if self.fold is not None:
            payload["fold"] = self.fold
        return stable_hash(payload)


def from_plain(cls, data: dict):
    """The inverse of ``dataclasses.asdict`` for the specs this module writes (``sweep.json``, a
    ``TrialSpec`` as Ray ships it): nested settings rebuilt, lists back to tuples (``null`` or a key
    an older version did not write: empty). Not for user input: the search-space schema checks that."""
    hints = _hints(cls)
    values = {}
    for key, value in data.items():
        hint = hints.get(key)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_plain(hint, value)
        elif hint is tuple:
            value = tuple(value or ())
        values[key] = value
    return cls(**values)


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def level_label(trial: dict) -> str:
    """The level part of a trial id, from a ``TrialSpec`` dict: ``dense``, ``s0.3600``, or
    ``to0.8322`` for an IMP ladder (lth, obert_imp: one trial for every round)."""
    if trial.get("levels"):
        return f"to{trial['levels'][-1]:.4f}"
    if trial.get("sparsity") is None:
        return "dense"
    return f"s{trial['sparsity']:.4f}"


def trial_id_from(trial: dict) -> str:
    """``[arch-]method-level-seedN[-foldK][-gGROUP][-tT]`` of a ``TrialSpec`` dict, without building
    the spec (the cell searcher names thousands of trials from their dicts; a tuning's id is its
    planned trial's id plus ``-tT``)."""
    arch = (trial.get("model") or {}).get("arch") or ""
    fold = "" if trial.get("fold") is None else f"-fold{trial['fold']}"
    tuning = f"-t{trial['tuning']}" if trial.get("tuning") else ""
    group = f"-g{trial['group']}" if trial.get("group") else ""
    return (f"{arch + '-' if arch else ''}{trial['method']}-{level_label(trial)}-seed{trial['seed']}"
            f"{fold}{group}{tuning}")


def row_label(method: str, group: str = "") -> str:
    """A report row: the method, or ``method[group]`` for a module-sensitivity trial (``--prune-only``)."""
    return f"{method}[{group}]" if group else method


def _cache_relevant(train: TrainSettings) -> dict:
    """Training settings minus those that cannot change the trained weights (checkpointing, threads;
    ``epochs``, which the driver has already turned into ``max_steps``). Settings added later enter
    the hash only when set, so the keys of existing dense caches stay what they were."""
    data = dataclasses.asdict(train)
    for key in ("checkpoint_every_s", "threads", "eval_every", "eval_batch_size", "eval_limit", "epochs"):
        data.pop(key)
    if not data["freeze"]:
        data.pop("freeze")
    if data["precision"] == "auto":
        data.pop("precision")
    return data


def stable_hash(payload: Any, length: int = 12) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
