"""``sweep.json`` read back, checked key by key: what ``resume``, ``status``, ``report`` and ``layers``
rebuild a run from.

The file sits on shared storage that anyone may edit, copy or damage, and an older or newer smctune
may have written it, so a wrong type is not a bug to show a traceback for: it is a one-line error
naming the file and the key. ``SweepSpec.from_json`` alone trusts every value (it is the inverse of
``to_json``); this module is the one place that does not.
"""
from __future__ import annotations

import json
import math
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Union

from smctune.config.specs import SweepSpec, from_plain
from smctune.config.values import sparsities_problem
from smctune.errors import UserError, choices

# what each tuple field holds
_ITEMS = {"methods": str, "keep_dense": str, "models": str, "prune_only": str,
          "sparsities": float, "seeds": int, "folds": int}
_AT_LEAST_0 = ("max_concurrent", "max_failures", "trials_per_cell")


def read_sweep_spec(path: Union[str, Path]) -> SweepSpec:
    """The ``SweepSpec`` in ``path`` (a run directory's ``sweep.json``); a missing, unreadable or
    malformed file is a one-line ``UserError`` naming the file (and the key)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path.parent} is not a smctune run directory (no {path.name})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: unreadable ({_reason(err)})") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise UserError(f"{path}: not valid JSON ({_reason(err)})") from None
    problem = spec_problem(data)
    if problem:
        raise UserError(f"{path}: {problem}")
    return from_plain(SweepSpec, data)


def spec_problem(data: Any) -> str:
    """What is wrong with a decoded ``sweep.json`` ("" when nothing)."""
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    known = {f.name: f for f in fields(SweepSpec)}
    for key in data:
        if key not in known:
            return f"unknown key '{key}' (written by another smctune version?)"
    hints = typing.get_type_hints(SweepSpec)
    for name, spec_field in known.items():
        if name not in data:
            if spec_field.default is MISSING and spec_field.default_factory is MISSING:
                return f"key '{name}' is missing"
            continue
        problem = _type_problem(name, hints[name], data[name])
        if problem:
            return f"key '{name}': {problem}"
    return _value_problem(data)


def _type_problem(name: str, hint, value) -> str:
    optional = type(None) in typing.get_args(hint)
    if value is None:
        return "" if optional or hint is tuple else "expected a value, got null"
    base = next((arg for arg in typing.get_args(hint) if arg is not type(None)), hint)
    if base is tuple:
        if not isinstance(value, list):
            return f"expected a list, got {_short(value)}"
        item = _ITEMS.get(name, str)
        for element in value:
            if not _is(item, element):
                return f"expected a list of {_NAMES[item]}, got {_short(element)} in it"
        return ""
    return "" if _is(base, value) else f"expected {_NAMES.get(base, base.__name__)}, got {_short(value)}"


_NAMES = {str: "text", int: "whole numbers", float: "numbers", bool: "true or false"}


def _is(kind, value) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is int:
        return isinstance(value, int)
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


def _value_problem(data: dict) -> str:
    """The values a sweep could not run with: names the catalog does not know, ranges."""
    from smctune.catalog import registry

    if data["task"] not in registry.TASKS:
        return f"key 'task': unknown task '{data['task']}' (valid: {choices(registry.TASKS)})"
    for method in data["methods"]:
        if method not in registry.METHODS:
            return f"key 'methods': unknown method '{method}' (valid: {choices(registry.METHODS)})"
    if data["preset"] not in registry.PRESETS:
        return f"key 'preset': unknown preset '{data['preset']}' (valid: {choices(registry.PRESETS)})"
    if not data["methods"] or not data["seeds"]:
        return f"key '{'methods' if not data['methods'] else 'seeds'}': empty"
    problem = sparsities_problem(data["sparsities"])
    if problem:
        return f"key 'sparsities': {problem}"
    for key in _AT_LEAST_0:
        if data.get(key, 0) < 0:
            return f"key '{key}': must be >= 0, got {data[key]}"
    if data.get("gpus_per_trial") is not None and data["gpus_per_trial"] < 0:
        return f"key 'gpus_per_trial': must be >= 0, got {data['gpus_per_trial']}"
    return ""


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _reason(err: Exception) -> str:
    return " ".join(str(err).split())[:120] or type(err).__name__
