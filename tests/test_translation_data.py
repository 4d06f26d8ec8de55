"""Translation data layer (torch-free): languages and directions, the FLORES and parallel-file layouts,
the English pivot, one-line errors and the bundled FLORES-200 sample.

Directories are built in ``tmp_path`` from synthetic sentences; the test that reads the shared
FLORES-200 copy skips when it is absent.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from conftest import SHARED_DATA, fails
from smctune.catalog.task import limited
from smctune.trainables.translation import data
from smctune.trainables.translation import languages as langs

BUNDLED = Path(data.__file__).parent / "data" / "flores200"
FLORES = SHARED_DATA / "flores200"
TASKS = {"mt-2to2": 2, "mt-5to5": 5, "mt-10to10": 10}
needs_shared = pytest.mark.skipif(not (FLORES / "dev" / "eng_Latn.dev").is_file(),
                                  reason=f"shared FLORES-200 data not found at {FLORES}")


@pytest.fixture(autouse=True)
def fresh_cache():
    data.clear_cache()
    yield
    data.clear_cache()


def sentence(code: str, index: int) -> str:
    return f"{code} sentence {index}"


def write_lines(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def write_pair(root: Path, split: str, source: str, target: str, rows) -> None:
    """``<split>.<source>-<target>.{source,target}`` from ``(source line, target line)`` rows."""
    write_lines(root / f"{split}.{source}-{target}.{source}", [a for a, _ in rows])
    write_lines(root / f"{split}.{source}-{target}.{target}", [b for _, b in rows])


def english_rows(code: str, count: int, english=None) -> list[tuple[str, str]]:
    """``(x, en)`` rows whose English side is ``english[i]`` (default ``en sentence i``)."""
    english = english or [sentence("en", i) for i in range(count)]
    return [(sentence(code, i), english[i]) for i in range(count)]


def parallel_eval(root: Path, split: str = "valid", count: int = 3) -> None:
    """The 20 evaluation directions as ``<split>.en-x`` files, every task's minimum."""
    for code in langs.EVAL_LANGUAGES:
        write_pair(root, split, "en", code, [(b, a) for a, b in english_rows(code, count)])


def flores_dir(root: Path, codes=("eng_Latn", *(langs.LANGUAGES[c].flores for c in langs.EVAL_LANGUAGES)),
               train: int = 4, evaluation: int = 2) -> Path:
    """A FLORES-shaped directory with synthetic n-way lines: line i of every file is sentence i."""
    for folder, suffix, count in (("dev", ".dev", train), ("devtest", ".devtest", evaluation)):
        for code in codes:
            write_lines(root / folder / f"{code}{suffix}", [sentence(code, i) for i in range(count)])
    return root


# --------------------------------------------------------------------------------------------------
# languages and directions

def test_direction_counts():
    for task, size in TASKS.items():
        directions = langs.training_directions(task)
        assert len(directions) == (size + 1) * size
        assert len(set(directions)) == len(directions) and list(directions) == sorted(directions)
        assert all(a != b for a, b in directions)
        assert {c for d in directions for c in d} == {"en", *langs.EVAL_LANGUAGES[:size]}
    assert [len(langs.training_directions(t)) for t in TASKS] == [6, 30, 110]
    assert langs.training_directions("mt-2to2") == (("cs", "en"), ("cs", "fr"), ("en", "cs"),
                                                   ("en", "fr"), ("fr", "cs"), ("fr", "en"))
    evaluation = langs.eval_directions()
    assert len(evaluation) == 20
    assert set(evaluation) == ({(c, "en") for c in langs.EVAL_LANGUAGES}
                               | {("en", c) for c in langs.EVAL_LANGUAGES})
    assert set(evaluation) <= set(langs.training_directions("mt-10to10"))


def test_language_table():
    assert set(langs.LANGUAGES) == {"en", *langs.EVAL_LANGUAGES} and langs.PIVOT == "en"
    assert [langs.LANGUAGES[c].mbart for c in ("en", *langs.EVAL_LANGUAGES)] == [
        "en_XX", "fr_XX", "cs_CZ", "de_DE", "gu_IN", "ja_XX", "my_MM", "ro_RO", "ru_RU", "vi_VN", "zh_CN"]
    tokenizers = {c: lang.bleu_tokenizer for c, lang in langs.LANGUAGES.items()}
    assert tokenizers.pop("zh") == "zh" and tokenizers.pop("ja") == "char" and tokenizers.pop("my") == "char"
    assert set(tokenizers.values()) == {"13a"}
    assert langs.language("gu").flores == "guj_Gujr"
    fails(r"^unknown language code 'xx': choose one of cs, de, en, fr, gu, ja, my, ro, ru, vi, zh$",
          langs.language, "xx")
    fails(r"^unknown translation task 'mt-3to3': choose one of mt-10to10, mt-2to2, mt-5to5$",
          langs.training_directions, "mt-3to3")
    fails(r"unknown translation task 'mt-3to3'", data.load, "mt-3to3", None)


