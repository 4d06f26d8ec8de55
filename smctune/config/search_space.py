"""``search_spaces/<task>.yaml``: the sparsity grid, method tunables and presets of one task, read
once and strictly (``smctune.config.schema``) into the frozen ``SearchSpace``.
"""
from __future__ import annotations
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional
from smctune.errors import UserError
from smctune.config.settings import ModelSettings, PresetSettings, Resources, TrainSettings, paper_grid
from smctune.config.specs import SweepSpec, from_plain

if TYPE_CHECKING:  # annotations only: the schema imports pydantic, which only the loader needs
    from smctune.config.schema import SearchSpaceBlock


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
    # -> {step, eval, setup} seconds, for ``smctune plan``'s time estimate (see ``schema.StepTime``).
    step_seconds: dict = field(default_factory=dict)
    # ``memory``: preset -> {parameters, activation_mb} for ``smctune plan``'s peak-memory estimate
    memory: dict = field(default_factory=dict)
    # within-cell search (``search_decl``, run by ``smctune.sweep.cells``): which tunables Optuna
    # searches, over what, and the budget of tunings per cell; a preset's ``search:`` replaces it
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
        ``smcbench.train`` overrides): what a trial of that architecture runs. The overrides were
        validated with the file, so applying them cannot fail."""
        settings = self.preset(preset)
        if self.models or arch:
            settings = self._with_arch(settings, preset, arch)
        extra = (self.smcbench.get("train") or {}) if faithful == "smcbench" else {}
        if extra:
            train = {**dataclasses.asdict(settings.train), **extra}
            settings = dataclasses.replace(settings, train=from_plain(TrainSettings, train))
        return settings

    def _with_arch(self, settings: PresetSettings, preset: str, arch: str) -> PresetSettings:
        if not self.models:
            raise UserError(f"task {self.task} has a single architecture; --model does not apply")
        if arch not in self.models:
            raise UserError(f"unknown --model '{arch}' for task {self.task} "
                            f"(valid: {', '.join(self.models)})")
        override = (self.models[arch] or {}).get(preset) or {}
        model = {**dataclasses.asdict(settings.model), **(override.get("model") or {}), "arch": arch}
        model["layers"] = {**model["layers"], **(override.get("layers") or {})}
        train = {**dataclasses.asdict(settings.train), **(override.get("train") or {})}
        return dataclasses.replace(settings, model=from_plain(ModelSettings, model),
                                   train=from_plain(TrainSettings, train))

    def search_decl(self, preset: str):
        """The ``SearchDecl`` a sweep with ``preset`` searches by: the preset's ``search:`` block, else
        the file's (nothing declared: no search)."""
        from smctune.config.search_decl import parse_search
        from smctune.catalog.registry import METHODS

        block = self.preset(preset).search
        at = "search" if block is None else f"presets.{preset}.search"
        return parse_search(self.search if block is None else block,
                            {name: spec.tunables for name, spec in METHODS.items()}, self.source, at)

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
        when the user asked to reproduce SMC-Bench). A loaded file's names were checked when it was
        read (``check_methods``); a ``SearchSpace`` built in code is checked here."""
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


def sweep_search_space(spec: "SweepSpec") -> SearchSpace:
    """The search space a recorded sweep ran with: its file when it still exists, else the packaged
    one of its task (``resume``, ``status`` and the report all read a sweep back this way)."""
    source = spec.search_space_file
    return load_search_space(spec.task, source if source and Path(source).is_file() else None)


def load_search_space(task: str, path: Optional[str] = None) -> SearchSpace:
    """Load ``search_spaces/<task>.yaml`` from the installed package, or a user file, with the files
    it ``extends:``; validate it once and build the frozen ``SearchSpace``."""
    from smctune.config.extends import read_search_space
    from smctune.config.schema import SearchSpaceBlock
    from smctune.config.validation import validate

    file = read_search_space(task, path)
    named = file.data.get("task", task)
    if named != task:
        raise UserError(f"{file.label}: is for task '{named}', not '{task}'")
    block = validate(SearchSpaceBlock, file.data, file.label)
    _check_catalog(block, file.label)
    return _search_space(block, task, file.source)


def _search_space(block: "SearchSpaceBlock", task: str, source: str) -> SearchSpace:
    """The frozen ``SearchSpace`` of a validated file: settings as dataclasses, the override and
    declaration blocks as plain data, as YAML would write them (only the keys set, lists)."""
    plain = block.model_dump(mode="json", exclude_unset=True,
                             include={"methods", "prunable", "models", "search", "smcbench"})
    return SearchSpace(
        task=task, sparsities=block.sparsities, methods=plain.get("methods") or {},
        presets={name: preset.settings() if preset is not None else PresetSettings()
                 for name, preset in (block.presets or {}).items()},
        prunable=plain.get("prunable") or {},
        models={arch: dict(per_preset or {}) for arch, per_preset in (plain.get("models") or {}).items()},
        step_seconds={preset: {device: times.model_dump() for device, times in devices.items()}
                      for preset, devices in (block.step_seconds or {}).items()},
        memory={preset: facts.model_dump() for preset, facts in (block.memory or {}).items()},
        search=plain.get("search"), smcbench=plain.get("smcbench") or {}, source=source)


def _check_catalog(block: "SearchSpaceBlock", source: str) -> None:
    """What the schema cannot know: method names, their tunables' names and values, and the searched
    tunables, checked against the method catalog now, so a typo fails before any trial."""
    from smctune.catalog.registry import METHODS
    from smctune.config.search_decl import search_decl

    presets = {name: preset for name, preset in (block.presets or {}).items() if preset is not None}
    method_blocks = [("methods", block.methods)]
    method_blocks += [(f"presets.{name}.methods", preset.methods) for name, preset in presets.items()]
    method_blocks.append(("smcbench.methods", block.smcbench.methods if block.smcbench else None))
    for at, methods in method_blocks:
        check_methods(methods or {}, source, at)
    tunables = {name: spec.tunables for name, spec in METHODS.items()}
    searches = [("search", block.search)]
    searches += [(f"presets.{name}.search", preset.search) for name, preset in presets.items()]
    for at, search in searches:
        if search is not None:
            search_decl(search, tunables, source, at)


def check_methods(methods: dict, source: str, at: str) -> None:
    """A ``methods:`` block (method -> tunable -> value) found at ``at``: known methods, their
    tunables, valid values."""
    from smctune.catalog.registry import METHODS
    from smctune.catalog.tunables import check_all

    for method, values in methods.items():
        if method not in METHODS:
            raise UserError(f"{source}: unknown method '{method}' at {at} (valid: {', '.join(METHODS)})")
        known = METHODS[method].tunables
        for key in values or {}:
            if key not in known:
                raise UserError(f"{source}: unknown key '{key}' at {at}.{method} "
                                f"(valid: {', '.join(sorted(known)) or 'none'})")
        check_all(known, values or {}, f"{source}: {at}.{method}")


def trial_resources(sweep: SweepSpec, space: SearchSpace) -> Resources:
    """What every trial of the sweep asks Ray for: the preset's resources, with ``--gpus-per-trial``
    (``SweepSpec.gpus_per_trial``) replacing the gpu count when given."""
    resources = space.preset(sweep.preset).resources
    if sweep.gpus_per_trial is not None:
        resources = dataclasses.replace(resources, gpu=float(sweep.gpus_per_trial))
    return resources
