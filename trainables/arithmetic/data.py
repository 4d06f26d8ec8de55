"""Loaders for the SVAMP repository's math-word-problem CSVs (MAWPS, ASDiv-A, SVAMP), torch-free.

The three SMC-Bench datasets share one row format (``Question, Numbers, Equation, Answer,
group_nums`` plus columns that vary per layout and are ignored) and differ only in where the files
live, so a registry (``LAYOUTS``) maps each dataset name to its folder and fold count:

- ``mawps``   ``cv_mawps/fold{K}/{train,dev}.csv``             5-fold cross-validation
- ``asdiv-a`` ``cv_asdiv-a/fold{K}/{train,dev}.csv``           5-fold cross-validation
- ``svamp``   ``mawps-asdiv-a_svamp/{train,dev}.csv``         train MAWPS+ASDiv-A, dev SVAMP, no folds

Every row is parsed and checked completely (the driver calls this before any trial is scheduled); a
bad row is a one-line ``UserError`` naming the file, the 1-based *data row* (the header is not
counted; a quoted field may span lines, so this is not a line number) and the column.

Tolerated on purpose, because the real files contain them and they are data noise rather than
format errors:

- ``group_nums`` positions at or beyond the end of the question (about 5% of MAWPS rows): kept as
  given; ``graphs.build_graphs`` ignores them, as the reference graph builders do.
- an ``Answer`` that differs from the value of the reference ``Equation`` (15 distinct problems: 14
  MAWPS, where the answer is rounded or plainly wrong, and 1 ASDiv-A rounded to 3.333). The row
  loads; ``answer_mismatches`` lists such rows and ``expressions.value_correct`` scores against the
  equation's value, as SVAMP does, so these problems stay solvable.

Rejected: a missing or extra field, unparsable Numbers/Answer/group_nums, an equation token that is
not an operator, an existing ``numberK`` slot or a numeric constant, an equation that is not one
well-formed prefix tree or does not evaluate (division by zero), a slot of ``Numbers`` missing from
the question or present twice, and a question slot beyond ``Numbers``.
"""
from __future__ import annotations

import ast
import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from smctune.errors import UserError, choices
from smctune.catalog.task import DataReport, resolved_data_dir

from .expressions import VALUE_TOLERANCE, evaluate_prefix, is_constant, is_well_formed, slot_index
from .problem import OPERATORS, Problem, is_number_slot

BUNDLED_SOURCE = "bundled sample"
BUNDLED_DIR = Path(__file__).parent / "data"
SPLITS = ("train", "dev")
REQUIRED_COLUMNS = ("Question", "Numbers", "Equation", "Answer", "group_nums")


@dataclass(frozen=True)
class Layout:
    """Where one dataset's split files live under a data root; ``folds == 0`` means no folds."""

    folder: str
    folds: int

    def split_path(self, root: Path, split: str, fold: Optional[int]) -> Path:
        base = root / self.folder
        if self.folds:
            base = base / f"fold{fold}"
        return base / f"{split}.csv"


LAYOUTS: dict[str, Layout] = {
    "mawps": Layout("cv_mawps", 5),
    "asdiv-a": Layout("cv_asdiv-a", 5),
    "svamp": Layout("mawps-asdiv-a_svamp", 0),
}
FOLDS: dict[str, int] = {name: layout.folds for name, layout in LAYOUTS.items()}


@dataclass(frozen=True)
class SplitData:
    """The parsed train and dev problems of one dataset (and fold), with where they came from."""

    train: list
    dev: list
    files: dict
    source: str
    dataset: str = ""
    fold: Optional[int] = None
    splits: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "splits", {"train": self.train, "dev": self.dev})

    def report(self) -> DataReport:
        return DataReport(source=self.source, splits={"train": len(self.train), "dev": len(self.dev)},
                          files=dict(self.files))


# --------------------------------------------------------------------------------------------------
# one row

def _numbers(value: str, where: str) -> tuple:
    numbers = []
    for token in value.split():
        if not is_constant(token):
            raise UserError(f"{where}: column 'Numbers': {token!r:.40} is not a number")
        numbers.append(float(token))
    return tuple(numbers)


