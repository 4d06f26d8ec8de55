"""CommonsenseQA files -> validated questions, without torch.

There is one parser (``parse_record``) for every source (bundled sample, a user's data directory, the
hub dataset), so what ``validate_data`` accepts in the driver is exactly what ``build`` tokenizes in the
worker. Every problem is a one-line ``UserError`` naming file, 1-based line and field, because a bad
line should stop a sweep in seconds, not after Ray has scheduled its trials.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any, Iterable, Optional

from smctune.errors import UserError
from smctune.task import DataReport

NUM_CHOICES = 5
HUB_DATASET = "tau/commonsense_qa"
HUB_SPLITS = {"train": "train", "dev": "validation"}
BUNDLED_SOURCE = "bundled sample"
# Official CSQA names first, then fairseq's download_cqa_data.sh names.
SPLIT_FILES = {
    "train": ("train_rand_split.jsonl", "train.jsonl"),
    "dev": ("dev_rand_split.jsonl", "valid.jsonl", "dev.jsonl"),
}
BUNDLED_FILES = {"train": "train.jsonl", "dev": "dev.jsonl"}


@dataclass(frozen=True)
class Question:
    """One multiple-choice question: the stem, the choice texts in label order, the gold index."""

    stem: str
    choices: tuple[str, ...]
    label: int


@dataclass(frozen=True)
class CSQAData:
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


def hub_report() -> DataReport:
    """What ``validate_data`` can say about the hub dataset without downloading it (counts unknown)."""
    return DataReport(source=f"hub:{HUB_DATASET}", splits={},
                      files={split: f"hub:{HUB_DATASET}[{hub}]" for split, hub in HUB_SPLITS.items()})


# --------------------------------------------------------------------------------------------------
# one record

def _text(value: Any, where: str, field: str) -> str:
    if value is None:
        raise UserError(f"{where}: missing field '{field}'")
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: field '{field}' must be a non-empty string, got {value!r:.60}")
    return value


def parse_record(record: Any, where: str) -> Question:
    """Validate one CSQA record (the official jsonl shape) and turn it into a ``Question``."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(record).__name__}")
    answer = _text(record.get("answerKey"), where, "answerKey")
    question = record.get("question")
    if question is None:
        raise UserError(f"{where}: missing field 'question'")
    if not isinstance(question, dict):
        raise UserError(f"{where}: field 'question' must be an object, got {type(question).__name__}")
    stem = _text(question.get("stem"), where, "question.stem")
    choices = question.get("choices")
    if choices is None:
        raise UserError(f"{where}: missing field 'question.choices'")
    if not isinstance(choices, list) or len(choices) != NUM_CHOICES:
        got = f"{len(choices)}" if isinstance(choices, list) else type(choices).__name__
        raise UserError(f"{where}: field 'question.choices' must list exactly {NUM_CHOICES} choices, got {got}")
    labels, texts = [], []
    for i, choice in enumerate(choices):
        field = f"question.choices[{i}]"
        if not isinstance(choice, dict):
            raise UserError(f"{where}: field '{field}' must be an object with 'label' and 'text'")
        labels.append(_text(choice.get("label"), where, f"{field}.label"))
        texts.append(_text(choice.get("text"), where, f"{field}.text"))
    if len(set(labels)) != NUM_CHOICES:
        raise UserError(f"{where}: field 'question.choices' has duplicate labels {', '.join(labels)}")
    if answer not in labels:
        raise UserError(f"{where}: field 'answerKey' is '{answer}', not one of the choice labels "
                        f"{', '.join(labels)}")
    return Question(stem=stem, choices=tuple(texts), label=labels.index(answer))


# --------------------------------------------------------------------------------------------------
# jsonl files

def parse_lines(lines: Iterable[bytes], name: str) -> list[Question]:
    """Parse jsonl given as raw byte lines (so a bad encoding is reported with its line number)."""
    questions = []
    for number, raw in enumerate(lines, start=1):
        where = f"{name} line {number}"
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"{where}: not UTF-8 ({err.reason} at byte {err.start})") from None
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{where}: invalid JSON: {err.msg} at column {err.colno}") from None
        questions.append(parse_record(record, where))
    if not questions:
        raise UserError(f"{name}: no questions found (empty file)")
    return questions


def _parse_stream(stream: IO[bytes], name: str) -> list[Question]:
    with stream:
        return parse_lines(stream, name)


def parse_file(path: Path) -> list[Question]:
    try:
        stream = path.open("rb")
    except OSError as err:
        raise UserError(f"cannot read data file {path}: {err.strerror}") from None
    return _parse_stream(stream, str(path))


def find_split_file(directory: Path, split: str) -> Path:
    """The first existing candidate name for ``split``; a one-line error listing them otherwise."""
    names = SPLIT_FILES[split]
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise UserError(f"missing data file: {directory / names[0]} (looked for {', '.join(names)})")


def load_directory(data_dir: str) -> CSQAData:
    """A user's CSQA directory in the official (or fairseq) layout."""
    directory = Path(data_dir).expanduser()
    if not directory.exists():
        raise UserError(f"data directory not found: {data_dir}")
    if not directory.is_dir():
        raise UserError(f"data directory is not a directory: {data_dir}")
    files = {split: find_split_file(directory, split) for split in SPLIT_FILES}
    return CSQAData(source=str(directory),
                    splits={split: parse_file(path) for split, path in files.items()},
                    files={split: str(path) for split, path in files.items()})


def load_bundled() -> CSQAData:
    """The sample shipped inside the package, found via importlib.resources (works from a wheel)."""
    root = resources.files(__package__).joinpath("data", "csqa")
    splits, files = {}, {}
    for split, name in BUNDLED_FILES.items():
        resource = root.joinpath(name)
        if not resource.is_file():
            raise UserError(f"bundled CSQA sample is missing {name}: the installation is incomplete")
        splits[split] = _parse_stream(resource.open("rb"), str(resource))
        files[split] = str(resource)
    return CSQAData(source=BUNDLED_SOURCE, splits=splits, files=files)


def load_local(data_dir: Optional[str]) -> CSQAData:
    """The bundled sample when ``data_dir`` is None, else the directory."""
    return load_bundled() if data_dir is None else load_directory(data_dir)


def load_hub(name: str = HUB_DATASET) -> CSQAData:
    """The full dataset from the hub (``paper`` preset). Needs network; ``datasets`` imported here.

    Hub rows are reshaped into the official jsonl record and go through ``parse_record`` too."""
    from datasets import load_dataset  # heavy, and only the paper preset needs it

    dataset = load_dataset(name)
    splits, files = {}, {}
    for split, hub_split in HUB_SPLITS.items():
        where_split = f"hub:{name}[{hub_split}]"
        questions = []
        for index, row in enumerate(dataset[hub_split]):
            choices = row.get("choices") or {}
            record = {
                "answerKey": row.get("answerKey"),
                "question": {
                    "stem": row.get("question"),
                    "choices": [{"label": label, "text": text} for label, text in
                                zip(choices.get("label") or [], choices.get("text") or [])],
                },
            }
            questions.append(parse_record(record, f"{where_split} row {index + 1}"))
        splits[split], files[split] = questions, where_split
    return CSQAData(source=f"hub:{name}", splits=splits, files=files)
