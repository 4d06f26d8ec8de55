"""WinoGrande (Sakaguchi et al. 2020), 2-way pronoun-resolution cloze, as a multiple-choice task.

Layout (the official v1.1 zip): ``train_{xs,s,m,l,xl}.jsonl`` and ``dev.jsonl`` with records
``{"qID", "sentence" (one "_" blank), "option1", "option2", "answer": "1"|"2"}``, each optionally
with a ``<name>-labels.lst`` (one label per record) next to it. The training size is the largest
``train_<size>.jsonl`` the directory holds (``xl`` is SMC-Bench's); to train on a smaller size, point
``--data-dir`` at a directory holding only that size (and ``dev.jsonl``). The ``paper`` preset reads
``allenai/winogrande`` (``winogrande_xl``) from the hub.

Input: each choice is the sentence with ``_`` replaced by the option, given to the encoder as two
segments split at the blank, (text before the blank, option + rest of the sentence), the form the
WinoGrande authors used for their RoBERTa baseline. Torch-free at import.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from smctune.errors import UserError
from smctune.catalog.task import DataReport

from . import data
from .data import Question, TaskData
from .family import MultipleChoiceTask

NUM_CHOICES = 2
BLANK = "_"
TRAIN_SIZES = ("xl", "l", "m", "s", "xs")   # preference order when several are present
HUB_DATASET = "allenai/winogrande"
HUB_CONFIG = "winogrande_xl"
HUB_SPLITS = {"train": "train", "dev": "validation"}
SPLIT_FILES = {
    "train": tuple(f"train_{size}.jsonl" for size in TRAIN_SIZES) + ("train.jsonl",),
    "dev": ("dev.jsonl",),
}
ANSWERS = ("1", "2")


def _answer(value: Any, where: str, field: str) -> Optional[str]:
    """'1'/'2' (the official strings; integers are accepted), or None when absent or empty."""
    if value is None or value == "":
        return None
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text not in ANSWERS:
        raise UserError(f"{where}: field '{field}' is {value!r:.40}, not 1 or 2")
    return text


def parse_record(record: Any, where: str, label: Optional[str] = None,
                 label_where: str = "") -> Question:
    """One WinoGrande record; ``label`` is the line of a ``-labels.lst`` file for it, if there is one."""
    data.object_field(record, where)
    sentence = data.text_field(record.get("sentence"), where, "sentence")
    if sentence.count(BLANK) != 1:
        raise UserError(f"{where}: field 'sentence' must contain exactly one '{BLANK}' blank, "
                        f"found {sentence.count(BLANK)}")
    options = tuple(data.text_field(record.get(f"option{i}"), where, f"option{i}")
                    for i in range(1, NUM_CHOICES + 1))
    answer = _answer(record.get("answer"), where, "answer")
    if label is not None:
        if answer is not None and answer != label:
            raise UserError(f"{where}: field 'answer' is {answer} but {label_where} says {label}")
        answer = label
    if answer is None:
        raise UserError(f"{where}: missing field 'answer' (and no -labels.lst file next to it)")
    return Question(stem=sentence, choices=options, label=ANSWERS.index(answer))


def labels_file(path: Path) -> Path:
    """``dev.jsonl`` -> ``dev-labels.lst`` (the official naming)."""
    return path.with_name(f"{path.stem}-labels.lst")


def read_labels(path: Path) -> list[tuple[str, str]]:
    """``(where, label)`` per non-blank line of a ``-labels.lst`` file."""
    with data.open_binary(path) as stream:
        raw_lines = stream.read().split(b"\n")
    labels = []
    for number, raw in enumerate(raw_lines, start=1):
        where = f"{path} line {number}"
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
        except UnicodeDecodeError as err:
            raise UserError(f"{where}: not UTF-8 ({err.reason} at byte {err.start})") from None
        if not text:
            continue
        if text not in ANSWERS:
            raise UserError(f"{where}: label is {text!r:.40}, not 1 or 2")
        labels.append((where, text))
    return labels


def parse_file(path: Path) -> list[Question]:
    """A WinoGrande jsonl file plus its ``-labels.lst`` when that exists (counts must agree)."""
    lst = labels_file(path)
    labels = read_labels(lst) if lst.is_file() else None
    with data.open_binary(path) as stream:
        records = list(data.jsonl_records(stream, str(path)))
    if not records:
        raise UserError(f"{path}: no questions found (empty file)")
    if labels is not None and len(labels) != len(records):
        raise UserError(f"{lst}: has {len(labels)} labels but {path} has {len(records)} records")
    questions = []
    for index, (where, record) in enumerate(records):
        label_where, label = labels[index] if labels is not None else ("", None)
        questions.append(parse_record(record, where, label, label_where))
    return questions


class WinoGrandeTask(MultipleChoiceTask):
    """2-way cloze; accuracy on the dev split (the official test set has no labels)."""

    name = "winogrande"
    label = "WinoGrande"
    chance = 0.5
    num_choices = NUM_CHOICES
    bundled = "winogrande"
    truncation = "longest_first"
    split_files = SPLIT_FILES

    def parse_record(self, record: Any, where: str) -> Question:
        return parse_record(record, where)

    def parse_file(self, path) -> list[Question]:
        return parse_file(path)

    def hub_report(self) -> DataReport:
        return data.hub_report(HUB_DATASET, HUB_SPLITS, HUB_CONFIG)

    def load_hub(self) -> TaskData:
        splits, files = {}, {}
        for split, where_split, rows in data.hub_rows(HUB_DATASET, HUB_SPLITS, HUB_CONFIG):
            splits[split] = [parse_record(dict(row), f"{where_split} row {index + 1}")
                             for index, row in enumerate(rows)]
            files[split] = where_split
        return TaskData(source=f"hub:{HUB_DATASET}:{HUB_CONFIG}", splits=splits, files=files)

    def pairs(self, question: Question) -> list[tuple[str, str]]:
        before, after = question.stem.split(BLANK, 1)
        return [(before.rstrip(), f"{option}{after}".strip()) for option in question.choices]
