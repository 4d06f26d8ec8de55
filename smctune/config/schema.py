"""The schema of a search-space file (``search_spaces/<task>.yaml``): every key it may hold, its type
and its range, checked in one pass when the file is read.

A silently ignored typo in a sweep config costs GPU-days, so every block refuses unknown keys (naming
the valid ones) and YAML's loose types are not coerced: 1.5 is no step count, "3" is no number and 1
is no boolean. The settings blocks (``train``, ``model``, ``resources``, ``stop``) take their keys,
types and defaults from the frozen dataclasses of ``smctune.config.settings``, which stay the one
definition (they are hashed into trial ids and shipped to Ray workers); this module adds the ranges
and the shape of the file around them. Checks that need the method catalog (method and tunable
names, tunable values) run after this schema, in ``search_space`` and ``search_decl``.

Imports pydantic: only the loader imports this module, so ``smctune ls`` and Ray workers never do.
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Annotated, Any, Literal, Optional

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, Strict, StrictStr, create_model,
                      field_validator, model_validator)
from pydantic_core import PydanticCustomError

from smctune.config.settings import (PAPER_GRID_MAX_K, PRECISIONS, PRESET_NAMES, ModelSettings, PresetSettings,
                                     Resources, StopSettings, TrainSettings, paper_grid)
from smctune.config.values import sparsities_problem, validate_sparsities


# ------------------------------------------------------------------------------------ error helpers
# Raised inside validators; ``smctune.config.validation`` turns them into one line with the place.

def unknown(what: str, name: Any, valid, at: str = "") -> PydanticCustomError:
    """``name`` is not one of ``valid`` (``at``: the key below the validated value it sits under)."""
    return PydanticCustomError("unknown", "unknown {what} '{name}'",
                               {"what": what, "name": str(name), "valid": ", ".join(map(str, valid)),
                                "at": at})


def problem(text: str, valid=(), at: str = "") -> PydanticCustomError:
    return PydanticCustomError("problem", "{text}",
                               {"text": text, "valid": ", ".join(map(str, valid)), "at": at})


class Block(BaseModel):
    """A block of the file: unknown keys are errors naming the valid ones; types are not coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise unknown("key", key, cls.model_fields)
        return data


# ------------------------------------------------------------------------------------ value types

def _regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as err:
        raise problem(f"{pattern!r} is not a regular expression ({err})") from None
    return pattern


