"""Translation data (torch-free): the bundled FLORES-200 sample and the two layouts a ``--data-dir`` may hold.

Layouts, detected from the directory's contents:

1. **flores**: ``dev/<flores_code>.dev`` and ``devtest/<flores_code>.devtest`` as FLORES-200 ships them
   (the bundled sample has the same shape, so it goes through the same code as a full copy). The files
   are n-way parallel: line i of every language translates line i of English. ``dev`` is the training
   split and ``devtest`` the evaluation split, because devtest is FLORES's reported benchmark split.
   A full FLORES-200 copy holds some 200 languages; files of FLORES codes this family does not use
   are skipped (a note says how many), other file names are an error.
2. **parallel**: ``<split>.<src>-<tgt>.<lang>`` text files (``train.en-fr.en`` + ``train.en-fr.fr``),
   one sentence a line, ``<split>`` one of ``train``, ``valid``, ``test``; codes are ISO 639-1 (``fr``)
   or mBART tokens (``fr_XX``, as in fairseq's ML50 files). ``train`` trains; ``valid`` evaluates, or
   ``test`` when there is no ``valid``: a sweep over methods and sparsities is model selection, so it
   should not look at a test set the user keeps apart.

A split answers ``pairs(direction)`` for any two of its languages: from n-way lines, from a pair file
in either orientation, or, for two non-English languages without their own file, through the English
pivot (Arivazhagan et al. 2019): x -> y pairs the x and y sentences whose English sides are identical.

Lines are split on ``\\n`` only (a stray U+2028 or form feed inside a sentence must not shift the
alignment) and stripped of surrounding whitespace (FLORES's French and Romanian end some lines with a
space or no-break space, which means nothing to a translation). Everything is parsed and checked in the
driver before a trial is scheduled; each problem is a one-line ``UserError`` naming the file and line.
Results are memoized per task and directory, because the driver validates and then plans with them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from smctune.errors import UserError, choices
from smctune.catalog.task import DataReport, resolved_data_dir
from smctune.trainables.text_files import read_utf8

from .languages import (BY_FLORES, EVAL_LANGUAGES, LANGUAGES, PIVOT, Direction, Language,
                        direction_name, eval_directions, subgroup, training_directions,
                        training_languages)

BUNDLED_SOURCE = "bundled sample (FLORES-200 dev / first 200 devtest lines)"
# The paper's corpus (SMC-Bench §3.4: OPUS): OPUS-100 on the hub, one English-centric config per
# language ("en-fr", "cs-en": the two codes in alphabetical order), rows {"translation": {code: text}}.
HUB_CORPUS = "Helsinki-NLP/opus-100"
HUB_SPLITS = {"train": "train", "eval": "test"}
HUB_KEY = f"hub:{HUB_CORPUS}"     # the memo key of the hub corpus (never a resolved directory path)
BUNDLED_FOLDER = "flores200"
SPLITS = ("train", "eval")
LAYOUTS = {
    "flores": "dev/ and devtest/ folders of <flores_code>.dev and <flores_code>.devtest files "
              "(e.g. dev/fra_Latn.dev; dev trains, devtest evaluates)",
    "parallel": "<split>.<src>-<tgt>.<lang> files, e.g. train.en-fr.en with train.en-fr.fr (split "
                "train, and valid or else test to evaluate)",
}
FLORES_FOLDERS = {"train": ("dev", ".dev"), "eval": ("devtest", ".devtest")}   # split -> folder, suffix
PARALLEL_SPLITS = {"train": ("train",), "eval": ("valid", "test")}             # first present wins
_FLORES_CODE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
_PARALLEL_NAME = re.compile(r"^(train|valid|test)\.([^.]+)-([^.]+)\.([^.]+)$")
# A file name may spell a language by ISO code or by mBART token (fairseq's ML50 files use the latter).
_FILE_CODES: dict[str, Language] = {**LANGUAGES,
                                    **{language.mbart: language for language in LANGUAGES.values()}}


def layouts_help() -> str:
    """The accepted ``--data-dir`` layouts in one line (errors here and in the CLI)."""
    return "; ".join(f"{name}: {text}" for name, text in LAYOUTS.items())


# --------------------------------------------------------------------------------------------------
# the parsed data

@dataclass(frozen=True)
class Table:
    """Sentences that translate one another line by line: one column per language (eleven for n-way
    FLORES, two for a pair of files), every column the same length."""

    columns: dict          # ISO code -> tuple[str, ...]
    files: dict            # ISO code -> file the column was read from

    def pairs(self, source: str, target: str) -> list[tuple[str, str]]:
        return list(zip(self.columns[source], self.columns[target]))


@dataclass(frozen=True)
class Split:
    """One split's tables; answers aligned sentence pairs for a direction however they are stored."""

    name: str              # "train" or "eval"
    tables: tuple          # Table, ...

    @property
    def languages(self) -> tuple[str, ...]:
        """ISO codes with at least one table, in the family's order (English first)."""
        present = {code for table in self.tables for code in table.columns}
        return tuple(code for code in LANGUAGES if code in present)

    @property
    def directions_available(self) -> tuple[Direction, ...]:
        return tuple(sorted((source, target) for source in self.languages for target in self.languages
                            if source != target and self.route(source, target) is not None))

    def route(self, source: str, target: str) -> Optional[str]:
        """``"direct"`` (one table holds both), ``"pivot"`` (both are paired with English) or None."""
        if self._table(source, target) is not None:
            return "direct"
        if (PIVOT not in (source, target) and self._table(source, PIVOT) is not None
                and self._table(target, PIVOT) is not None):
            return "pivot"
        return None

    def pairs(self, direction: Direction) -> list[tuple[str, str]]:
        """Aligned (source, target) sentences of ``direction``, in file order."""
        source, target = direction
        table = self._table(source, target)
        if table is not None:
            return table.pairs(source, target)
        if self.route(source, target) == "pivot":
            return _pivot(self._table(source, PIVOT).pairs(source, PIVOT),
                          self._table(target, PIVOT).pairs(target, PIVOT))
        raise UserError(f"the {self.name} split has no {direction_name(direction)} sentence pairs "
                        f"(languages: {', '.join(self.languages) or 'none'})")

    def text(self) -> tuple[str, ...]:
        """Every distinct sentence of the split, all its languages (language by language, in file
        order): what a SentencePiece vocabulary is trained on. Languages a task does not train on are
        kept because it is scored on all ten; repeats (the English side of several pair files) are
        dropped so they do not weigh twice. Deterministic, so a cached vocabulary is found again."""
        sentences: dict[str, None] = {}
        for code in self.languages:
            for table in self.tables:
                sentences.update(dict.fromkeys(table.columns.get(code, ())))
        return tuple(sentences)

    def pivot_files(self, source: str, target: str) -> tuple[str, str]:
        """The two English files a pivot direction is joined on (for messages)."""
        return (str(self._table(source, PIVOT).files[PIVOT]), str(self._table(target, PIVOT).files[PIVOT]))

    def _table(self, a: str, b: str) -> Optional[Table]:
        return next((t for t in self.tables if a in t.columns and b in t.columns), None)


