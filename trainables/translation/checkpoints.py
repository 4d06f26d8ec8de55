"""A fairseq mBART checkpoint directory (``model.pt``, ``dict.txt``, ``sentence.bpe.model``) as
transformers' ``MBartForConditionalGeneration``.

Why: SMC-Bench fine-tuned mBART with fairseq, so the checkpoints users bring are fairseq's, while the
pruning methods act on the transformers model. Both compute the same function (pre-norm layers, a layer
norm after the embeddings, learned positions offset by two rows, one embedding shared by encoder,
decoder and output), so loading is a matter of four translations, one section each below:

- the vocabulary: fairseq's ids are not SentencePiece's. They are ``<s> <pad> </s> <unk>``, then
  ``dict.txt`` in file order, then whatever the training task appended (mBART's ``[xx_YY]`` language
  tokens, then ``<mask>``); the embedding has exactly one row per symbol, so the count is checked.
- the pickle: ``model.pt`` comes from shared storage and a pickle can run code. It is read by torch's
  ``weights_only`` unpickler, which admits tensors and plain containers; besides those we admit
  ``argparse.Namespace`` (fairseq's ``args``, and ``cfg.model``/``cfg.task`` of its legacy models) and,
  for checkpoints whose ``cfg`` was pickled as an omegaconf ``DictConfig``, inert stand-ins bound to
  omegaconf's class names: they record what the pickle hands them and run nothing, not even omegaconf
  (which this project does not install). Any other global is refused with a one-line error.
- the architecture: fairseq's args become an ``MBartConfig``; a switch transformers' MBart cannot
  honour (post-norm layers, sinusoidal positions, ...) is an error, never a silently different model.
- the names: every fairseq weight has exactly one place; an unmapped, missing or misshapen weight is an
  error naming it, so a mismatched checkpoint never loads half-way.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

from smctune.errors import UserError, choices
from smctune.trainables.checkpoint_io import safe_torch_load

from .vocabularies import FAIRSEQ_SPECIALS

if TYPE_CHECKING:
    from transformers import MBartConfig, MBartForConditionalGeneration

PathLike = Union[str, Path]

# ==================================================================================================
# the directory

FILE_NAMES = {"checkpoint": "model.pt", "dictionary": "dict.txt", "sentencepiece": "sentence.bpe.model"}


@dataclass(frozen=True)
class FairseqFiles:
    """The files of a fairseq mBART directory, under the names fairseq's releases give them."""

    checkpoint: Path
    dictionary: Path
    sentencepiece: Path


def fairseq_files(directory: PathLike) -> FairseqFiles:
    """The three files, each checked to exist (a missing one is named)."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise UserError(f"fairseq mBART directory not found: {directory}")
    paths = {field: directory / name for field, name in FILE_NAMES.items()}
    for path in paths.values():
        if not path.is_file():
            raise UserError(f"{directory}: no {path.name} (a fairseq mBART directory holds "
                            f"{', '.join(FILE_NAMES.values())})")
    return FairseqFiles(**paths)


# ==================================================================================================
# the vocabulary (fairseq/data/dictionary.py and the tasks that extend it)

OVERWRITE_FLAG = "#fairseq:overwrite"   # a dict.txt line that may redefine an earlier symbol
MASK = "<mask>"
# mBART cc25's pretraining languages. Its fine-tuning tasks must list them in this order (fairseq's
# --langs help says so), which gives the 25 + 1 rows its embedding has beyond dict.txt.
CC25_LANGUAGES = ("ar_AR", "cs_CZ", "de_DE", "en_XX", "es_XX", "et_EE", "fi_FI", "fr_XX", "gu_IN", "hi_IN",
                  "it_IT", "ja_XX", "kk_KZ", "ko_KR", "lt_LT", "lv_LV", "my_MM", "ne_NP", "nl_XX", "ro_RO",
                  "ru_RU", "si_LK", "tr_TR", "vi_VN", "zh_CN")
# translation_multi_simple_epoch's --lang-tok-style: how a language becomes a token
LANG_TOKEN_STYLES = {"mbart": "[{}]", "multilingual": "__{}__"}
# ... and its --langtoks-specs: a spec ending so suffixes the language
LANG_SPEC_SUFFIXES = {"dae": "_dae", "mined": "_mined"}


def read_fairseq_dictionary(path: PathLike, appended: Sequence[str] = ()) -> list[str]:
    """Symbols by fairseq id: the four specials, each ``dict.txt`` line (``symbol count``, optionally
    followed by ``#fairseq:overwrite``), then ``appended`` as fairseq's ``add_symbol`` adds them (a
    symbol already present keeps its id and is not added again). A redefinition with the overwrite
    flag takes a new id, as in fairseq, so a symbol can occur twice; the later id is the one in use."""
    symbols = list(FAIRSEQ_SPECIALS)
    known = set(symbols)
    try:
        with Path(path).open(encoding="utf-8") as stream:  # universal newlines, as fairseq reads it
            for number, line in enumerate(stream, 1):
                symbol, overwrite = _dictionary_line(path, number, line)
                if symbol in known and not overwrite:
                    raise UserError(f"{path}:{number}: '{symbol}' is already in the dictionary (a line "
                                    f"that redefines a symbol ends with {OVERWRITE_FLAG})")
                symbols.append(symbol)
                known.add(symbol)
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    return _append(symbols, appended)


def _append(symbols: list[str], appended: Sequence[str]) -> list[str]:
    """fairseq's ``add_symbol`` for each of ``appended``: a symbol already present is not added."""
    known = set(symbols)
    return symbols + [symbol for symbol in dict.fromkeys(appended) if symbol not in known]