def _number(value: Any) -> Any:
    """A finite int or float, kept as given (an int range of a tunable stays int)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise problem(f"expected a number, got {value!r}")
    return value


def _grid(value: Any) -> tuple:
    """``sparsities``: a list of levels in (0, 1), or ``{paper_k: N}`` for 1 - 0.8^k, k = 1..N."""
    if value is None:
        return paper_grid()
    if isinstance(value, dict):
        for key in value:
            if key != "paper_k":
                raise unknown("key", key, ("paper_k",))
        k = value.get("paper_k")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= PAPER_GRID_MAX_K:
            raise problem(f"expected an integer in 1..{PAPER_GRID_MAX_K}, got {k!r}", at="paper_k")
        return paper_grid(k)
    if not isinstance(value, list):
        raise problem(f"expected a list or {{paper_k: N}}, got {value!r}")
    text = sparsities_problem(value)
    if text:
        raise problem(text)
    return validate_sparsities(value, "sparsities")


def one_of(*valid: str):
    """A value among ``valid`` (the error names them all)."""
    def check(value: Any) -> Any:
        if value not in valid:
            raise problem(f"{value!r} is not valid", valid)
        return value
    return Annotated[Any, AfterValidator(check)]


Regex = Annotated[StrictStr, AfterValidator(_regex)]
Number = Annotated[Any, AfterValidator(_number)]
Patterns = Annotated[list[Regex], Field(min_length=1)]       # a named group of regexes: never empty
Methods = dict[StrictStr, Optional[dict[StrictStr, Any]]]    # method -> tunable -> value (catalog-checked)
METRICS = ("best", "final")   # what a searched cell's trial reports: its best or its final evaluation
Metric = one_of(*METRICS)


# ------------------------------------------------------------------------------------ settings blocks

def settings_block(cls, limits: Optional[dict] = None, types: Optional[dict] = None,
                   only: tuple = ()) -> type[Block]:
    """The block of settings dataclass ``cls``: its fields, types and defaults, a field's type
    replaced by ``types`` and narrowed by ``limits`` (``Field(ge=..)``) where given; ``only`` keeps
    those fields."""
    hints = typing.get_type_hints(cls)
    fields = {}
    for spec in dataclasses.fields(cls):
        if only and spec.name not in only:
            continue
        hint = (types or {}).get(spec.name, hints[spec.name])
        if hint is tuple:    # YAML has lists; the dataclass keeps a tuple (hashable, stable ids)
            hint = Annotated[tuple[StrictStr, ...], Strict(False)]
        if spec.name in (limits or {}):
            hint = Annotated[hint, limits[spec.name]]
        default = (Field(default_factory=spec.default_factory) if spec.default is dataclasses.MISSING
                   else spec.default)
        fields[spec.name] = (hint, default)
    return create_model(f"{cls.__name__}Block", __base__=Block, __module__=__name__, **fields)


ResourcesBlock = settings_block(Resources, {"cpu": Field(ge=0), "gpu": Field(ge=0), "memory_gb": Field(ge=0)})
ModelBlock = settings_block(ModelSettings)
ArchModelBlock = settings_block(ModelSettings, only=("source", "name", "config"))
TrainBlock = settings_block(TrainSettings, {
    "max_steps": Field(ge=1), "eval_every": Field(ge=1), "batch_size": Field(ge=1),
    "eval_batch_size": Field(ge=1), "max_length": Field(ge=1), "warmup_steps": Field(ge=0),
    "lr": Field(gt=0), "weight_decay": Field(ge=0), "grad_clip": Field(ge=0), "dropout": Field(ge=0, lt=1),
    "train_limit": Field(ge=1), "eval_limit": Field(ge=1), "checkpoint_every_s": Field(ge=0),
    "threads": Field(ge=0), "lr_step_every": Field(ge=0), "epochs": Field(gt=0)},
    types={"precision": Literal[PRECISIONS]})
StopBlock = settings_block(
    StopSettings, {"chance_evals": Field(ge=0), "chance_margin": Field(ge=0, lt=1),
                   "after_fraction": Field(ge=0, le=1)},
    types={"empty_layers": Annotated[tuple[Regex, ...], Strict(False)]})


# ------------------------------------------------------------------------------------ search:

class ParamBlock(Block):
    """One searched tunable: ``{low, high[, log]}`` (inclusive) or ``{choices: [..]}``."""

    low: Optional[Number] = None
    high: Optional[Number] = None
    log: bool = False
    choices: Optional[list[Any]] = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> "ParamBlock":
        if self.choices is not None:
            if self.model_fields_set - {"choices"}:
                raise problem("give either choices or low/high, not both")
            if not self.choices:
                raise problem("expected a non-empty list, got []", at="choices")
            return self
        for key in ("low", "high"):
            if getattr(self, key) is None:
                raise problem(f"'{key}' is required for a range (or give choices: [..])")
        if not self.low < self.high:
            raise problem(f"low {self.low} must be below high {self.high}")
        if self.log and self.low <= 0:
            raise problem(f"log: true needs low > 0 (got {self.low})")
        return self


class SearchBlock(Block):
    """``search:``: Optuna's budget per cell, the metric it maximises, the searched tunables."""

    trials_per_cell: Annotated[int, Field(ge=1)] = 1    # 1 = the defaults only, no search
    metric: Metric = "best"
    methods: Optional[dict[StrictStr, Optional[dict[StrictStr, ParamBlock]]]] = None


# ------------------------------------------------------------------------------------ the file

class PresetBlock(Block):
    """``presets.<name>``: what the preset fixes (``PresetSettings``)."""

    model: ModelBlock = Field(default_factory=ModelBlock)
    train: TrainBlock = Field(default_factory=TrainBlock)
    resources: ResourcesBlock = Field(default_factory=ResourcesBlock)
    methods: Methods = Field(default_factory=dict)
    stop: StopBlock = Field(default_factory=StopBlock)
    search: Optional[SearchBlock] = None

    def settings(self) -> PresetSettings:
        search = None if self.search is None else self.search.model_dump(exclude_unset=True)
        return PresetSettings(model=ModelSettings(**self.model.model_dump()),
                              train=TrainSettings(**self.train.model_dump()),
                              resources=Resources(**self.resources.model_dump()),
                              methods=self.model_dump(include={"methods"})["methods"],
                              stop=StopSettings(**self.stop.model_dump()), search=search)


