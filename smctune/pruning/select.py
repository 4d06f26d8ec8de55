"""Which parameters are prunable, and the one rounding rule for "how many entries to prune".

Parameters are identified by object identity, so a Parameter shared by several modules (an embedding
tied to the output projection) is selected once, under its first name in
``model.named_parameters(remove_duplicate=False)`` order, with the other names kept as aliases.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch

from ..errors import UserError

Patterns = Optional[Sequence[str]]


@dataclass(frozen=True, eq=False)
class PrunableParam:
    """One unique parameter tensor: canonical ``name``, the object, and its other names."""

    name: str
    param: torch.nn.Parameter
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.param.shape)

    @property
    def numel(self) -> int:
        return self.param.numel()


def num_pruned(n: int, sparsity: float) -> int:
    """Number of entries to prune out of ``n`` at ``sparsity``: ``floor(n * sparsity + 0.5)``.

    This is the only rounding rule in smctune; every allocation (global, per layer) goes through it.
    """
    return int(math.floor(n * sparsity + 0.5))


def unique_parameters(model: torch.nn.Module) -> list[PrunableParam]:
    """Every parameter of ``model`` once (by identity), in first-appearance order, with aliases."""
    groups: dict[int, list] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        entry = groups.get(id(param))
        if entry is None:
            groups[id(param)] = [param, [name]]
        else:
            entry[1].append(name)
    return [PrunableParam(names[0], param, tuple(names[1:])) for param, names in groups.values()]


def _compile(patterns: Patterns, what: str) -> list[re.Pattern]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    compiled = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise UserError(f"{what} patterns must be regex strings, got {pattern!r}")
        try:
            compiled.append(re.compile(pattern))
        except re.error as err:
            raise UserError(f"invalid {what} regex {pattern!r}: {err}") from None
    return compiled


def _matches(patterns: Iterable[re.Pattern], names: Iterable[str]) -> bool:
    return any(p.search(n) for p in patterns for n in names)


def select_prunable(model: torch.nn.Module, include: Patterns = None,
                    exclude: Patterns = None) -> list[PrunableParam]:
    """The parameters a pruning method may touch.

    Default rule (no ``include``): every unique parameter with ``ndim >= 2`` (matrices, embeddings;
    never biases or LayerNorm weights), as in SMC-Bench. A non-empty ``include`` (regexes, ``re.search``
    against all names of a parameter) replaces the default rule and may select any shape.
    A parameter any of whose names matches an ``exclude`` regex is dropped.
    """
    inc = _compile(include, "include")
    exc = _compile(exclude, "exclude")
    selected = []
    for pp in unique_parameters(model):
        chosen = _matches(inc, pp.names) if inc else pp.param.ndim >= 2
        if chosen and not (exc and _matches(exc, pp.names)):
            selected.append(pp)
    if not selected:
        inc_txt = list(include) if include and not isinstance(include, str) else include
        exc_txt = list(exclude) if exclude and not isinstance(exclude, str) else exclude
        rule = f"include={inc_txt!r}" if inc else "the default rule (ndim >= 2)"
        raise UserError(f"no prunable parameters selected by {rule} with exclude={exc_txt!r}; "
                        f"the model has {len(unique_parameters(model))} unique parameters")
    return selected
