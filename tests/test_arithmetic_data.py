"""Arithmetic loaders: the three layouts (bundled sample and full data), folds, one-line errors."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from smctune.errors import UserError
from smctune.catalog.task import DataReport
from smctune.trainables.arithmetic.data import (BUNDLED_DIR, BUNDLED_SOURCE, FOLDS, LAYOUTS,
                                                answer_mismatches, available_folds, load_split,
                                                read_csv)

SHARED = Path(__file__).resolve().parents[1].parent / "shared/data/arithmetic"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(),
                                  reason=f"full arithmetic data not present at {SHARED}")

HEADER = "Question,Numbers,Equation,Answer,group_nums,Body,Ques_Statement\n"
GOOD = ('tom has number0 apples and number1 pears . how many fruits ?,3.0 5.0,+ number0 number1,8,'
        '"[1, 2, 3, 5, 6]",tom has number0 apples and number1 pears .,how many fruits ?\n')


# --------------------------------------------------------------------------------------------------
# registry and bundled sample

def test_registry():
    assert FOLDS == {"mawps": 5, "asdiv-a": 5, "svamp": 0}
    assert set(LAYOUTS) == set(FOLDS)


@pytest.mark.parametrize("dataset, fold, counts", [
    ("mawps", 0, (1537, 384)), ("asdiv-a", 0, (979, 238)), ("svamp", None, (1000, 300)),
])
def test_bundled_sample_loads(dataset, fold, counts):
    data = load_split(dataset, None, fold)
    assert (len(data.train), len(data.dev)) == counts
    assert data.source == BUNDLED_SOURCE
    report = data.report()
    assert isinstance(report, DataReport)
    assert report.splits == {"train": counts[0], "dev": counts[1]}
    assert set(report.files) == {"train", "dev"}
    assert all(Path(f).is_file() and Path(f).is_relative_to(BUNDLED_DIR) for f in report.files.values())


def test_bundled_folds():
    assert available_folds("mawps", None) == (0,)
    assert available_folds("asdiv-a", None) == (0,)
    assert available_folds("svamp", None) == ()


def test_parsed_problem_fields(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(HEADER + GOOD)
    (problem,) = read_csv(path)
    assert problem.text[:3] == ("tom", "has", "number0")
    assert problem.numbers == (3.0, 5.0)
    assert problem.equation == ("+", "number0", "number1")
    assert problem.answer == 8.0
    assert problem.group_nums == (1, 2, 3, 5, 6)
    assert problem.number_positions == (2, 5)
    assert problem.source == f"{path}:1"


# --------------------------------------------------------------------------------------------------
# full data (shared snapshot)

REAL_COUNTS = {
    "mawps": [(1537, 384)] * 5,
    "asdiv-a": [(979, 238), (979, 238), (979, 238), (980, 237), (951, 266)],
}


@needs_shared
@pytest.mark.parametrize("dataset", ["mawps", "asdiv-a"])
def test_real_cross_validation_layouts(dataset):
    assert available_folds(dataset, str(SHARED)) == (0, 1, 2, 3, 4)
    mismatched = 0
    for fold, counts in enumerate(REAL_COUNTS[dataset]):
        data = load_split(dataset, str(SHARED), fold)
        assert (len(data.train), len(data.dev)) == counts
        assert data.source == str(SHARED)
        assert data.files["dev"] == str(SHARED / LAYOUTS[dataset].folder / f"fold{fold}" / "dev.csv")
        mismatched += len(answer_mismatches(data.dev))
    # each problem is in exactly one dev fold: 14 MAWPS and 1 ASDiv-A problems have an Answer that
    # differs from their equation's value (documented in data.py)
    assert mismatched == {"mawps": 14, "asdiv-a": 1}[dataset]


@needs_shared
def test_real_svamp_layout():
    assert available_folds("svamp", str(SHARED)) == ()
    data = load_split("svamp", str(SHARED))
    assert (len(data.train), len(data.dev)) == (3138, 1000)
    assert (len(answer_mismatches(data.train)), len(answer_mismatches(data.dev))) == (15, 0)


def copy_bundled_svamp(root: Path) -> None:
    shutil.copytree(BUNDLED_DIR / "mawps-asdiv-a_svamp", root / "mawps-asdiv-a_svamp")


def test_data_dir_may_be_the_repo_or_its_data_folder(tmp_path):
    copy_bundled_svamp(tmp_path / "repo" / "data")
    for directory in (tmp_path / "repo", tmp_path / "repo" / "data"):
        data = load_split("svamp", str(directory))
        assert (len(data.train), len(data.dev)) == (1000, 300)
        assert data.source == str(directory)


# --------------------------------------------------------------------------------------------------
# directory and fold errors

def one_line_error(call, *fragments) -> str:
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_directory_folder_and_file(tmp_path):
    one_line_error(lambda: load_split("svamp", str(tmp_path / "nope")), "not found", "nope")
    one_line_error(lambda: load_split("svamp", str(tmp_path)),
                   str(tmp_path / "mawps-asdiv-a_svamp"))
    fold0 = tmp_path / "cv_mawps" / "fold0"
    fold0.mkdir(parents=True)
    shutil.copy(BUNDLED_DIR / "cv_mawps/fold0/train.csv", fold0 / "train.csv")
    one_line_error(lambda: load_split("mawps", str(tmp_path), 0), str(fold0 / "dev.csv"))
    assert available_folds("mawps", str(tmp_path)) == ()


@pytest.mark.parametrize("dataset, fold, fragments", [
    ("mawps", None, ("mawps", "0, 1, 2, 3, 4")),
    ("mawps", 5, ("fold 5", "0, 1, 2, 3, 4")),
    ("asdiv-a", -1, ("fold -1", "0, 1, 2, 3, 4")),
    ("mawps", True, ("0, 1, 2, 3, 4",)),
    ("svamp", 0, ("svamp", "no folds")),
    ("mawps", 3, ("fold 3", "bundled", "0")),
    ("gsm8k", None, ("gsm8k", "asdiv-a, mawps, svamp")),
])
def test_fold_and_dataset_errors(dataset, fold, fragments):
    one_line_error(lambda: load_split(dataset, None, fold), *fragments)


# --------------------------------------------------------------------------------------------------
# malformed rows

BAD_ROWS = {
    "too few fields": ('tom has number0 apples . how many ?,3.0,number0\n', "column 'Answer'"),
    "bad Numbers": (GOOD.replace(",3.0 5.0,", ",3.0 five,"), "column 'Numbers'"),
    "bad Answer": (GOOD.replace(",8,", ",eight,"), "column 'Answer'"),
    "nan Answer": (GOOD.replace(",8,", ",nan,"), "column 'Answer'"),
    "bad group_nums": (GOOD.replace('"[1, 2, 3, 5, 6]"', '"[1, two]"'), "column 'group_nums'"),
    "negative group_nums": (GOOD.replace('"[1, 2, 3, 5, 6]"', '"[-1, 2]"'), "column 'group_nums'"),
    "undefined slot": (GOOD.replace("+ number0 number1", "+ number0 number2"), "column 'Equation'"),
    "unknown token": (GOOD.replace("+ number0 number1", "+ number0 x"), "column 'Equation'"),
    "unbalanced prefix": (GOOD.replace("+ number0 number1", "+ number0"), "column 'Equation'"),
    "trailing operand": (GOOD.replace("+ number0 number1", "+ number0 number1 number1"),
                         "column 'Equation'"),
    "division by zero": (GOOD.replace("+ number0 number1", "/ number0 - number1 number1"),
                         "column 'Equation'"),
    "slot missing from text": (GOOD.replace("and number1 pears . how", "and pears . how"),
                               "column 'Question'"),
    "slot twice in text": (GOOD.replace("and number1 pears . how", "and number1 pears number1 . how"),
                           "column 'Question'"),
    "slot beyond Numbers": (GOOD.replace("and number1 pears . how", "and number1 number2 pears . how"),
                            "column 'Question'"),
    "zero-padded slot": (GOOD.replace("and number1 pears", "and number01 pears"), "column 'Question'"),
    "zero-padded slot in equation": (GOOD.replace("+ number0 number1", "+ number0 number01"),
                                     "column 'Equation'"),
    "too many fields": (GOOD.replace("\n", ",extra\n"), "more than the header"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_malformed_row_is_one_line_error_naming_file_row_and_column(tmp_path, case):
    row, column = BAD_ROWS[case]
    path = tmp_path / "train.csv"
    path.write_text(HEADER + GOOD + row)
    one_line_error(lambda: read_csv(path), str(path), "data row 2", column)


def test_missing_header_column(tmp_path):
    path = tmp_path / "dev.csv"
    path.write_text(HEADER.replace("Numbers,", "") + GOOD.replace("3.0 5.0,", ""))
    one_line_error(lambda: read_csv(path), str(path), "line 1", "column 'Numbers'")


def test_empty_and_unreadable_files(tmp_path):
    path = tmp_path / "dev.csv"
    path.write_text(HEADER)
    one_line_error(lambda: read_csv(path), str(path), "no problems")
    path.write_bytes(HEADER.encode() + b"\xff\xfe bad bytes\n")
    one_line_error(lambda: read_csv(path), str(path), "UTF-8")
    one_line_error(lambda: read_csv(tmp_path / "absent.csv"), "absent.csv")


def test_bad_row_in_data_dir_fails_load_split(tmp_path):
    copy_bundled_svamp(tmp_path)
    dev = tmp_path / "mawps-asdiv-a_svamp" / "dev.csv"
    dev.write_text(dev.read_text() + BAD_ROWS["bad Answer"][0])
    one_line_error(lambda: load_split("svamp", str(tmp_path)), str(dev), "data row 301", "column 'Answer'")