def _dictionary_line(path: PathLike, number: int, line: str) -> tuple[str, bool]:
    """``(symbol, overwrite)`` of one line, split as fairseq splits it: on the last space."""
    fields = line.rstrip().rsplit(" ", 1)
    overwrite = len(fields) == 2 and fields[1] == OVERWRITE_FLAG
    if overwrite:
        fields = fields[0].rsplit(" ", 1)
    if len(fields) == 2:
        try:
            int(fields[1])
            return fields[0], overwrite
        except ValueError:
            pass
    raise UserError(f"{path}:{number}: expected '<symbol> <count> [{OVERWRITE_FLAG}]', "
                    f"got {line.rstrip(chr(10))!r:.80}")


def mbart_symbols(languages: Sequence[str]) -> tuple[str, ...]:
    """What mBART's fairseq tasks append to ``dict.txt``: ``[xx_YY]`` for each language in the order
    given, then ``<mask>`` (translation_from_pretrained_bart, and multilingual_denoising with
    --add-lang-token)."""
    return tuple(f"[{language}]" for language in languages) + (MASK,)


def _from_pretrained_bart(task: Any, languages: Optional[tuple]) -> Optional[tuple]:
    return None if languages is None else mbart_symbols(languages)


def _multilingual_denoising(task: Any, languages: Optional[tuple]) -> Optional[tuple]:
    if not _get(task, "add_lang_token", False):
        return (MASK,)
    return None if languages is None else mbart_symbols(languages)


def _multi_simple_epoch(task: Any, languages: Optional[tuple]) -> Optional[tuple]:
    """Tokens per --langtoks-specs entry, then per language; ``<mask>`` in mBART style or with
    monolingual denoising data."""
    if languages is None:
        return None
    style = _get(task, "lang_tok_style", "multilingual")
    if style not in LANG_TOKEN_STYLES:
        raise UserError(f"task lang_tok_style {style!r} (valid: {choices(LANG_TOKEN_STYLES)})")
    tokens = tuple(LANG_TOKEN_STYLES[style].format(language + _spec_suffix(spec))
                   for spec in (_get(task, "langtoks_specs") or ("main",)) for language in languages)
    masked = style == "mbart" or "mono_dae" in (_get(task, "extra_data") or {})
    return tokens + ((MASK,) if masked else ())


def _spec_suffix(spec: str) -> str:
    return next((suffix for end, suffix in LANG_SPEC_SUFFIXES.items() if spec.endswith(end)), "")


