"""What every commonsense task's loader shares, without torch.

A task's data is a list of ``Question`` per split (a multiple-choice item: its text fields, the choice
texts in order and the gold index). Each official layout has one parser in its task module (``csqa``,
``winogrande``, ``race``); this module holds the pieces they have in common: reading jsonl with
line-numbered errors, checking fields, finding split files in a directory, the bundled samples and the
hub switch. Every problem is a one-line ``UserError`` naming file, 1-based line and field, because a
bad line should stop a sweep in seconds, not after Ray has scheduled its trials.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Optional

from smctune.errors import UserError
from smctune.catalog.task import DataReport, resolved_data_dir

BUNDLED_SOURCE = "bundled sample"
SPLITS = ("train", "dev")
BUNDLED_FILES = {"train": "train.jsonl", "dev": "dev.jsonl"}


@dataclass(frozen=True)
class Question:
    """One multiple-choice item.

    ``stem`` is the question (CSQA, RACE) or the sentence with its ``_`` blank (WinoGrande);
    ``context`` the passage it is about (RACE's article; empty otherwise)."""

    stem: str
    choices: tuple[str, ...]
    label: int
    context: str = ""


@dataclass(frozen=True)
class TaskData:
    """Parsed splits plus where they came from (for the ``DataReport`` and the run record)."""

    source: str
    splits: dict[str, list[Question]]
    files: dict[str, str]

    def report(self) -> DataReport:
        return DataReport(source=self.source,
                          splits={name: len(qs) for name, qs in self.splits.items()},
                          files=dict(self.files))


def uses_hub(preset: str, data_dir: Optional[str]) -> bool:
    """Only the ``paper`` preset without a data directory reads the full dataset from the hub."""
    return preset == "paper" and data_dir is None


# --------------------------------------------------------------------------------------------------
# fields

def text_field(value: Any, where: str, field: str) -> str:
    """A required non-empty string."""
    if value is None:
        raise UserError(f"{where}: missing field '{field}'")
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: field '{field}' must be a non-empty string, got {value!r:.60}")
    return value


def object_field(record: Any, where: str, what: str = "a JSON object") -> dict:
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected {what}, got {type(record).__name__}")
    return record


def letter_label(value: Any, where: str, field: str, count: int) -> int:
    """'A'.. -> 0.. among ``count`` choices."""
    letter = text_field(value, where, field).strip()
    valid = [chr(ord("A") + i) for i in range(count)]
    if letter not in valid:
        raise UserError(f"{where}: field '{field}' is {letter!r}, not one of {', '.join(valid)}")
    return valid.index(letter)


# --------------------------------------------------------------------------------------------------
# jsonl

def jsonl_records(lines: Iterable[bytes], name: str) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` per non-blank line of raw bytes, so a bad encoding or JSON error is
    reported with its line number; ``where`` is ``"<name> line <n>"``."""
    for number, raw in enumerate(lines, start=1):
        where = f"{name} line {number}"
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"{where}: not UTF-8 ({err.reason} at byte {err.start})") from None
        if not text.strip():
            continue
        try:
            yield where, json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{where}: invalid JSON: {err.msg} at column {err.colno}") from None


def parse_jsonl(lines: Iterable[bytes], name: str, parse_record: Callable[[Any, str], Question]
                ) -> list[Question]:
    questions = [parse_record(record, where) for where, record in jsonl_records(lines, name)]
    if not questions:
        raise UserError(f"{name}: no questions found (empty file)")
    return questions


def open_binary(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except OSError as err:
        raise UserError(f"cannot read data file {path}: {err.strerror}") from None


def parse_jsonl_file(path: Path, parse_record: Callable[[Any, str], Question]) -> list[Question]:
    with open_binary(path) as stream:
        return parse_jsonl(stream, str(path), parse_record)


# --------------------------------------------------------------------------------------------------
# directories and the bundled samples

def data_directory(data_dir: str) -> Path:
    return Path(resolved_data_dir(data_dir))


def find_file(directory: Path, names: Iterable[str]) -> Path:
    """The first existing candidate; a one-line error listing them otherwise."""
    names = tuple(names)
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise UserError(f"missing data file: {directory / names[0]} (looked for {', '.join(names)})")


def load_bundled(folder: str, label: str, parse_record: Callable[[Any, str], Question]) -> TaskData:
    """The sample shipped in ``data/<folder>/{train,dev}.jsonl``, found via importlib.resources (so it
    works from a wheel); every line goes through the task's own record parser."""
    root = resources.files(__package__).joinpath("data", folder)
    splits, files = {}, {}
    for split, name in BUNDLED_FILES.items():
        resource = root.joinpath(name)
        if not resource.is_file():
            raise UserError(f"bundled {label} sample is missing {name}: the installation is incomplete")
        with resource.open("rb") as stream:
            splits[split] = parse_jsonl(stream, str(resource), parse_record)
        files[split] = str(resource)
    return TaskData(source=BUNDLED_SOURCE, splits=splits, files=files)


def hub_report(name: str, splits: dict[str, str], config: Optional[str] = None) -> DataReport:
    """What ``validate_data`` can say about a hub dataset without downloading it (counts unknown)."""
    label = f"{name}:{config}" if config else name
    return DataReport(source=f"hub:{label}", splits={},
                      files={split: f"hub:{label}[{hub}]" for split, hub in splits.items()})


def hub_rows(name: str, splits: dict[str, str], config: Optional[str] = None
             ) -> Iterator[tuple[str, str, list]]:
    """``(split, where_prefix, rows)`` per split of a hub dataset; ``datasets`` is imported here
    because it is heavy and only the ``paper`` preset needs it (network required)."""
    from datasets import load_dataset

    dataset = load_dataset(name, config) if config else load_dataset(name)
    label = f"{name}:{config}" if config else name
    for split, hub_split in splits.items():
        yield split, f"hub:{label}[{hub_split}]", dataset[hub_split]
