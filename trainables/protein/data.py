"""Protein thermostability data (torch-free): the bundled ThermoProt sample and four data layouts.

The data sets SMC-Bench's protein tasks use come in the shapes their authors published, so a directory
is read as-is rather than converted first. Layouts, detected in this order:

1. **split-pickle** (HotProtein, SMC-Bench): one ``*.pkl`` dict of ``train_names``/``train_labels``/
   ``test_names``/``test_labels`` plus one ``<name>.fasta`` per protein, next to it or in ``fasta/``.
   The pickle is read by ``safe_pickle.load_plain`` (no code runs). "test" is our "dev".
2. **csv**: ``train.csv`` and ``test.csv`` (or ``dev.csv``, ``valid.csv``) with a ``sequence`` or
   ``real_seq`` column and a ``label`` column, or a ``tm``/``target`` temperature column.
3. **flip-csv**: one CSV with FLIP's ``sequence,target,set,validation`` columns (e.g. Meltome's
   ``mixed_split.csv``); FLIP's validation rows are held out of training.
4. **class-fasta**: ``<class>.fasta`` per class (names or aliases of the task's classes), in ``train/``
   and ``dev/`` (or ``test/``) folders, as bundled, or directly in the directory (ThermoProt's own
   ``training_sequences/``), then split by ``sample.stratified_split`` exactly as the bundled sample was.

Everything is parsed and checked in the driver before a trial is scheduled; each problem is a one-line
``UserError`` naming the file, the record or line, and the field. Results are memoized per task and
directory, because the driver validates and then plans with the same data.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator, Optional

from smctune.errors import UserError, choices
from smctune.catalog.task import DataReport, resolved_data_dir
from smctune.trainables.text_files import read_utf8

from .classes import ClassScheme, scheme
from .fasta import LEU_OR_ILE, clean_sequence, model_residues, parse_fasta, read_fasta
from .safe_pickle import load_plain
from .sample import DEV_FRACTION, SEED, stratified_split

BUNDLED_SOURCE = "bundled sample"
BUNDLED = {"thermo": "thermo", "thermo-hotcold": "thermo"}   # task -> folder under data/
SPLITS = ("train", "dev")
LAYOUTS = {
    "split-pickle": "one *.pkl split file with train_names/train_labels/test_names/test_labels and a "
                    "<name>.fasta per protein (next to it or in fasta/)",
    "csv": "train.csv with test.csv, dev.csv or valid.csv (columns sequence or real_seq, and label, tm "
           "or target)",
    "flip-csv": "one CSV with FLIP's columns sequence,target,set,validation",
    "class-fasta": "<class>.fasta files, in train/ and dev/ (or test/) or directly in the directory",
}
DEV_NAMES = ("test.csv", "dev.csv", "valid.csv")
SEQUENCE_COLUMNS = ("sequence", "real_seq")
LABEL_COLUMNS = ("label", "tm", "target")     # "label": classes; the others: temperatures in °C
FLIP_COLUMNS = ("sequence", "target", "set", "validation")
TEMPERATURE_WHY = {
    "meltome": "smctune's convention: HotProtein's classes come from the source organism's growth "
               "temperature, which a Tm file does not carry",
}


@dataclass(frozen=True)
class Protein:
    """One protein: a name unique within its split, residues in the models' alphabet, class index."""

    name: str
    sequence: str
    label: int


@dataclass(frozen=True)
class ProteinData:
    """Parsed splits plus where they came from and what the user should know about them."""

    source: str                   # "bundled sample" or the data directory
    layout: str                   # one of LAYOUTS
    splits: dict                  # "train" / "dev" -> tuple[Protein, ...]
    files: dict                   # split -> file or directory read
    notes: tuple = ()             # facts worth showing: label offset applied, Tm binning, held-out rows

    def report(self) -> DataReport:
        return DataReport(source=self.source,
                          splits={split: len(proteins) for split, proteins in self.splits.items()},
                          files=dict(self.files), notes=tuple(self.notes))


@dataclass(frozen=True)
class _Row:
    """A protein before its label is resolved (the integer offset depends on every label of the set)."""

    name: str
    sequence: str
    value: object
    where: str                    # file, record/line and field, for the label's error
    temperature: bool = False


def count_longer(proteins: Iterable[Protein], limit: int) -> int:
    """How many sequences exceed ``limit`` residues (they will be cropped)."""
    return sum(1 for protein in proteins if len(protein.sequence) > limit)