def _answer(value: str, where: str) -> float:
    token = value.strip()
    if not is_constant(token):
        raise UserError(f"{where}: column 'Answer': {token!r:.40} is not a number")
    return float(token)


def _group_nums(value: str, where: str) -> tuple:
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        parsed = None
    if (not isinstance(parsed, (list, tuple))
            or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in parsed)):
        raise UserError(f"{where}: column 'group_nums': expected a list of word positions like "
                        f"[1, 2, 3], got {value!r:.60}")
    return tuple(parsed)


def _has(numbers: tuple) -> str:
    return f"Numbers has {len(numbers)} value{'' if len(numbers) == 1 else 's'}"


def _equation(value: str, numbers: tuple, where: str) -> tuple:
    tokens = tuple(value.split())
    for token in tokens:
        if token in OPERATORS or is_constant(token):
            continue
        if is_number_slot(token) and token == f"number{slot_index(token)}":
            if slot_index(token) >= len(numbers):
                raise UserError(f"{where}: column 'Equation': slot {token} is undefined "
                                f"({_has(numbers)})")
            continue
        raise UserError(f"{where}: column 'Equation': unknown token {token!r:.40} (expected one of "
                        f"{' '.join(OPERATORS)}, numberK or a number)")
    if not is_well_formed(tokens):
        raise UserError(f"{where}: column 'Equation': {value.strip()!r:.80} is not a well-formed "
                        "prefix expression (operand count does not match the binary operators)")
    if evaluate_prefix(tokens, numbers) is None:
        raise UserError(f"{where}: column 'Equation': {value.strip()!r:.80} cannot be evaluated "
                        "(division by zero or overflow)")
    return tokens


def _check_slots(text: tuple, numbers: tuple, where: str) -> None:
    seen = set()
    for word in text:
        if not is_number_slot(word):
            continue
        if word != f"number{slot_index(word)}":
            raise UserError(f"{where}: column 'Question': {word!r:.40} is not a slot name "
                            "(expected number0, number1, ...)")
        if slot_index(word) >= len(numbers):
            raise UserError(f"{where}: column 'Question': slot {word} has no value "
                            f"({_has(numbers)})")
        if word in seen:
            raise UserError(f"{where}: column 'Question': slot {word} appears more than once")
        seen.add(word)
    for k in range(len(numbers)):
        if f"number{k}" not in seen:
            raise UserError(f"{where}: column 'Question': slot number{k} is missing "
                            f"({_has(numbers)})")


def parse_row(row: dict, where: str, source: str) -> Problem:
    """One CSV record (a ``csv.DictReader`` row) as a checked ``Problem``."""
    if None in row:
        raise UserError(f"{where}: row has {len(row) - 1 + len(row[None])} fields, more than the header")
    for column in REQUIRED_COLUMNS:
        if row.get(column) is None:
            raise UserError(f"{where}: column '{column}' is missing (row has too few fields)")
    text = tuple(row["Question"].split())
    if not text:
        raise UserError(f"{where}: column 'Question' is empty")
    numbers = _numbers(row["Numbers"], where)
    answer = _answer(row["Answer"], where)
    group_nums = _group_nums(row["group_nums"], where)
    equation = _equation(row["Equation"], numbers, where)
    _check_slots(text, numbers, where)
    return Problem(text=text, numbers=numbers, equation=equation, answer=answer,
                   group_nums=group_nums, source=source)


# --------------------------------------------------------------------------------------------------
# one file

def read_csv(path) -> list:
    """All problems of one CSV file, in file order; ``Problem.source`` is ``"<path>:<data row>"``."""
    path = Path(path)
    try:
        stream = path.open(encoding="utf-8-sig", newline="")
    except OSError as err:
        raise UserError(f"cannot read data file {path}: {err.strerror}") from None
    problems = []
    with stream:
        reader = csv.DictReader(stream)
        try:
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise UserError(f"{path} header (line 1): missing column '{missing[0]}' "
                                f"(required: {', '.join(REQUIRED_COLUMNS)})")
            for number, row in enumerate(reader, start=1):
                problems.append(parse_row(row, f"{path} data row {number}", f"{path}:{number}"))
        except UnicodeDecodeError as err:
            raise UserError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") from None
        except csv.Error as err:
            raise UserError(f"{path} line {reader.line_num}: malformed CSV: {err}") from None
    if not problems:
        raise UserError(f"{path}: no problems found (no data rows after the header)")
    return problems


