"""The offline presets' SentencePiece tokenizer: one training per text (cached, atomic, deterministic),
lossless round trips in every script the family translates, and mBART's id layout."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import sentencepiece as spm

from conftest import SHARED_DATA
from smctune.errors import UserError
from smctune.trainables.translation import tokenizer as tok
from smctune.trainables.translation.tokenizer import (TranslationVocab, default_cache_dir,
                                                      train_sentencepiece)

FLORES_DEV = SHARED_DATA / "flores200" / "dev"
SAMPLES = {
    "en": ["The weather is lovely today.", "We are reading a book in the library.",
           "How do I get to the train station?", "She bought three apples and a loaf of bread.",
           "The meeting was moved to next Tuesday afternoon."],
    "fr": ["L'été dernier, nous sommes allés à la plage.", "Où est la bibliothèque, s'il vous plaît ?",
           "Il a acheté trois pommes et une baguette.", "La réunion a été déplacée à mardi prochain.",
           "Les élèves préfèrent étudier ensemble après les cours."],
    "zh": ["我喜欢在周末去公园散步。", "这本书非常有意思，你应该读一读。", "明天会下雨吗？",
           "她买了三个苹果和一个面包。", "会议改到了下周二下午。"],
    "ja": ["今日はいい天気ですね。", "私は毎朝コーヒーを飲みます。", "東京駅までどうやって行きますか？",
           "彼女はりんごを三つとパンを一つ買いました。", "会議は来週の火曜日の午後に変更されました。"],
    "my": ["မင်္ဂလာပါ", "ကျေးဇူးတင်ပါတယ်", "ကျွန်တော် စာအုပ် ဖတ်နေတယ်", "ဒီနေ့ မိုးရွာတယ်",
           "သူ ပန်းသီး သုံးလုံး ဝယ်တယ်"],
}
TRAINING = [sentence for _ in range(8) for lines in SAMPLES.values() for sentence in lines]   # 200
LANGS = ("en_XX", "fr_XX", "zh_CN", "ja_XX", "my_MM")
VOCAB = 500


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return train_sentencepiece(TRAINING, VOCAB, tmp_path_factory.mktemp("spm"))


@pytest.fixture(scope="module")
def vocab(model_file) -> TranslationVocab:
    return TranslationVocab(model_file, LANGS)


def refuse_training(*args, **kwargs):
    raise AssertionError("SentencePiece was trained although the model is cached")


# ---------------------------------------------------------------------------------------- cache
def test_a_second_call_reuses_the_cached_model(tmp_path, monkeypatch):
    first = train_sentencepiece(TRAINING, VOCAB, tmp_path)
    assert first.parent == tmp_path and first.suffix == ".model" and len(first.stem) == 64
    assert first.stat().st_mode & 0o777 == 0o644
    monkeypatch.setattr(spm.SentencePieceTrainer, "train", refuse_training)
    assert train_sentencepiece(iter(TRAINING), VOCAB, tmp_path) == first
    assert [path.name for path in tmp_path.iterdir()] == [first.name]   # no temporary files left


def test_the_cache_key_covers_text_order_and_size(tmp_path):
    key = tok.cache_key(TRAINING, VOCAB)
    assert tok.cache_key(list(TRAINING), VOCAB) == key
    assert tok.cache_key(TRAINING, VOCAB + 1) != key
    assert tok.cache_key(TRAINING[::-1], VOCAB) != key
    assert tok.cache_key(["ab", "c"], VOCAB) != tok.cache_key(["a", "bc"], VOCAB)


def test_training_is_deterministic(tmp_path):
    """Byte-identical files, so any machine's cache holds the same model."""
    one = train_sentencepiece(TRAINING, VOCAB, tmp_path / "one")
    two = train_sentencepiece(TRAINING, VOCAB, tmp_path / "two")
    assert one.name == two.name
    assert one.read_bytes() == two.read_bytes()