# --------------------------------------------------------------------------------------------------
# the bundled sample

def provenance_sums() -> dict[str, str]:
    text = (BUNDLED / "PROVENANCE.md").read_text(encoding="utf-8")
    return dict(re.findall(r"^- `([^`]+)` `([0-9a-f]{64})`$", text, flags=re.MULTILINE))


def test_bundled_sample_matches_provenance():
    sums = provenance_sums()
    on_disk = {str(path.relative_to(BUNDLED)) for path in BUNDLED.rglob("*")
               if path.is_file() and path.suffix in (".dev", ".devtest")}
    assert set(sums) == on_disk and len(sums) == 22
    for name, digest in sums.items():
        assert hashlib.sha256((BUNDLED / name).read_bytes()).hexdigest() == digest, name
    assert (BUNDLED / "LICENSE.FLORES-200").is_file()
    text = (BUNDLED / "PROVENANCE.md").read_text(encoding="utf-8")
    assert "| 997 (all) |" in text and "| 200 (first 200 of 1,012) |" in text
    for language in langs.LANGUAGES.values():
        assert (BUNDLED / "dev" / f"{language.flores}.dev").read_bytes().count(b"\n") == 997
        assert (BUNDLED / "devtest" / f"{language.flores}.devtest").read_bytes().count(b"\n") == 200


@pytest.mark.parametrize("task", TASKS)
def test_bundled_sample_loads_for_every_task(task):
    corpus = data.load(task, None)
    size = TASKS[task]
    assert (corpus.source, corpus.layout) == (data.BUNDLED_SOURCE, "flores")
    report = corpus.report()
    assert report.source == "bundled sample (FLORES-200 dev / first 200 devtest lines)"
    assert report.splits == {"train": 997 * (size + 1) * size, "eval": 200 * 20}
    assert report.files["train"].endswith("flores200/dev")
    assert report.files["eval"].endswith("flores200/devtest")
    assert set(corpus.counts["train"]) == set(langs.training_directions(task))
    assert set(corpus.counts["eval"]) == set(langs.eval_directions())
    assert corpus.train.languages == corpus.eval.languages == ("en", *langs.EVAL_LANGUAGES)
    assert len(corpus.train.directions_available) == 110
    assert any("77 lines had leading or trailing whitespace" in note for note in report.notes)
    assert any(note.startswith(f"{task}: ") for note in report.notes)


def test_n_way_pairs_align_line_by_line():
    corpus = data.load("mt-2to2", None)
    english = (BUNDLED / "dev" / "eng_Latn.dev").read_text(encoding="utf-8").splitlines()
    french = (BUNDLED / "dev" / "fra_Latn.dev").read_text(encoding="utf-8").splitlines()
    czech = (BUNDLED / "dev" / "ces_Latn.dev").read_text(encoding="utf-8").splitlines()
    assert corpus.train.pairs(("fr", "en")) == [(f.strip(), e.strip()) for f, e in zip(french, english)]
    assert corpus.train.pairs(("en", "fr"))[17] == (english[17].strip(), french[17].strip())
    assert corpus.train.pairs(("fr", "cs"))[500] == (french[500].strip(), czech[500].strip())
    assert corpus.train.route("fr", "cs") == "direct"
    ja = corpus.eval.pairs(("en", "ja"))
    assert len(ja) == 200 and ja[0][0].startswith('"We now have 4-month-old mice')
    # every kept line is stripped and non-empty (FLORES's Romanian has trailing spaces)
    romanian = [source for source, _ in corpus.train.pairs(("ro", "en"))]
    assert all(line == line.strip() and line for line in romanian)


def test_limits_cut_each_direction():
    corpus = data.load("mt-5to5", None)
    cut = {d: limited(corpus.train.pairs(d), 8, "train.train_limit") for d in corpus.training_directions}
    assert len(cut) == 30 and all(len(pairs) == 8 for pairs in cut.values())
    assert cut[("de", "gu")][0] == corpus.train.pairs(("de", "gu"))[0]


