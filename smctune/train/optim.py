"""Optimiser and learning-rate schedule of a fine-tune, from ``TrainSettings``.

Two task families need different recipes: RoBERTa fine-tunes use fairseq's Adam with decoupled weight
decay and a linear warmup/decay; the GTS/Graph2Tree code uses ``torch.optim.Adam`` (L2 added to the
gradient), a separate, much smaller learning rate for the pretrained embedder, and StepLR halving.
Both are registries so a preset names its recipe instead of the training loop branching on tasks.
"""
from __future__ import annotations

import math
from typing import Callable

from smctune.config.settings import TrainSettings
from smctune.errors import UserError, choices

# Names in ``torch.optim``; looked up at build time so the driver can ``check`` without torch.
OPTIMIZERS: dict[str, str] = {"adamw": "AdamW", "adam": "Adam"}


def _linear(train: TrainSettings) -> Callable[[int], float]:
    """fairseq's polynomial_decay with power 1: linear warmup, then linear decay to 0 at max_steps."""
    warmup, total = max(0, train.warmup_steps), max(1, train.max_steps)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _step(train: TrainSettings) -> Callable[[int], float]:
    """Warmup (if any), then ``lr_gamma ** (step // lr_step_every)``: StepLR counted in updates."""
    warmup, every, gamma = max(0, train.warmup_steps), train.lr_step_every, train.lr_gamma

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return gamma ** (step // every) if every > 0 else 1.0

    return factor


# OneCycle (Smith & Topin 2019) as torch.optim.lr_scheduler.OneCycleLR defines it: from lr/25 up to
# lr over the first 30 % of the cycle, then cosine annealing down to lr/25/1e4
ONECYCLE_PCT_START = 0.3
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4


def _cosine(start: float, end: float, fraction: float) -> float:
    return end + (start - end) / 2.0 * (1.0 + math.cos(math.pi * fraction))


def _onecycle(train: TrainSettings) -> Callable[[int], float]:
    """The ESM-1b recipe's OneCycle schedule over ``max_steps`` updates (warm-up is built in). With
    ``lr_step_every`` k > 1 the cycle advances once every k updates, so k = the updates of one epoch
    reproduces schedulers stepped once per epoch."""
    every = max(1, train.lr_step_every)
    total = max(1, math.ceil(train.max_steps / every))
    peak = ONECYCLE_PCT_START * total - 1   # the position where the lr peaks (OneCycleLR's phase end)
    low, floor_ = 1.0 / ONECYCLE_DIV, 1.0 / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)

    def factor(step: int) -> float:
        position = min(step // every, total - 1)
        if position <= peak:
            return _cosine(low, 1.0, position / peak) if peak > 0 else 1.0
        span = (total - 1) - peak
        return _cosine(1.0, floor_, (position - peak) / span) if span > 0 else floor_

    return factor


SCHEDULES: dict[str, Callable[[TrainSettings], Callable[[int], float]]] = {
    "linear": _linear, "step": _step, "onecycle": _onecycle}
# ``train.freeze`` names: which side of the runtime's ``backbone_prefix`` stays out of the optimizer
FREEZABLE = ("head", "backbone")


def check(train: TrainSettings) -> None:
    """One-line errors for recipe settings, raised in the driver before any trial starts."""
    if train.optimizer not in OPTIMIZERS:
        raise UserError(f"train.optimizer: unknown '{train.optimizer}' (valid: {choices(OPTIMIZERS)})")
    if train.lr_schedule not in SCHEDULES:
        raise UserError(f"train.lr_schedule: unknown '{train.lr_schedule}' (valid: {choices(SCHEDULES)})")
    if train.lr_schedule == "step" and train.lr_step_every < 1:
        raise UserError(f"train.lr_step_every must be at least 1 for lr_schedule 'step', "
                        f"got {train.lr_step_every}")
    if not 0 < train.lr_gamma <= 1:
        raise UserError(f"train.lr_gamma must be in (0, 1], got {train.lr_gamma}")
    if train.backbone_lr is not None and train.backbone_lr < 0:
        raise UserError(f"train.backbone_lr must be non-negative, got {train.backbone_lr}")
    for name in train.freeze:
        if name not in FREEZABLE:
            raise UserError(f"train.freeze: unknown '{name}' (valid: {', '.join(FREEZABLE)})")
    if len(set(train.freeze)) == len(FREEZABLE):
        raise UserError("train.freeze: freezing both head and backbone leaves nothing to train")


def parameter_groups(model, train: TrainSettings, backbone_prefix: str) -> list[dict]:
    """One group, or two when the backbone (parameters named ``backbone_prefix``...) has its own lr;
    a frozen side (``train.freeze``) is left out, so its weights and optimizer state never move."""
    params = list(model.named_parameters())
    if train.freeze and not backbone_prefix:
        raise UserError("train.freeze needs a task whose model has a pretrained backbone to tell the "
                        "head from")

    def side(name: str) -> str:
        return "backbone" if backbone_prefix and name.startswith(backbone_prefix) else "head"

    trained = [(name, p) for name, p in params if side(name) not in train.freeze]
    if train.backbone_lr is None:
        return [{"params": [p for _, p in trained], "lr": train.lr}]
    rest = [p for name, p in trained if side(name) == "head"]
    backbone = [p for name, p in trained if side(name) == "backbone"]
    return [group for group in ({"params": rest, "lr": train.lr},
                                {"params": backbone, "lr": train.backbone_lr}) if group["params"]]


# Devices whose Adam/AdamW have a fused kernel in the torch we pin (public ``fused=`` argument).
FUSED_DEVICES = ("cpu", "cuda")


def fused_kernel_fits(groups: list[dict]) -> bool:
    """True when every parameter is a floating-point tensor on a device with a fused Adam kernel.

    Why fused: torch's default Adam on CPU runs one for-loop pass per elementwise operation (about
    ten per parameter per step) and on CUDA a handful of foreach launches; the fused kernel reads and
    writes each weight, gradient and moment once. Measured on a 32.5M-parameter CPU model
    (``benchmarks/bench_trial.py`` notes): 18 ms per step instead of 125 ms, results equal to the
    default's up to rounding. It also lets gradient masking be the cheaper enforcement on CPU
    (``smctune/pruning/enforce.py``)."""
    params = [p for group in groups for p in group["params"]]
    return bool(params) and all(p.is_floating_point() and p.device.type in FUSED_DEVICES for p in params)


def build(model, train: TrainSettings, backbone_prefix: str = ""):
    """(optimizer, scheduler) for one fine-tune; the schedule scales every group's own lr. Adam and
    AdamW run their fused kernel wherever it exists (``fused_kernel_fits``)."""
    import torch

    check(train)
    groups = parameter_groups(model, train, backbone_prefix)
    optimizer = getattr(torch.optim, OPTIMIZERS[train.optimizer])(
        groups, lr=train.lr, betas=(train.adam_beta1, train.adam_beta2), eps=train.adam_eps,
        weight_decay=train.weight_decay, fused=fused_kernel_fits(groups) or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, SCHEDULES[train.lr_schedule](train))
    return optimizer, scheduler
