"""RACE (Lai et al. 2017) reading comprehension, middle-school (``race-m``) and high-school (``race-h``)
levels as two tasks, 4-way multiple choice.

Layouts (``--data-dir`` is the RACE root; each split may use either):
- the original release: one JSON file per article, ``<root>/<split>/<level>/<n>.txt`` with
  ``{"article", "questions": [...], "options": [[4 texts], ...], "answers": ["A".."D", ...], "id"}``,
  splits ``train``, ``dev`` (``test``);
- the one-question-per-line export (HuggingFace / OpenCompass): ``<root>/<split>/<level>.jsonl`` with
  ``{"example_id", "article", "question", "options": [4 texts], "answer": "A".."D"}``, splits
  ``train``, ``validation`` (or ``dev``).
The ``paper`` preset reads ``ehovy/race`` (config ``middle`` / ``high``) from the hub. Each task trains
on its own level's train split and is evaluated on that level's dev split.

Input, as fairseq's RACE recipe builds it: per option the pair (article, question + option), where a
question with ``_`` blanks gets the option in the blanks instead of appended. Only the article is
truncated to the model's length; question and option are kept (``features``, truncation ``first``).
Torch-free at import.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

from smctune.errors import UserError
from smctune.catalog.task import DataReport

from . import data
from .data import Question, TaskData
from .family import MultipleChoiceTask

NUM_CHOICES = 4
BLANK = "_"
HUB_DATASET = "ehovy/race"
HUB_SPLITS = {"train": "train", "dev": "validation"}
# Directory names of each split in the original release and in the per-line export.
ARTICLE_SPLITS = {"train": ("train",), "dev": ("dev",)}
LINE_SPLITS = {"train": ("train",), "dev": ("validation", "dev")}
# Official training-set sizes (questions), for the paper preset's "3 epochs" in steps.
TRAIN_QUESTIONS = {"middle": 25421, "high": 62445}


def _text(value: Any, where: str, field: str) -> str:
    """A string field; RACE questions and options are kept even if empty, only the type is checked."""
    if value is None:
        raise UserError(f"{where}: missing field '{field}'")
    if not isinstance(value, str):
        raise UserError(f"{where}: field '{field}' must be a string, got {type(value).__name__}")
    return value


def _question(article: str, question: Any, options: Any, answer: Any, where: str,
              fields: tuple[str, str, str]) -> Question:
    q_field, o_field, a_field = fields
    stem = _text(question, where, q_field)
    if options is None:
        raise UserError(f"{where}: missing field '{o_field}'")
    if not isinstance(options, list) or len(options) != NUM_CHOICES:
        got = str(len(options)) if isinstance(options, list) else type(options).__name__
        raise UserError(f"{where}: field '{o_field}' must list exactly {NUM_CHOICES} options, got {got}")
    texts = tuple(_text(option, where, f"{o_field}[{i}]") for i, option in enumerate(options))
    label = data.letter_label(answer, where, a_field, NUM_CHOICES)
    return Question(stem=stem, choices=texts, label=label, context=article)


def parse_line_record(record: Any, where: str) -> Question:
    """One record of the one-question-per-line export."""
    data.object_field(record, where)
    article = data.text_field(record.get("article"), where, "article")
    return _question(article, record.get("question"), record.get("options"), record.get("answer"),
                     where, ("question", "options", "answer"))


def parse_article_record(record: Any, where: str) -> list[Question]:
    """One article of the original release, with all its questions."""
    data.object_field(record, where)
    article = data.text_field(record.get("article"), where, "article")
    lists = {}
    for field in ("questions", "options", "answers"):
        value = record.get(field)
        if value is None:
            raise UserError(f"{where}: missing field '{field}'")
        if not isinstance(value, list):
            raise UserError(f"{where}: field '{field}' must be a list, got {type(value).__name__}")
        lists[field] = value
    counts = {field: len(value) for field, value in lists.items()}
    if len(set(counts.values())) != 1:
        raise UserError(f"{where}: fields 'questions', 'options' and 'answers' must have the same length, "
                        f"got {counts['questions']}, {counts['options']} and {counts['answers']}")
    if not counts["questions"]:
        raise UserError(f"{where}: field 'questions' is empty")
    return [_question(article, q, o, a, where, (f"questions[{i}]", f"options[{i}]", f"answers[{i}]"))
            for i, (q, o, a) in enumerate(zip(lists["questions"], lists["options"], lists["answers"]))]


def _natural_key(path: Path) -> tuple:
    """1.txt, 2.txt, ..., 10.txt (the release's numeric names), then anything else by name."""
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.name)


