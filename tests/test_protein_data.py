"""Protein data layer (torch-free): FASTA checks, safe split pickles, class schemes, the four
``--data-dir`` layouts, the deterministic split and the bundled ThermoProt sample.

Directories are built in ``tmp_path`` from a few records of the bundled sample; tests that read the
shared ThermoProt copy skip when it is absent.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
from collections import Counter, OrderedDict
from pathlib import Path

import pytest

from conftest import SHARED_DATA, fails
from smctune.trainables.protein import classes, data, fasta, safe_pickle, sample

BUNDLED = Path(data.__file__).parent / "data" / "thermo"
THERMOPROT = SHARED_DATA / "thermostability"
CLASSES = ("psychrophilic", "mesophilic", "thermophilic", "hyperthermophilic")
needs_shared = pytest.mark.skipif(not (THERMOPROT / "mesophilic.fasta").is_file(),
                                  reason=f"shared ThermoProt data not found at {THERMOPROT}")


@pytest.fixture(autouse=True)
def fresh_cache():
    data.clear_cache()
    yield
    data.clear_cache()


def pairs(path: Path) -> list[tuple[str, str]]:
    return [(record.header, record.sequence) for record in fasta.read_fasta(path)]


def records(name: str, count: int, split: str = "train") -> list[tuple[str, str]]:
    """The first ``count`` (header, sequence) records of a bundled class file."""
    return pairs(BUNDLED / split / f"{name}.fasta")[:count]


def write_fasta(path: Path, items) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f">{header}\n{sequence}\n" for header, sequence in items))
    return path


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


SEQS = [seq for _, seq in records("mesophilic", 12)]


# --------------------------------------------------------------------------------------------------
# FASTA

def test_fasta_records_joined_cleaned(tmp_path):
    path = tmp_path / "x.fasta"
    path.write_bytes(b"\xef\xbb\xbf>first protein\r\nmkv\r\nLLA*\r\n\n"
                     b">second\nACDEFGHIKLMNPQRSTVWYXBZUOJ\n")
    got = fasta.read_fasta(path)
    assert got == [fasta.FastaRecord(1, "first protein", "MKVLLA"),
                   fasta.FastaRecord(2, "second", "ACDEFGHIKLMNPQRSTVWYXBZUOJ")]
    assert fasta.model_residues(got[1].sequence).endswith("UOX")


@pytest.mark.parametrize("body, match", [
    (b">a\nMKV\n>Sequence 2\nMK1V\n", r"x\.fasta record 2 \('Sequence 2'\): field 'sequence' has '1' at "
                                      r"residue 3 \(valid: ACDEFGHIKLMNPQRSTVWY and X, B, Z, U, O, J\)"),
    (b">a\nMK-V\n", r"record 1 \('a'\): field 'sequence' has '-' at residue 3"),
    (b">a\nMK\nV.\n", r"has '\.' at residue 4"),
    (b">a\nMK*V*\n", r"has '\*' at residue 3"),
    (b">a\nMK V\n", r"has ' ' at residue 3"),
    (b">a\nMK\xe2\x84\xaaV\n", r"has '\u212a' at residue 3"),     # the Kelvin sign is not a K
    (b">a\nMKV\n>b\n\n>c\nMKV\n", r"record 2 \('b'\): field 'sequence' is empty"),
    (b">a\n*\n", r"record 1 \('a'\): field 'sequence' is empty"),
    (b"MKV\n>a\nMKV\n", r"x\.fasta line 1: sequence data before the first '>' header"),
    (b">a\nMKV\n>b\nMK\xffV\n", r"x\.fasta line 4: not UTF-8"),
    (b"\n\n", r"x\.fasta: no FASTA records"),
])
def test_fasta_errors(tmp_path, body, match):
    path = tmp_path / "x.fasta"
    path.write_bytes(body)
    fails(match, fasta.read_fasta, path)


def test_fasta_missing_file(tmp_path):
    fails(r"cannot read data file .*nope\.fasta", fasta.read_fasta, tmp_path / "nope.fasta")


# --------------------------------------------------------------------------------------------------
# safe pickles

class _Payload:
    def __init__(self, call, args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("make, refused", [
    (lambda marker: _Payload(os.system, (f"touch {marker}",)), r"(posix|nt)\.system"),
    (lambda marker: _Payload(eval, (f"__import__('pathlib').Path({str(marker)!r}).touch()",)),
     r"builtins\.eval"),
    (lambda marker: _Payload(getattr, (str, "join")), r"builtins\.getattr"),
])
def test_pickle_code_refused(tmp_path, make, refused):
    marker = tmp_path / "marker"
    path = tmp_path / "split.pkl"
    path.write_bytes(pickle.dumps({"train_names": [make(marker)]}))
    message = fails(rf"split\.pkl: refused to load global {refused}", safe_pickle.load_plain, path)
    assert ".tolist()" in message
    assert not marker.exists()


@pytest.mark.parametrize("body, match", [
    (b"cnumpy.core.multiarray\n_reconstruct\n(tR.",
     r"refused to load global numpy\.core\.multiarray\._reconstruct"),
    (b"(lp0\nP1\na.", r"refused a persistent id"),
    (pickle.dumps({"train_names": ["a"] * 20})[:-7], r"not a readable pickle file"),
    (b"not a pickle at all", r"not a readable pickle file"),
    (b"", r"not a readable pickle file \(EOFError"),
])
def test_pickle_bad_files(tmp_path, body, match):
    path = tmp_path / "split.pkl"
    path.write_bytes(body)
    fails(rf"split\.pkl: {match}", safe_pickle.load_plain, path)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_plain_values_load(tmp_path, protocol):
    value = {"names": ["a", "b"], "labels": (1, 2.0), "set": {1, 2}, "frozen": frozenset({3}),
             "complex": 1 + 2j, "ordered": OrderedDict(a=1), "flag": True}
    if protocol >= 3:                 # older protocols write bytes as a call to _codecs.encode
        value["bytes"] = b"\x00\xff"
    path = tmp_path / "split.pkl"
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    assert safe_pickle.load_plain(path) == value


# --------------------------------------------------------------------------------------------------
# class schemes

def test_index_of_labels():
    thermo = classes.SCHEMES["thermo"]
    assert thermo.index_of(3, "w") == 3
    assert thermo.index_of(2.0, "w") == 2                       # SMC-Bench casts float -> long
    assert thermo.index_of(" Thermophilic ", "w") == 2
    assert thermo.index_of("1", "w") == 1
    fails(r"^f line 3, column 'label': label 4 is out of range 0\.\.3 for ThermoProt \(4 classes\)",
          thermo.index_of, 4, "f line 3, column 'label'")
    fails(r"^w: label 1\.5 is a fractional number", thermo.index_of, 1.5, "w")
    fails(r"^w: label True is bool", thermo.index_of, True, "w")
    fails(r"^w: 'warm' is not a ThermoProt \(4 classes\) class \(valid: 0\.\.3 or hyperthermophilic, "
          r"mesophilic, psychrophilic, thermophilic\)", thermo.index_of, "warm", "w")
    fails(r"^w: ThermoProt \(4 classes\) classes cannot be read from a temperature",
          thermo.bin_temperature, "40", "w")


def test_hp_s2c2_five_class_names_and_temperatures():
    hot_cold = classes.SCHEMES["hp-s2c2"]
    assert [hot_cold.index_of(name.upper(), "w") for name in classes.FIVE] == [0, 0, 0, 1, 1]
    assert hot_cold.index_of("hot", "w") == 1 and hot_cold.index_of(0, "w") == 0
    assert [hot_cold.bin_temperature(t, "w") for t in (-5, 44.9, 45, "45.0", 90)] == [0, 0, 1, 1, 1]
    fails(r"^w: 'warm' is not a temperature", hot_cold.bin_temperature, "warm", "w")
    fails(r"^w: 'nan' is not a temperature", hot_cold.bin_temperature, "nan", "w")
    thermo_hot_cold = classes.SCHEMES["thermo-hotcold"]
    assert [thermo_hot_cold.index_of(name, "w") for name in CLASSES] == [0, 0, 1, 1]


def test_meltome_offset_and_binning():
    meltome = classes.SCHEMES["meltome"]
    assert meltome.detect_offset([2, 3, 4, 2]) == 2
    assert meltome.detect_offset(["2", "4.0"]) == 2
    assert meltome.detect_offset([0, 1, 2]) == 0
    assert meltome.detect_offset([2, 2]) == 0               # 2 is a valid 0-based label: no shift
    assert meltome.detect_offset([1, 3, 4]) == 0
    assert meltome.detect_offset([2, 3, "thermophilic"]) == 0
    assert meltome.index_of(4, "w", offset=2) == 2
    fails(r"label 5 is out of range 2\.\.4 for Meltome", meltome.index_of, 5, "w", offset=2)
    assert [meltome.bin_temperature(t, "w") for t in (40, 54.99, 55, 69.9, 70, 95)] == [0, 0, 1, 1, 2, 2]
    assert meltome.binning() == ("below 55 °C mesophilic, 55 to below 70 °C thermophilic, "
                                 "70 °C and above hyperthermophilic")


def test_unknown_task():
    fails(r"unknown protein task 'hp-x': choose one of hp-s, hp-s2c2, hp-s2c5, meltome, thermo, "
          r"thermo-hotcold", data.load, "hp-x", None)


# --------------------------------------------------------------------------------------------------
# the stratified split and the sample command

def test_stratified_split_deterministic_and_stratified():
    per_class = {"a": [(f"s{i}", "M" * (i + 1)) for i in range(40)],
                 "b": [(f"s{i}", "K" * (i + 1)) for i in range(8)], "c": [("only", "MK")]}
    train, dev = sample.stratified_split(per_class, 0.25, 0)
    sizes = {name: (len(train[name]), len(dev[name])) for name in per_class}
    assert sizes == {"a": (30, 10), "b": (6, 2), "c": (1, 0)}
    for name, items in per_class.items():
        assert sorted(train[name] + dev[name]) == sorted(items)
    shuffled = {name: random.Random(5).sample(items, len(items)) for name, items in per_class.items()}
    assert sample.stratified_split(shuffled, 0.25, 0) == (train, dev)       # input order does not matter
    assert sample.stratified_split(per_class, 0.25, 1) != (train, dev)
    fails(r"dev fraction must be between 0 and 1", sample.stratified_split, per_class, 1.0, 0)


def test_sample_command_writes_split(tmp_path):
    for name in CLASSES[:2]:
        write_fasta(tmp_path / "src" / f"{name}.fasta", records(name, 20))
    out = tmp_path / "out"
    assert sample.main([str(tmp_path / "src"), str(out), "--train-per-class", "12",
                        "--dev-per-class", "4"]) == 0
    train, dev = sample.stratified_split(sample.read_class_files(tmp_path / "src"))
    for name in CLASSES[:2]:
        assert pairs(out / "train" / f"{name}.fasta") == train[name][:12]
        assert pairs(out / "dev" / f"{name}.fasta") == dev[name][:4]
    assert sample.main([str(tmp_path / "src"), str(tmp_path / "o2"), "--train-per-class", "16",
                        "--dev-per-class", "1"]) == 2


# --------------------------------------------------------------------------------------------------
# the bundled sample

def provenance_sums() -> dict[str, str]:
    text = (BUNDLED / "PROVENANCE.md").read_text()
    return dict(re.findall(r"^- `([^`]+)` `([0-9a-f]{64})`$", text, flags=re.MULTILINE))


def test_bundled_sample_matches_provenance():
    sums = provenance_sums()
    on_disk = {str(path.relative_to(BUNDLED)) for path in BUNDLED.rglob("*")
               if path.is_file() and path.name != "PROVENANCE.md"}
    assert set(sums) == on_disk and len(sums) == 9
    for name, digest in sums.items():
        assert hashlib.sha256((BUNDLED / name).read_bytes()).hexdigest() == digest, name


def test_bundled_thermo():
    loaded = data.load("thermo", None)
    assert (loaded.source, loaded.layout) == ("bundled sample", "class-fasta")
    assert loaded.report().splits == {"train": 3000, "dev": 1000}
    assert Counter(p.label for p in loaded.splits["train"]) == {0: 750, 1: 750, 2: 750, 3: 750}
    assert Counter(p.label for p in loaded.splits["dev"]) == {0: 250, 1: 250, 2: 250, 3: 250}
    names = [p.name for split in loaded.splits.values() for p in split]
    assert len(set(names)) == len(names) and names[0].startswith("psychrophilic/Sequence ")
    assert not {p.sequence for p in loaded.splits["train"]} & {p.sequence for p in loaded.splits["dev"]}
    assert all("J" not in p.sequence for p in loaded.splits["train"])
    assert any("J" in note for note in loaded.notes)
    assert data.count_longer(loaded.splits["dev"], 1022) == 14
    assert data.count_longer(loaded.splits["dev"], 10_000) == 0


def test_bundled_hot_cold_and_missing_samples():
    loaded = data.load("thermo-hotcold", None)
    assert Counter(p.label for p in loaded.splits["train"]) == {0: 1500, 1: 1500}
    assert Counter(p.label for p in loaded.splits["dev"]) == {0: 500, 1: 500}
    thermo = data.load("thermo", None)
    assert [p.label // 2 for p in thermo.splits["dev"]] == [p.label for p in loaded.splits["dev"]]
    for task in ("hp-s", "hp-s2c5", "hp-s2c2", "meltome"):
        message = fails(r"^no bundled .* sample exists; pass --data-dir", data.load, task, None)
        assert all(layout in message for layout in data.LAYOUTS)


def test_memoized(tmp_path, monkeypatch):
    assert data.load("thermo", None) is data.load("thermo", None)
    for name in CLASSES:
        write_fasta(tmp_path / "d" / "train" / f"{name}.fasta", records(name, 3))
        write_fasta(tmp_path / "d" / "dev" / f"{name}.fasta", records(name, 1, "dev"))
    first = data.load("thermo", str(tmp_path / "d"))
    monkeypatch.chdir(tmp_path)
    assert data.load("thermo", "d/") is first
    assert data.load("thermo-hotcold", "d") is not first
    data.clear_cache()
    assert data.load("thermo", "d") is not first


@needs_shared
def test_sample_reproduced_from_shared_data(tmp_path):
    assert sample.main([str(THERMOPROT), str(tmp_path), "--train-per-class", "750",
                        "--dev-per-class", "250", "--dev-fraction", "0.25", "--seed", "0"]) == 0
    for split in ("train", "dev"):
        for name in CLASSES:
            relative = f"{split}/{name}.fasta"
            assert (tmp_path / relative).read_bytes() == (BUNDLED / relative).read_bytes(), relative


@needs_shared
def test_full_thermoprot_directory_contains_the_sample():
    full = data.load("thermo", str(THERMOPROT))
    assert full.report().splits == {"train": 24000, "dev": 8000}
    assert any("no sequence-identity clustering" in note for note in full.notes)
    bundled = data.load("thermo", None)
    for split in ("train", "dev"):
        assert set(bundled.splits[split]) <= set(full.splits[split])


# --------------------------------------------------------------------------------------------------
# class-fasta directories

def test_class_fasta_split_folders_with_hot_cold_names(tmp_path):
    for name in CLASSES:
        write_fasta(tmp_path / "train" / f"{name}.fasta", records(name, 3))
        write_fasta(tmp_path / "test" / f"{name.capitalize()}.fasta", records(name, 2, "dev"))
    loaded = data.load("thermo-hotcold", str(tmp_path))
    assert loaded.layout == "class-fasta" and loaded.files["dev"] == str(tmp_path / "test")
    # the files take turns (mesophilic, psychrophilic, hyperthermophilic, thermophilic), so every
    # prefix of a split is balanced
    assert [p.label for p in loaded.splits["train"]] == [0, 0, 1, 1] * 3
    assert [p.label for p in loaded.splits["dev"]] == [0, 0, 1, 1] * 2
    assert loaded.splits["dev"][0].name == f"Mesophilic/{records('mesophilic', 1, 'dev')[0][0]}"


def test_class_fasta_five_class_files_for_hp_s2c2(tmp_path):
    for index, name in enumerate(classes.FIVE):
        write_fasta(tmp_path / "train" / f"{name}.fasta", [(f"p{index}", SEQS[index])])
        write_fasta(tmp_path / "dev" / f"{name}.fasta", [(f"q{index}", SEQS[5 + index])])
    loaded = data.load("hp-s2c2", str(tmp_path))
    assert [p.label for p in loaded.splits["train"]] == [0, 0, 0, 1, 1]
    assert [p.name for p in loaded.splits["train"]][3:] == ["hyperthermophilic/p4", "thermophilic/p3"]


def test_class_fasta_direct_files_are_split(tmp_path):
    for name in CLASSES:
        write_fasta(tmp_path / f"{name}.fasta", records(name, 8))
    loaded = data.load("thermo", str(tmp_path))
    assert loaded.report().splits == {"train": 24, "dev": 8}
    assert any("stratified_split (dev fraction 0.25, seed 0)" in note for note in loaded.notes)
    expected = sample.stratified_split({name: records(name, 8) for name in CLASSES})[1]
    psychrophilic = [p.name for p in loaded.splits["dev"] if p.name.startswith("psychrophilic/")]
    assert psychrophilic == [f"psychrophilic/{header}" for header, _ in expected["psychrophilic"]]


def test_class_fasta_errors(tmp_path):
    write_fasta(tmp_path / "a" / "train" / "mesophilic.fasta", [("x", "MKV")])
    fails(r"a/train has class files but .*a has no dev/ or test/ folder", data.load, "thermo",
          str(tmp_path / "a"))
    write_fasta(tmp_path / "b" / "warm.fasta", [("x", "MKV")])
    fails(r"b/warm\.fasta: file name 'warm' is not a ThermoProt \(4 classes\) class \(class-fasta "
          r"layout: <class>\.fasta with <class> one of hyperthermophilic, mesophilic, ", data.load,
          "thermo", str(tmp_path / "b"))
    write_fasta(tmp_path / "c" / "train" / "mesophilic.fasta", [("x", "MKV")])
    write_fasta(tmp_path / "c" / "dev" / "mesophilic.fasta", [("y", "MKZ"), ("Sequence 2", "MK9")])
    fails(r"c/dev/mesophilic\.fasta record 2 \('Sequence 2'\): field 'sequence' has '9' at residue 3",
          data.load, "thermo", str(tmp_path / "c"))


def test_class_fasta_notes_missing_class_and_overlap(tmp_path):
    write_fasta(tmp_path / "train" / "mesophilic.fasta", [("a", SEQS[0]), ("b", SEQS[1])])
    write_fasta(tmp_path / "dev" / "thermophilic.fasta", [("c", SEQS[1])])
    notes = data.load("thermo", str(tmp_path)).notes
    assert "no training proteins of class psychrophilic, thermophilic, hyperthermophilic" in notes
    assert "1 dev sequences also occur in train" in notes


# --------------------------------------------------------------------------------------------------
# split-pickle

def write_split_pickle(directory: Path, train, test, subfolder: str = "") -> Path:
    """``train``/``test``: (name, label) pairs; FASTA files get sequences from SEQS by position."""
    directory.mkdir(parents=True, exist_ok=True)
    for index, (name, _) in enumerate([*train, *test]):
        write_fasta(directory / subfolder / f"{name}.fasta",
                    [(f"{name} header", SEQS[index % len(SEQS)])])
    content = {"train_names": [n for n, _ in train], "train_labels": [lab for _, lab in train],
               "test_names": [n for n, _ in test], "test_labels": [lab for _, lab in test]}
    path = directory / "hotprotein_split.pkl"
    path.write_bytes(pickle.dumps(content))
    return path


def test_split_pickle_loads(tmp_path):
    path = write_split_pickle(tmp_path, [("P1", 0), ("P2", 4.0), ("P3", "Mesophilic")], [("P4", 3)],
                              subfolder="fasta")
    loaded = data.load("hp-s", str(tmp_path))
    assert (loaded.layout, loaded.files) == ("split-pickle", {"train": str(path), "dev": str(path)})
    assert [(p.name, p.label) for p in loaded.splits["train"]] == [("P1", 0), ("P2", 4), ("P3", 2)]
    assert loaded.splits["dev"][0].sequence == SEQS[3]
    assert loaded.notes == ("no training proteins of class psychrophilic, thermophilic",)


def test_split_pickle_meltome_offset(tmp_path):
    write_split_pickle(tmp_path / "shifted", [("a", 2), ("b", 3)], [("c", 4), ("d", 2)])
    loaded = data.load("meltome", str(tmp_path / "shifted"))
    assert [p.label for split in loaded.splits.values() for p in split] == [0, 1, 2, 0]
    assert any("2 subtracted" in note for note in loaded.notes)
    write_split_pickle(tmp_path / "plain", [("a", 0), ("b", 2)], [("c", 1)])
    loaded = data.load("meltome", str(tmp_path / "plain"))
    assert [p.label for split in loaded.splits.values() for p in split] == [0, 2, 1]
    assert loaded.notes == ("no training proteins of class thermophilic",)
    write_split_pickle(tmp_path / "mixed", [("a", 1), ("b", 3)], [("c", 4)])
    fails(r"split 'train' index 1 \('b'\): field 'label': label 3 is out of range 0\.\.2 for Meltome",
          data.load, "meltome", str(tmp_path / "mixed"))


def test_split_pickle_errors(tmp_path):
    def case(name, train, test, change=None) -> str:
        """A good split directory, its pickle's dict then edited by ``change``."""
        path = write_split_pickle(tmp_path / name, train, test)
        if change is not None:
            content = pickle.loads(path.read_bytes())
            path.write_bytes(pickle.dumps(change(content)))
        return str(tmp_path / name)

    fails(r"hotprotein_split\.pkl split 'test' index 1 \('Q2'\): field 'label': label 7 is out of "
          r"range 0\.\.4 for HotProtein HP-S", data.load, "hp-s",
          case("label", [("P1", 0)], [("Q1", 1), ("Q2", 7)]))
    directory = case("missing", [("P1", 0), ("P2", 1)], [("Q1", 1)])
    (Path(directory) / "P2.fasta").unlink()
    fails(r"hotprotein_split\.pkl split 'train' index 1 \('P2'\): field 'name': no P2\.fasta in ",
          data.load, "hp-s", directory)
    directory = case("length", [("P1", 0)], [("Q1", 1)], lambda c: {**c, "test_labels": [1, 2]})
    fails(r"hotprotein_split\.pkl: split 'test' has 1 names but 2 labels", data.load, "hp-s", directory)
    directory = case("key", [("P1", 0)], [("Q1", 1)],
                     lambda c: {k: v for k, v in c.items() if k != "train_names"})
    fails(r"hotprotein_split\.pkl: missing key 'train_names'", data.load, "hp-s", directory)
    directory = case("type", [("P1", 0)], [("Q1", 1)], lambda c: {**c, "test_names": "Q1"})
    fails(r"hotprotein_split\.pkl: key 'test_names' must be a list, got str", data.load, "hp-s",
          directory)
    directory = case("path", [("P1", 0)], [("Q1", 1)], lambda c: {**c, "train_names": ["../P1"]})
    fails(r"index 0 \('\.\./P1'\): field 'name' is not a plain file name", data.load, "hp-s", directory)
    directory = case("list", [("P1", 0)], [("Q1", 1)], lambda c: [1, 2])
    fails(r"hotprotein_split\.pkl: expected a dict with keys train_names", data.load, "hp-s", directory)
    (Path(directory) / "other.pkl").write_bytes(pickle.dumps({}))
    fails(r"several split files, keep one: hotprotein_split\.pkl, other\.pkl", data.load, "hp-s",
          directory)


