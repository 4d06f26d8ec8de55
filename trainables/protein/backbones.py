"""Protein language-model backbones: ESM-1b/ESM-2 through fair-esm (``--model esm1b``) and TAPE's BERT
through transformers (``--model tape``), each from a hub name, a local file or a random-weight config.

Why one ``ProteinBackbone`` record: the classifier and the runtime only need a module, its width, its
tokenizer, which ids are not residues and how to read the final-layer states. Everything that depends
on the library (fair-esm's alphabet and checkpoint format, TAPE's vocabulary and key names) stays here.

Checkpoints are user files, and a pickle can run code: every file is read with
``torch.load(weights_only=True)``, admitting ``argparse.Namespace`` (fair-esm's ``args``) and nothing
else. ``check_model`` is torch-free so the driver can reject bad settings before any trial starts;
heavy imports happen inside the builders.
"""
from __future__ import annotations

import json
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from smctune.config.settings import ModelSettings, TrainSettings
from smctune.errors import UserError, choices
from smctune.trainables.checkpoint_io import safe_torch_load

if TYPE_CHECKING:
    import torch

ARCHITECTURES = ("esm1b", "tape")      # the first is the default
SOURCES = ("hub", "local", "config")
LAYER_KEYS = ("head_hidden",)
DEFAULT_HEAD_HIDDEN = 512             # SMC-Bench's head: Linear(H, 512), LayerNorm, ReLU, Linear(512, C)
# Seed of every backbone's construction: a ``config`` model's random "pretrained" weights are the same
# in every trial, and building or loading a model never moves the caller's global RNG.
CONFIG_INIT_SEED = 0

# ---- ESM (fair-esm) --------------------------------------------------------------------------------
ESM_HUB_URL = "https://dl.fbaipublicfiles.com/fair-esm/models/{name}.pt"
# ESM-1b learned 1024 positions, two of them BOS and EOS. ESM-2's rotary positions have no hard limit,
# but it was trained on the same crop, so it keeps the same one.
ESM_MAX_RESIDUES = 1022
# ``model.config`` of source ``config``: class -> required keys, optional keys with defaults.
ESM_CONFIG = {
    "esm2": (("num_layers", "embed_dim", "attention_heads"), {"token_dropout": False}),
    "esm1b": (("num_layers", "embed_dim", "attention_heads"), {"ffn_embed_dim": None, "max_positions": 1024}),
}

# ---- TAPE (transformers BertModel) -----------------------------------------------------------------
TAPE_TOKENS = ("<pad>", "<mask>", "<cls>", "<sep>", "<unk>") + tuple("ABCDEFGHIKLMNOPQRSTUVWXYZ")
TAPE_IDS = {token: index for index, token in enumerate(TAPE_TOKENS)}
TAPE_PAD, TAPE_CLS, TAPE_SEP = (TAPE_IDS[t] for t in ("<pad>", "<cls>", "<sep>"))
# TAPE's bert-base; ``model.config`` (source config) and TAPE's config.json may override these keys.
TAPE_SHAPE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
              "intermediate_size": 3072, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
              "max_position_embeddings": 8192, "type_vocab_size": 1, "initializer_range": 0.02}
TAPE_FILES = ("config.json", "pytorch_model.bin")
# Keys of TAPE's checkpoint (after the ``bert.`` prefix is stripped) that belong to heads we drop.
TAPE_IGNORED = ("pooler.", "mlm.", "cls.")


@dataclass
class ProteinBackbone:
    """What the runtime needs from a backbone, whatever library built it."""

    module: Any                    # torch.nn.Module: becomes ``ProteinClassifier.backbone``
    hidden_size: int
    max_residues: int              # the architecture's limit on residues per sequence
    tokenize: Callable             # list of (already cropped) residue strings -> (B, T) padded LongTensor
    padding_idx: int
    special_ids: tuple             # ids that are not residues (BOS/CLS, EOS/SEP, pad)
    represent: Callable            # (module, tokens) -> (B, T, H) final-layer states
    description: str = ""          # for messages, e.g. "ESM-2 config (4 layers, 128 wide)"


# ==================================================================================================
# settings (torch-free)

def architecture(model: ModelSettings) -> str:
    """``model.arch``, or the default (ESM-1b) when the search space has no ``--model`` choice."""
    arch = model.arch or ARCHITECTURES[0]
    if arch not in ARCHITECTURES:
        raise UserError(f"unknown protein model '{arch}' (valid: {choices(ARCHITECTURES)})")
    return arch


