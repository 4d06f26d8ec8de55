"""The offline presets' tokenizer: a SentencePiece model trained on the bundled text, laid out like mBART's.

mBART's own 250k-piece SentencePiece model cannot be downloaded in an offline trial, so the ``smoke``
and ``small`` presets train a small one on their training sentences (all languages together: mBART shares one
vocabulary across its languages) and wrap it in mBART's id layout, so the model, the batches and generation
code are the same as with the real checkpoint's vocabulary.

Training choices (``SPM_SETTINGS``), and why:

- **unigram** model: mBART reuses XLM-R's vocabulary, which its paper describes as a SentencePiece
  unigram language model, so the offline presets segment text the same kind of way as the real one;
  it is also SentencePiece's default and trains in seconds at these sizes.
- **character_coverage 0.9995**: SentencePiece's advice for languages with large character sets. Chinese
  and Japanese use thousands of characters; covering all of them would spend the small vocabulary on
  characters seen once, covering fewer would make common ones unknown.
- **byte_fallback**: a character outside the coverage (or never seen) is encoded as its UTF-8 bytes
  instead of ``<unk>``, so every sentence round-trips and a rare Chinese, Japanese or Burmese character
  in a reference can still be produced. It costs 256 pieces; the vocabulary must exceed 256 plus the
  covered characters (SentencePiece says how many when it does not).
- **identity normalization** (no NFKC): references are scored as written; NFKC would turn Chinese
  full-width punctuation (``，`` ``：``) into ASCII the model could then never produce.
- **whitespace**: SentencePiece's default of collapsing runs of spaces (and trimming the ends) stays,
  as in mBART's model; ``decode(encode(text))`` is ``text`` up to that, for every script.
- **soft vocabulary limit**: a tiny smoke text may not support the requested size; the model then has
  fewer pieces instead of failing, and ``len(vocab)`` gives the size actually trained.
- **determinism**: every sentence is used (``input_sentence_size`` 0, no shuffling, fixed seed) on one
  thread: unigram's EM sums per-thread statistics, and a different thread count gives a different
  model (measured), so the thread count is part of the recipe, not of the machine.

The model file is cached under ``<cache_dir>/<sha256>.model``, the hash covering the sentences, these
settings, the vocabulary size and the SentencePiece version, so every trial of a sweep reuses one
training. It is trained in memory and installed with ``os.replace``: trials racing on the same cache
each install a complete file and never read a partial one.

Id layout of ``TranslationVocab`` (fairseq's dictionary order, which mBART uses)::

    0 <s>   1 <pad>   2 </s>   3 <unk>   4 .. P+2 pieces   P+3 .. language tokens, in the given order

where P is the SentencePiece model's size.

The SentencePiece model is trained with its ``<unk>`` at id 0 and no ``<s>``/``</s>``/``<pad>`` of its
own, so its ids are 0 (<unk>) and 1 .. P-1 (pieces, bytes included); adding ``PIECE_OFFSET`` (3) maps its
``<unk>`` onto ours and its pieces onto 4 .. P+2. Language tokens follow the pieces, as mBART appends
its language codes after the SentencePiece vocabulary.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Mapping, Sequence, Union

import sentencepiece as spm

from smctune.errors import UserError, choices

from .vocabularies import Framing

SPM_SETTINGS: Mapping[str, object] = MappingProxyType({
    "model_type": "unigram",
    "character_coverage": 0.9995,
    "byte_fallback": True,
    "normalization_rule_name": "identity",
    "hard_vocab_limit": False,
    "input_sentence_size": 0,
    "shuffle_input_sentence": False,
    "num_threads": 1,
    "unk_id": 0,
    "bos_id": -1,
    "eos_id": -1,
    "pad_id": -1,
})
SEED = 0                     # SentencePiece's global generator; unused without sampling, fixed anyway
CACHE_FORMAT = 1             # bump when the file layout or the meaning of a setting changes

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
BOS_ID, PAD_ID, EOS_ID, UNK_ID = range(len(SPECIALS))
PIECE_OFFSET = UNK_ID        # our id = SentencePiece id + 3: its <unk> (0) becomes ours (3)
FIRST_PIECE_ID = UNK_ID + 1

PathLike = Union[str, "os.PathLike[str]"]


def default_cache_dir() -> Path:
    """``$SMCTUNE_CACHE`` when set (a shared disk on a cluster), else the user's cache directory,
    under ``$XDG_CACHE_HOME`` like smctune's other caches."""
    override = os.environ.get("SMCTUNE_CACHE")
    if override:
        return Path(override).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "smctune" / "sentencepiece"