# fairseq task -> (its saved config, its language list or None) -> the symbols it appends to dict.txt,
# or None when they depend on a language list the checkpoint does not record.
TASK_SYMBOLS: dict[str, Callable[[Any, Optional[tuple]], Optional[tuple]]] = {
    "translation_from_pretrained_bart": _from_pretrained_bart,
    "multilingual_denoising": _multilingual_denoising,
    "translation_multi_simple_epoch": _multi_simple_epoch,
    "denoising": lambda task, languages: (MASK,),
    "translation": lambda task, languages: (),
}


def _task_languages(task: Any, directory: Path) -> Optional[tuple]:
    """The task's --langs, or the --lang-dict file (one language a line) when a file of that name sits
    in the checkpoint directory; None when neither is at hand."""
    langs = _get(task, "langs")
    if isinstance(langs, str):
        return tuple(langs.split(","))
    if isinstance(langs, (list, tuple)):
        return tuple(langs)
    lang_dict = _get(task, "lang_dict")
    if isinstance(lang_dict, str) and (directory / Path(lang_dict).name).is_file():
        path = directory / Path(lang_dict).name
        try:
            return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"cannot read the language list {path}: {err}") from None
    return None


def _dictionary_symbols(files: FairseqFiles, saved: "SavedConfig", rows: int) -> list[str]:
    """The dictionary the checkpoint was trained with, checked against its embedding's row count."""
    rule = TASK_SYMBOLS.get(saved.task_name or "")
    try:
        appended = rule(saved.task, _task_languages(saved.task, files.checkpoint.parent)) if rule else None
    except UserError as err:
        raise UserError(f"{files.checkpoint}: {err}") from None
    base = read_fairseq_dictionary(files.dictionary)
    if appended is None:
        # The language list is not recorded (e.g. translation_multi_simple_epoch's --lang-dict file):
        # a checkpoint fine-tuned from mBART cc25 keeps cc25's rows, so that layout is the one to assume.
        if rows - len(base) != len(CC25_LANGUAGES) + 1:
            raise UserError(f"{files.checkpoint}: task {saved.task_name or '(unnamed)'} appended "
                            f"{rows - len(base)} symbols to {files.dictionary.name}, and the checkpoint does not "
                            "record which (copy its --lang-dict file into the directory)")
        appended = mbart_symbols(CC25_LANGUAGES)
    symbols = _append(base, appended)
    if len(symbols) != rows:
        raise UserError(f"{files.dictionary}: {len(symbols)} symbols ({len(FAIRSEQ_SPECIALS)} specials, "
                        f"{len(base) - len(FAIRSEQ_SPECIALS)} lines, {len(symbols) - len(base)} added by task "
                        f"{saved.task_name}), but {files.checkpoint.name}'s embedding has {rows} rows")
    return symbols


# ==================================================================================================
# the pickle

class _Record:
    """An inert stand-in for a class the pickle names: it keeps the arguments and state the pickle
    hands it and does nothing else, so loading never runs the named class's code."""

    kind = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Record":
        record = super().__new__(cls)
        record.args, record.state, record.items = args, None, {}
        return record

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:   # a defaultdict's items
        self.items[key] = value

    def __repr__(self) -> str:
        return f"<{self.kind}, read as data>"


def _content(record: _Record) -> Any:
    return record.state.get("_content") if isinstance(record.state, dict) else None


def _node_value(record: _Record) -> Any:
    return _plain(record.state.get("_val")) if isinstance(record.state, dict) else None


def _dict_config(record: _Record) -> Any:
    content = _content(record)   # a dict of nodes, or None / "???" / "${...}" for the whole config
    return {key: _plain(value) for key, value in content.items()} if isinstance(content, dict) else content


def _list_config(record: _Record) -> Any:
    content = _content(record)
    return [_plain(value) for value in content] if isinstance(content, list) else content


# Globals an omegaconf config's pickle names (those of omegaconf 2.3's pickles, plus its typed value
# nodes), each admitted as an inert ``_Record``, and how a record of it reads as plain data (None: only
# referenced from metadata, never read).
OMEGACONF_GLOBALS: dict[str, Optional[Callable[[_Record], Any]]] = {
    "omegaconf.dictconfig.DictConfig": _dict_config,
    "omegaconf.listconfig.ListConfig": _list_config,
    **{f"omegaconf.nodes.{node}": _node_value for node in
       ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "BytesNode", "PathNode")},
    "omegaconf.base.ContainerMetadata": None,
    "omegaconf.base.Metadata": None,
    "typing.Any": None,
    "collections.defaultdict": None,
    **{f"builtins.{name}": None for name in ("dict", "list", "tuple", "int", "float", "str", "bool", "bytes",
                                              "object")},
}
_RECORD_CLASSES = {name: type(name.rsplit(".", 1)[1], (_Record,), {"kind": name}) for name in OMEGACONF_GLOBALS}