def head_hidden(model: ModelSettings) -> int:
    """``model.layers.head_hidden``: width of the classification head's hidden layer."""
    value = model.layers.get("head_hidden", DEFAULT_HEAD_HIDDEN)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"model.layers.head_hidden: expected a positive integer, got {value!r}")
    return value


def check_model(model: ModelSettings) -> None:
    """Reject bad ``model`` settings with a one-line ``UserError`` (the driver calls this before any
    trial; ``load_backbone`` calls it again)."""
    arch = architecture(model)
    unknown = sorted(set(model.layers) - set(LAYER_KEYS))
    if unknown:
        raise UserError(f"model.layers: unknown key '{unknown[0]}' for the protein models "
                        f"(valid: {', '.join(LAYER_KEYS)})")
    head_hidden(model)
    if model.source not in SOURCES:
        raise UserError(f"unknown model source '{model.source}' for the protein models "
                        f"(valid: {choices(SOURCES)})")
    if model.source == "config":   # model.name only labels the configuration (plan, records)
        if arch == "esm1b":
            _esm_config_settings(model.config)
        else:
            _tape_config_settings(model.config, "model.config")
        return
    if model.config:
        raise UserError(f"model.config: key '{sorted(model.config)[0]}' only applies to source 'config' "
                        f"(source '{model.source}' reads the architecture from the checkpoint)")
    if not model.name:
        what = "a fair-esm model name (e.g. esm1b_t33_650M_UR50S)" if model.source == "hub" else \
            ("the path of a fair-esm .pt checkpoint" if arch == "esm1b" else
             "the directory of TAPE's config.json and pytorch_model.bin")
        raise UserError(f"model.name: source '{model.source}' needs {what} (set models.{arch}."
                        f"<preset>.model.name in a --search-space file)")
    if model.source == "hub":
        if arch == "tape":
            raise UserError("model.source 'hub': TAPE's weights are not on a hub; load bert-base with TAPE, "
                            "save_pretrained() it to a directory (config.json, pytorch_model.bin) and use "
                            "source 'local' with that directory")
        if not re.fullmatch(r"[A-Za-z0-9_]+", model.name):
            raise UserError(f"model.name: '{model.name}' is not a fair-esm model name (e.g. "
                            "esm1b_t33_650M_UR50S); for a file use source 'local'")