def test_memoized(tmp_path, monkeypatch):
    assert data.load("mt-2to2", None) is data.load("mt-2to2", None)
    flores_dir(tmp_path / "d")
    first = data.load("mt-2to2", str(tmp_path / "d"))
    monkeypatch.chdir(tmp_path)
    assert data.load("mt-2to2", "d/") is first
    assert data.load("mt-5to5", "d") is not first
    data.clear_cache()
    assert data.load("mt-2to2", "d") is not first


# --------------------------------------------------------------------------------------------------
# the flores layout

def test_flores_layout_skips_other_flores_languages(tmp_path):
    root = flores_dir(tmp_path, codes=("eng_Latn", "fra_Latn", "ces_Latn", "deu_Latn", "guj_Gujr",
                                       "jpn_Jpan", "mya_Mymr", "ron_Latn", "rus_Cyrl", "vie_Latn",
                                       "zho_Hans", "swh_Latn"))
    (root / "dev" / "README").write_text("not a sentence file")
    corpus = data.load("mt-10to10", str(root))
    assert corpus.report().splits == {"train": 4 * 110, "eval": 2 * 20}
    assert corpus.train.pairs(("zh", "my")) == [(sentence("zho_Hans", i), sentence("mya_Mymr", i))
                                                for i in range(4)]
    assert any("1 other FLORES languages skipped" in note for note in corpus.notes)


def test_flores_errors(tmp_path):
    root = flores_dir(tmp_path / "misaligned")
    write_lines(root / "devtest" / "deu_Latn.devtest", ["a", "b", "c"])
    message = fails(r"^misaligned files: .*devtest/deu_Latn\.devtest has 3 lines but "
                    r".*devtest/eng_Latn\.devtest has 2$", data.load, "mt-2to2", str(root))
    assert str(root) in message

    root = flores_dir(tmp_path / "missing", codes=("eng_Latn", "fra_Latn", "ces_Latn"))
    fails(r"missing: train split lacks cs \(Czech\), needed by mt-5to5|"
          r"missing: train split lacks de \(German\), gu \(Gujarati\), ja \(Japanese\), needed by mt-5to5; "
          r"expected e\.g\. dev/deu_Latn\.dev", data.load, "mt-5to5", str(root))
    fails(r"missing: eval split lacks de \(German\), gu \(Gujarati\), .*zh \(Chinese \(Simplified\)\), "
          r"needed by mt-2to2; expected e\.g\. devtest/deu_Latn\.devtest$", data.load, "mt-2to2", str(root))

    root = flores_dir(tmp_path / "name")
    write_lines(root / "dev" / "french.dev", ["x"] * 4)
    fails(r"dev/french\.dev: 'french' is not a FLORES-200 language code \(this family reads ces_Latn, "
          r"deu_Latn, eng_Latn", data.load, "mt-2to2", str(root))

    root = flores_dir(tmp_path / "half")
    for path in (root / "devtest").iterdir():
        path.unlink()
    (root / "devtest").rmdir()
    fails(r"half: has dev/ but no devtest/ folder", data.load, "mt-2to2", str(root))


# --------------------------------------------------------------------------------------------------
# the parallel layout and the pivot

def test_parallel_both_orientations(tmp_path):
    write_pair(tmp_path, "train", "en", "fr", [(b, a) for a, b in english_rows("fr", 5)])
    write_pair(tmp_path, "train", "cs", "en", english_rows("cs", 4))
    parallel_eval(tmp_path)
    corpus = data.load("mt-2to2", str(tmp_path))
    assert corpus.layout == "parallel"
    assert corpus.train.pairs(("fr", "en"))[1] == ("fr sentence 1", "en sentence 1")
    assert corpus.train.pairs(("en", "fr"))[1] == ("en sentence 1", "fr sentence 1")
    assert corpus.train.pairs(("cs", "en"))[3] == ("cs sentence 3", "en sentence 3")
    assert corpus.train.pairs(("en", "cs"))[3] == ("en sentence 3", "cs sentence 3")
    assert corpus.eval.pairs(("zh", "en")) == [("zh sentence 0", "en sentence 0"),
                                              ("zh sentence 1", "en sentence 1"),
                                              ("zh sentence 2", "en sentence 2")]
    assert corpus.files == {"train": str(tmp_path / "train.*"), "eval": str(tmp_path / "valid.*")}
    assert corpus.report().splits == {"train": 5 + 5 + 4 + 4 + 4 + 4, "eval": 60}
    assert set(corpus.train.directions_available) == set(langs.training_directions("mt-2to2"))
    fails(r"^the train split has no de-en sentence pairs \(languages: en, fr, cs\)$",
          corpus.train.pairs, ("de", "en"))