# --------------------------------------------------------------------------------------------------
# csv and flip-csv

def test_csv_labels_and_temperatures(tmp_path):
    (tmp_path / "a").mkdir()
    write_csv(tmp_path / "a" / "train.csv",
              ["id,sequence,label", f"1,{SEQS[0]},0", f"2,{SEQS[1].lower()}*,Hyperthermophilic"])
    write_csv(tmp_path / "a" / "valid.csv",
              ["id,sequence,label", f"3,{SEQS[2]},2", "", f"4,{SEQS[3]},1.0"])
    loaded = data.load("thermo", str(tmp_path / "a"))
    assert loaded.layout == "csv" and loaded.files["dev"].endswith("valid.csv")
    assert [(p.name, p.label) for p in loaded.splits["train"]] == [("train.csv:2", 0),
                                                                   ("train.csv:3", 3)]
    assert loaded.splits["train"][1].sequence == SEQS[1]
    assert [p.label for p in loaded.splits["dev"]] == [2, 1]

    (tmp_path / "m").mkdir()
    write_csv(tmp_path / "m" / "train.csv",
              ["real_seq,tm", f"{SEQS[0]},54.9", f"{SEQS[1]},55", f"{SEQS[2]},81.2"])
    write_csv(tmp_path / "m" / "test.csv", ["real_seq,tm", f"{SEQS[3]},70"])
    write_csv(tmp_path / "m" / "dev.csv", ["real_seq,tm", f"{SEQS[4]},20"])
    loaded = data.load("meltome", str(tmp_path / "m"))
    assert [p.label for p in loaded.splits["train"]] == [0, 1, 2]
    assert loaded.files["dev"].endswith("test.csv") and [p.label for p in loaded.splits["dev"]] == [2]
    assert any(note.startswith("temperatures binned: below 55 °C mesophilic") for note in loaded.notes)
    assert any("dev.csv ignored" in note for note in loaded.notes)
    fails(r"m/train\.csv line 2, column 'tm': ThermoProt \(4 classes\) classes cannot be read from a "
          r"temperature", data.load, "thermo", str(tmp_path / "m"))