def _pivot(source_english: list, target_english: list) -> list[tuple[str, str]]:
    """Join two English-paired lists on identical English sentences: the first occurrence of each
    English sentence on either side counts, in the order of the source side's file."""
    by_english: dict[str, str] = {}
    for target, english in target_english:
        by_english.setdefault(english, target)
    pairs, seen = [], set()
    for source, english in source_english:
        if english in by_english and english not in seen:
            seen.add(english)
            pairs.append((source, by_english[english]))
    return pairs


@dataclass(frozen=True)
class Corpus:
    """A task's training and evaluation splits plus where they came from and what to know about them.

    ``train_limit`` / ``eval_limit`` cut each direction's pairs (``smctune.catalog.task.limited`` on
    ``split.pairs(direction)``), so every direction keeps data under a limit."""

    task: str
    source: str            # BUNDLED_SOURCE or the data directory
    layout: str            # one of LAYOUTS
    train: Split
    eval: Split
    files: dict            # split -> what was read ("<dir>/dev", "<dir>/train.*")
    counts: dict           # split -> {direction: number of pairs} over the directions the task uses
    notes: tuple = ()

    @property
    def training_directions(self) -> tuple[Direction, ...]:
        return training_directions(self.task)

    @property
    def eval_directions(self) -> tuple[Direction, ...]:
        return eval_directions()

    def split(self, name: str) -> Split:
        return {"train": self.train, "eval": self.eval}[name]

    def report(self) -> DataReport:
        return DataReport(source=self.source,
                          splits={name: sum(self.counts[name].values()) for name in SPLITS},
                          files=dict(self.files), notes=tuple(self.notes))


