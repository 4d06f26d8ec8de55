"""The progress of one sparsity level (one fine-tuning run): checkpointed, so a retried trial resumes
the level where it stopped instead of training it again."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class LevelState:
    round: Optional[int]
    target: float
    step: int = 0
    best: float = float("-inf")
    history: list = field(default_factory=list)
    max_steps: Optional[int] = None   # this level's budget when it is not train.max_steps (IMP rounds)
