"""Command-line values checked against the search space: sparsity lists, kept-dense and prune-only groups.
"""
from __future__ import annotations

from typing import TYPE_CHECKING
import math
from typing import Optional
from smctune.errors import UserError

if TYPE_CHECKING:  # annotations only: the search space imports this module
    from smctune.config.search_space import SearchSpace


def parse_sparsities(text: str, flag: str = "--sparsities") -> tuple[float, ...]:
    """``0.2,0.36`` -> (0.2, 0.36); each strictly inside (0, 1). ``flag``: the option named in errors."""
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = float(part)
        except ValueError:
            raise UserError(
                f"malformed {flag} '{text}': '{part}' is not a number "
                "(expected comma-separated values in (0, 1), e.g. 0.2,0.36,0.488)"
            ) from None
        values.append(value)
    return validate_sparsities(values, flag)


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


ID_DECIMALS = 4   # a level's precision in trial ids and mask files (``s0.3600``): levels are told apart at it


def validate_sparsities(values, where: str) -> tuple[float, ...]:
    problem = sparsities_problem(values)
    if problem:
        raise UserError(f"{where}: {problem}")
    return tuple(sorted(set(round(float(v), 6) for v in values)))


def sparsities_problem(values) -> str:
    """What is wrong with a list of sparsity levels ("" when nothing): the command line and the
    search-space schema say it the same way. The range is checked at the precision trial ids name a
    level with, so 0.99999 (``s1.0000``) is refused, and two levels that would share an id are too."""
    if not values:
        return "no sparsity levels given (expected values in (0, 1))"
    seen: dict = {}
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0.0 < round(value, ID_DECIMALS) < 1.0:
            return (f"sparsity {value!r} is outside (0, 1) at the {ID_DECIMALS} decimals trial ids use"
                    if isinstance(value, float) and math.isfinite(value) and 0.0 < value < 1.0
                    else f"sparsity {value!r} is outside (0, 1)")
        key = f"{value:.{ID_DECIMALS}f}"
        if key in seen and round(seen[key], 6) != round(value, 6):
            return (f"sparsities {seen[key]!r} and {value!r} are the same level at the {ID_DECIMALS} "
                    "decimals trial ids use")
        seen[key] = value
    return ""