# --------------------------------------------------------------------------------------------------
# loading and memoizing

def load(task: str, data_dir: Optional[str], preset: str = "") -> Corpus:
    """The task's training and evaluation data: the directory in whichever layout it holds; without one,
    the bundled sample, or for the ``paper`` preset the paper's corpus (OPUS-100) from the hub.
    Memoized per (task, resolved directory)."""
    subgroup(task)
    if uses_hub(preset, data_dir):
        return _load(task, HUB_KEY)
    return _load(task, resolved_data_dir(data_dir))


def uses_hub(preset: str, data_dir: Optional[str]) -> bool:
    """Only the ``paper`` preset without a data directory reads the hub corpus."""
    return preset == "paper" and data_dir is None


def hub_report(task: str) -> DataReport:
    """What the driver can say about the hub corpus without downloading it (the trial downloads it)."""
    configs = ", ".join(hub_config(code) for code in EVAL_LANGUAGES)   # every task is scored on all ten
    return DataReport(source=f"hub:{HUB_CORPUS}", splits={},
                      files={name: f"hub:{HUB_CORPUS}[{configs}] {split}" for name, split in HUB_SPLITS.items()},
                      notes=(f"{HUB_CORPUS} is English-centric: non-English directions are built through the "
                             "English pivot and may hold few pairs (counted when a trial loads it)",))


def clear_cache() -> None:
    _load.cache_clear()
    _read.cache_clear()


@dataclass(frozen=True)
class _Parsed:
    """A directory's splits before any task looks at them (shared by the three tasks)."""

    source: str
    layout: str
    splits: dict           # "train" / "eval" -> Split
    files: dict            # split -> what was read
    hints: dict            # split -> how a missing language's files would be named, e.g. "dev/{flores}.dev"
    notes: tuple = ()


@lru_cache(maxsize=None)
def _load(task: str, directory: Optional[str]) -> Corpus:
    parsed = _read(directory)
    needs = {"train": (training_languages(task), training_directions(task)),
             "eval": ((PIVOT,) + EVAL_LANGUAGES, eval_directions())}
    counts, notes = {}, list(parsed.notes)
    for name, (languages, directions) in needs.items():
        split = parsed.splits[name]
        _check_languages(task, parsed, name, languages)
        counts[name] = _count(task, parsed.source, split, directions)
        pivoted = [d for d in directions if split.route(*d) == "pivot"]
        if pivoted and parsed.layout != "flores":
            notes.append(f"{name}: {len(pivoted)} directions built through the English pivot "
                         f"({_pivot_summary(pivoted, counts[name])})")
    notes.append(_totals(task, counts))
    return Corpus(task=task, source=parsed.source, layout=parsed.layout, train=parsed.splits["train"],
                  eval=parsed.splits["eval"], files=dict(parsed.files), counts=counts,
                  notes=tuple(notes))


@lru_cache(maxsize=None)
def _read(directory: Optional[str]) -> _Parsed:
    if directory is None:
        return _bundled()
    if directory == HUB_KEY:
        return _hub()
    root = Path(directory)
    layout = _detect(root)
    return LAYOUT_READERS[layout](root, directory)


