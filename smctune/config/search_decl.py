"""The ``search:`` block of a search space: which tunables Optuna searches inside a cell, over what.

Parsed here, with the rest of the configuration, so the lowest layer never reaches up into the
searcher to read its own file: the schema (``smctune.config.schema.SearchBlock``) checks its shape,
this module its names and values against the method catalog. Problems are one-line errors naming
the key. The declarations themselves (``ParamDecl``, ``SearchDecl``) import nothing heavy: the
searcher and Ray workers use them.
"""
from __future__ import annotations
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Optional
from smctune.errors import UserError
from smctune.catalog.tunables import Tunable

if TYPE_CHECKING:  # annotations only: the schema imports pydantic
    from smctune.config.schema import ParamBlock, SearchBlock


# Tunables that decide which trials exist (not settings within a cell): N:M fixes the sparsity, the
# IMP rate fixes the ladder of levels. They are axes of the plan, set under ``methods:``.
GRID_TUNABLES = {"pattern": "an N:M pattern fixes the sparsity, so it decides which trials exist",
                 "rate": "the IMP rate decides the ladder of levels, so it decides which trials exist"}


@dataclass(frozen=True)
class ParamDecl:
    """One searched tunable: a range (``low``..``high``, inclusive, optionally ``log``) or ``choices``.

    ``kind`` is ``int`` or ``float`` for a range and ``choice`` for a list of values (numbers too:
    ``frequency: {choices: [500, 1000, 4000]}``)."""

    name: str
    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    choices: tuple = ()

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return any(same_choice(value, choice) for choice in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        return self.low <= value <= self.high

    def distribution(self):
        """The Optuna distribution (imports optuna)."""
        from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                          IntDistribution)

        if self.kind == "choice":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def to_dict(self) -> dict:
        if self.kind == "choice":
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class SearchDecl:
    """The parsed ``search:`` block: budget, metric and, per method, the searched tunables."""

    trials_per_cell: int = 1
    metric: str = "best"
    methods: Mapping[str, Mapping[str, ParamDecl]] = field(default_factory=dict)
    source: str = ""

    def space(self, method: str) -> dict[str, ParamDecl]:
        return dict(self.methods.get(method) or {})

    def to_dict(self) -> dict:
        return {"trials_per_cell": self.trials_per_cell, "metric": self.metric,
                "methods": {m: {n: p.to_dict() for n, p in params.items()}
                            for m, params in self.methods.items()}}


def check_trials_per_cell(value: Any, where: str = "--trials-per-cell") -> int:
    """A budget of trials per cell: a whole number >= 1 (1 = the defaults only, no search)."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise UserError(f"{where}: expected a whole number >= 1, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where}: expected a whole number >= 1 (1 = the paper's defaults, no search), "
                        f"got {value!r}")
    return value


def parse_search(block: Any, method_tunables: Mapping[str, Mapping[str, Tunable]],
                 source: str = "search space", at: str = "search") -> SearchDecl:
    """Validate a ``search:`` block (``None``: no search) found at ``at`` in file ``source``: its
    shape by the schema, then every declared name must be a searchable tunable of its method and
    every range or choice valid for that tunable. Problems raise a one-line ``UserError`` naming
    the key."""
    if block is None:
        return SearchDecl(source=source)
    from smctune.config.schema import SearchBlock
    from smctune.config.validation import validate

    return search_decl(validate(SearchBlock, block, source, at), method_tunables, source, at)


def search_decl(block: "SearchBlock", method_tunables: Mapping[str, Mapping[str, Tunable]],
                source: str, at: str = "search") -> SearchDecl:
    """The declaration of a ``search:`` block the schema has validated, checked against the
    methods' tunables."""
    methods = {}
    for method, params in (block.methods or {}).items():
        if method not in method_tunables:
            raise UserError(f"{source}: unknown method '{method}' at {at}.methods "
                            f"(valid: {', '.join(sorted(method_tunables))})")
        where = f"{at}.methods.{method}"
        tunables = method_tunables[method]
        searchable = sorted(name for name in tunables if name not in GRID_TUNABLES)
        declared = {}
        for name, param in (params or {}).items():
            if name in GRID_TUNABLES and name in tunables:
                raise UserError(f"{source}: {where}.{name} cannot be searched: {GRID_TUNABLES[name]} "
                                f"(set it under methods.{method})")
            if name not in tunables:
                raise UserError(f"{source}: unknown key '{name}' at {where} "
                                f"(valid: {', '.join(searchable) or 'none'})")
            declared[name] = _param(name, param, tunables[name], f"{source}: {where}.{name}")
        if declared:
            methods[method] = declared
    return SearchDecl(block.trials_per_cell, block.metric, methods, source)


def _param(name: str, param: "ParamBlock", tunable: Tunable, where: str) -> ParamDecl:
    if param.choices is not None:
        for i, value in enumerate(param.choices):
            tunable.check(value, f"{where}.choices")
            if any(same_choice(value, seen) for seen in param.choices[:i]):
                raise UserError(f"{where}.choices: {param.choices!r} lists a value twice")
        return ParamDecl(name, "choice", choices=tuple(param.choices))
    if tunable.kind not in ("int", "float"):
        raise UserError(f"{where}: a {tunable.kind} tunable is searched with choices: [..] "
                        f"(valid: {tunable.valid_text()})")
    low, high = (tunable.check(getattr(param, key), f"{where}.{key}") for key in ("low", "high"))
    return ParamDecl(name, tunable.kind, low=low, high=high, log=param.log)


def same_choice(a, b) -> bool:
    """Equal and of the same kind (``True`` is not the choice ``1``)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool) and (a is None) == (b is None)