def test_pivot_joins_on_identical_english(tmp_path):
    english_fr = ["A.", "B.", "A.", "C.", "D."]        # "A." twice: the first fr sentence counts
    english_cs = ["D.", "B.", "E.", "B.", "A."]        # "B." twice: the first cs sentence counts
    write_pair(tmp_path, "train", "fr", "en", [(f"fr{i}", e) for i, e in enumerate(english_fr)])
    write_pair(tmp_path, "train", "en", "cs", [(e, f"cs{i}") for i, e in enumerate(english_cs)])
    parallel_eval(tmp_path)
    corpus = data.load("mt-2to2", str(tmp_path))
    assert corpus.train.route("fr", "cs") == "pivot"
    assert corpus.train.pairs(("fr", "cs")) == [("fr0", "cs4"), ("fr1", "cs1"), ("fr4", "cs0")]
    assert corpus.train.pairs(("cs", "fr")) == [("cs0", "fr4"), ("cs1", "fr1"), ("cs4", "fr0")]
    assert corpus.counts["train"][("fr", "cs")] == 3
    assert "train: 2 directions built through the English pivot (cs-fr 3, fr-cs 3 pairs)" in corpus.notes


def test_pivot_prefers_a_direct_pair_file(tmp_path):
    write_pair(tmp_path, "train", "fr", "en", english_rows("fr", 3))
    write_pair(tmp_path, "train", "cs", "en", english_rows("cs", 3))
    write_pair(tmp_path, "train", "cs", "fr", [("cs direct", "fr direct")])
    parallel_eval(tmp_path)
    corpus = data.load("mt-2to2", str(tmp_path))
    assert corpus.train.pairs(("fr", "cs")) == [("fr direct", "cs direct")]
    assert not any("pivot" in note for note in corpus.notes)
    text = corpus.train.text()
    # language by language (en, fr, cs), tables in file-name order (cs-en, cs-fr, fr-en); the English
    # of cs-en and fr-en is the same three sentences, kept once
    assert text == ("en sentence 0", "en sentence 1", "en sentence 2",
                    "fr direct", "fr sentence 0", "fr sentence 1", "fr sentence 2",
                    "cs sentence 0", "cs sentence 1", "cs sentence 2", "cs direct")


def test_text_holds_every_language_of_the_split():
    text = data.load("mt-2to2", None).train.text()
    assert len(text) == len(set(text)) == 997 * 11        # no sentence repeats across the files
    english = (BUNDLED / "dev" / "eng_Latn.dev").read_text(encoding="utf-8").splitlines()
    assert text[0] == english[0].strip()
    assert any("\u1000" <= sentence[0] <= "\u109f" for sentence in text)   # Burmese, not trained on


def test_pivot_without_shared_english(tmp_path):
    write_pair(tmp_path, "train", "fr", "en", english_rows("fr", 2, ["A.", "B."]))
    write_pair(tmp_path, "train", "cs", "en", english_rows("cs", 2, ["C.", "D."]))
    parallel_eval(tmp_path)
    fails(r"train split: no cs-fr pairs through the English pivot: no English sentence occurs in both "
          r".*/train\.cs-en\.en and .*/train\.fr-en\.en$", data.load, "mt-2to2", str(tmp_path))


def test_evaluation_split_valid_then_test_and_mbart_names(tmp_path):
    write_pair(tmp_path, "train", "en_XX", "fr_XX", [(b, a) for a, b in english_rows("fr", 2)])
    write_pair(tmp_path, "train", "cs_CZ", "en_XX", english_rows("cs", 2))
    parallel_eval(tmp_path, "test", count=2)
    corpus = data.load("mt-2to2", str(tmp_path))
    assert corpus.files["eval"].endswith("test.*") and corpus.report().splits["eval"] == 40
    assert corpus.train.pairs(("en", "fr"))[0] == ("en sentence 0", "fr sentence 0")
    data.clear_cache()
    parallel_eval(tmp_path, "valid", count=1)
    corpus = data.load("mt-2to2", str(tmp_path))
    assert corpus.files["eval"].endswith("valid.*") and corpus.report().splits["eval"] == 20
    assert any("test.* ignored" in note for note in corpus.notes)