def _detect(root: Path) -> str:
    flores = any((root / folder).is_dir() for folder, _ in FLORES_FOLDERS.values())
    parallel = bool(_parallel_names(root))
    if flores and parallel:
        raise UserError(f"{root}: holds both FLORES dev/devtest folders and parallel "
                        "<split>.<src>-<tgt>.<lang> files; keep one layout")
    if flores:
        return "flores"
    if parallel:
        return "parallel"
    raise UserError(f"{root}: no translation data found; expected one of {layouts_help()}")


def _check_languages(task: str, parsed: _Parsed, name: str, needed: tuple) -> None:
    split = parsed.splits[name]
    missing = [code for code in needed if code not in split.languages]
    if missing:
        first = LANGUAGES[missing[0]]
        expected = parsed.hints[name].format(code=first.code, flores=first.flores)
        raise UserError(f"{parsed.source}: {name} split lacks "
                        f"{', '.join(f'{code} ({LANGUAGES[code].name})' for code in missing)}, needed "
                        f"by {task}; expected e.g. {expected}")


def _count(task: str, source: str, split: Split, directions: tuple) -> dict:
    """Pairs per direction; a direction the split cannot form, or a pivot with no shared English
    sentence, is an error here rather than an empty direction in every trial."""
    unavailable = [d for d in directions if split.route(*d) is None]
    if unavailable:
        raise UserError(f"{source}: {split.name} split cannot form "
                        f"{', '.join(map(direction_name, unavailable))}, needed by {task}: pair each "
                        "language with English")
    counts = {}
    for direction in directions:
        counts[direction] = len(split.pairs(direction))
        if not counts[direction]:       # only a pivot can come out empty: files have lines
            first, second = split.pivot_files(*direction)
            raise UserError(f"{split.name} split: no {direction_name(direction)} pairs through the "
                            f"English pivot: no English sentence occurs in both {first} and {second}")
    return counts


def _pivot_summary(directions: list, counts: dict) -> str:
    shown = ", ".join(f"{direction_name(d)} {counts[d]}" for d in directions[:6])
    return shown + (f", ... ({len(directions) - 6} more)" if len(directions) > 6 else "") + " pairs"


def _totals(task: str, counts: dict) -> str:
    def summary(per_direction: dict, what: str) -> str:
        low, high = min(per_direction.values()), max(per_direction.values())
        spread = f"{low}" if low == high else f"{low} to {high}"
        return (f"{len(per_direction)} {what} directions, {sum(per_direction.values())} pairs "
                f"({spread} per direction)")

    return f"{task}: {summary(counts['train'], 'training')}; {summary(counts['eval'], 'evaluation')}"


# --------------------------------------------------------------------------------------------------
# text files

@dataclass(frozen=True)
class TextFile:
    """One sentence a line, checked; ``stripped`` counts lines that had surrounding whitespace."""

    path: str
    lines: tuple
    stripped: int = 0


def read_lines(path: Any) -> TextFile:
    """A text file's sentences: UTF-8 (a leading BOM ignored), ``\\n`` or ``\\r\\n`` line ends, no
    empty line (it would pair a sentence with nothing). ``path`` is a Path or a resources Traversable."""
    text = read_utf8(path)
    if not text.strip():
        raise UserError(f"{path}: no sentences (empty file)")
    raw_lines = text.split("\n")
    if raw_lines[-1] == "":
        raw_lines.pop()
    lines, stripped = [], 0
    for number, line in enumerate(raw_lines, start=1):
        sentence = line.strip()
        if not sentence:
            raise UserError(f"{path} line {number}: empty line (every line must hold one sentence)")
        stripped += sentence != line.removesuffix("\r")
        lines.append(sentence)
    return TextFile(str(path), tuple(lines), stripped)


def _check_aligned(files: list) -> None:
    """Every file of a table has as many lines as the first (English when present)."""
    reference = files[0]
    for other in files[1:]:
        if len(other.lines) != len(reference.lines):
            raise UserError(f"misaligned files: {other.path} has {len(other.lines)} lines but "
                            f"{reference.path} has {len(reference.lines)}")