def _plain(value: Any) -> Any:
    """``value`` with omegaconf records turned into the dicts, lists and scalars they hold."""
    if isinstance(value, _Record):
        reader = OMEGACONF_GLOBALS.get(value.kind)
        return reader(value) if reader else value
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    if isinstance(value, argparse.Namespace):
        return argparse.Namespace(**{key: _plain(item) for key, item in vars(value).items()})
    return value


def read_checkpoint(path: PathLike) -> dict:
    """A fairseq checkpoint as a dict, through ``torch.load(weights_only=True)``: tensors, plain
    containers, ``argparse.Namespace`` and omegaconf configs (as plain dicts and lists) only. Any
    other Python object, or an unreadable file, is a one-line ``UserError``."""
    admitted = [argparse.Namespace, *((record, name) for name, record in _RECORD_CLASSES.items())]
    data = safe_torch_load(path, admitted, "tensors, plain containers, argparse.Namespace, omegaconf "
                                           "configs read as data")
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a fairseq checkpoint (expected a dict with 'model' and 'args' or "
                        f"'cfg', got {type(data).__name__})")
    try:
        return {key: _plain(value) if key in ("args", "cfg") else value for key, value in data.items()}
    except RecursionError:
        raise UserError(f"{path}: its config refers to itself (not a fairseq checkpoint)") from None


# ==================================================================================================
# the architecture

@dataclass(frozen=True)
class SavedConfig:
    """Where a checkpoint keeps the model's and the task's settings: fairseq <= 0.10 saved one flat
    ``args`` Namespace; 0.12's trainer saves ``args`` None and ``cfg`` as plain dicts (a DictConfig when a
    script re-saves what fairseq loaded), whose ``model`` and ``task`` are Namespaces for legacy
    (argparse-defined) models and tasks such as BART and mBART's."""

    model: Any
    task: Any
    task_name: Optional[str]


def saved_config(checkpoint: Mapping) -> SavedConfig:
    cfg, args = checkpoint.get("cfg"), checkpoint.get("args")
    if cfg is not None and _get(cfg, "model") is not None:
        model, task = _get(cfg, "model"), _get(cfg, "task")
    elif args is not None:
        model = task = args
    else:
        raise UserError("the checkpoint records no model settings (neither 'args' nor 'cfg.model')")
    name = _get(task, "_name") or _get(task, "task")
    return SavedConfig(model, task, name if isinstance(name, str) else None)


def _get(container: Any, name: str, default: Any = None) -> Any:
    """``name`` of a Namespace or a mapping (fairseq saved both)."""
    if isinstance(container, Mapping):
        return container.get(name, default)
    return getattr(container, name, default) if isinstance(container, argparse.Namespace) else default


# fairseq activation_fn -> transformers activation_function (gelu_fast/gelu_accurate: the tanh form)
ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_fast": "gelu_new", "gelu_accurate": "gelu_new",
               "tanh": "tanh", "linear": "linear"}
# MBartConfig field -> the fairseq arg it is read from (all required)
SIZES = {"d_model": "encoder_embed_dim", "encoder_layers": "encoder_layers", "decoder_layers": "decoder_layers",
         "encoder_attention_heads": "encoder_attention_heads",
         "decoder_attention_heads": "decoder_attention_heads",
         "encoder_ffn_dim": "encoder_ffn_embed_dim", "decoder_ffn_dim": "decoder_ffn_embed_dim",
         "max_position_embeddings": "max_source_positions"}
# fairseq args that, when present, must equal the one named (transformers has one size for both)
SAME_SIZE = {"decoder_embed_dim": "encoder_embed_dim", "decoder_input_dim": "encoder_embed_dim",
             "decoder_output_dim": "encoder_embed_dim", "max_target_positions": "max_source_positions"}
