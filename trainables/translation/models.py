"""Where the mBART model and its vocabulary come from (``model.source``), and the family's own settings.

- ``hub``: ``facebook/mbart-large-cc25`` (the paper's model) and its SentencePiece tokenizer through
  transformers; needs the model hub.
- ``local``: a fairseq mBART checkpoint directory (``model.pt``, ``dict.txt``, ``sentence.bpe.model``,
  what SMC-Bench fine-tuned), mapped onto the same transformers class by ``checkpoints``.
- ``config``: a small mBART built from ``model.config`` with random weights, and a SentencePiece model
  trained on the training text (mBART's own cannot be had offline). This is what ``smoke`` and ``small``
  use: no pretrained translation weights exist offline, so those presets learn from scratch.

Every source yields the same pair: a ``Vocabulary`` (the runtime's only view of tokens) and an
``MBartForConditionalGeneration`` whose shared embedding is tied across encoder, decoder and LM head.
Torch-free at import: the driver checks settings with this module before any trial starts.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol, Sequence

from smctune.config.settings import ModelSettings, TrainSettings
from smctune.errors import UserError, choices

SOURCES = ("hub", "local", "config")
# The architecture keys ``model.config`` may set for source ``config`` (transformers' MBartConfig
# names); ``vocab_size`` is the SentencePiece model's size instead of the embedding's.
CONFIG_KEYS = ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
               "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_position_embeddings",
               "activation_function", "vocab_size")
CONFIG_DEFAULTS = {"d_model": 64, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
                   "decoder_attention_heads": 2, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128,
                   "max_position_embeddings": 256, "activation_function": "gelu", "vocab_size": 1000}
ACTIVATIONS = ("gelu", "relu")
# Random "pretrained" weights of a ``config`` model are drawn from this seed: every trial and seed
# starts from the same network, as they would from a real checkpoint.
CONFIG_INIT_SEED = 0
ATTENTION_DROPOUT = 0.1          # Table 6 (dropout itself is ``train.dropout``)


@dataclass(frozen=True)
class Decoding:
    """``model.layers``: how translations are generated and how much of the evaluation split an
    intermediate evaluation reads (beam search over 20 directions would otherwise dominate a trial;
    the last evaluation of a level always reads all of it)."""

    beam_size: int = 5
    eval_sentences: Optional[int] = None    # per direction, intermediate evaluations; None = all
    length_ratio: float = 1.5               # new tokens <= ratio * the batch's longest source + slack
    length_slack: int = 10


def decoding(model: ModelSettings) -> Decoding:
    """``model.layers`` read and checked (one-line errors)."""
    fields = Decoding.__dataclass_fields__
    unknown = sorted(set(model.layers) - set(fields))
    if unknown:
        raise UserError(f"model.layers: unknown key '{unknown[0]}' for the translation models "
                        f"(valid: {', '.join(fields)})")
    settings = Decoding(**model.layers)
    for name in ("beam_size", "length_slack"):
        _positive_int(f"model.layers.{name}", getattr(settings, name), minimum=1 if name == "beam_size" else 0)
    if settings.eval_sentences is not None:
        _positive_int("model.layers.eval_sentences", settings.eval_sentences)
    ratio = settings.length_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
        raise UserError(f"model.layers.length_ratio: expected a positive number, got {ratio!r}")
    return settings


def config_settings(model: ModelSettings) -> dict:
    """``model.config`` over ``CONFIG_DEFAULTS``, checked."""
    unknown = sorted(set(model.config) - set(CONFIG_KEYS))
    if unknown:
        raise UserError(f"model.config: unknown key '{unknown[0]}' for a config-built mBART "
                        f"(valid: {', '.join(CONFIG_KEYS)})")
    settings = {**CONFIG_DEFAULTS, **model.config}
    for key in CONFIG_KEYS:
        if key != "activation_function":
            _positive_int(f"model.config.{key}", settings[key])
    if settings["activation_function"] not in ACTIVATIONS:
        raise UserError(f"model.config.activation_function: {settings['activation_function']!r} "
                        f"(valid: {', '.join(ACTIVATIONS)})")
    for side in ("encoder", "decoder"):
        heads = settings[f"{side}_attention_heads"]
        if settings["d_model"] % heads:
            raise UserError(f"model.config: d_model {settings['d_model']} is not divisible by "
                            f"{side}_attention_heads {heads}")
    return settings


def check_model(model: ModelSettings, train: TrainSettings) -> None:
    """Reject bad ``model`` settings in the driver, before any trial is scheduled."""
    decoding(model)
    if model.source not in SOURCES:
        raise UserError(f"unknown model source '{model.source}' for the translation models "
                        f"(valid: {choices(SOURCES)})")
    if model.source == "config":
        settings = config_settings(model)
        if train.max_length > settings["max_position_embeddings"]:
            raise UserError(f"train.max_length {train.max_length} exceeds model.config."
                            f"max_position_embeddings {settings['max_position_embeddings']}")
        return
    if model.config:
        raise UserError(f"model.config: key '{sorted(model.config)[0]}' only applies to source 'config' "
                        f"(source '{model.source}' reads the architecture from the checkpoint)")
    if not model.name:
        what = "a hub model name (facebook/mbart-large-cc25)" if model.source == "hub" else \
            "a fairseq mBART directory (model.pt, dict.txt, sentence.bpe.model)"
        raise UserError(f"model.name: source '{model.source}' needs {what}")


def _positive_int(where: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


# ==================================================================================================
# building (torch and transformers imported inside)

class Vocabulary(Protocol):
    """What the runtime needs from a tokenizer, whatever built it: mBART's layout, source
    ``[src_lang] pieces </s>`` and target ``[tgt_lang] pieces </s>`` (Tang et al. 2020)."""

    pad_id: int
    eos_id: int

    def __len__(self) -> int: ...

    def source_ids(self, text: str, lang: str, max_len: int) -> list: ...

    def target_ids(self, text: str, lang: str, max_len: int) -> list: ...

    def lang_id(self, lang: str) -> int: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass
class Translator:
    """A vocabulary and the starting model (CPU, train mode)."""

    vocab: Vocabulary
    model: Any
    description: str


def load_translator(model: ModelSettings, train: TrainSettings, training_text: Sequence[str],
                    languages: Sequence[str]) -> Translator:
    """The vocabulary and the model at its starting weights. ``training_text`` (every sentence of the
    training split, all languages) trains the SentencePiece model of source ``config``; ``languages``
    are the mBART language tokens the vocabulary must hold."""
    check_model(model, train)
    return _BUILDERS[model.source](model, train, training_text, tuple(languages))


@contextmanager
def _seeded() -> Iterator[None]:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(CONFIG_INIT_SEED)
        yield


@contextmanager
def _quiet() -> Iterator[None]:
    """Hide transformers' per-load notices and progress bars (a hundred trials load a model each)."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _config_translator(model: ModelSettings, train: TrainSettings, training_text: Sequence[str],
                       languages: tuple) -> Translator:
    from transformers import MBartConfig, MBartForConditionalGeneration

    from .tokenizer import TranslationVocab, default_cache_dir, train_sentencepiece

    settings = config_settings(model)
    spm_file = train_sentencepiece(list(training_text), settings["vocab_size"], default_cache_dir())
    vocab = TranslationVocab(spm_file, languages)
    architecture = {k: v for k, v in settings.items() if k != "vocab_size"}
    config = MBartConfig(vocab_size=len(vocab), pad_token_id=vocab.pad_id, bos_token_id=vocab.bos_id,
                         eos_token_id=vocab.eos_id, decoder_start_token_id=vocab.eos_id,
                         forced_eos_token_id=vocab.eos_id, dropout=train.dropout,
                         attention_dropout=ATTENTION_DROPOUT if train.dropout else 0.0,
                         scale_embedding=True, tie_word_embeddings=True, **architecture)
    with _seeded(), _quiet():
        module = MBartForConditionalGeneration(config)
    layers = f"{settings['encoder_layers']}+{settings['decoder_layers']} layers"
    return Translator(vocab, module.train(), f"mBART config ({layers}, {settings['d_model']} wide, "
                                             f"SentencePiece {settings['vocab_size']})")


