"""CommonsenseQA (Talmor et al. 2019) as SMC-Bench fine-tunes it.

Layout: the official jsonl (``{"answerKey", "question": {"stem", "choices": [{"label", "text"}]}}``)
under its official names or fairseq's ``download_cqa_data.sh`` names. Input: each choice is the pair
("Q: " + stem, "A: " + choice), as SMC-Bench's fairseq task builds it. Evaluated on the dev split (the
official test set has no labels). Torch-free at import.
"""
from __future__ import annotations

from typing import Any

from smctune.errors import UserError
from smctune.catalog.task import DataReport

from . import data
from .data import Question, TaskData
from .family import MultipleChoiceTask

NUM_CHOICES = 5
HUB_DATASET = "tau/commonsense_qa"
HUB_SPLITS = {"train": "train", "dev": "validation"}
# Official CSQA names first, then fairseq's download_cqa_data.sh names.
SPLIT_FILES = {
    "train": ("train_rand_split.jsonl", "train.jsonl"),
    "dev": ("dev_rand_split.jsonl", "valid.jsonl", "dev.jsonl"),
}


def parse_record(record: Any, where: str) -> Question:
    """Validate one CSQA record (the official jsonl shape) and turn it into a ``Question``."""
    data.object_field(record, where)
    answer = data.text_field(record.get("answerKey"), where, "answerKey")
    question = record.get("question")
    if question is None:
        raise UserError(f"{where}: missing field 'question'")
    if not isinstance(question, dict):
        raise UserError(f"{where}: field 'question' must be an object, got {type(question).__name__}")
    stem = data.text_field(question.get("stem"), where, "question.stem")
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
        labels.append(data.text_field(choice.get("label"), where, f"{field}.label"))
        texts.append(data.text_field(choice.get("text"), where, f"{field}.text"))
    if len(set(labels)) != NUM_CHOICES:
        raise UserError(f"{where}: field 'question.choices' has duplicate labels {', '.join(labels)}")
    if answer not in labels:
        raise UserError(f"{where}: field 'answerKey' is '{answer}', not one of the choice labels "
                        f"{', '.join(labels)}")
    return Question(stem=stem, choices=tuple(texts), label=labels.index(answer))


class CSQATask(MultipleChoiceTask):
    """5-way multiple choice; accuracy on the dev split."""

    name = "csqa"
    label = "CSQA"
    chance = 0.2
    num_choices = NUM_CHOICES
    bundled = "csqa"
    truncation = "longest_first"
    split_files = SPLIT_FILES     # the official (or fairseq) file names

    def parse_record(self, record: Any, where: str) -> Question:
        return parse_record(record, where)

    def hub_report(self) -> DataReport:
        return data.hub_report(HUB_DATASET, HUB_SPLITS)

    def load_hub(self, name: str = HUB_DATASET) -> TaskData:
        """Hub rows are reshaped into the official jsonl record and go through ``parse_record`` too."""
        splits, files = {}, {}
        for split, where_split, rows in data.hub_rows(name, HUB_SPLITS):
            questions = []
            for index, row in enumerate(rows):
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
        return TaskData(source=f"hub:{name}", splits=splits, files=files)

    def pairs(self, question: Question) -> list[tuple[str, str]]:
        return [(f"Q: {question.stem}", f"A: {choice}") for choice in question.choices]