@pytest.mark.parametrize("train_lines, match", [
    (["sequence,label", "MKV,0", "MK-V,1"],
     r"train\.csv line 3, column 'sequence' has '-' at residue 3"),
    (["sequence,label", "MKV,0", "MKV,warm"], r"train\.csv line 3, column 'label': 'warm' is not a "),
    (["sequence,label", "MKV,"], r"train\.csv line 2, column 'label' is empty"),
    (["sequence,label", "MKV,0,1"], r"train\.csv line 2: 3 fields, the header has 2"),
    (["seq,label", "MKV,0"], r"train\.csv line 1 \(header\): no sequence column \(looked for sequence, "
                             r"real_seq; found seq, label\)"),
    (["sequence,class", "MKV,0"], r"train\.csv line 1 \(header\): no label column"),
    (["sequence,label", "MKV,0", "\"MKV\"x,1"], r"train\.csv line 3: malformed CSV"),
])
def test_csv_errors(tmp_path, train_lines, match):
    write_csv(tmp_path / "train.csv", train_lines)
    write_csv(tmp_path / "dev.csv", ["sequence,label", "MKV,0"])
    fails(match, data.load, "thermo", str(tmp_path))


def test_csv_bad_bytes_and_missing_dev(tmp_path):
    (tmp_path / "train.csv").write_bytes(b"sequence,label\nMKV,0\nMK\xffV,1\n")
    (tmp_path / "dev.csv").write_text("sequence,label\nMKV,0\n")
    fails(r"train\.csv line 3: not UTF-8", data.load, "thermo", str(tmp_path))
    (tmp_path / "dev.csv").unlink()
    (tmp_path / "train.csv").write_text("sequence,label\nMKV,0\n")
    fails(r"train\.csv has no evaluation split next to it \(looked for test\.csv, dev\.csv, "
          r"valid\.csv\)", data.load, "thermo", str(tmp_path))
    (tmp_path / "dev.csv").write_text("sequence,label\n")
    fails(r"dev\.csv: no proteins in split 'dev'", data.load, "thermo", str(tmp_path))