def _positive_int(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _esm_config_settings(config: dict) -> dict:
    """``model.config`` of an ESM ``config`` model, checked, with defaults filled in."""
    kind = config.get("class")
    if kind not in ESM_CONFIG:
        raise UserError(f"model.config.class: {kind!r} (valid: {choices(ESM_CONFIG)}; esm2 is fair-esm's "
                        "ESM2, esm1b its ProteinBertModel)")
    required, optional = ESM_CONFIG[kind]
    valid = ("class",) + required + tuple(optional)
    for key in config:
        if key not in valid:
            raise UserError(f"model.config: unknown key '{key}' for class {kind} (valid: {', '.join(valid)})")
    for key in required:
        if key not in config:
            raise UserError(f"model.config.{key} is required for class {kind}")
    settings = {**optional, **config}
    for key in required + ("ffn_embed_dim", "max_positions"):
        if key in settings and settings[key] is not None:
            _positive_int(f"model.config.{key}", settings[key])
    if "token_dropout" in settings and not isinstance(settings["token_dropout"], bool):
        raise UserError(f"model.config.token_dropout: expected true or false, got {settings['token_dropout']!r}")
    if settings["embed_dim"] % settings["attention_heads"]:
        raise UserError(f"model.config: embed_dim {settings['embed_dim']} is not a multiple of "
                        f"attention_heads {settings['attention_heads']}")
    if kind == "esm1b":
        if settings["ffn_embed_dim"] is None:
            settings["ffn_embed_dim"] = 4 * settings["embed_dim"]
        if settings["max_positions"] < 3:
            raise UserError(f"model.config.max_positions: {settings['max_positions']} leaves no room for a "
                            "residue beside BOS and EOS")
    return settings


def _tape_config_settings(config: dict, where: str) -> dict:
    """BERT overrides of TAPE's shape (``model.config``, or the keys of TAPE's config.json)."""
    for key, value in config.items():
        if key == "vocab_size":
            if value != len(TAPE_TOKENS):
                raise UserError(f"{where}.vocab_size: {value!r}, but TAPE's vocabulary has "
                                f"{len(TAPE_TOKENS)} tokens")
        elif key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            raise UserError(f"{where}.{key}: dropout comes from train.dropout")
        elif key not in TAPE_SHAPE:
            raise UserError(f"{where}: unknown key '{key}' (valid: {', '.join(TAPE_SHAPE)})")
    return {**TAPE_SHAPE, **{k: v for k, v in config.items() if k != "vocab_size"}}


def residue_limit(model: ModelSettings) -> int:
    """Residues per sequence the configured model can read, known without building it (the driver
    checks ``train.max_length`` against it); a checkpoint's own limit is checked when it loads."""
    check_model(model)
    if architecture(model) == "esm1b":
        if model.source == "config" and model.config.get("class") == "esm1b":
            return min(ESM_MAX_RESIDUES, _esm_config_settings(model.config)["max_positions"] - 2)
        return ESM_MAX_RESIDUES
    if model.source == "config":
        return _tape_config_settings(model.config, "model.config")["max_position_embeddings"] - 2
    return TAPE_SHAPE["max_position_embeddings"] - 2


def check_crop(backbone: ProteinBackbone, max_length: int) -> None:
    """``train.max_length`` residues must fit the architecture."""
    if max_length < 1:
        raise UserError(f"train.max_length must be at least 1 residue, got {max_length}")
    if max_length > backbone.max_residues:
        raise UserError(f"train.max_length {max_length} exceeds the {backbone.max_residues} residues "
                        f"{backbone.description or 'the model'} can read")


# ==================================================================================================
# building

def load_backbone(model: ModelSettings, train: TrainSettings) -> ProteinBackbone:
    """The backbone at its starting ("pretrained") weights, on the CPU, in train mode."""
    check_model(model)
    arch = architecture(model)
    with _seeded():
        if arch == "esm1b":
            backbone = _esm_backbone(model)
        else:
            backbone = _tape_backbone(model, train)
    check_crop(backbone, train.max_length)
    backbone.module.train()
    return backbone


@contextmanager
def _seeded() -> Iterator[None]:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(CONFIG_INIT_SEED)
        yield


def load_checkpoint(path: Path) -> Any:
    """``torch.load`` that never runs code from the file: tensors, plain containers and
    ``argparse.Namespace`` (fair-esm's saved args) only."""
    import argparse

    return safe_torch_load(path, [argparse.Namespace], "tensors, plain containers and argparse.Namespace")


# ---- ESM --------------------------------------------------------------------------------------------

def _esm_backbone(model: ModelSettings) -> ProteinBackbone:
    import esm

    if model.source == "config":
        settings = _esm_config_settings(model.config)
        alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
        if settings["class"] == "esm2":
            module = esm.model.esm2.ESM2(num_layers=settings["num_layers"], embed_dim=settings["embed_dim"],
                                         attention_heads=settings["attention_heads"], alphabet=alphabet,
                                         token_dropout=settings["token_dropout"])
        else:
            from argparse import Namespace

            args = Namespace(arch="roberta_large", layers=settings["num_layers"],
                             embed_dim=settings["embed_dim"], ffn_embed_dim=settings["ffn_embed_dim"],
                             attention_heads=settings["attention_heads"],
                             max_positions=settings["max_positions"])
            module = esm.ProteinBertModel(args, alphabet)
        label = f"{'ESM-2' if settings['class'] == 'esm2' else 'ESM-1b'} config " \
                f"({settings['num_layers']} layers, {settings['embed_dim']} wide)"
    else:
        path = _esm_hub_file(model.name) if model.source == "hub" else Path(model.name)
        module, alphabet = _esm_local(path)
        label = f"{type(module).__name__} {path.stem}"
    return esm_backbone(module, alphabet, label)


def esm_backbone(module: Any, alphabet: Any, description: str = "") -> ProteinBackbone:
    """Wrap a fair-esm ``ProteinBertModel`` or ``ESM2`` and its alphabet."""
    _call_projections(module)
    args = getattr(module, "args", None)
    positions = getattr(args, "max_positions", None)
    specials = int(alphabet.prepend_bos) + int(alphabet.append_eos)
    limit = ESM_MAX_RESIDUES if positions is None else min(ESM_MAX_RESIDUES, positions - specials)
    hidden = module.embed_dim if args is None else args.embed_dim
    return ProteinBackbone(
        module=module, hidden_size=hidden, max_residues=limit,
        tokenize=partial(_esm_tokenize, alphabet.get_batch_converter()),
        padding_idx=alphabet.padding_idx,
        special_ids=tuple(sorted({alphabet.cls_idx, alphabet.eos_idx, alphabet.padding_idx})),
        represent=esm_represent, description=description)


def _call_projections(module: Any) -> None:
    """Make fair-esm's attention call its ``q/k/v/out_proj`` modules.

    Without rotary embeddings (ESM-1b) fair-esm hands the projection weights to
    ``F.multi_head_attention_forward``, so those ``nn.Linear`` modules are never called and the
    activation-aware pruning methods (Wanda, SparseGPT), which read each Linear's input through a
    forward hook, would find the attention matrices unreachable. fair-esm's own ``enable_torch_version``
    switch selects its explicit path (the one ESM-2 always takes); the result is the same."""
    from esm.multihead_attention import MultiheadAttention

    for layer in module.modules():
        if isinstance(layer, MultiheadAttention):
            layer.enable_torch_version = False


def _esm_tokenize(converter: Any, sequences: list) -> "torch.Tensor":
    """fair-esm's own batch converter: BOS, residues, EOS (ESM-1b and ESM-2), right-padded."""
    try:
        return converter([("", sequence) for sequence in sequences])[2]
    except KeyError as err:  # a letter outside fair-esm's alphabet (the data check should catch it)
        raise _unknown_residue(str(err.args[0]), sequences, "fair-esm's") from None


def esm_represent(module: Any, tokens: "torch.Tensor") -> "torch.Tensor":
    """Final-layer states, after ESM's final layer norm (what fair-esm reports for the last layer)."""
    last = module.num_layers
    return module(tokens, repr_layers=[last])["representations"][last]


def _esm_hub_file(name: str) -> Path:
    """``<torch hub dir>/checkpoints/<name>.pt``, downloaded from fair-esm's server when absent."""
    import torch

    target = Path(torch.hub.get_dir()) / "checkpoints" / f"{name}.pt"
    if not target.is_file():
        url = ESM_HUB_URL.format(name=name)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(target), progress=False)
        except OSError as err:  # URLError and HTTPError included
            raise UserError(f"model.name '{name}': could not download {url} ({err}); fetch the file "
                            f"elsewhere and use source 'local' with its path") from None
    return target


