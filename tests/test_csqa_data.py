"""CSQA data loading: bundled sample, user directories, one-line errors, and the torch-free import."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from smctune.errors import UserError
from smctune.trainables.commonsense.csqa import CSQATask

SHARED_CSQA = Path(__file__).parents[1].parent / "shared/data/commonsenseqa"


def record(answer="B", n_choices=5, **question_overrides):
    labels = "ABCDEFG"[:n_choices]
    question = {"stem": "Where do you keep milk?",
                "choices": [{"label": lab, "text": f"place {lab}"} for lab in labels]}
    question.update(question_overrides)
    rec = {"id": "x", "question": question}
    if answer is not None:
        rec["answerKey"] = answer
    return rec


def write_dir(tmp_path: Path, train_lines, dev_lines=None, train_name="train_rand_split.jsonl",
              dev_name="dev_rand_split.jsonl") -> Path:
    dev_lines = dev_lines if dev_lines is not None else [json.dumps(record())]
    if train_lines is not None:
        (tmp_path / train_name).write_text("\n".join(train_lines) + "\n")
    (tmp_path / dev_name).write_text("\n".join(dev_lines) + "\n")
    return tmp_path


def error_of(tmp_path: Path, preset: str = "small") -> str:
    with pytest.raises(UserError) as info:
        CSQATask().validate_data(preset, str(tmp_path))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_task_attributes():
    assert (CSQATask.name, CSQATask.chance, CSQATask.metric) == ("csqa", 0.2, "accuracy")


def test_bundled_sample_parses():
    report = CSQATask().validate_data("smoke", None)
    assert report.source == "bundled sample"
    assert report.splits == {"train": 1000, "dev": 300}
    loaded = CSQATask().load_local(None)
    for questions in loaded.splits.values():
        assert all(len(q.choices) == 5 and 0 <= q.label <= 4 for q in questions)
        assert all(q.stem and all(q.choices) for q in questions)
    # every label occurs, so the sample is not degenerate
    assert {q.label for q in loaded.splits["train"]} == {0, 1, 2, 3, 4}
    first = loaded.splits["train"][0]
    assert first.choices[0] == "ignore" and first.label == 0  # first line of train_rand_split.jsonl


def test_paper_preset_without_data_dir_points_to_hub():
    report = CSQATask().validate_data("paper", None)
    assert report.source == "hub:tau/commonsense_qa"


def test_directory_in_fairseq_layout(tmp_path):
    write_dir(tmp_path, [json.dumps(record("C")), "", json.dumps(record("E"))],
              train_name="train.jsonl", dev_name="valid.jsonl")
    report = CSQATask().validate_data("small", str(tmp_path))
    assert report.splits == {"train": 2, "dev": 1}  # the blank line is skipped
    assert report.files["dev"].endswith("valid.jsonl")
    assert [q.label for q in CSQATask().load_directory(str(tmp_path)).splits["train"]] == [2, 4]


def test_missing_file_names_the_file(tmp_path):
    write_dir(tmp_path, None)
    message = error_of(tmp_path)
    assert message.startswith(f"missing data file: {tmp_path / 'train_rand_split.jsonl'}")
    assert "train.jsonl" in message


def test_missing_directory(tmp_path):
    message = error_of(tmp_path / "nope")
    assert "data directory not found" in message and "nope" in message


def test_malformed_json_names_file_and_line(tmp_path):
    good = json.dumps(record())
    write_dir(tmp_path, [good, good, '{"answerKey": "A", "question": {'])
    message = error_of(tmp_path)
    assert message.startswith(f"{tmp_path / 'train_rand_split.jsonl'} line 3: invalid JSON")


def test_missing_answer_key_names_field(tmp_path):
    write_dir(tmp_path, [json.dumps(record()), json.dumps(record(answer=None))])
    assert error_of(tmp_path) == (f"{tmp_path / 'train_rand_split.jsonl'} line 2: "
                                  "missing field 'answerKey'")


def test_wrong_number_of_choices(tmp_path):
    write_dir(tmp_path, [json.dumps(record())], dev_lines=[json.dumps(record(n_choices=4))])
    message = error_of(tmp_path)
    assert message.startswith(f"{tmp_path / 'dev_rand_split.jsonl'} line 1:")
    assert "'question.choices'" in message and "exactly 5" in message and "got 4" in message


@pytest.mark.parametrize("rec, field", [
    (record(answer="F"), "answerKey"),
    (record(stem=""), "question.stem"),
    ({"answerKey": "A"}, "question"),
    (record(choices=[{"label": lab} for lab in "ABCDE"]), "question.choices[0].text"),
])
def test_invalid_fields_are_named(tmp_path, rec, field):
    write_dir(tmp_path, [json.dumps(rec)])
    message = error_of(tmp_path)
    assert message.startswith(f"{tmp_path / 'train_rand_split.jsonl'} line 1: ") and f"'{field}'" in message


def test_full_shared_data():
    if not SHARED_CSQA.is_dir():
        pytest.skip(f"shared CSQA data not present at {SHARED_CSQA}")
    report = CSQATask().validate_data("small", str(SHARED_CSQA))
    assert report.splits == {"train": 2000, "dev": 1221}
    assert report.files["train"].endswith("train_rand_split.jsonl")
    # data_dir wins over the hub for the paper preset as well
    assert CSQATask().validate_data("paper", str(SHARED_CSQA)).splits["dev"] == 1221


def test_validate_data_is_torch_free():
    code = ("import sys; from smctune.trainables.commonsense.csqa import CSQATask; "
            "CSQATask().validate_data('smoke', None); "
            "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hub_rows_go_through_the_same_parser(monkeypatch):
    """The paper preset's hub path, with ``datasets.load_dataset`` faked (no network here)."""
    import types

    def row(answer):
        return {"id": "h", "question": "Where is the sky?", "question_concept": "sky",
                "choices": {"label": list("ABCDE"), "text": ["up", "down", "left", "right", "in"]},
                "answerKey": answer}

    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda name: {"train": [row("A"), row("D")], "validation": [row("E")]}
    monkeypatch.setitem(sys.modules, "datasets", fake)
    loaded = CSQATask().load_hub()
    assert loaded.source == "hub:tau/commonsense_qa"
    assert [q.label for q in loaded.splits["train"]] == [0, 3]
    assert loaded.splits["dev"][0].choices == ("up", "down", "left", "right", "in")

    fake.load_dataset = lambda name: {"train": [row("A"), row("")], "validation": [row("E")]}
    with pytest.raises(UserError, match=r"hub:tau/commonsense_qa\[train\] row 2: .*'answerKey'"):
        CSQATask().load_hub()