def _stripped_note(files: list) -> list:
    stripped = sum(f.stripped for f in files)
    if not stripped:
        return []
    return [f"{stripped} lines had leading or trailing whitespace, removed (e.g. "
            f"{next(f.path for f in files if f.stripped)})"]


# --------------------------------------------------------------------------------------------------
# the flores layout (and the bundled sample)

def _flores(root: Any, source: str) -> _Parsed:
    splits, files, hints, read, skipped = {}, {}, {}, [], set()
    for name, (folder, suffix) in FLORES_FOLDERS.items():
        where = root.joinpath(folder)
        if not where.is_dir():
            other = next(f for f, _ in FLORES_FOLDERS.values() if f != folder)
            raise UserError(f"{source}: has {other}/ but no {folder}/ folder (FLORES layout: dev/ trains, "
                            "devtest/ evaluates)")
        texts = {}
        for entry in sorted(where.iterdir(), key=lambda e: e.name):
            if not (entry.is_file() and entry.name.endswith(suffix)):
                continue
            code = entry.name[:-len(suffix)]
            if code in BY_FLORES:
                texts[BY_FLORES[code].code] = read_lines(entry)
            elif _FLORES_CODE.match(code):
                skipped.add(code)
            else:
                raise UserError(f"{entry}: {code!r} is not a FLORES-200 language code (this family "
                                f"reads {choices(BY_FLORES)})")
        if not texts:
            raise UserError(f"{where}: no {suffix} file of a language this family reads (expected "
                            f"<code>{suffix} with code one of {choices(BY_FLORES)})")
        ordered = [texts[code] for code in LANGUAGES if code in texts]
        _check_aligned(ordered)
        read += ordered
        splits[name] = Split(name, (Table({code: t.lines for code, t in texts.items()},
                                          {code: t.path for code, t in texts.items()}),))
        files[name] = str(where)
        hints[name] = f"{folder}/{{flores}}{suffix}"
    notes = ["n-way parallel (FLORES): line i of every file translates line i of eng_Latn, so a "
             "non-English direction pairs two translations of the same English sentence (the English "
             "pivot)"]
    if skipped:
        notes.append(f"{len(skipped)} other FLORES languages skipped (files present, not used by this "
                     "family)")
    return _Parsed(source, "flores", splits, files, hints, tuple(notes + _stripped_note(read)))


def _bundled() -> _Parsed:
    root = resources.files(__package__).joinpath("data", BUNDLED_FOLDER)
    if not root.joinpath("dev").is_dir():
        raise UserError("the bundled FLORES-200 sample is missing (no data/flores200/dev/ in "
                        f"{__package__}): the installation is incomplete")
    return _flores(root, BUNDLED_SOURCE)


# --------------------------------------------------------------------------------------------------
# the hub corpus (paper preset)

def hub_config(code: str) -> str:
    return "-".join(sorted((PIVOT, code)))


def _hub() -> _Parsed:
    """OPUS-100's English-centric pairs of the ten languages as one two-column table per language and
    split; ``datasets`` is imported here because only the ``paper`` preset needs it (network)."""
    from datasets import load_dataset

    splits: dict = {name: [] for name in HUB_SPLITS}
    for code in EVAL_LANGUAGES:
        config = hub_config(code)
        dataset = load_dataset(HUB_CORPUS, config)
        for name, hub_split in HUB_SPLITS.items():
            where = f"hub:{HUB_CORPUS}[{config}] {hub_split}"
            english, other = [], []
            for number, row in enumerate(dataset[hub_split], start=1):
                pair = row.get("translation") or {}
                sides = [str(pair.get(c) or "").strip() for c in (PIVOT, code)]
                if not all(sides):
                    raise UserError(f"{where} row {number}: empty or missing {PIVOT} or {code} sentence")
                english.append(sides[0])
                other.append(sides[1])
            splits[name].append(Table({PIVOT: tuple(english), code: tuple(other)}, {PIVOT: where, code: where}))
    hint = f"hub:{HUB_CORPUS}[{{code}}]"
    return _Parsed(source=HUB_KEY, layout="hub",
                   splits={name: Split(name, tuple(tables)) for name, tables in splits.items()},
                   files={name: f"{HUB_KEY} {split}" for name, split in HUB_SPLITS.items()},
                   hints={name: hint for name in HUB_SPLITS})