def _esm_local(path: Path) -> tuple:
    """A fair-esm checkpoint file through fair-esm's own loader (name mapping, ESM-1b vs ESM-2)."""
    import esm

    if not path.is_file():
        raise UserError(f"model.name: fair-esm checkpoint not found: {path}")
    data = load_checkpoint(path)
    if not isinstance(data, dict) or "model" not in data or not ({"args", "cfg"} & set(data)):
        raise UserError(f"{path}: not a fair-esm checkpoint (expected a dict with 'args' or 'cfg' and "
                        "'model')")
    try:
        with warnings.catch_warnings():  # no contact-regression file: contacts are not used here
            warnings.filterwarnings("ignore", message=r".*[Rr]egression weights")
            module, alphabet = esm.pretrained.load_model_and_alphabet_core(path.stem, data)
    except RuntimeError as err:  # fair-esm's key check, or a shape mismatch
        raise UserError(f"{path}: weights do not fit the architecture its args describe: "
                        f"{' '.join(str(err).split())[:300]}") from None
    except (KeyError, AttributeError, TypeError, ValueError) as err:
        raise UserError(f"{path}: not a fair-esm ESM-1b or ESM-2 checkpoint ({type(err).__name__}: {err}); "
                        "fair-esm reads a file named esm2*.pt as ESM-2 and any other as ESM-1") from None
    if not isinstance(module, (esm.ProteinBertModel, esm.model.esm2.ESM2)):
        raise UserError(f"{path}: is a {type(module).__name__}; the protein tasks fine-tune sequence models "
                        "(ESM-1b, ESM-2)")
    return module, alphabet


# ---- TAPE -------------------------------------------------------------------------------------------

def _tape_backbone(model: ModelSettings, train: TrainSettings) -> ProteinBackbone:
    if model.source == "config":
        module = _tape_module(_tape_config_settings(model.config, "model.config"), train)
        label = f"TAPE config ({module.config.num_hidden_layers} layers, {module.config.hidden_size} wide)"
    else:
        module = _tape_local(Path(model.name), train)
        label = f"TAPE {model.name}"
    return ProteinBackbone(
        module=module, hidden_size=module.config.hidden_size,
        max_residues=module.config.max_position_embeddings - 2,
        tokenize=tape_tokenize, padding_idx=TAPE_PAD,
        special_ids=(TAPE_PAD, TAPE_CLS, TAPE_SEP), represent=tape_represent, description=label)