def parallel_dir(root: Path) -> Path:
    """A valid mt-2to2 parallel directory, edited by each error case."""
    write_pair(root, "train", "en", "fr", [(b, a) for a, b in english_rows("fr", 3)])
    write_pair(root, "train", "cs", "en", english_rows("cs", 3))
    parallel_eval(root)
    return root


def test_parallel_misaligned(tmp_path):
    root = parallel_dir(tmp_path)
    write_lines(root / "train.en-fr.fr", ["un", "deux"])
    fails(r"^misaligned files: .*/train\.en-fr\.fr has 2 lines but .*/train\.en-fr\.en has 3$",
          data.load, "mt-2to2", str(root))


def test_empty_line(tmp_path):
    root = parallel_dir(tmp_path)
    (root / "train.cs-en.cs").write_text("jedna\n   \ntři\n", encoding="utf-8")
    fails(r"^.*/train\.cs-en\.cs line 2: empty line \(every line must hold one sentence\)$",
          data.load, "mt-2to2", str(root))
    (root / "train.cs-en.cs").write_text("jedna\ndvě\n\n", encoding="utf-8")
    fails(r"train\.cs-en\.cs line 3: empty line", data.load, "mt-2to2", str(root))


def test_bad_utf8(tmp_path):
    root = parallel_dir(tmp_path)
    (root / "valid.en-ja.ja").write_bytes("一\n二\n".encode() + b"\xff\xfe\n")
    fails(r"^.*/valid\.en-ja\.ja line 3: not UTF-8 \(invalid start byte at byte 8\)$",
          data.load, "mt-2to2", str(root))


def test_unknown_code_in_file_name(tmp_path):
    root = parallel_dir(tmp_path)
    write_pair(root, "train", "en", "xx", [("a", "b")])
    fails(r"^.*/train\.en-xx\.(en|xx): unknown language code 'xx' in the file name \(valid: cs, de, en, "
          r"fr, gu, ja, my, ro, ru, vi, zh, or their mBART tokens such as fr_XX\)$",
          data.load, "mt-2to2", str(root))


def test_parallel_name_errors(tmp_path):
    root = parallel_dir(tmp_path / "side")
    write_lines(root / "train.en-fr.de", ["x"] * 3)
    fails(r"train\.en-fr\.de: language 'de' is not one of the pair en-fr", data.load, "mt-2to2", str(root))
    root = parallel_dir(tmp_path / "partner")
    (root / "train.cs-en.en").unlink()
    fails(r"train\.cs-en\.cs has no partner file train\.cs-en\.en in ", data.load, "mt-2to2", str(root))
    root = parallel_dir(tmp_path / "twice")
    write_pair(root, "train", "fr", "en", english_rows("fr", 3))
    fails(r"twice: train\.en-fr\.\* and train\.fr-en\.\* hold the same language pair; keep one",
          data.load, "mt-2to2", str(root))
    root = parallel_dir(tmp_path / "self")
    write_pair(root, "train", "fr", "fr_XX", [("a", "b")])
    fails(r"train\.fr-fr_XX\.fr: the pair fr-fr_XX names one language twice", data.load, "mt-2to2",
          str(root))


def test_missing_language(tmp_path):
    root = parallel_dir(tmp_path)
    for path in root.glob("valid.en-vi.*"):
        path.unlink()
    message = fails(r"^.*: eval split lacks vi \(Vietnamese\), needed by mt-2to2; expected e\.g\. "
                    r"valid\.vi-en\.vi with valid\.vi-en\.en$", data.load, "mt-2to2", str(root))
    assert message.startswith(str(root))
    for path in root.glob("train.cs-en.*"):
        path.unlink()
    data.clear_cache()                  # a directory's files are parsed once per process
    fails(r"train split lacks cs \(Czech\), needed by mt-2to2", data.load, "mt-2to2", str(root))


def test_language_only_in_a_non_english_pair(tmp_path):
    root = parallel_dir(tmp_path)
    for path in root.glob("train.cs-en.*"):
        path.unlink()
    write_pair(root, "train", "cs", "fr", [("a", "b")])
    fails(r"^.*: train split cannot form cs-en, en-cs, needed by mt-2to2: pair each language with "
          r"English$",
          data.load, "mt-2to2", str(root))