def answer_mismatches(problems, tol: float = VALUE_TOLERANCE) -> list:
    """Problems whose reference equation does not evaluate to ``Answer`` within ``tol`` (absolute)."""
    out = []
    for problem in problems:
        value = evaluate_prefix(problem.equation, problem.numbers)
        if value is None or abs(value - problem.answer) >= tol:
            out.append(problem)
    return out


# --------------------------------------------------------------------------------------------------
# datasets, folds, directories

def _layout(dataset: str) -> Layout:
    if dataset not in LAYOUTS:
        raise UserError(f"unknown arithmetic dataset '{dataset}': choose one of {choices(LAYOUTS)}")
    return LAYOUTS[dataset]


def _root(dataset: str, data_dir: Optional[str]) -> Path:
    """The folder that holds the layout folders: the bundled sample, the given directory, or its
    ``data/`` subfolder (so both a SVAMP clone and its ``data/`` folder work)."""
    if data_dir is None:
        return BUNDLED_DIR
    directory = Path(resolved_data_dir(data_dir))
    folder = _layout(dataset).folder
    for candidate in (directory, directory / "data"):
        if (candidate / folder).is_dir():
            return candidate
    raise UserError(f"missing data folder: {directory / folder} (expected the SVAMP repository's "
                    f"data/ layout, with {folder}/ inside)")


def available_folds(dataset: str, data_dir: Optional[str]) -> tuple:
    """Folds whose train and dev files both exist (the bundled sample has only fold 0); ``()`` for a
    dataset without folds."""
    layout = _layout(dataset)
    if not layout.folds:
        return ()
    root = _root(dataset, data_dir)
    return tuple(k for k in range(layout.folds)
                 if all(layout.split_path(root, s, k).is_file() for s in SPLITS))


def _check_fold(dataset: str, layout: Layout, fold: Optional[int], data_dir: Optional[str]) -> None:
    valid = ", ".join(str(k) for k in range(layout.folds))
    if not layout.folds:
        if fold is not None:
            raise UserError(f"dataset '{dataset}' has no folds (got fold {fold}); leave the fold unset")
        return
    if fold is None:
        raise UserError(f"dataset '{dataset}' is cross-validated: give a fold, one of {valid}")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < layout.folds:
        raise UserError(f"fold {fold!r} out of range for '{dataset}': choose one of {valid}")
    if data_dir is None:
        bundled = available_folds(dataset, None)
        if fold not in bundled:
            raise UserError(f"fold {fold} of '{dataset}' is not in the bundled sample (bundled folds: "
                            f"{', '.join(map(str, bundled)) or 'none'}); give a data directory "
                            "for the others")


def load_split(dataset: str, data_dir: Optional[str] = None, fold: Optional[int] = None) -> SplitData:
    """Train and dev problems of ``dataset`` (and ``fold`` for the cross-validated ones), from the
    bundled sample when ``data_dir`` is None, else from the SVAMP ``data/`` layout under it."""
    layout = _layout(dataset)
    _check_fold(dataset, layout, fold, data_dir)
    root = _root(dataset, data_dir)
    files, splits = {}, {}
    for split in SPLITS:
        path = layout.split_path(root, split, fold)
        if not path.is_file():
            raise UserError(f"missing data file: {path}")
        files[split] = str(path)
        splits[split] = read_csv(path)
    source = BUNDLED_SOURCE if data_dir is None else str(Path(data_dir).expanduser())
    return SplitData(train=splits["train"], dev=splits["dev"], files=files, source=source,
                     dataset=dataset, fold=fold)
