"""Reading a search-space file: its YAML, and the files it builds on through ``extends:``.

The tasks of one family share most of their search space (the three translation settings differ in
one batch size), so a file may say ``extends: <file name>`` and hold only what differs. The named
file's mapping is deep-merged under this one: mappings merge key by key, the extending file wins,
and anything else (lists, numbers, strings, ``null``) replaces what it extends, never concatenates.
``task:`` is not inherited: it names the file's own task. A base file may itself extend another;
a cycle or a missing file is a one-line error that shows the chain.

A name is looked up next to the file that names it, then among the packaged search spaces (so a
user's ``--search-space`` file can extend ``csqa.yaml`` and change one preset). Only bare file names
are accepted, and a name that resolves (through a link) outside its directory is refused: a search
space reads nothing but those two directories.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from smctune.errors import UserError

PACKAGE = "smctune.search_spaces"


@dataclass(frozen=True)
class SpaceFile:
    """A search-space file with its ``extends:`` chain merged into one mapping."""

    data: dict
    source: str    # how messages and records name the file: search_spaces/<task>.yaml or the user's path
    chain: tuple   # the file names it extends, nearest first (empty: it extends nothing)

    @property
    def label(self) -> str:
        """The file in an error message, with the files whose keys it may have inherited."""
        return f"{self.source} (extends {' -> '.join(self.chain)})" if self.chain else self.source


def read_search_space(task: str, path: Optional[str] = None) -> SpaceFile:
    """The packaged ``search_spaces/<task>.yaml``, or the user's file at ``path``, merged over the
    files it extends."""
    from importlib import resources

    packaged = resources.files(PACKAGE)
    if path is None:
        file = packaged.joinpath(f"{task}.yaml")
        if not file.is_file():
            raise UserError(f"no search space for task '{task}' in the installed package")
        source, directory = f"search_spaces/{task}.yaml", packaged
    else:
        file = Path(path)
        if file.is_dir():
            raise UserError(f"search space {path} is a directory, not a YAML file")
        if not file.is_file():
            raise UserError(f"search space file not found: {path}")
        source, directory = str(path), file.parent
    layers = [_read(file, source)]
    names, seen = [file.name], [_identity(file)]
    while "extends" in layers[-1]:
        name = layers[-1].pop("extends")
        file, directory = _find(name, directory, packaged, f"{source}: extends", names)
        names.append(file.name)
        if _identity(file) in seen:
            raise UserError(f"{source}: extends: a cycle ({' -> '.join(names)})")
        seen.append(_identity(file))
        layer = _read(file, _shown(file, directory, packaged))
        layer.pop("task", None)
        layers.append(layer)
    data: dict = {}
    for layer in reversed(layers):
        data = merge(data, layer)
    return SpaceFile(data, source, tuple(names[1:]))


def merge(base: dict, over: dict) -> dict:
    """``over`` deep-merged onto ``base``: mappings key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        nested = isinstance(out.get(key), dict) and isinstance(value, dict)
        out[key] = merge(out[key], value) if nested else value
    return out


def _find(name, directory, packaged, where: str, names: list):
    """The file ``name`` next to the extending file, else among the packaged search spaces."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise UserError(f"{where}: expected the name of a file in the same directory, got {name!r} "
                        f"(chain: {' -> '.join(names)})")
    for place in dict.fromkeys((directory, packaged)):
        candidate = place.joinpath(name)
        if candidate.is_file():
            if _escapes(candidate, place):
                raise UserError(f"{where}: '{name}' resolves outside {place} (chain: {' -> '.join(names)})")
            return candidate, place
    valid = sorted({entry.name for place in dict.fromkeys((directory, packaged)) for entry in place.iterdir()
                    if entry.name.endswith(".yaml")})
    raise UserError(f"{where}: no file '{name}' (chain: {' -> '.join([*names, name])}; "
                    f"valid: {', '.join(valid)})")


def _escapes(file, directory) -> bool:
    """A link that leads out of ``directory`` (packaged files that are not on disk cannot)."""
    if not isinstance(file, Path) or not isinstance(directory, Path):
        return False
    return not file.resolve().is_relative_to(directory.resolve())


def _identity(file) -> str:
    return str(file.resolve()) if isinstance(file, Path) else str(file)


def _shown(file, directory, packaged) -> str:
    return f"search_spaces/{file.name}" if directory is packaged else str(file)


def _read(file, shown: str) -> dict:
    import yaml  # cheap, and only needed here

    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{shown}: not a YAML text file (byte {err.start} is not UTF-8)") from None
    except OSError as err:
        raise UserError(f"{shown}: cannot read: {err.strerror or err}") from None
    if "\x00" in text:
        raise UserError(f"{shown}: not a YAML text file (it holds NUL bytes)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        place = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise UserError(f"{shown}{place}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise UserError(f"{shown}: expected a mapping at the top level")
    return data