def test_a_failed_install_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(tok.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        train_sentencepiece(TRAINING, VOCAB, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_vocabulary_too_small_for_the_characters_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="cannot train 200 pieces on these 200 sentences: Vocabulary "
                                        "size is smaller than required_chars") as err:
        train_sentencepiece(TRAINING, 200, tmp_path)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="no sentences"):
        train_sentencepiece([], VOCAB, tmp_path)
    with pytest.raises(UserError, match="vocab_size must be a positive integer"):
        train_sentencepiece(TRAINING, 0, tmp_path)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SMCTUNE_CACHE", str(tmp_path / "shared"))
    assert default_cache_dir() == tmp_path / "shared"
    monkeypatch.delenv("SMCTUNE_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "smctune" / "sentencepiece"


# ---------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_round_trip_of_the_training_languages(vocab, language):
    for sentence in SAMPLES[language]:
        ids = vocab.encode(sentence)
        assert ids and vocab.unk_id not in ids
        assert vocab.decode(ids) == sentence


def test_unseen_characters_round_trip_through_bytes(vocab):
    sentence = "Ελληνικά 한국어 ✓ 鬱"
    ids = vocab.encode(sentence)
    assert vocab.unk_id not in ids
    assert vocab.decode(ids) == sentence


def test_full_width_punctuation_is_kept(vocab):
    """Identity normalization: ``，`` and ``？`` must come back as written, or zh BLEU could never match."""
    assert vocab.decode(vocab.encode("好，走吧？")) == "好，走吧？"


def test_runs_of_spaces_collapse(vocab):
    assert vocab.decode(vocab.encode("  two   spaces ")) == "two spaces"


FLORES_FILES = ("eng_Latn", "fra_Latn", "zho_Hans", "jpn_Jpan", "mya_Mymr")


@pytest.mark.skipif(not all((FLORES_DEV / f"{name}.dev").is_file() for name in FLORES_FILES),
                    reason=f"FLORES-200 dev files not found in {FLORES_DEV}")
@pytest.mark.parametrize("name", FLORES_FILES)
def test_round_trip_of_flores_sentences(vocab, name):
    """Real sentences, mostly unseen characters for this tiny model: exact up to runs of spaces."""
    lines = (FLORES_DEV / f"{name}.dev").read_text(encoding="utf-8").splitlines()[:20]
    for sentence in lines:
        ids = vocab.encode(sentence)
        assert vocab.unk_id not in ids
        assert vocab.decode(ids) == " ".join(part for part in sentence.split(" ") if part)


# ---------------------------------------------------------------------------------------- layout
def test_special_ids_follow_fairseq(vocab):
    assert (vocab.bos_id, vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert vocab.decoder_start_id == vocab.eos_id
    assert vocab.encode("猫") and min(vocab.encode(" ".join(TRAINING))) >= 4


def test_pieces_are_sentencepiece_ids_offset_by_three(vocab, model_file):
    processor = spm.SentencePieceProcessor(model_file=str(model_file))
    sentence = SAMPLES["fr"][0]
    assert vocab.encode(sentence) == [piece + 3 for piece in processor.encode(sentence)]
    assert processor.id_to_piece(0) == "<unk>" and processor.unk_id() == 0
    assert len(vocab) == processor.get_piece_size() + 3 + len(LANGS)
    assert len(vocab) <= VOCAB + 3 + len(LANGS)


def test_language_tokens_come_last_in_the_given_order(vocab):
    first = len(vocab) - len(LANGS)
    assert [vocab.lang_id(token) for token in LANGS] == list(range(first, len(vocab)))
    assert vocab.lang_tokens == LANGS
    assert max(max(vocab.encode(sentence)) for sentence in TRAINING) < first


def test_source_and_target_layout(vocab):
    pieces = vocab.encode(SAMPLES["en"][1])
    assert vocab.source_ids(SAMPLES["en"][1], "en_XX", 100) == [vocab.lang_id("en_XX"), *pieces, 2]
    assert vocab.target_ids(SAMPLES["en"][1], "fr_XX", 100) == [vocab.lang_id("fr_XX"), *pieces, 2]


def test_truncation_keeps_the_language_token_and_eos(vocab):
    pieces = vocab.encode(SAMPLES["en"][1])
    assert len(pieces) > 5
    cut = vocab.source_ids(SAMPLES["en"][1], "en_XX", 5)
    assert cut == [vocab.lang_id("en_XX"), *pieces[:3], vocab.eos_id]
    assert vocab.target_ids(SAMPLES["en"][1], "ja_XX", 2) == [vocab.lang_id("ja_XX"), vocab.eos_id]
    assert vocab.source_ids("", "my_MM", 10) == [vocab.lang_id("my_MM"), vocab.eos_id]
    with pytest.raises(UserError, match="max_len must be at least 2"):
        vocab.source_ids("text", "en_XX", 1)


def test_decode_skips_specials_and_language_tokens(vocab):
    sentence = SAMPLES["ja"][2]
    generated = [vocab.eos_id, vocab.lang_id("ja_XX"), *vocab.encode(sentence), vocab.eos_id,
                 vocab.pad_id, vocab.pad_id]
    assert vocab.decode(generated) == sentence
    assert vocab.decode([vocab.bos_id, vocab.unk_id, vocab.lang_id("fr_XX")]) == ""
    with pytest.raises(ValueError, match="outside this vocabulary"):
        vocab.decode([len(vocab)])


def test_unknown_language_token_names_the_valid_ones(vocab):
    with pytest.raises(UserError, match="unknown language token 'de_DE'.*en_XX.*zh_CN") as err:
        vocab.lang_id("de_DE")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="unknown language token"):
        vocab.target_ids("Hallo", "de", 10)


def test_bad_language_token_lists(model_file):
    with pytest.raises(UserError, match="repeat: fr_XX"):
        TranslationVocab(model_file, ["fr_XX", "en_XX", "fr_XX"])
    with pytest.raises(UserError, match="special tokens: </s>"):
        TranslationVocab(model_file, ["</s>"])
    with pytest.raises(UserError, match="at least one language token"):
        TranslationVocab(model_file, [])


def test_models_it_cannot_use(tmp_path):
    with pytest.raises(UserError, match="cannot load SentencePiece model"):
        TranslationVocab(tmp_path / "missing.model", LANGS)
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"not a model")
    with pytest.raises(UserError, match="cannot load SentencePiece model"):
        TranslationVocab(garbage, LANGS)
    prefix = tmp_path / "stock"
    spm.SentencePieceTrainer.train(sentence_iterator=iter(SAMPLES["en"] * 4), model_prefix=str(prefix),
                                   vocab_size=60, minloglevel=2, num_threads=1)
    with pytest.raises(UserError, match="was not trained with <unk> at 0"):
        TranslationVocab(f"{prefix}.model", LANGS)


def test_the_vocabulary_pickles(vocab):
    """Ray ships objects between processes."""
    copy = pickle.loads(pickle.dumps(vocab))
    sentence = SAMPLES["zh"][1]
    assert copy.encode(sentence) == vocab.encode(sentence) and len(copy) == len(vocab)
