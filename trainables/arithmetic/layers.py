"""``model.layers`` for the arithmetic family: which keys each architecture accepts, their defaults and
checks (torch-free, so the driver can reject a bad search space before any trial starts).

Keys (all optional):

- ``hidden_size``     BiLSTM / tree decoder width (GTS 512, Graph2Tree 384 in SMC-Bench's scripts)
- ``depth``           BiLSTM layers (2)
- ``beam_size``       beam width of the evaluation search (5)
- ``dropout``         dropout of the task layers (embedding output, LSTM, decoder); ``None`` = the
                      trial's ``train.dropout`` (GTS uses 0.5 here while the backbone keeps its own 0.1)
- ``embedding_size``  operator embedding width of GenerateNode/Merge; ``None`` = the backbone's hidden
                      size (SVAMP passes ``embedding_size`` 768 = roberta-base's width)
- ``word_pooling``    how a word's vector is read from its subwords: ``mean`` (default) or ``first``
- ``max_output_length`` longest prefix expression the beam search may emit; ``None`` = twice the
                      longest training equation
- ``graph_pooling``   (graph2tree only) the problem vector that seeds the decoder: ``rnn`` = the
                      BiLSTM end states as in GTS and the SVAMP/Graph2Tree reference code (default), or
                      ``min`` / ``max`` / ``mean`` pooling over the graph encoder's word nodes
"""
from __future__ import annotations

from typing import Any

from smctune.errors import UserError, choices

ARCHITECTURES = ("gts", "graph2tree")
WORD_POOLINGS = ("first", "mean")
GRAPH_POOLINGS = ("rnn", "min", "max", "mean")
# Graph2Tree's graph transformer: 4 GCN heads of hidden_size / 4 each (the reference's ``h = 4``).
GRAPH_HEADS = 4

COMMON_DEFAULTS: dict = {
    "hidden_size": 512,
    "depth": 2,
    "beam_size": 5,
    "dropout": None,
    "embedding_size": None,
    "word_pooling": "mean",
    "max_output_length": None,
}
ARCHITECTURE_DEFAULTS: dict = {
    "gts": {},
    "graph2tree": {"graph_pooling": "rnn"},
}


def defaults(arch: str) -> dict:
    if arch not in ARCHITECTURE_DEFAULTS:
        raise UserError(f"unknown arithmetic architecture '{arch}' (valid: {choices(ARCHITECTURES)})")
    return {**COMMON_DEFAULTS, **ARCHITECTURE_DEFAULTS[arch]}


def _positive_int(key: str, value: Any, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"model.layers.{key}: expected a positive integer, got {value!r}")


def resolve(arch: str, layers: dict) -> dict:
    """``layers`` merged over the architecture's defaults; ``UserError`` naming the first bad key."""
    merged = defaults(arch)
    unknown = sorted(set(layers) - set(merged))
    if unknown:
        raise UserError(f"model.layers: unknown key '{unknown[0]}' for architecture '{arch}' "
                        f"(valid: {choices(merged)})")
    merged.update(layers)
    for key in ("hidden_size", "depth", "beam_size"):
        _positive_int(key, merged[key])
    for key in ("embedding_size", "max_output_length"):
        _positive_int(key, merged[key], optional=True)
    dropout = merged["dropout"]
    if dropout is not None and (isinstance(dropout, bool) or not isinstance(dropout, (int, float))
                                or not 0 <= dropout < 1):
        raise UserError(f"model.layers.dropout: expected a number in [0, 1), got {dropout!r}")
    if merged["word_pooling"] not in WORD_POOLINGS:
        raise UserError(f"model.layers.word_pooling: {merged['word_pooling']!r} "
                        f"(valid: {choices(WORD_POOLINGS)})")
    if arch == "graph2tree":
        if merged["graph_pooling"] not in GRAPH_POOLINGS:
            raise UserError(f"model.layers.graph_pooling: {merged['graph_pooling']!r} "
                            f"(valid: {choices(GRAPH_POOLINGS)})")
        if merged["hidden_size"] % GRAPH_HEADS:
            raise UserError(f"model.layers.hidden_size: graph2tree splits it over {GRAPH_HEADS} graph "
                            f"heads, so it must be divisible by {GRAPH_HEADS} (got {merged['hidden_size']})")
    return merged