def load(task: str, data_dir: Optional[str]) -> ProteinData:
    """The task's train and dev proteins: the bundled sample when ``data_dir`` is None, else the
    directory in whichever layout it holds. Memoized per (task, resolved directory)."""
    scheme(task)
    return _load(task, resolved_data_dir(data_dir))


def clear_cache() -> None:
    _load.cache_clear()


@lru_cache(maxsize=None)
def _load(task: str, directory: Optional[str]) -> ProteinData:
    classes = scheme(task)
    if directory is None:
        return _bundled(classes)
    return _from_directory(classes, Path(directory))


def layouts_help() -> str:
    """The accepted ``--data-dir`` layouts in one line (errors here and in the CLI)."""
    return "; ".join(f"{name}: {text}" for name, text in LAYOUTS.items())


# --------------------------------------------------------------------------------------------------
# layout detection

def _from_directory(classes: ClassScheme, directory: Path) -> ProteinData:
    pickles = sorted(directory.glob("*.pkl"))
    if len(pickles) > 1:
        raise UserError(f"{directory}: several split files, keep one: "
                        f"{', '.join(p.name for p in pickles)}")
    if pickles:
        return _split_pickle(classes, directory, pickles[0])
    if (directory / "train.csv").is_file():
        return _csv(classes, directory)
    flips = [path for path in sorted(directory.glob("*.csv")) if _is_flip(path)]
    if len(flips) > 1:
        raise UserError(f"{directory}: several FLIP CSV files, keep one: "
                        f"{', '.join(p.name for p in flips)}")
    if flips:
        return _flip_csv(classes, directory, flips[0])
    if _fasta_files(directory / "train") or _fasta_files(directory):
        return _class_fasta(classes, directory, str(directory))
    raise UserError(f"{directory}: no protein data layout found; expected one of {layouts_help()}")


def _finish(classes: ClassScheme, source: str, layout: str, rows: dict, files: dict,
            notes: list) -> ProteinData:
    """Resolve labels (offset and temperature bins decided over both splits) and add the notes."""
    values = [row.value for split in SPLITS for row in rows[split] if not row.temperature]
    offset = classes.detect_offset(values)
    if offset:
        notes.append(f"integer labels run {offset}..{offset + len(classes.classes) - 1} (HotProtein's "
                     f"five-class numbering, SMC-Bench's --label-offset): {offset} subtracted")
    splits = {}
    for split in SPLITS:
        if not rows[split]:
            raise UserError(f"{files[split]}: no proteins in split '{split}'")
        splits[split] = tuple(
            Protein(row.name, model_residues(row.sequence),
                    classes.bin_temperature(row.value, row.where) if row.temperature
                    else classes.index_of(row.value, row.where, offset))
            for row in rows[split])
    if any(row.temperature for split in SPLITS for row in rows[split]):
        why = TEMPERATURE_WHY.get(classes.task)
        notes.append(f"temperatures binned: {classes.binning()}" + (f" ({why})" if why else ""))
    with_j = sum(LEU_OR_ILE in row.sequence for split in SPLITS for row in rows[split])
    if with_j:
        notes.append(f"{with_j} sequences contain J (leucine or isoleucine), read as X (unknown): the "
                     "models have no J token")
    present = {protein.label for protein in splits["train"]}
    absent = [name for index, name in enumerate(classes.classes) if index not in present]
    if absent:
        notes.append(f"no training proteins of class {', '.join(absent)}")
    shared = {p.sequence for p in splits["train"]} & {p.sequence for p in splits["dev"]}
    if shared:
        notes.append(f"{len(shared)} dev sequences also occur in train")
    return ProteinData(source=source, layout=layout, splits=splits, files=files, notes=tuple(notes))


# --------------------------------------------------------------------------------------------------
# split-pickle

def _split_pickle(classes: ClassScheme, directory: Path, path: Path) -> ProteinData:
    content = load_plain(path)
    if not isinstance(content, dict):
        raise UserError(f"{path}: expected a dict with keys train_names, train_labels, test_names, "
                        f"test_labels, got {type(content).__name__}")
    rows, several = {}, 0
    for split, key in (("train", "train"), ("dev", "test")):
        names, labels = (_list_key(content, path, f"{key}_{field}") for field in ("names", "labels"))
        if len(names) != len(labels):
            raise UserError(f"{path}: split '{key}' has {len(names)} names but {len(labels)} labels")
        rows[split] = []
        for index, (name, label) in enumerate(zip(names, labels)):
            where = f"{path} split '{key}' index {index} ({name!r:.60})"
            records = read_fasta(_protein_file(directory, name, where))
            several += len(records) > 1
            rows[split].append(_Row(name, records[0].sequence, label, f"{where}: field 'label'"))
    notes = [f"{several} FASTA files hold more than one record; the first is used"] if several else []
    return _finish(classes, str(directory), "split-pickle", rows,
                   {"train": str(path), "dev": str(path)}, notes)