def test_flip_csv(tmp_path):
    write_csv(tmp_path / "mixed_split.csv", [
        "sequence,target,set,validation",
        f"{SEQS[0]},50.1,train,False", f"{SEQS[1]},60,train,True", f"{SEQS[2]},75,train,",
        f"{SEQS[3]},58,test,", f"{SEQS[4]},40,test,False"])
    write_csv(tmp_path / "notes.csv", ["a,b", "1,2"])
    loaded = data.load("meltome", str(tmp_path))
    assert loaded.layout == "flip-csv" and loaded.files["train"].endswith("mixed_split.csv")
    assert [(p.name, p.label) for p in loaded.splits["train"]] == [("mixed_split.csv:2", 0),
                                                                   ("mixed_split.csv:4", 2)]
    assert [p.label for p in loaded.splits["dev"]] == [1, 0]
    assert any("1 rows of mixed_split.csv marked validation=True" in note for note in loaded.notes)
    fails(r"mixed_split\.csv line 2, column 'target': ThermoProt \(4 classes\) classes cannot be read",
          data.load, "thermo", str(tmp_path))


def test_flip_csv_errors(tmp_path):
    header = "sequence,target,set,validation"
    write_csv(tmp_path / "a.csv", [header, "MKV,50,train,False", "MKV,50,holdout,False"])
    fails(r"a\.csv line 3, column 'set' is 'holdout', not train or test", data.load, "meltome",
          str(tmp_path))
    write_csv(tmp_path / "a.csv", [header, "MKV,50,train,maybe"])
    fails(r"a\.csv line 2, column 'validation' is 'maybe', not True or False", data.load, "meltome",
          str(tmp_path))
    write_csv(tmp_path / "b.csv", ["validation,set,target,sequence"])
    fails(r"several FLIP CSV files, keep one: a\.csv, b\.csv", data.load, "meltome", str(tmp_path))


def test_no_layout(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    message = fails(r"no protein data layout found; expected one of split-pickle: ", data.load, "hp-s",
                    str(tmp_path))
    assert all(f"{layout}: " in message for layout in data.LAYOUTS)
    fails(r"data directory not found: .*absent", data.load, "hp-s", str(tmp_path / "absent"))


def test_a_prefix_of_a_bundled_split_holds_every_class():
    """The smoke preset keeps the first 160 / 80 proteins: they must not be one class."""
    for task, classes_ in (("thermo", 4), ("thermo-hotcold", 2)):
        loaded = data.load(task, None)
        for split, limit in (("train", 160), ("dev", 80)):
            counts = Counter(p.label for p in loaded.splits[split][:limit])
            assert len(counts) == classes_ and max(counts.values()) - min(counts.values()) <= 1, (task, counts)