class PrunableBlock(Block):
    """``prunable:``: which parameters are pruned (regexes), named groups for ``--keep-dense`` and
    ``--prune-only``, and what SMC-Bench's code leaves out per method (``--faithful smcbench``)."""

    include: list[Regex] = Field(default_factory=list)    # empty = every parameter with 2+ dimensions
    exclude: list[Regex] = Field(default_factory=list)
    groups: dict[StrictStr, Patterns] = Field(default_factory=dict)
    smcbench_exclude: dict[StrictStr, Patterns] = Field(default_factory=dict)


class SmcbenchBlock(Block):
    """``smcbench:``: SMC-Bench's departures from the papers, applied with ``--faithful smcbench``."""

    train: TrainBlock = Field(default_factory=TrainBlock)   # only the keys given override
    methods: dict[StrictStr, dict[StrictStr, Any]] = Field(default_factory=dict)


class ArchBlock(Block):
    """``models.<arch>.<preset>``: what an architecture changes in a preset (only the keys given)."""

    model: ArchModelBlock = Field(default_factory=ArchModelBlock)
    layers: dict = Field(default_factory=dict)              # the task family checks these keys
    train: TrainBlock = Field(default_factory=TrainBlock)


class StepTime(Block):
    """Seconds per training step of one trial at its preset's share (a bare number is ``step``), per
    evaluation of the dev split and per trial before its first step, for ``smctune plan``."""

    step: float
    eval: float = 0.0
    setup: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _bare_number(cls, data: Any) -> Any:
        data = data if isinstance(data, dict) else {"step": data}
        if "step" not in data:
            raise problem("'step' (seconds per training step) is required")
        return data

    @model_validator(mode="after")
    def _positive(self) -> "StepTime":
        for key in ("step", "eval", "setup"):
            bound = "> 0" if key == "step" else ">= 0"
            value = getattr(self, key)
            if value < 0 or (key == "step" and value == 0):
                raise problem(f"expected a number of seconds {bound}, got {value!r}", at=key)
        return self


class MemoryFacts(Block):
    """What ``smctune plan``'s peak-memory estimate needs of a preset's model (``smctune.sweep.memory``):
    its parameter count and the activation memory of one training example at the preset's
    ``max_length`` in fp32 (measured where the model runs here; derived for hub models, with the
    derivation in the file's comments)."""

    parameters: Annotated[float, Field(gt=0)]
    activation_mb: Annotated[float, Field(ge=0)]


class SearchSpaceBlock(Block):
    """The whole file. Blocks given as ``null`` count as not given."""

    task: Optional[StrictStr] = None
    sparsities: Annotated[Any, AfterValidator(_grid)] = Field(default=None, validate_default=True)
    methods: Optional[Methods] = None                  # tunables shared by every preset
    presets: Optional[dict[StrictStr, Optional[PresetBlock]]] = None
    prunable: Optional[PrunableBlock] = None
    smcbench: Optional[SmcbenchBlock] = None
    # --model choices, the first the default: architecture -> preset -> overrides
    models: Optional[dict[StrictStr, Optional[dict[StrictStr, Optional[ArchBlock]]]]] = None
    # preset -> device class (a Ray accelerator type such as A100, or cpu) -> step times
    step_seconds: Optional[dict[StrictStr, Annotated[dict[StrictStr, StepTime], Field(min_length=1)]]] = None
    memory: Optional[dict[StrictStr, MemoryFacts]] = None   # preset -> model facts for plan's memory estimate
    search: Optional[SearchBlock] = None               # a preset's own search: replaces this one

    @field_validator("presets", mode="before")
    @classmethod
    def _preset_names(cls, value: Any) -> Any:
        for name in value if isinstance(value, dict) else ():
            if name not in PRESET_NAMES:
                raise unknown("key", name, PRESET_NAMES)
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _models_name_presets(cls, value: Any, info) -> Any:
        if value == {}:
            raise problem("expected a mapping of architecture names to preset overrides, got {}")
        presets = info.data.get("presets") or {}
        for arch, per_preset in value.items() if isinstance(value, dict) else ():
            for preset in per_preset if isinstance(per_preset, dict) else ():
                if preset not in presets:
                    raise unknown("key", preset, presets, at=str(arch))
        return value

    @field_validator("step_seconds", "memory", mode="before")
    @classmethod
    def _step_seconds_name_presets(cls, value: Any, info) -> Any:
        presets = info.data.get("presets") or {}
        for preset in value if isinstance(value, dict) else ():
            if preset not in presets:
                raise unknown("key", preset, presets)
        return value