def _hub_translator(model: ModelSettings, train: TrainSettings, training_text: Sequence[str],
                    languages: tuple) -> Translator:
    from transformers import AutoTokenizer, MBartForConditionalGeneration

    from .vocabularies import HubVocab

    with _quiet():
        tokenizer = AutoTokenizer.from_pretrained(model.name)
        module = MBartForConditionalGeneration.from_pretrained(
            model.name, dropout=train.dropout, attention_dropout=ATTENTION_DROPOUT if train.dropout else 0.0)
    return Translator(HubVocab(tokenizer, languages), module.train(), model.name)


def _local_translator(model: ModelSettings, train: TrainSettings, training_text: Sequence[str],
                      languages: tuple) -> Translator:
    from transformers import MBartForConditionalGeneration

    from .checkpoints import load_fairseq_mbart
    from .vocabularies import FairseqVocab

    directory = Path(model.name).expanduser()
    loaded, symbols, spm_file = load_fairseq_mbart(directory)
    # the checkpoint carries its pretraining dropout; the recipe's is rebuilt into the layers
    config = loaded.config
    config.dropout = train.dropout
    config.attention_dropout = ATTENTION_DROPOUT if train.dropout else 0.0
    with _quiet():
        module = MBartForConditionalGeneration(config)
    module.load_state_dict(loaded.state_dict())
    return Translator(FairseqVocab(spm_file, symbols, languages), module.train(), f"fairseq mBART {directory}")


_BUILDERS = {"config": _config_translator, "hub": _hub_translator, "local": _local_translator}