# --------------------------------------------------------------------------------------------------
# the parallel layout

@dataclass(frozen=True)
class _PairName:
    """What a ``<split>.<src>-<tgt>.<lang>`` file name says, codes resolved to ISO."""

    split: str
    pair: tuple            # (src, tgt) ISO codes as written in the name
    side: str              # ISO code of this file's language
    stem: str              # "<split>.<src>-<tgt>" as written


def _parallel_names(root: Path) -> list:
    return sorted(path for path in root.iterdir() if path.is_file() and _PARALLEL_NAME.match(path.name))


def _parse_name(path: Path) -> _PairName:
    split, source, target, side = _PARALLEL_NAME.match(path.name).groups()
    codes = []
    for code in (source, target, side):
        if code not in _FILE_CODES:
            raise UserError(f"{path}: unknown language code {code!r} in the file name (valid: "
                            f"{choices(LANGUAGES)}, or their mBART tokens such as fr_XX)")
        codes.append(_FILE_CODES[code].code)
    if codes[0] == codes[1]:
        raise UserError(f"{path}: the pair {source}-{target} names one language twice")
    if codes[2] not in codes[:2]:
        raise UserError(f"{path}: language {side!r} is not one of the pair {source}-{target}")
    return _PairName(split, (codes[0], codes[1]), codes[2], f"{split}.{source}-{target}")


def _parallel_split(root: Path, name: str, file_split: str, paths: list) -> tuple[Split, list]:
    """The split's tables (English first in each) and the files read, for the notes."""
    by_stem: dict[str, tuple] = {}
    for path in paths:
        parsed = _parse_name(path)
        if parsed.split == file_split:
            by_stem.setdefault(parsed.stem, (parsed.pair, {}))[1][parsed.side] = path
    tables, seen, read = [], {}, []
    for stem, (pair, sides) in sorted(by_stem.items()):
        for code in pair:
            if code not in sides:
                other = next(iter(sides.values()))
                raise UserError(f"{other} has no partner file {stem}.{code} in {root}")
        key = frozenset(pair)
        if key in seen:
            raise UserError(f"{root}: {seen[key]}.* and {stem}.* hold the same language pair; keep one")
        seen[key] = stem
        codes = sorted(pair, key=lambda code: code != PIVOT)
        texts = [read_lines(sides[code]) for code in codes]
        _check_aligned(texts)
        tables.append(Table({code: t.lines for code, t in zip(codes, texts)},
                            {code: t.path for code, t in zip(codes, texts)}))
        read += texts
    return Split(name, tuple(tables)), read


def _parallel(root: Path, source: str) -> _Parsed:
    paths = _parallel_names(root)
    present = {_parse_name(path).split for path in paths}
    chosen, notes = {}, []
    for name, candidates in PARALLEL_SPLITS.items():
        found = [split for split in candidates if split in present]
        if not found:
            raise UserError(f"{root}: no {' or '.join(f'{s}.*' for s in candidates)} files for the "
                            f"{name} split (names like {candidates[0]}.en-fr.en)")
        chosen[name] = found[0]
        if len(found) > 1:
            notes.append(f"evaluation split read from {found[0]}.* files ({', '.join(found[1:])}.* "
                         "ignored: kept apart from model selection)")
    splits, read = {}, []
    for name in SPLITS:
        splits[name], texts = _parallel_split(root, name, chosen[name], paths)
        read += texts
    return _Parsed(source, "parallel", splits,
                   {name: str(root / f"{chosen[name]}.*") for name in SPLITS},
                   {name: f"{chosen[name]}.{{code}}-en.{{code}} with {chosen[name]}.{{code}}-en.en"
                    for name in SPLITS},
                   tuple(notes + _stripped_note(read)))


LAYOUT_READERS = {"flores": _flores, "parallel": _parallel}
