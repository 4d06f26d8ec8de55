"""The vocabularies of the ``hub`` and ``local`` model sources, and the sentence framing all three share.

The runtime sees one interface (``models.Vocabulary``) whatever built the tokens: the offline presets'
trained SentencePiece model (``tokenizer.TranslationVocab``), mBART's own tokenizer from the hub
(``HubVocab``) or a fairseq checkpoint's ``dict.txt`` with its ``sentence.bpe.model`` (``FairseqVocab``).
Each only says how text becomes piece ids and back and where the language tokens sit; ``Framing``
puts them in the multilingual fairseq format of Tang et al. (2020), source ``[src_lang] pieces </s>``
and target ``[tgt_lang] pieces </s>``, so no source can frame a sentence differently.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from smctune.errors import UserError, choices

FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")   # fairseq's dictionary begins with these, in order
SENTENCEPIECE_SPACE = "\u2581"                         # the piece prefix that marks a word start
# every language token a fairseq dictionary may hold (not only the task's): never decoded as text
LANGUAGE_SYMBOL = re.compile(r"\[[a-z]{2,3}_[A-Z]{2}\]|__[a-z]{2,3}(_[A-Z]{2})?__")


class Framing:
    """``source_ids``/``target_ids`` over a subclass's ``encode``, ``lang_id`` and ``eos_id``."""

    def source_ids(self, text: str, src_lang_token: str, max_len: int) -> list[int]:
        """``[src_lang] pieces </s>``, pieces cut so the whole fits ``max_len``."""
        return self._framed(text, src_lang_token, max_len)

    def target_ids(self, text: str, tgt_lang_token: str, max_len: int) -> list[int]:
        """``[tgt_lang] pieces </s>``, pieces cut so the whole fits ``max_len``."""
        return self._framed(text, tgt_lang_token, max_len)

    def _framed(self, text: str, lang_token: str, max_len: int) -> list[int]:
        if max_len < 2:
            raise UserError(f"max_len must be at least 2 (a language token and </s>), got {max_len}")
        return [self.lang_id(lang_token), *self.encode(text)[:max_len - 2], self.eos_id]


class HubVocab(Framing):
    """mBART's tokenizer from the model hub (transformers' MBartTokenizer): language codes such as
    ``fr_XX`` are its own special tokens."""

    def __init__(self, tokenizer: Any, lang_tokens: Sequence[str]) -> None:
        self._tokenizer = tokenizer
        self.pad_id, self.eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
        self.bos_id, self.unk_id = tokenizer.bos_token_id, tokenizer.unk_token_id
        self._lang_ids = {}
        for token in lang_tokens:
            index = tokenizer.convert_tokens_to_ids(token)
            if index is None or index == self.unk_id:
                raise UserError(f"the tokenizer {tokenizer.name_or_path} has no language token {token}")
            self._lang_ids[token] = index
        self._special = set(tokenizer.all_special_ids) | set(self._lang_ids.values())

    def __len__(self) -> int:
        return len(self._tokenizer)

    def lang_id(self, token: str) -> int:
        if token not in self._lang_ids:
            raise UserError(f"unknown language token {token!r}; this vocabulary has {choices(self._lang_ids)}")
        return self._lang_ids[token]

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Iterable[int]) -> str:
        return self._tokenizer.decode([i for i in ids if int(i) not in self._special]).strip()


class FairseqVocab(Framing):
    """A fairseq mBART dictionary (``checkpoints.read_fairseq_dictionary``: specials, ``dict.txt``'s
    symbols, ``[xx_YY]`` language tokens, ``<mask>``) over its SentencePiece model, whose pieces are
    looked up by their text: fairseq's dictionary order is not SentencePiece's id order."""

    def __init__(self, spm_file: Path, symbols: Sequence[str], lang_tokens: Sequence[str]) -> None:
        import sentencepiece as spm

        if tuple(symbols[:len(FAIRSEQ_SPECIALS)]) != FAIRSEQ_SPECIALS:
            raise UserError(f"a fairseq dictionary starts with {' '.join(FAIRSEQ_SPECIALS)}, "
                            f"this one with {' '.join(symbols[:len(FAIRSEQ_SPECIALS)])}")
        try:
            self._sp = spm.SentencePieceProcessor(model_file=str(spm_file))
        except (OSError, RuntimeError) as err:
            raise UserError(f"cannot load SentencePiece model {spm_file}: {' '.join(str(err).split())}") from None
        self._symbols = tuple(symbols)
        self._index = {symbol: i for i, symbol in enumerate(self._symbols)}
        self.bos_id, self.pad_id, self.eos_id, self.unk_id = range(len(FAIRSEQ_SPECIALS))
        self._lang_ids = {}
        for token in lang_tokens:
            # mBART's "[fr_XX]", fairseq's default multilingual "__fr_XX__", or the bare token
            index = next((self._index[form] for form in (f"[{token}]", f"__{token}__", token)
                          if form in self._index), None)
            if index is None:
                raise UserError(f"the fairseq dictionary has no language token [{token}] or __{token}__")
            self._lang_ids[token] = index
        self._not_text = set(range(len(FAIRSEQ_SPECIALS))) | set(self._lang_ids.values())
        self._not_text |= {i for s, i in self._index.items() if s == "<mask>" or LANGUAGE_SYMBOL.fullmatch(s)}

    def __len__(self) -> int:
        return len(self._symbols)

    def lang_id(self, token: str) -> int:
        if token not in self._lang_ids:
            raise UserError(f"unknown language token {token!r}; this vocabulary has {choices(self._lang_ids)}")
        return self._lang_ids[token]

    def encode(self, text: str) -> list[int]:
        return [self._index.get(piece, self.unk_id) for piece in self._sp.encode(text, out_type=str)]

    def decode(self, ids: Iterable[int]) -> str:
        pieces = [self._symbols[int(i)] for i in ids if 0 <= int(i) < len(self._symbols) and int(i) not in self._not_text]
        return "".join(pieces).replace(SENTENCEPIECE_SPACE, " ").strip()