def test_no_data(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    message = fails(r"no translation data found; expected one of flores: ", data.load, "mt-2to2",
                    str(tmp_path))
    assert all(f"{layout}: " in message for layout in data.LAYOUTS)
    (tmp_path / "empty").mkdir()
    fails(r"empty: no translation data found", data.load, "mt-2to2", str(tmp_path / "empty"))
    fails(r"^data directory not found: .*absent$", data.load, "mt-2to2", str(tmp_path / "absent"))
    root = flores_dir(tmp_path / "emptyfile")
    (root / "dev" / "fra_Latn.dev").write_text("\n\n")
    fails(r"dev/fra_Latn\.dev: no sentences \(empty file\)", data.load, "mt-2to2", str(root))
    write_lines(tmp_path / "noeval" / "train.en-fr.en", ["a"])
    write_lines(tmp_path / "noeval" / "train.en-fr.fr", ["b"])
    fails(r"noeval: no valid\.\* or test\.\* files for the eval split", data.load, "mt-2to2",
          str(tmp_path / "noeval"))


def test_mixed_layouts_refused(tmp_path):
    root = parallel_dir(tmp_path)
    flores_dir(root)
    fails(r"holds both FLORES dev/devtest folders and parallel .* keep one layout", data.load, "mt-2to2",
          str(root))


def test_crlf_bom_and_whitespace(tmp_path):
    root = parallel_dir(tmp_path)
    (root / "train.en-fr.fr").write_bytes("\ufeffun \r\n\u00a0deux\r\ntrois".encode())
    corpus = data.load("mt-2to2", str(root))
    assert [fr for _, fr in corpus.train.pairs(("en", "fr"))] == ["un", "deux", "trois"]
    assert any(note.startswith("2 lines had leading or trailing whitespace") for note in corpus.notes)


# --------------------------------------------------------------------------------------------------
# the shared FLORES-200 copy

@needs_shared
def test_shared_flores_directory():
    full = data.load("mt-10to10", str(FLORES))
    assert full.report().splits == {"train": 997 * 110, "eval": 1012 * 20}
    bundled = data.load("mt-10to10", None)
    for direction in full.training_directions:
        assert full.train.pairs(direction) == bundled.train.pairs(direction)
    for direction in full.eval_directions:
        assert full.eval.pairs(direction)[:200] == bundled.eval.pairs(direction)
    for language in langs.LANGUAGES.values():
        shared = (FLORES / "devtest" / f"{language.flores}.devtest").read_bytes()
        assert shared.startswith((BUNDLED / "devtest" / f"{language.flores}.devtest").read_bytes())
        assert shared.count(b"\n") == 1012


def test_paper_preset_reads_opus100_from_the_hub(monkeypatch):
    """``paper`` without ``--data-dir`` reads OPUS-100's ten English-centric configs through
    ``datasets`` (faked here with bundled FLORES sentences: no hub offline): configs named with the
    codes in alphabetical order, train trains, test evaluates, non-English pairs through the pivot."""
    import datasets

    requested = []
    bundled = data.load("mt-2to2", None)

    def fake_load_dataset(name, config):
        requested.append((name, config))
        code = next(c for c in config.split("-") if c != "en")
        return {split: [{"translation": {"en": e, code: x}} for x, e in source.pairs((code, "en"))[:30]]
                for split, source in (("train", bundled.train), ("test", bundled.eval))}

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert data.uses_hub("paper", None) and not data.uses_hub("small", None)
    from smctune.trainables.translation.family import TwoToTwoTask

    report = TwoToTwoTask().validate_data("paper", None)
    assert report.source == "hub:Helsinki-NLP/opus-100" and not requested
    corpus = data.load("mt-2to2", None, "paper")
    assert sorted(config for _, config in requested) == sorted(
        ["cs-en", "de-en", "en-fr", "en-gu", "en-ja", "en-my", "en-ro", "en-ru", "en-vi", "en-zh"])
    assert {name for name, _ in requested} == {"Helsinki-NLP/opus-100"}
    assert corpus.train.route("fr", "cs") == "pivot" and len(corpus.train.pairs(("fr", "cs"))) == 30
    assert corpus.eval.pairs(("en", "zh"))[0] == bundled.eval.pairs(("en", "zh"))[0]
    assert corpus.counts["eval"][("de", "en")] == 30


def test_an_empty_hub_row_is_one_line(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda name, config: {
        "train": [{"translation": {"en": "a", config.replace("en", "").strip("-"): ""}}], "test": []})
    fails(r"row 1: empty or missing", data.load, "mt-2to2", None, "paper")
