"""The languages of SMC-Bench's mBART translation tasks and the directions each task trains and is scored on.

One table holds every per-language fact (code, FLORES-200 file name, mBART language token, BLEU
tokenizer) so the data loader, the tokenizer and the metric cannot disagree about a language.

The three tasks fine-tune on growing sub-groups of the same ten languages (SMC-Bench's 2-to-2, 5-to-5
and 10-to-10 settings) and are always scored on the same 20 English-centric directions, so a sparsity
that fails on the small task can be compared with the large one. Training covers every ordered pair
of the sub-group plus English: the English-centric pairs and the many-to-many pairs between two
non-English languages, which come from pivoting through English (Arivazhagan et al. 2019: x -> y pairs
the x and y sentences that translate the same English sentence).

Torch-free: the driver validates data with it before any trial starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

from smctune.errors import UserError, choices


@dataclass(frozen=True)
class Language:
    """One language as each part of the family needs to name it."""

    code: str             # ISO 639-1, as in parallel file names (train.en-fr.fr) and directions
    flores: str           # FLORES-200 code, the stem of its dev/devtest files
    mbart: str            # mBART-50 language token, forced as the decoder's first token
    name: str             # English name, for messages and reports
    bleu_tokenizer: str   # sacrebleu tokenizer for BLEU when this is the target language


# BLEU counts n-grams of words, so the tokenizer must find word boundaries. Chinese has sacrebleu's own
# "zh" tokenizer (one token per CJK character). Japanese and Burmese are not space-delimited either,
# and their dedicated tokenizers ("ja-mecab", "flores200" SentencePiece) download a dictionary or a
# model at first use, which an offline CPU trial cannot do, so they are scored per character ("char").
# Every other target uses sacrebleu's default "13a".
_TABLE = (
    Language("en", "eng_Latn", "en_XX", "English", "13a"),
    Language("fr", "fra_Latn", "fr_XX", "French", "13a"),
    Language("cs", "ces_Latn", "cs_CZ", "Czech", "13a"),
    Language("de", "deu_Latn", "de_DE", "German", "13a"),
    Language("gu", "guj_Gujr", "gu_IN", "Gujarati", "13a"),
    Language("ja", "jpn_Jpan", "ja_XX", "Japanese", "char"),
    Language("my", "mya_Mymr", "my_MM", "Burmese", "char"),
    Language("ro", "ron_Latn", "ro_RO", "Romanian", "13a"),
    Language("ru", "rus_Cyrl", "ru_RU", "Russian", "13a"),
    Language("vi", "vie_Latn", "vi_VN", "Vietnamese", "13a"),
    Language("zh", "zho_Hans", "zh_CN", "Chinese (Simplified)", "zh"),
)

LANGUAGES: dict[str, Language] = {language.code: language for language in _TABLE}
BY_FLORES: dict[str, Language] = {language.flores: language for language in _TABLE}
PIVOT = "en"
# SMC-Bench's order: each task's sub-group is a prefix of it, so a smaller task's languages are
# always part of a larger one's.
EVAL_LANGUAGES: tuple[str, ...] = ("fr", "cs", "de", "gu", "ja", "my", "ro", "ru", "vi", "zh")
SUBGROUPS: dict[str, tuple[str, ...]] = {
    "mt-2to2": EVAL_LANGUAGES[:2],
    "mt-5to5": EVAL_LANGUAGES[:5],
    "mt-10to10": EVAL_LANGUAGES,
}

Direction = tuple[str, str]       # (source ISO code, target ISO code)


def language(code: str) -> Language:
    """The language with ISO code ``code``."""
    found = LANGUAGES.get(code)
    if found is None:
        raise UserError(f"unknown language code {code!r}: choose one of {choices(LANGUAGES)}")
    return found


def subgroup(task: str) -> tuple[str, ...]:
    """The non-English training languages of translation task ``task``."""
    found = SUBGROUPS.get(task)
    if found is None:
        raise UserError(f"unknown translation task {task!r}: choose one of {choices(SUBGROUPS)}")
    return found


def training_languages(task: str) -> tuple[str, ...]:
    """The pivot and the sub-group: every language a task's training data must hold."""
    return (PIVOT,) + subgroup(task)


def training_directions(task: str) -> tuple[Direction, ...]:
    """Every ordered pair of distinct languages among the sub-group and English, sorted so a run's
    data order does not depend on the table's order (6, 30 and 110 directions)."""
    return tuple(sorted(permutations(training_languages(task), 2)))


def eval_directions() -> tuple[Direction, ...]:
    """x -> en and en -> x for each of the ten languages: the 20 directions every task is scored on,
    sorted like ``training_directions``."""
    return tuple(sorted([(code, PIVOT) for code in EVAL_LANGUAGES]
                        + [(PIVOT, code) for code in EVAL_LANGUAGES]))


def direction_name(direction: Direction) -> str:
    """``fr-en``: how directions are written in messages, reports and metric names."""
    return f"{direction[0]}-{direction[1]}"
