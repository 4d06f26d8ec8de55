"""pydantic's ``ValidationError`` as the one-line ``UserError`` every bad input gets:
``<file>: unknown key 'eval_evry' at presets.smoke.train (valid: max_steps, eval_every, ...)`` or
``<file>: presets.smoke.stop.after_fraction: must be <= 1, got 1.5``.

pydantic reports every problem of a file, in sentences written for programmers; a user fixes the
first one, named by its dotted place in the file and, where a choice is wrong, with the valid ones.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from smctune.errors import UserError

# what a type error expected, by pydantic's error type
EXPECTED = {
    "int_type": "an integer", "int_from_float": "an integer", "int_parsing": "an integer",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "a string",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "list_type": "a list", "tuple_type": "a list",
}

# the range a value missed, by pydantic's error type
BOUNDS = {"greater_than": "must be > {gt:g}", "greater_than_equal": "must be >= {ge:g}",
          "less_than": "must be < {lt:g}", "less_than_equal": "must be <= {le:g}",
          "too_short": "must have at least {min_length} entry"}


def validate(block: type[BaseModel], data: Any, source: str, at: str = ""):
    """``block`` validated from ``data``; a problem is a one-line ``UserError`` that starts with
    ``source`` (the file) and names its place below ``at`` (where ``data`` sits in the file)."""
    try:
        return block.model_validate(data)
    except ValidationError as err:
        raise one_line(err, source, at) from None


def one_line(err: ValidationError, source: str, at: str = "") -> UserError:
    first = err.errors(include_url=False)[0]
    ctx = first.get("ctx") or {}
    path = [at, *_steps(first["loc"]), ctx.get("at", "")]
    text = FORMATS.get(first["type"], _placed)(first, [step for step in path if step])
    if ctx.get("valid") or first["type"] == "unknown":
        text += f" (valid: {ctx.get('valid') or 'none'})"
    return UserError(f"{source}: {text}")


def _unknown(error: dict, path: list) -> str:
    """A key or name that is not one of the valid ones (raised by the schema's validators)."""
    return f"{error['msg']} at {'.'.join(path) or 'the top level'}"


def _extra(error: dict, path: list) -> str:
    return f"unknown key '{path[-1]}' at {'.'.join(path[:-1]) or 'the top level'}"


def _missing(error: dict, path: list) -> str:
    return _where(path[:-1], f"'{path[-1]}' is required")


def _placed(error: dict, path: list) -> str:
    """``place: problem``: a wrong type, a value out of range or a rule of the schema."""
    kind, ctx, got = error["type"], error.get("ctx") or {}, _short(error.get("input"))
    if kind in EXPECTED:
        text = f"expected {EXPECTED[kind]}, got {got}"
    elif kind in BOUNDS:
        text = f"{BOUNDS[kind].format(**ctx)}, got {got}"
    else:  # the schema's own rules say it in full; anything else in pydantic's words
        text = ctx.get("text") or f"{error['msg']}, got {got}"
    return _where(path, text)


FORMATS = {"unknown": _unknown, "extra_forbidden": _extra, "missing": _missing}


def _steps(loc: tuple) -> list:
    """pydantic's location as the file's keys: a list index joins its key (``include[2]``)."""
    steps: list = []
    for step, after in zip(loc, (*loc[1:], None)):
        if isinstance(step, int) and steps and after != "[key]":
            steps[-1] = f"{steps[-1]}[{step}]"
        elif step != "[key]":
            steps.append(str(step))
    return steps


def _where(path: list, text: str) -> str:
    return f"{'.'.join(path)}: {text}" if path else text


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