def _list_key(content: dict, path: Path, key: str) -> list:
    if key not in content:
        raise UserError(f"{path}: missing key '{key}' (expected train_names, train_labels, test_names, "
                        "test_labels)")
    value = content[key]
    if not isinstance(value, (list, tuple)):
        raise UserError(f"{path}: key '{key}' must be a list, got {type(value).__name__}")
    return list(value)


def _protein_file(directory: Path, name: object, where: str) -> Path:
    """``<name>.fasta`` next to the split file or in ``fasta/``; a name is a file name, never a path."""
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{where}: field 'name' must be a non-empty string")
    if "/" in name or "\\" in name or "\0" in name or name in (".", ".."):
        raise UserError(f"{where}: field 'name' is not a plain file name")
    for folder in (directory, directory / "fasta"):
        if (folder / f"{name}.fasta").is_file():
            return folder / f"{name}.fasta"
    raise UserError(f"{where}: field 'name': no {name}.fasta in {directory} or {directory / 'fasta'}")


# --------------------------------------------------------------------------------------------------
# csv and flip-csv

def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line, row)`` per data row, keys the lower-cased header; malformed files are one line."""
    text = read_utf8(path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [column.strip().lower() for column in next(reader, [])]
        if not header:
            raise UserError(f"{path}: empty file (no header line)")
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise UserError(f"{path} line {reader.line_num}: {len(row)} fields, the header has "
                                f"{len(header)}")
            yield reader.line_num, dict(zip(header, row))
    except csv.Error as err:
        raise UserError(f"{path} line {reader.line_num}: malformed CSV: {err}") from None


def _header(path: Path) -> list[str]:
    try:
        with path.open("rb") as stream:
            first = stream.readline(1 << 16).decode("utf-8-sig", errors="replace")
    except OSError as err:
        raise UserError(f"cannot read data file {path}: {err.strerror}") from None
    return [column.strip().lower() for column in next(csv.reader([first]), [])]


def _pick(header: list[str], path: Path, wanted: tuple[str, ...], what: str) -> str:
    for column in wanted:
        if column in header:
            return column
    raise UserError(f"{path} line 1 (header): no {what} column (looked for {', '.join(wanted)}; "
                    f"found {', '.join(header) or 'none'})")


def _csv_file(path: Path, sequence_columns: tuple, label_columns: tuple
              ) -> Iterator[tuple[int, dict, _Row]]:
    """``(line, cells, row)`` per data row of one CSV; a ``label`` column holds classes, any other
    label column (``tm``, ``target``) temperatures."""
    header = _header(path)
    sequence_column = _pick(header, path, sequence_columns, "sequence")
    label_column = _pick(header, path, label_columns, "label")
    for line, row in _csv_rows(path):
        where = f"{path} line {line}, column"
        sequence = clean_sequence(row[sequence_column], f"{where} '{sequence_column}'")
        value = row[label_column].strip()
        if not value:
            raise UserError(f"{where} '{label_column}' is empty")
        yield line, row, _Row(f"{path.name}:{line}", sequence, value, f"{where} '{label_column}'",
                              temperature=label_column != "label")


def _csv(classes: ClassScheme, directory: Path) -> ProteinData:
    found = [directory / name for name in DEV_NAMES if (directory / name).is_file()]
    if not found:
        raise UserError(f"{directory}: train.csv has no evaluation split next to it (looked for "
                        f"{', '.join(DEV_NAMES)})")
    files = {"train": directory / "train.csv", "dev": found[0]}
    notes = [f"dev split read from {found[0].name} ({', '.join(p.name for p in found[1:])} ignored)"
             ] if len(found) > 1 else []
    rows = {split: [row for _, _, row in _csv_file(path, SEQUENCE_COLUMNS, LABEL_COLUMNS)]
            for split, path in files.items()}
    return _finish(classes, str(directory), "csv", rows, {s: str(p) for s, p in files.items()}, notes)


def _is_flip(path: Path) -> bool:
    return set(FLIP_COLUMNS) <= set(_header(path))


def _flip_csv(classes: ClassScheme, directory: Path, path: Path) -> ProteinData:
    rows, held_out = {"train": [], "dev": []}, 0
    for line, cells, row in _csv_file(path, ("sequence",), ("target",)):
        where = f"{path} line {line}, column"
        part = cells["set"].strip().lower()
        if part not in ("train", "test"):
            raise UserError(f"{where} 'set' is {cells['set']!r:.40}, not train or test")
        validation = cells["validation"].strip().lower()
        if validation not in ("true", "false", "1", "0", "", "nan"):
            raise UserError(f"{where} 'validation' is {cells['validation']!r:.40}, not True or False")
        if part == "train" and validation in ("true", "1"):
            held_out += 1
            continue
        rows["train" if part == "train" else "dev"].append(row)
    notes = [f"{held_out} rows of {path.name} marked validation=True (FLIP's held-out part of its train "
             "set) were left out of training"] if held_out else []
    return _finish(classes, str(directory), "flip-csv", rows, {"train": str(path), "dev": str(path)},
                   notes)


# --------------------------------------------------------------------------------------------------
# class-fasta and the bundled sample

def _fasta_files(folder) -> list:
    """The ``*.fasta`` files of a folder (a ``Path`` or an importlib.resources ``Traversable``)."""
    if not folder.is_dir():
        return []
    return sorted((f for f in folder.iterdir() if f.is_file() and f.name.lower().endswith(".fasta")),
                  key=lambda f: f.name)


def _class_files(classes: ClassScheme, folder) -> dict:
    """File stem -> (class index, file) for every ``*.fasta`` of a folder; each must name a class."""
    found = {}
    for file in _fasta_files(folder):
        stem = file.name[:-len(".fasta")]
        index = classes.name_index(stem)
        if index is None:
            raise UserError(f"{file}: file name '{stem}' is not a {classes.label} class (class-fasta "
                            f"layout: <class>.fasta with <class> one of {choices(classes.names())})")
        found[stem] = (index, file)
    return found


def _read_records(file) -> list[tuple[str, str]]:
    with file.open("rb") as stream:
        return [(r.header, r.sequence) for r in parse_fasta(stream, str(file))]


def _class_rows(per_file: dict, found: dict) -> list:
    """Rows taken from the class files in turn (files in class order, then by name), so any prefix of
    a split holds every file alike: ``train.train_limit`` and ``eval_limit`` cut a prefix, and one
    class file after another would leave the smoke preset's 160 proteins a single class. A protein is
    named ``<file stem>/<header>`` because headers restart in every file (ThermoProt's ``Sequence 1``)."""
    stems = sorted(per_file, key=lambda stem: (found[stem][0], stem))
    longest = max((len(per_file[stem]) for stem in stems), default=0)
    return [_Row(f"{stem}/{header}", sequence, found[stem][0], str(found[stem][1]))
            for position in range(longest) for stem in stems if position < len(per_file[stem])
            for header, sequence in (per_file[stem][position],)]


def _class_fasta(classes: ClassScheme, directory, source: str) -> ProteinData:
    """Class files in ``train/`` and ``dev/`` (or ``test/``), else directly in ``directory``."""
    if _fasta_files(directory / "train"):
        dev = next((name for name in ("dev", "test") if _fasta_files(directory / name)), None)
        if dev is None:
            raise UserError(f"{directory / 'train'} has class files but {directory} has no dev/ or "
                            "test/ folder with class files")
        rows, files = {}, {}
        for split, folder in (("train", directory / "train"), ("dev", directory / dev)):
            found = _class_files(classes, folder)
            rows[split] = _class_rows({stem: _read_records(file) for stem, (_, file) in found.items()},
                                      found)
            files[split] = str(folder)
        return _finish(classes, source, "class-fasta", rows, files, [])
    found = _class_files(classes, directory)
    parts = stratified_split({stem: _read_records(file) for stem, (_, file) in found.items()},
                             DEV_FRACTION, SEED)
    rows = {split: _class_rows(part, found) for split, part in zip(SPLITS, parts)}
    note = (f"train/dev split made from the class files by stratified_split (dev fraction "
            f"{DEV_FRACTION:g}, seed {SEED}): random within each class, no sequence-identity clustering")
    return _finish(classes, source, "class-fasta", rows, {"train": source, "dev": source}, [note])


def _bundled(classes: ClassScheme) -> ProteinData:
    folder = BUNDLED.get(classes.task)
    if folder is None:
        raise UserError(f"no bundled {classes.label} sample exists; pass --data-dir in one of the "
                        f"layouts {layouts_help()}")
    root = resources.files(__package__).joinpath("data", folder)
    for split in ("train", "dev"):
        if not _fasta_files(root.joinpath(split)):
            raise UserError(f"bundled {classes.label} sample has no {split}/ class files: the "
                            "installation is incomplete")
    return _class_fasta(classes, root, BUNDLED_SOURCE)