def cache_key(sentences: Sequence[str], vocab_size: int) -> str:
    """sha256 of everything the model file depends on. Each sentence is length-prefixed, so no two
    different lists of sentences hash the same bytes."""
    digest = hashlib.sha256()
    recipe = {"format": CACHE_FORMAT, "sentencepiece": spm.__version__, "vocab_size": vocab_size,
              "seed": SEED, "settings": dict(SPM_SETTINGS)}
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    for sentence in sentences:
        data = sentence.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _train_model(sentences: Sequence[str], vocab_size: int) -> bytes:
    """Train in memory and return the model file's bytes."""
    spm.set_random_generator_seed(SEED)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model,
                                       vocab_size=vocab_size, minloglevel=2, **SPM_SETTINGS)
    except RuntimeError as err:
        # "INTERNAL: src/trainer_interface.cc(638) [check] Vocabulary size is smaller than ..."
        reason = re.sub(r"^.*?\] ", "", " ".join(str(err).split()))
        raise UserError(f"SentencePiece cannot train {vocab_size} pieces on these {len(sentences)} "
                        f"sentences: {reason}") from None
    return model.getvalue()


def _install(data: bytes, target: Path) -> None:
    """Write next to ``target`` and rename over it: a reader sees no file or a whole one. World-readable
    (mkstemp makes 0600) so a cache on a shared disk serves every user's trials."""
    handle, scratch = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(scratch, 0o644)
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def train_sentencepiece(texts: Iterable[str], vocab_size: int, cache_dir: PathLike) -> Path:
    """The cached SentencePiece model of these sentences (all languages together), trained on a miss."""
    sentences = list(texts)
    if not sentences:
        raise UserError("no sentences to train a SentencePiece model on")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise UserError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    cache = Path(cache_dir).expanduser()
    target = cache / f"{cache_key(sentences, vocab_size)}.model"
    if target.is_file():
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the SentencePiece cache {cache}: {err.strerror or err}") from None
    _install(_train_model(sentences, vocab_size), target)
    return target


class TranslationVocab(Framing):
    """A SentencePiece model in mBART's id layout (see the module docstring) plus the language tokens.

    Sequences follow the multilingual fairseq format of mBART-50 (Tang et al. 2020): a source is
    ``[src_lang] pieces </s>``, a target ``[tgt_lang] pieces </s>``; the decoder starts from ``</s>``
    and generation forces the target language token as its first output."""

    def __init__(self, model_file: PathLike, lang_tokens: Sequence[str]):
        tokens = tuple(lang_tokens)
        if not tokens:
            raise UserError("a translation vocabulary needs at least one language token")
        repeated = sorted({token for token in tokens if tokens.count(token) > 1})
        if repeated:
            raise UserError(f"language tokens repeat: {choices(repeated)}")
        clashing = sorted(set(tokens) & set(SPECIALS))
        if clashing:
            raise UserError(f"language tokens cannot be special tokens: {choices(clashing)}")
        try:
            self._sp = spm.SentencePieceProcessor(model_file=str(model_file))
        except (OSError, RuntimeError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise UserError(f"cannot load SentencePiece model {model_file}: {reason}") from None
        if self._sp.unk_id() != 0 or self._sp.bos_id() >= 0 or self._sp.eos_id() >= 0 \
                or self._sp.pad_id() >= 0:
            raise UserError(f"SentencePiece model {model_file} was not trained with <unk> at 0 and no "
                            f"<s>, </s> or <pad>; train it with train_sentencepiece")
        self._lang_tokens = tokens
        self._first_lang_id = self._sp.get_piece_size() + PIECE_OFFSET
        self._lang_ids = {token: self._first_lang_id + index for index, token in enumerate(tokens)}

    # ------------------------------------------------------------------ layout
    def __len__(self) -> int:
        """Rows of the model's embedding: specials, pieces and language tokens."""
        return self._first_lang_id + len(self._lang_tokens)

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    @property
    def unk_id(self) -> int:
        return UNK_ID

    @property
    def decoder_start_id(self) -> int:
        """mBART starts decoding from ``</s>``, then the target language token."""
        return EOS_ID

    @property
    def lang_tokens(self) -> tuple[str, ...]:
        return self._lang_tokens

    def lang_id(self, token: str) -> int:
        try:
            return self._lang_ids[token]
        except KeyError:
            raise UserError(f"unknown language token {token!r}; this vocabulary has "
                            f"{choices(self._lang_tokens)}") from None

    # ------------------------------------------------------------------ text <-> ids
    def encode(self, text: str) -> list[int]:
        """The pieces of ``text`` only: no language token, no ``</s>``."""
        return [piece + PIECE_OFFSET for piece in self._sp.encode(text, out_type=int)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the pieces among ``ids``; specials and language tokens are left out, so a generated
        ``</s> fr_XX ... </s> <pad>`` decodes to its sentence."""
        pieces = []
        for value in ids:
            index = int(value)
            if not 0 <= index < len(self):
                raise ValueError(f"id {index} is outside this vocabulary of {len(self)}")
            if FIRST_PIECE_ID <= index < self._first_lang_id:
                pieces.append(index - PIECE_OFFSET)
        return self._sp.decode(pieces)