def _tape_module(settings: dict, train: TrainSettings) -> Any:
    from transformers import BertConfig, BertModel

    try:
        config = BertConfig(**settings, vocab_size=len(TAPE_TOKENS), pad_token_id=TAPE_PAD,
                            hidden_dropout_prob=train.dropout, attention_probs_dropout_prob=train.dropout)
        return BertModel(config, add_pooling_layer=False)
    except (TypeError, ValueError) as err:  # e.g. hidden size not divisible by the number of heads
        raise UserError(f"model.config: {str(err).strip().splitlines()[0]}") from None


def _tape_local(directory: Path, train: TrainSettings) -> Any:
    """TAPE's ``bert-base`` download: its config.json and pytorch_model.bin (keys ``bert.*``)."""
    if not directory.is_dir():
        raise UserError(f"model.name: TAPE model directory not found: {directory}")
    for name in TAPE_FILES:
        if not (directory / name).is_file():
            raise UserError(f"{directory}: no {name} (a TAPE model directory holds {' and '.join(TAPE_FILES)})")
    config_file = directory / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{config_file}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise UserError(f"{config_file}: expected a JSON object of BERT settings")
    if "vocab_size" in config:
        _tape_config_settings({"vocab_size": config["vocab_size"]}, str(config_file))
    module = _tape_module({**TAPE_SHAPE, **{k: v for k, v in config.items() if k in TAPE_SHAPE}}, train)
    weights = directory / "pytorch_model.bin"
    state = load_checkpoint(weights)
    if not isinstance(state, dict):
        raise UserError(f"{weights}: expected a state dict (parameter name -> tensor)")
    kept = {}
    for key, value in state.items():
        name = key[len("bert."):] if key.startswith("bert.") else key
        if not name.startswith(TAPE_IGNORED):
            kept[name] = value
    try:
        result = module.load_state_dict(kept, strict=False)
    except RuntimeError as err:  # size mismatch: config.json disagrees with the weights
        raise UserError(f"{weights}: {' '.join(str(err).split())[:300]}") from None
    parameters = {name for name, _ in module.named_parameters()}
    missing = [key for key in result.missing_keys if key in parameters]
    if missing:
        raise UserError(f"{weights}: {len(missing)} encoder weights missing, e.g. '{missing[0]}' "
                        "(is this TAPE's bert-base?)")
    if result.unexpected_keys:
        raise UserError(f"{weights}: {len(result.unexpected_keys)} keys that TAPE's BERT does not have, "
                        f"e.g. '{result.unexpected_keys[0]}'")
    return module


def tape_tokenize(sequences: list) -> "torch.Tensor":
    """TAPE's IUPAC vocabulary: ``<cls>`` residues ``<sep>``, right-padded with ``<pad>`` (0). A letter
    outside it is an error rather than ``<unk>``, as it is for fair-esm's alphabet."""
    import torch

    try:
        rows = [[TAPE_CLS] + [TAPE_IDS[residue] for residue in sequence] + [TAPE_SEP] for sequence in sequences]
    except KeyError as err:  # a letter outside TAPE's vocabulary (the data check should catch it)
        raise _unknown_residue(str(err.args[0]), sequences, "TAPE's") from None
    tokens = torch.full((len(rows), max(len(row) for row in rows)), TAPE_PAD, dtype=torch.long)
    for index, row in enumerate(rows):
        tokens[index, :len(row)] = torch.tensor(row, dtype=torch.long)
    return tokens


def _unknown_residue(letter: str, sequences: list, vocabulary: str) -> UserError:
    index = next((i for i, sequence in enumerate(sequences) if letter in sequence), None)
    where = "" if index is None else f" at residue {sequences[index].index(letter) + 1} of '{sequences[index][:20]}...'"
    return UserError(f"sequence letter '{letter}'{where} is not in {vocabulary} vocabulary "
                     "(valid: ACDEFGHIKLMNPQRSTVWY and X, B, Z, U, O)")


def tape_represent(module: Any, tokens: "torch.Tensor") -> "torch.Tensor":
    """Final-layer states of the BERT encoder; padding is masked out of attention."""
    return module(input_ids=tokens, attention_mask=tokens.ne(TAPE_PAD).long()).last_hidden_state