# MBartConfig field -> (fairseq arg, value when absent); training-only, so fairseq's defaults do
DROPOUTS = {"dropout": ("dropout", 0.1), "attention_dropout": ("attention_dropout", 0.0),
            "encoder_layerdrop": ("encoder_layerdrop", 0.0), "decoder_layerdrop": ("decoder_layerdrop", 0.0)}


@dataclass(frozen=True)
class FixedSwitch:
    """A fairseq arg transformers' MBart has no switch for: it always computes as if it were
    ``required``; ``absent`` is fairseq's argparse default."""

    name: str
    absent: Any
    required: Any
    meaning: str


FIXED_SWITCHES = (
    FixedSwitch("encoder_normalize_before", False, True, "layer norm before each encoder sublayer"),
    FixedSwitch("decoder_normalize_before", False, True, "layer norm before each decoder sublayer"),
    FixedSwitch("layernorm_embedding", False, True, "a layer norm after the embeddings"),
    FixedSwitch("encoder_learned_pos", False, True, "learned encoder positions"),
    FixedSwitch("decoder_learned_pos", False, True, "learned decoder positions"),
    FixedSwitch("no_token_positional_embeddings", False, False, "position embeddings"),
    FixedSwitch("no_decoder_final_norm", False, False, "a final decoder layer norm"),
    FixedSwitch("no_cross_attention", False, False, "cross-attention"),
    FixedSwitch("cross_self_attention", False, False, "separate self- and cross-attention"),
    FixedSwitch("adaptive_input", False, False, "plain input embeddings"),
    FixedSwitch("adaptive_softmax_cutoff", None, None, "a full output softmax"),
    FixedSwitch("encoder_layers_to_keep", None, None, "every encoder layer the checkpoint stores"),
    FixedSwitch("decoder_layers_to_keep", None, None, "every decoder layer the checkpoint stores"),
)


def mbart_config_from_fairseq(args_or_cfg: Any, vocab_size: int) -> "MBartConfig":
    """The ``MBartConfig`` of a fairseq mBART's args (a Namespace, a flat dict, or a 0.12 ``cfg`` whose
    ``model`` entry holds them) and its embedding's row count. Token ids are fairseq's (``<s>`` 0,
    ``<pad>`` 1, ``</s>`` 2); fairseq's learned positions have ``padding_idx + 1`` = 2 extra rows, as
    transformers' (offset 2), so ``max_position_embeddings`` is fairseq's max positions as is."""
    from transformers import MBartConfig

    args = _get(args_or_cfg, "model") if _get(args_or_cfg, "encoder_embed_dim") is None else args_or_cfg
    if _get(args, "encoder_embed_dim") is None:
        raise UserError("fairseq model args: no 'encoder_embed_dim' (not an mBART's args)")
    for switch in FIXED_SWITCHES:
        value = _get(args, switch.name, switch.absent)
        if value != switch.required:
            raise UserError(f"fairseq model arg {switch.name}={value!r}: transformers' MBart always has "
                            f"{switch.meaning} ({switch.name}={switch.required!r})")
    sizes = {field: _size(args, name) for field, name in SIZES.items()}
    for name, same in SAME_SIZE.items():
        if _get(args, name) not in (None, _get(args, same)):
            raise UserError(f"fairseq model args: {name}={_get(args, name)!r} differs from {same}="
                            f"{_get(args, same)!r} (transformers' MBart has one size for both)")
    for side in ("encoder", "decoder"):
        if sizes["d_model"] % sizes[f"{side}_attention_heads"]:
            raise UserError(f"fairseq model args: {side} width {sizes['d_model']} is not a multiple of its "
                            f"{sizes[f'{side}_attention_heads']} heads")
    activation = _get(args, "activation_fn", "relu")
    if activation not in ACTIVATIONS:
        raise UserError(f"fairseq model arg activation_fn={activation!r} (valid: {choices(ACTIVATIONS)})")
    bos, pad, eos = (FAIRSEQ_SPECIALS.index(symbol) for symbol in ("<s>", "<pad>", "</s>"))
    return MBartConfig(
        vocab_size=vocab_size, **sizes, activation_function=ACTIVATIONS[activation],
        **{field: float(_get(args, name, absent) or 0.0) for field, (name, absent) in DROPOUTS.items()},
        activation_dropout=float(_get(args, "activation_dropout", 0.0) or _get(args, "relu_dropout", 0.0) or 0.0),
        scale_embedding=not _get(args, "no_scale_embedding", False), tie_word_embeddings=_tied(args),
        pad_token_id=pad, bos_token_id=bos, eos_token_id=eos, decoder_start_token_id=eos,
        forced_eos_token_id=eos)


