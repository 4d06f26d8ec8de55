"""WinoGrande and RACE loaders (bundled samples, official layouts, one-line errors) and input construction.

CSQA's loader has its own file (test_csqa_data.py). The RACE-H tests use small hand-written files in
both official layouts, because no RACE-H data exists offline; ``write_race`` is also what the
acceptance runs use for ``smctune sweep race-h --data-dir``.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from smctune.errors import UserError
from smctune.trainables.commonsense.race import RaceHighTask, RaceMiddleTask, qa_text
from smctune.trainables.commonsense.winogrande import WinoGrandeTask

SHARED = Path(__file__).resolve().parents[1].parent / "shared/data"

# --------------------------------------------------------------------------------------------------
# hand-written RACE-style articles (original text, written for these tests)

RACE_ARTICLES = {
    "train": [
        {"article": "Lena keeps bees on the roof of her school. Every spring she opens the hives to check "
                    "the queens. Last year the bees made forty jars of honey, and the class sold them at "
                    "the town fair to buy new books for the library.",
         "questions": ["Where does Lena keep the bees?", "How many jars of honey did the bees make?",
                       "The money from the honey was used to buy _ .", "When does Lena check the queens?"],
         "options": [["In a garden", "On the school roof", "In the library", "At the fair"],
                     ["Four", "Fourteen", "Forty", "Four hundred"],
                     ["new hives", "books", "a fair ticket", "a roof"],
                     ["Every spring", "Every winter", "At night", "After the fair"]],
         "answers": ["B", "C", "B", "A"]},
        {"article": "The old bridge over the river was closed in May because its wooden boards had become "
                    "weak. Until a new steel bridge is finished, people cross the river by a small ferry "
                    "that leaves every twenty minutes from the north bank.",
         "questions": ["Why was the bridge closed?", "How do people cross the river now?",
                       "The new bridge will be made of _ .", "How often does the ferry leave?"],
         "options": [["It was too busy", "Its boards were weak", "A storm broke it", "It was sold"],
                     ["By ferry", "By train", "They swim", "They walk on the old bridge"],
                     ["wood", "stone", "steel", "rope"],
                     ["Every hour", "Every twenty minutes", "Twice a day", "Only in May"]],
         "answers": ["B", "A", "C", "B"]},
        {"article": "Marco wanted to run a marathon, so he trained for six months. He started with short "
                    "runs and added one kilometre every week. On race day it rained, but he finished in "
                    "just under four hours and gave his medal to his grandmother.",
         "questions": ["How long did Marco train?", "What was the weather on race day?",
                       "Who got Marco's medal?", "Marco finished the race in about _ hours."],
         "options": [["Six weeks", "Six months", "One year", "Four months"],
                     ["Sunny", "Snowy", "Rainy", "Windy"],
                     ["His coach", "His brother", "His grandmother", "Nobody"],
                     ["two", "three", "four", "six"]],
         "answers": ["B", "C", "C", "C"]},
    ],
    "dev": [
        {"article": "A small library in the village opens only on Saturdays. Volunteers run it, and "
                    "children may borrow three books at a time.",
         "questions": ["When is the library open?", "How many books may a child borrow at a time?"],
         "options": [["Every day", "On Saturdays", "On Sundays", "Never"],
                     ["One", "Two", "Three", "Ten"]],
         "answers": ["B", "C"]},
        {"article": "Tom planted tomatoes in April. By August the plants were taller than him and gave "
                    "more fruit than his family could eat.",
         "questions": ["What did Tom plant?", "The plants grew taller than _ ."],
         "options": [["Potatoes", "Tomatoes", "Apples", "Roses"],
                     ["the house", "Tom", "the fence", "the trees"]],
         "answers": ["B", "B"]},
    ],
}


def write_race(root: Path, layout: str, level: str = "high") -> Path:
    """The hand-written articles in one official RACE layout under ``root``:
    ``articles`` = <root>/{train,dev}/<level>/<n>.txt; ``lines`` = <root>/{train,validation}/<level>.jsonl."""
    for split, articles in RACE_ARTICLES.items():
        if layout == "articles":
            folder = root / split / level
            folder.mkdir(parents=True, exist_ok=True)
            for number, article in enumerate(articles, start=1):
                (folder / f"{number}.txt").write_text(json.dumps(dict(article, id=f"{level}{number}.txt")))
        else:
            folder = root / ("validation" if split == "dev" else split)
            folder.mkdir(parents=True, exist_ok=True)
            lines = [json.dumps({"example_id": f"{level}{number}.txt", "article": article["article"],
                                 "answer": answer, "question": question, "options": options})
                     for number, article in enumerate(articles, start=1)
                     for question, options, answer in zip(article["questions"], article["options"],
                                                          article["answers"])]
            (folder / f"{level}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def error_of(task, data_dir, preset: str = "small") -> str:
    with pytest.raises(UserError) as info:
        task.validate_data(preset, None if data_dir is None else str(data_dir))
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------------
# WinoGrande

def wino(answer="1", sentence="The trophy did not fit in the case because _ was too big.", **extra):
    record = {"qID": "q-1", "sentence": sentence, "option1": "the trophy", "option2": "the case", **extra}
    if answer is not None:
        record["answer"] = answer
    return record


def write_wino(tmp_path: Path, train, dev=None, train_name="train_xl.jsonl") -> Path:
    dev = dev if dev is not None else [wino("2")]
    (tmp_path / train_name).write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in train) + "\n")
    (tmp_path / "dev.jsonl").write_text("\n".join(json.dumps(r) for r in dev) + "\n")
    return tmp_path


def test_winogrande_bundled_sample():
    task = WinoGrandeTask()
    assert (task.name, task.chance, task.metric, task.num_choices) == ("winogrande", 0.5, "accuracy", 2)
    report = task.validate_data("smoke", None)
    assert report.source == "bundled sample" and report.splits == {"train": 967, "dev": 300}
    loaded = task.load_local(None)
    for questions in loaded.splits.values():
        assert all(len(q.choices) == 2 and q.label in (0, 1) and q.stem.count("_") == 1 for q in questions)
    dev = loaded.splits["dev"]
    assert dev[0].stem.startswith("Sarah was a much better surgeon than Maria") and dev[0].label == 1
    assert sum(q.label for q in dev) == 150  # the bundled dev half is balanced: majority = chance


def test_winogrande_input_is_the_sentence_with_the_blank_filled():
    task = WinoGrandeTask()
    question = task.load_local(None).splits["dev"][0]
    pairs = task.pairs(question)
    assert len(pairs) == 2
    for (first, second), option in zip(pairs, question.choices):
        assert f"{first} {second}" == question.stem.replace("_", option)
        assert second.startswith(option)
    # a blank followed by punctuation keeps it attached; a blank at the start leaves an empty context
    [(first, second), _] = task.pairs(task.parse_record(wino(sentence="_'s dog barked."), "x"))
    assert (first, second) == ("", "the trophy's dog barked.")


def test_winogrande_official_layout_with_labels_file(tmp_path):
    write_wino(tmp_path, [wino(None), wino(None), wino(None)], dev=[wino("1")], train_name="train_m.jsonl")
    (tmp_path / "train_m-labels.lst").write_text("2\n1\n2\n")
    task = WinoGrandeTask()
    report = task.validate_data("small", str(tmp_path))
    assert report.splits == {"train": 3, "dev": 1} and report.files["train"].endswith("train_m.jsonl")
    assert [q.label for q in task.load_directory(str(tmp_path)).splits["train"]] == [1, 0, 1]


def test_winogrande_takes_the_largest_training_size(tmp_path):
    write_wino(tmp_path, [wino("1")], train_name="train_s.jsonl")
    write_wino(tmp_path, [wino("1"), wino("2")], train_name="train_l.jsonl")
    assert WinoGrandeTask().validate_data("small", str(tmp_path)).files["train"].endswith("train_l.jsonl")


@pytest.mark.parametrize("record, needle", [
    (wino(None), "missing field 'answer'"),
    (wino("3"), "field 'answer' is '3', not 1 or 2"),
    (wino(sentence="No blank here."), "field 'sentence' must contain exactly one '_' blank, found 0"),
    (wino(sentence="_ and _"), "found 2"),
    ({"qID": "x", "sentence": "A _ b", "option1": "c", "answer": "1"}, "missing field 'option2'"),
    (wino(option1=""), "field 'option1' must be a non-empty string"),
    (["not", "an", "object"], "expected a JSON object, got list"),
])
def test_winogrande_malformed_records_name_file_line_and_field(tmp_path, record, needle):
    write_wino(tmp_path, [wino("1"), record])
    message = error_of(WinoGrandeTask(), tmp_path)
    assert message.startswith(f"{tmp_path / 'train_xl.jsonl'} line 2: "), message
    assert needle in message


def test_winogrande_bad_json_and_label_files(tmp_path):
    write_wino(tmp_path, [wino("1"), '{"sentence": '])
    assert error_of(WinoGrandeTask(), tmp_path).startswith(f"{tmp_path / 'train_xl.jsonl'} line 2: invalid JSON")

    write_wino(tmp_path, [wino("1"), wino("2")])
    labels = tmp_path / "train_xl-labels.lst"
    labels.write_text("1\n")
    assert error_of(WinoGrandeTask(), tmp_path) == (f"{labels}: has 1 labels but "
                                                    f"{tmp_path / 'train_xl.jsonl'} has 2 records")
    labels.write_text("1\nx\n")
    assert error_of(WinoGrandeTask(), tmp_path) == f"{labels} line 2: label is 'x', not 1 or 2"
    labels.write_text("1\n1\n")
    assert error_of(WinoGrandeTask(), tmp_path) == (f"{tmp_path / 'train_xl.jsonl'} line 2: field 'answer' "
                                                    f"is 2 but {labels} line 2 says 1")


def test_winogrande_missing_files(tmp_path):
    (tmp_path / "dev.jsonl").write_text(json.dumps(wino()) + "\n")
    message = error_of(WinoGrandeTask(), tmp_path)
    assert message.startswith(f"missing data file: {tmp_path / 'train_xl.jsonl'}") and "train_xs.jsonl" in message
    assert "data directory not found" in error_of(WinoGrandeTask(), tmp_path / "nope")


def test_winogrande_shared_dev_with_its_labels_file(tmp_path):
    """The real official dev.jsonl + dev-labels.lst (all 1267 labels agree with the answers)."""
    if not (SHARED / "winogrande/dev.jsonl").is_file():
        pytest.skip("shared WinoGrande data not present")
    from smctune.trainables.commonsense.winogrande import parse_file

    questions = parse_file(SHARED / "winogrande/dev.jsonl")
    assert len(questions) == 1267 and {q.label for q in questions} == {0, 1}


def test_winogrande_paper_reads_the_xl_hub_config(monkeypatch):
    import types

    calls = []

    def load_dataset(name, config=None):
        calls.append((name, config))
        row = {"sentence": "A _ b.", "option1": "x", "option2": "y", "answer": "2"}
        return {"train": [row, dict(row, answer="1")], "validation": [dict(row, answer="")]}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert WinoGrandeTask().validate_data("paper", None).source == "hub:allenai/winogrande:winogrande_xl"
    with pytest.raises(UserError, match=r"hub:allenai/winogrande:winogrande_xl\[validation\] row 1: "
                                        r"missing field 'answer'"):
        WinoGrandeTask().load_hub()
    assert calls == [("allenai/winogrande", "winogrande_xl")]


# --------------------------------------------------------------------------------------------------
# RACE

def test_race_m_bundled_sample():
    task = RaceMiddleTask()
    assert (task.name, task.chance, task.num_choices) == ("race-m", 0.25, 4)
    report = task.validate_data("small", None)
    assert report.source == "bundled sample" and report.splits == {"train": 1436, "dev": 200}
    loaded = task.load_local(None)
    for questions in loaded.splits.values():
        assert all(len(q.choices) == 4 and 0 <= q.label <= 3 and q.context for q in questions)
    assert {q.label for q in loaded.splits["dev"]} == {0, 1, 2, 3}
    train_articles = {q.context for q in loaded.splits["train"]}
    assert not train_articles & {q.context for q in loaded.splits["dev"]}  # two official splits


@pytest.mark.parametrize("preset", ["smoke", "small"])
def test_race_h_has_no_bundled_sample(preset):
    message = error_of(RaceHighTask(), None, preset)
    assert message.startswith("no bundled RACE-H sample exists")
    assert "--data-dir" in message and "train/high/*.txt" in message and "validation/high.jsonl" in message


@pytest.mark.parametrize("layout", ["articles", "lines"])
def test_race_h_both_official_layouts(tmp_path, layout):
    write_race(tmp_path, layout)
    task = RaceHighTask()
    report = task.validate_data("smoke", str(tmp_path))
    assert report.splits == {"train": 12, "dev": 4}
    loaded = task.load_directory(str(tmp_path))
    assert [q.label for q in loaded.splits["train"][:4]] == [1, 2, 1, 0]
    assert loaded.splits["dev"][1].stem == "How many books may a child borrow at a time?"
    assert loaded.splits["train"][4].context.startswith("The old bridge")
    # the same directory holds no middle-school data
    assert "missing RACE-M train data" in error_of(RaceMiddleTask(), tmp_path)


def test_race_article_files_in_numeric_order(tmp_path):
    folder = tmp_path / "train" / "high"
    write_race(tmp_path, "articles")
    first = json.loads((folder / "1.txt").read_text())
    (folder / "10.txt").write_text(json.dumps(dict(first, article="Article ten.")))
    questions = RaceHighTask().load_directory(str(tmp_path)).splits["train"]
    assert [q.context for q in questions[::4]][-1] == "Article ten."  # 10.txt after 2.txt and 3.txt


def test_race_m_shared_data_in_the_line_layout(tmp_path):
    """The real RACE-M export, laid out as <root>/{train,validation}/middle.jsonl."""
    source = SHARED / "race"
    if not (source / "validation/middle.jsonl").is_file():
        pytest.skip("shared RACE data not present")
    (tmp_path / "train").mkdir()
    (tmp_path / "train/middle.jsonl").symlink_to(source / "test/middle.jsonl")
    (tmp_path / "validation").symlink_to(source / "validation")
    assert RaceMiddleTask().validate_data("small", str(tmp_path)).splits == {"train": 1436, "dev": 1436}


def _article(**overrides):
    return dict(RACE_ARTICLES["train"][0], **overrides)


@pytest.mark.parametrize("record, needle", [
    (_article(answers=["B", "C", "B"]), "fields 'questions', 'options' and 'answers' must have the same "
                                         "length, got 4, 4 and 3"),
    (_article(answers=["B", "C", "E", "A"]), "field 'answers[2]' is 'E', not one of A, B, C, D"),
    (_article(options=[["a", "b", "c", "d"]] * 3 + [["a", "b", "c"]]),
     "field 'options[3]' must list exactly 4 options, got 3"),
    (_article(questions=["q", 7, "q", "q"]), "field 'questions[1]' must be a string, got int"),
    ({k: v for k, v in _article().items() if k != "article"}, "missing field 'article'"),
    (_article(questions=[], options=[], answers=[]), "field 'questions' is empty"),
])
def test_race_malformed_article_files_name_file_and_field(tmp_path, record, needle):
    write_race(tmp_path, "articles")
    bad = tmp_path / "train" / "high" / "2.txt"
    bad.write_text(json.dumps(record))
    message = error_of(RaceHighTask(), tmp_path)
    assert message.startswith(f"{bad}: ") and needle in message, message


def test_race_invalid_json_article_names_line(tmp_path):
    write_race(tmp_path, "articles")
    bad = tmp_path / "dev" / "high" / "1.txt"
    bad.write_text('{"article": "x",\n "questions": [}')
    assert error_of(RaceHighTask(), tmp_path).startswith(f"{bad} line 2: invalid JSON")


@pytest.mark.parametrize("change, needle", [
    (lambda r: r.pop("answer"), "missing field 'answer'"),
    (lambda r: r.update(options=["a", "b"]), "field 'options' must list exactly 4 options, got 2"),
    (lambda r: r.update(article=""), "field 'article' must be a non-empty string"),
    (lambda r: r.update(answer="a"), "field 'answer' is 'a', not one of A, B, C, D"),
])
def test_race_malformed_lines_name_file_line_and_field(tmp_path, change, needle):
    write_race(tmp_path, "lines")
    path = tmp_path / "validation" / "high.jsonl"
    lines = path.read_text().splitlines()
    record = json.loads(lines[2])
    change(record)
    lines[2] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    message = error_of(RaceHighTask(), tmp_path)
    assert message.startswith(f"{path} line 3: ") and needle in message, message


def test_race_missing_split_lists_both_layouts(tmp_path):
    write_race(tmp_path, "lines")
    (tmp_path / "validation" / "high.jsonl").unlink()
    message = error_of(RaceHighTask(), tmp_path)
    assert message.startswith(f"missing RACE-H dev data under {tmp_path}")
    assert str(tmp_path / "dev" / "high") + "/*.txt" in message
    assert str(tmp_path / "validation" / "high.jsonl") in message


def test_race_input_pairs_article_with_question_and_option():
    task = RaceMiddleTask()
    question = task.load_local(None).splits["dev"][0]
    pairs = task.pairs(question)
    assert len(pairs) == 4
    for (article, qa), option in zip(pairs, question.choices):
        assert article == question.context
        assert option in qa
    # a cloze question gets the option in its blank(s), others get it appended (fairseq's RACE recipe)
    assert qa_text("The tree _ with the tiger because _ .", "stays") == \
        "The tree stays with the tiger because stays ."
    assert qa_text("What is the best title?", "Bees") == "What is the best title? Bees"


def test_race_paper_reads_the_level_config_from_the_hub(monkeypatch):
    import types

    calls = []
    row = {"example_id": "high1.txt", "article": "A.", "question": "Q?", "options": list("abcd"), "answer": "D"}

    def load_dataset(name, config=None):
        calls.append((name, config))
        return {"train": [row], "validation": [dict(row, options=["a"])]}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert RaceHighTask().validate_data("paper", None).files["dev"] == "hub:ehovy/race:high[validation]"
    with pytest.raises(UserError, match=r"hub:ehovy/race:high\[validation\] row 1: field 'options' must "
                                        r"list exactly 4 options, got 1"):
        RaceHighTask().load_hub()
    assert calls == [("ehovy/race", "high")]


def test_validate_data_is_torch_free():
    code = ("import sys; from smctune.trainables.commonsense.race import RaceMiddleTask; "
            "from smctune.trainables.commonsense.winogrande import WinoGrandeTask; "
            "RaceMiddleTask().validate_data('smoke', None); WinoGrandeTask().validate_data('smoke', None); "
            "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