def parse_article_dir(directory: Path) -> list[Question]:
    """Every ``*.txt`` article file of one split/level folder, in numeric order."""
    files = sorted((p for p in directory.iterdir() if p.is_file() and p.suffix == ".txt"), key=_natural_key)
    if not files:
        raise UserError(f"{directory}: no article files (*.txt) found")
    questions = []
    for path in files:
        with data.open_binary(path) as stream:
            raw = stream.read()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise UserError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") from None
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{path} line {err.lineno}: invalid JSON: {err.msg} at column {err.colno}") from None
        questions.extend(parse_article_record(record, str(path)))
    return questions


def qa_text(question: str, option: str) -> str:
    """The second segment: the option in the question's blanks, or appended to the question."""
    if BLANK in question:
        return re.sub(r"_+", lambda _: option, question).strip()
    return f"{question} {option}".strip()


class RaceTask(MultipleChoiceTask):
    """4-way reading comprehension at one school level; accuracy on that level's dev split."""

    level: str = ""
    chance = 0.25
    num_choices = NUM_CHOICES
    truncation = "first"

    def parse_record(self, record: Any, where: str) -> Question:
        return parse_line_record(record, where)

    def _split(self, root: Path, split: str) -> tuple[list[Question], str]:
        for name in ARTICLE_SPLITS[split]:
            folder = root / name / self.level
            if folder.is_dir():
                return parse_article_dir(folder), str(folder)
        for name in LINE_SPLITS[split]:
            path = root / name / f"{self.level}.jsonl"
            if path.is_file():
                return data.parse_jsonl_file(path, parse_line_record), str(path)
        tried = [str(root / n / self.level) + "/*.txt" for n in ARTICLE_SPLITS[split]] + \
                [str(root / n / f"{self.level}.jsonl") for n in LINE_SPLITS[split]]
        raise UserError(f"missing {self.label} {split} data under {root} (looked for {', '.join(tried)})")

    def load_directory(self, data_dir: str) -> TaskData:
        root = data.data_directory(data_dir)
        splits, files = {}, {}
        for split in data.SPLITS:
            splits[split], files[split] = self._split(root, split)
        return TaskData(source=str(root), splits=splits, files=files)

    def hub_report(self) -> DataReport:
        return data.hub_report(HUB_DATASET, HUB_SPLITS, self.level)

    def load_hub(self) -> TaskData:
        splits, files = {}, {}
        for split, where_split, rows in data.hub_rows(HUB_DATASET, HUB_SPLITS, self.level):
            splits[split] = [parse_line_record(dict(row), f"{where_split} row {index + 1}")
                             for index, row in enumerate(rows)]
            files[split] = where_split
        return TaskData(source=f"hub:{HUB_DATASET}:{self.level}", splits=splits, files=files)

    def pairs(self, question: Question) -> list[tuple[str, str]]:
        return [(question.context, qa_text(question.stem, option)) for option in question.choices]


class RaceMiddleTask(RaceTask):
    name = "race-m"
    label = "RACE-M"
    level = "middle"
    bundled = "race-m"


class RaceHighTask(RaceTask):
    name = "race-h"
    label = "RACE-H"
    level = "high"
    bundled: Optional[str] = None  # no RACE-H data was available to build a sample from

    def no_bundled_sample(self) -> UserError:
        return UserError("no bundled RACE-H sample exists (RACE-H was not available offline); pass "
                         "--data-dir with RACE-H in the original layout (<dir>/train/high/*.txt, "
                         "<dir>/dev/high/*.txt) or the one-question-per-line export "
                         "(<dir>/train/high.jsonl, <dir>/validation/high.jsonl)")