def _size(args: Any, name: str) -> int:
    value = _get(args, name)
    if value is None:
        raise UserError(f"fairseq model args: no '{name}'")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"fairseq model arg {name}: expected a positive integer, got {value!r}")
    return value


def _tied(args: Any) -> bool:
    """One embedding for encoder, decoder and output (mBART's layout), or three. fairseq's third
    option, decoder input tied to output only, has no transformers config."""
    if _get(args, "share_all_embeddings", False) or _get(args, "merge_src_tgt_embed", False):
        return True
    if _get(args, "share_decoder_input_output_embed", False):
        raise UserError("fairseq model args: share_decoder_input_output_embed without share_all_embeddings "
                        "(transformers' MBart ties all three embeddings or none)")
    return False


# ==================================================================================================
# the names

ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")
LAYER_MODULES = {
    "encoder": tuple(f"self_attn.{p}" for p in ATTENTION) + ("self_attn_layer_norm", "fc1", "fc2",
                                                              "final_layer_norm"),
    "decoder": tuple(f"{a}.{p}" for a in ("self_attn", "encoder_attn") for p in ATTENTION)
    + ("self_attn_layer_norm", "encoder_attn_layer_norm", "fc1", "fc2", "final_layer_norm"),
}
SIDE_WEIGHTS = ("embed_positions.weight", "layernorm_embedding.weight", "layernorm_embedding.bias",
                "layer_norm.weight", "layer_norm.bias")
# tie_word_embeddings -> the fairseq embeddings and the transformers weights each one fills
EMBEDDINGS = {
    True: {"encoder.embed_tokens.weight": ("model.shared.weight", "model.encoder.embed_tokens.weight",
                                           "model.decoder.embed_tokens.weight", "lm_head.weight")},
    False: {"encoder.embed_tokens.weight": ("model.shared.weight", "model.encoder.embed_tokens.weight"),
            "decoder.embed_tokens.weight": ("model.decoder.embed_tokens.weight",),
            "decoder.output_projection.weight": ("lm_head.weight",)},
}
# fairseq copies of the shared embedding (fairseq < 0.10 saved no output projection when tied)
TIED_COPIES = ("decoder.embed_tokens.weight", "decoder.output_projection.weight")
LEGACY_NAMES = {"decoder.embed_out": "decoder.output_projection.weight"}   # fairseq < 0.10, untied
DROPPED = ("encoder.version", "decoder.version")                           # fairseq's upgrade markers
LOGITS_BIAS = "final_logits_bias"                                          # transformers only: zeros


def map_fairseq_state_dict(state_dict: Mapping[str, Any], config: "MBartConfig") -> dict:
    """The transformers ``MBartForConditionalGeneration`` state dict of a fairseq mBART's, every
    tensor used as is (tied targets share one tensor). An unmapped, missing or misshapen key is a
    one-line ``UserError`` naming it."""
    import torch

    state = _canonical(state_dict, config.tie_word_embeddings)
    table = _key_table(config)
    unexpected = sorted(set(state) - set(table))
    if unexpected:
        raise UserError(f"fairseq weight '{unexpected[0]}' has no place in transformers' MBart "
                        f"({len(unexpected)} such keys; does the checkpoint's args describe its weights?)")
    missing = [key for key in table if key not in state]
    if missing:
        raise UserError(f"fairseq weight '{missing[0]}' is missing ({len(missing)} missing in all)")
    mapped = {target: state[source] for source, targets in table.items() for target in targets}
    mapped[LOGITS_BIAS] = torch.zeros(1, config.vocab_size)
    _check_shapes(mapped, config, {target: source for source, targets in table.items() for target in targets})
    return mapped


def _canonical(state_dict: Mapping[str, Any], tied: bool) -> dict:
    """Legacy names renamed, upgrade markers dropped, and (when tied) fairseq's copies of the shared
    embedding checked to be copies and dropped."""
    import torch

    state = {LEGACY_NAMES.get(key, key): value for key, value in state_dict.items() if key not in DROPPED}
    if tied and "encoder.embed_tokens.weight" in state:
        shared = state["encoder.embed_tokens.weight"]
        for key in TIED_COPIES:
            copy = state.pop(key, shared)
            if copy is not shared and not torch.equal(copy, shared):
                raise UserError(f"fairseq weight '{key}' differs from 'encoder.embed_tokens.weight', but the "
                                "args say all embeddings are shared")
    return state


def _key_table(config: "MBartConfig") -> dict[str, tuple[str, ...]]:
    """fairseq key -> transformers keys. Below the embeddings the names agree up to ``model.``."""
    table = dict(EMBEDDINGS[bool(config.tie_word_embeddings)])
    for side, layers in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        for name in SIDE_WEIGHTS:
            table[f"{side}.{name}"] = (f"model.{side}.{name}",)
        for index in range(layers):
            for module in LAYER_MODULES[side]:
                for kind in ("weight", "bias"):
                    key = f"{side}.layers.{index}.{module}.{kind}"
                    table[key] = (f"model.{key}",)
    return table


def _check_shapes(mapped: dict, config: "MBartConfig", sources: dict) -> None:
    """Against the state dict of the model the config builds (on the meta device: no memory, no init),
    so a transformers release that renamed a weight fails here, not half-loaded."""
    import torch
    from transformers import MBartForConditionalGeneration

    with torch.device("meta"):
        skeleton = MBartForConditionalGeneration(config)
    expected = {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}
    drift = sorted(set(expected) ^ set(mapped))
    if drift:
        raise UserError(f"transformers' MBart {'expects' if drift[0] in expected else 'has no'} weight "
                        f"'{drift[0]}' (this transformers release names MBart's weights differently)")
    for key, shape in expected.items():
        if tuple(mapped[key].shape) != shape:
            raise UserError(f"fairseq weight '{sources.get(key, key)}' has shape {tuple(mapped[key].shape)}, "
                            f"the checkpoint's args give {shape}")


# ==================================================================================================
# loading

def load_fairseq_mbart(directory: PathLike) -> tuple["MBartForConditionalGeneration", list[str], Path]:
    """``(model, symbols, sentencepiece model path)`` of a fairseq mBART directory: the transformers
    model (CPU, eval mode, float32) with the checkpoint's weights, and the dictionary by fairseq id."""
    files = fairseq_files(directory)
    path = files.checkpoint
    checkpoint = read_checkpoint(path)
    state = checkpoint.get("model")
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(key, str) and _is_tensor(value) for key, value in state.items()):
        raise UserError(f"{path}: its 'model' entry is not a state dict (parameter name -> tensor)")
    embedding = state.get("encoder.embed_tokens.weight")
    if embedding is None or embedding.dim() != 2:
        raise UserError(f"{path}: no 2-D 'encoder.embed_tokens.weight' (not a fairseq mBART)")
    try:
        saved = saved_config(checkpoint)
        config = mbart_config_from_fairseq(saved.model, int(embedding.shape[0]))
        mapped = map_fairseq_state_dict(state, config)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    symbols = _dictionary_symbols(files, saved, int(embedding.shape[0]))
    return _build(config, mapped), symbols, files.sentencepiece


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _build(config: "MBartConfig", mapped: dict) -> "MBartForConditionalGeneration":
    """Built on the meta device and given the checkpoint's tensors (float32), so no random
    initialisation is computed for weights that are replaced anyway; then tied as configured."""
    import torch
    from transformers import MBartForConditionalGeneration

    with torch.device("meta"):
        model = MBartForConditionalGeneration(config)
    converted: dict = {}   # one float32 tensor per source tensor, so tied targets still share it
    for value in mapped.values():
        if id(value) not in converted:
            converted[id(value)] = value.float() if value.is_floating_point() else value
    weights = {key: converted[id(value)] for key, value in mapped.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    model.tie_weights()
    return model.eval()
