"""fairseq mBART checkpoint directories load as transformers' MBart computing the same function.

Without fairseq (always): a tiny transformers MBart is written out in fairseq's format by the inverse
of the mapping under test (written out here, independently), and must come back with identical logits
through every checkpoint layout fairseq has used; a pickle that would run code, a malformed
``dict.txt``, a missing file and a weight without a place are one-line errors.

With fairseq (``pip install fairseq-fixed==0.12.3.1`` in a separate venv; the tests skip otherwise):
fairseq itself builds the model and the dictionary, and its logits must equal the loaded model's; one
test trains for four updates with ``fairseq-train`` and loads the checkpoint it writes.
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
import torch
from transformers import MBartConfig, MBartForConditionalGeneration

from smctune.errors import UserError
from smctune.trainables.translation import checkpoints as ck
from smctune.trainables.translation.checkpoints import (load_fairseq_mbart, map_fairseq_state_dict,
                                                        mbart_config_from_fairseq, read_fairseq_dictionary)

pytestmark = pytest.mark.usefixtures("single_thread")

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
WORDS = tuple(f"\u2581w{i}" for i in range(20))
LANGS = ("en_XX", "ro_RO")
SYMBOLS = SPECIALS + WORDS + ("[en_XX]", "[ro_RO]", "<mask>")
EN, RO = SYMBOLS.index("[en_XX]"), SYMBOLS.index("[ro_RO]")
PAD, EOS = 1, 2
# fairseq's mBART source layout "pieces </s> [src_lang]", the second row right-padded; the decoder
# reads "[tgt_lang] pieces"
SOURCE = torch.tensor([[5, 6, 7, 8, EOS, EN], [9, 10, EOS, EN, PAD, PAD]])
PREVIOUS = torch.tensor([[RO, 11, 12, 13], [RO, 14, 15, 16]])
FAIRSEQ_REASON = "fairseq is not installed (pip install fairseq-fixed==0.12.3.1, in its own venv)"


# ==================================================================================================
# a fairseq-format directory written from a transformers model

def fairseq_args(**overrides) -> argparse.Namespace:
    """The flat args a fairseq <= 0.10 mBART checkpoint holds (model and task in one Namespace)."""
    fields = dict(task="translation_from_pretrained_bart", langs=",".join(LANGS), arch="mbart_large",
                  encoder_embed_dim=16, decoder_embed_dim=16, encoder_layers=1, decoder_layers=1,
                  encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_embed_dim=32,
                  decoder_ffn_embed_dim=32, max_source_positions=32, max_target_positions=32,
                  encoder_normalize_before=True, decoder_normalize_before=True, layernorm_embedding=True,
                  encoder_learned_pos=True, decoder_learned_pos=True, no_scale_embedding=False,
                  activation_fn="gelu", share_all_embeddings=True, share_decoder_input_output_embed=True,
                  dropout=0.3, attention_dropout=0.1, activation_dropout=0.0)
    fields.update(overrides)
    return argparse.Namespace(**fields)


def twin(args: argparse.Namespace, vocab: int = len(SYMBOLS), seed: int = 0) -> MBartForConditionalGeneration:
    """The transformers model those args describe, built here without the code under test, with every
    weight random (layer norms and biases included, so a misplaced one changes the logits)."""
    activation = {"gelu": "gelu", "relu": "relu", "gelu_accurate": "gelu_new"}[args.activation_fn]
    config = MBartConfig(vocab_size=vocab, d_model=args.encoder_embed_dim, encoder_layers=args.encoder_layers,
                         decoder_layers=args.decoder_layers, encoder_attention_heads=args.encoder_attention_heads,
                         decoder_attention_heads=args.decoder_attention_heads,
                         encoder_ffn_dim=args.encoder_ffn_embed_dim, decoder_ffn_dim=args.decoder_ffn_embed_dim,
                         max_position_embeddings=args.max_source_positions, activation_function=activation,
                         scale_embedding=not args.no_scale_embedding, tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MBartForConditionalGeneration(config)
        for parameter in model.parameters():
            parameter.data.normal_(0.0, 0.5)
    return model.eval()


def to_fairseq(model: MBartForConditionalGeneration) -> dict:
    """transformers names -> fairseq names: below the embeddings fairseq's are transformers' without
    ``model.``; fairseq stores the shared embedding three times and a version marker per side."""
    embeddings = ("model.shared.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight",
                  "lm_head.weight", "final_logits_bias")
    state = {key.removeprefix("model."): tensor.clone() for key, tensor in model.state_dict().items()
             if key not in embeddings}
    shared = model.model.shared.weight.detach().clone()
    state.update({"encoder.embed_tokens.weight": shared, "decoder.embed_tokens.weight": shared,
                  "decoder.output_projection.weight": shared,
                  "encoder.version": torch.tensor([3.0]), "decoder.version": torch.tensor([3.0])})
    return state


def write_directory(directory: Path, checkpoint: object, words=WORDS, legacy_format: bool = False) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, directory / "model.pt", _use_new_zipfile_serialization=not legacy_format)
    (directory / "dict.txt").write_text("".join(f"{w} {100 - i}\n" for i, w in enumerate(words)), encoding="utf-8")
    (directory / "sentence.bpe.model").write_bytes(b"not read by the loader")
    return directory


def logits(model: MBartForConditionalGeneration, source=SOURCE, previous=PREVIOUS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=source, attention_mask=source.ne(PAD).long(), decoder_input_ids=previous).logits


def layout(name: str, args: argparse.Namespace, state: dict) -> dict:
    """The checkpoint dicts fairseq wrote over the years."""
    model_args = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in ("task", "langs")})
    task_args = argparse.Namespace(_name=args.task, langs=args.langs)
    history = [{"criterion_name": "LabelSmoothedCrossEntropyCriterion", "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": 5.2}, "num_updates": 4}]
    if name == "args":       # fairseq <= 0.10
        return {"args": args, "model": state, "optimizer_history": history, "extra_state": {"val_loss": 5.2}}
    assert name == "cfg"     # fairseq 0.12's Trainer.state_dict: cfg as plain containers, legacy parts Namespaces
    return {"args": None, "cfg": {"_name": None, "common": {"seed": 222}, "model": model_args, "task": task_args},
            "model": state, "optimizer_history": history, "task_state": {},
            "extra_state": {"metrics": collections.OrderedDict(), "val_loss": 5.2, "best": 5.2}}


def plain_checkpoint() -> dict:
    return layout("args", fairseq_args(), to_fairseq(twin(fairseq_args())))


# ==================================================================================================
# the round trip

@pytest.mark.parametrize("activation, no_scale", [("gelu", False), ("relu", True), ("gelu_accurate", False)])
@pytest.mark.parametrize("name, legacy_format", [("args", False), ("args", True), ("cfg", False)])
def test_round_trip_reproduces_logits(tmp_path, activation, no_scale, name, legacy_format):
    args = fairseq_args(activation_fn=activation, no_scale_embedding=no_scale)
    model = twin(args)
    directory = write_directory(tmp_path / "mbart", layout(name, args, to_fairseq(model)),
                                legacy_format=legacy_format)

    loaded, symbols, spm_file = load_fairseq_mbart(directory)

    assert torch.equal(logits(loaded), logits(model))
    assert symbols == list(SYMBOLS)
    assert spm_file == directory / "sentence.bpe.model"
    assert not loaded.training
    assert loaded.lm_head.weight is loaded.model.shared.weight is loaded.model.encoder.embed_tokens.weight
    assert loaded.config.scale_embedding is (not no_scale)
    assert (loaded.config.pad_token_id, loaded.config.eos_token_id, loaded.config.dropout) == (PAD, EOS, 0.3)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in loaded.parameters())


def test_half_precision_checkpoint_loads_as_float32(tmp_path):
    args = fairseq_args()
    model = twin(args)
    state = {key: value.half() for key, value in to_fairseq(model).items()}
    shared = state["encoder.embed_tokens.weight"]
    state.update({"decoder.embed_tokens.weight": shared, "decoder.output_projection.weight": shared})
    loaded, _, _ = load_fairseq_mbart(write_directory(tmp_path / "mbart", layout("args", args, state)))

    assert loaded.model.shared.weight.dtype == torch.float32
    assert torch.equal(loaded.model.shared.weight, model.model.shared.weight.half().float())
    assert loaded.lm_head.weight is loaded.model.shared.weight


def test_older_checkpoint_without_output_projection_loads(tmp_path):
    """fairseq before 0.10 had no ``output_projection`` when the output shared the embedding."""
    args = fairseq_args()
    model = twin(args)
    state = to_fairseq(model)
    del state["decoder.output_projection.weight"]
    loaded, _, _ = load_fairseq_mbart(write_directory(tmp_path / "mbart", layout("args", args, state)))
    assert torch.equal(logits(loaded), logits(model))


def test_language_list_from_the_lang_dict_file_or_cc25(tmp_path):
    """translation_multi_simple_epoch records only the path of its --lang-dict: the file is read from the
    directory when there, and without it a checkpoint with cc25's extra rows is read as cc25's."""
    args = fairseq_args(task="translation_multi_simple_epoch", langs=None, lang_dict="/data/langs.txt",
                        lang_tok_style="mbart", langtoks_specs=["main"], extra_data=None)
    cc25 = twin(args, vocab=len(SPECIALS) + len(WORDS) + len(ck.CC25_LANGUAGES) + 1)
    _, symbols, _ = load_fairseq_mbart(write_directory(tmp_path / "cc25", layout("args", args, to_fairseq(cc25))))
    assert symbols[len(SPECIALS) + len(WORDS):] == [f"[{lang}]" for lang in ck.CC25_LANGUAGES] + ["<mask>"]

    directory = write_directory(tmp_path / "two", layout("args", args, to_fairseq(twin(args))))
    with pytest.raises(UserError, match="--lang-dict") as err:
        load_fairseq_mbart(directory)
    assert "\n" not in str(err.value)
    (directory / "langs.txt").write_text("en_XX\nro_RO\n", encoding="utf-8")
    assert load_fairseq_mbart(directory)[1] == list(SYMBOLS)


# ==================================================================================================
# the pickle

class _RunsCode:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("legacy_format", [False, True])
def test_pickle_that_runs_code_is_refused(tmp_path, legacy_format):
    pwned = tmp_path / "pwned"
    args = fairseq_args()
    checkpoint = {"args": _RunsCode(f"touch {pwned}"), "model": to_fairseq(twin(args))}
    directory = write_directory(tmp_path / "mbart", checkpoint, legacy_format=legacy_format)

    refused = r"refused to load: it needs the Python object '(posix|os)\.system'"
    with pytest.raises(UserError, match=refused) as err:
        load_fairseq_mbart(directory)
    assert "\n" not in str(err.value) and str(directory / "model.pt") in str(err.value)
    assert not pwned.exists()


def test_truncated_checkpoint_is_one_line_error(tmp_path):
    directory = write_directory(tmp_path / "mbart", plain_checkpoint())
    data = (directory / "model.pt").read_bytes()
    (directory / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint") as err:
        load_fairseq_mbart(directory)
    assert "\n" not in str(err.value)


# omegaconf's pickles as fairseq's load_checkpoint_to_cpu leaves them (cfg a DictConfig) when a script
# saves the state again, reproduced with look-alike classes so the test needs no omegaconf: a
# container holds ``_metadata``, ``_parent`` and ``_content``, a node ``_val``.
FAKE_OMEGACONF = {"omegaconf.dictconfig": ("DictConfig",), "omegaconf.listconfig": ("ListConfig",),
                  "omegaconf.nodes": ("AnyNode",), "omegaconf.base": ("ContainerMetadata", "Metadata")}


def _fake_omegaconf(monkeypatch) -> types.SimpleNamespace:
    classes, package = {}, types.ModuleType("omegaconf")
    monkeypatch.setitem(sys.modules, "omegaconf", package)
    for module_name, names in FAKE_OMEGACONF.items():
        module = types.ModuleType(module_name)
        for name in names:
            classes[name] = type(name, (), {"__module__": module_name})
            setattr(module, name, classes[name])
        monkeypatch.setitem(sys.modules, module_name, module)
        setattr(package, module_name.split(".")[1], module)
    return types.SimpleNamespace(**classes)


def _fake_node(fake: types.SimpleNamespace, value, key=None, parent=None):
    def instance(cls, **state):
        obj = object.__new__(cls)
        obj.__dict__.update(state)
        return obj

    container = isinstance(value, (dict, list))
    metadata = instance(fake.ContainerMetadata if container else fake.Metadata, ref_type=typing.Any,
                        object_type=type(value) if container else None, optional=True, key=key,
                        flags={"allow_objects": True}, flags_root=False,
                        resolver_cache=collections.defaultdict(dict), key_type=typing.Any, element_type=typing.Any)
    if not container:
        return instance(fake.AnyNode, _metadata=metadata, _parent=parent, _flags_cache=None, _val=value)
    node = instance(fake.DictConfig if isinstance(value, dict) else fake.ListConfig, _metadata=metadata,
                    _parent=parent, _content=None)
    node._content = ({k: _fake_node(fake, v, k, node) for k, v in value.items()} if isinstance(value, dict)
                     else [_fake_node(fake, v, i, node) for i, v in enumerate(value)])
    return node


def test_pickled_dictconfig_is_read_as_data(tmp_path, monkeypatch):
    args = fairseq_args()
    model = twin(args)
    checkpoint = layout("cfg", args, to_fairseq(model))
    directory = tmp_path / "mbart"
    with monkeypatch.context() as patch:
        fake = _fake_omegaconf(patch)
        checkpoint["cfg"] = _fake_node(fake, {**checkpoint["cfg"], "lr": [3e-05], "interpolated": "${lr}"})
        write_directory(directory, checkpoint)
    assert "omegaconf.dictconfig.DictConfig" in torch.serialization.get_unsafe_globals_in_checkpoint(
        str(directory / "model.pt"))

    loaded, symbols, _ = load_fairseq_mbart(directory)
    assert torch.equal(logits(loaded), logits(model))
    assert symbols == list(SYMBOLS)
    cfg = ck.read_checkpoint(directory / "model.pt")["cfg"]
    assert (cfg["lr"], cfg["interpolated"], cfg["common"]) == ([3e-05], "${lr}", {"seed": 222})


def test_admitted_omegaconf_names_run_nothing(tmp_path, monkeypatch):
    """The stand-ins bound to omegaconf's names take whatever the pickle passes and do nothing."""
    pwned = tmp_path / "pwned"
    with monkeypatch.context() as patch:
        fake = _fake_omegaconf(patch)
        fake.AnyNode.__reduce__ = lambda self: (type(self), (f"touch {pwned}",))
        torch.save({"cfg": object.__new__(fake.AnyNode), "model": {}}, tmp_path / "model.pt")
    data = ck.read_checkpoint(tmp_path / "model.pt")
    assert data["cfg"] is None and not pwned.exists()


# ==================================================================================================
# the dictionary

def test_dictionary_layout(tmp_path):
    path = tmp_path / "dict.txt"
    path.write_text("a 5\nsym with space 4\n<mask> 0\nb 3\na 2 #fairseq:overwrite\r\n", encoding="utf-8")
    symbols = read_fairseq_dictionary(path, ck.mbart_symbols(["en_XX", "ro_RO", "en_XX"]))
    # overwrite appends a second id; <mask> already present keeps its id; languages are not repeated
    assert symbols == list(SPECIALS) + ["a", "sym with space", "<mask>", "b", "a", "[en_XX]", "[ro_RO]"]


@pytest.mark.parametrize("text, line", [
    ("word\n", 1), ("a 1\nword x\n", 2), ("a 1\na 2\n", 2), ("a 1\n\nb 2\n", 2), ("<unk> 5\n", 1),
    ("a 1 #fairseq:overwrite\nb\n", 2)])
def test_malformed_dictionary_is_one_line_error(tmp_path, text, line):
    path = tmp_path / "dict.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=rf"dict\.txt:{line}: ") as err:
        read_fairseq_dictionary(path)
    assert "\n" not in str(err.value)


def test_dictionary_that_does_not_fit_the_embedding_is_an_error(tmp_path):
    args = fairseq_args()
    directory = write_directory(tmp_path / "mbart", layout("args", args, to_fairseq(twin(args))),
                                words=WORDS + ("extra",))
    with pytest.raises(UserError, match=r"28 symbols .* embedding has 27 rows"):
        load_fairseq_mbart(directory)
    (directory / "dict.txt").write_bytes(b"a 1\n\xff 2\n")
    with pytest.raises(UserError, match="not UTF-8"):
        load_fairseq_mbart(directory)


def test_task_symbols_follow_fairseq_tasks():
    multi = ck.TASK_SYMBOLS["translation_multi_simple_epoch"]
    task = argparse.Namespace(lang_tok_style="multilingual", langtoks_specs=["main"], extra_data=None)
    assert multi(task, ("en_XX", "ro_RO")) == ("__en_XX__", "__ro_RO__")
    task = argparse.Namespace(lang_tok_style="mbart", langtoks_specs=["main", "dae"], extra_data=None)
    assert multi(task, ("en_XX",)) == ("[en_XX]", "[en_XX_dae]", "<mask>")
    denoising = ck.TASK_SYMBOLS["multilingual_denoising"]
    assert denoising({"add_lang_token": True}, ("en_XX",)) == ("[en_XX]", "<mask>")
    assert denoising({"add_lang_token": False}, None) == ("<mask>",)


# ==================================================================================================
# the directory, the architecture, the names

@pytest.mark.parametrize("missing", ["model.pt", "dict.txt", "sentence.bpe.model"])
def test_missing_file_is_named(tmp_path, missing):
    directory = write_directory(tmp_path / "mbart", plain_checkpoint())
    (directory / missing).unlink()
    with pytest.raises(UserError, match=rf"no {missing.replace('.', r'.')} \(a fairseq mBART directory holds"):
        load_fairseq_mbart(directory)
    with pytest.raises(UserError, match="directory not found"):
        load_fairseq_mbart(tmp_path / "nowhere")


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update({"encoder.layers.0.self_attn.extra.weight": torch.zeros(2)}),
     "fairseq weight 'encoder.layers.0.self_attn.extra.weight' has no place"),
    (lambda s: s.update({"encoder.layers.1.fc1.weight": torch.zeros(32, 16)}),
     "fairseq weight 'encoder.layers.1.fc1.weight' has no place"),
    (lambda s: s.pop("decoder.layer_norm.bias"), "fairseq weight 'decoder.layer_norm.bias' is missing"),
    (lambda s: s.update({"encoder.embed_positions.weight": torch.zeros(66, 16)}),
     r"'encoder.embed_positions.weight' has shape \(66, 16\), the checkpoint's args give \(34, 16\)"),
    (lambda s: s.update({"decoder.output_projection.weight": torch.zeros(27, 16)}),
     "'decoder.output_projection.weight' differs from 'encoder.embed_tokens.weight'"),
])
def test_weight_without_a_place_is_named(tmp_path, edit, message):
    args = fairseq_args()
    state = to_fairseq(twin(args))
    edit(state)
    directory = write_directory(tmp_path / "mbart", layout("cfg", args, state))
    with pytest.raises(UserError, match=message) as err:
        load_fairseq_mbart(directory)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(directory / "model.pt"))


@pytest.mark.parametrize("overrides, message", [
    ({"encoder_normalize_before": False},
     "encoder_normalize_before=False: transformers' MBart always has layer norm"),
    ({"decoder_learned_pos": False}, "decoder_learned_pos=False"),
    ({"layernorm_embedding": False}, "layernorm_embedding=False"),
    ({"activation_fn": "swish"}, "activation_fn='swish'"),
    ({"decoder_embed_dim": 32}, "decoder_embed_dim=32 differs from encoder_embed_dim=16"),
    ({"max_target_positions": 64}, "max_target_positions=64 differs"),
    ({"share_all_embeddings": False}, "share_decoder_input_output_embed without share_all_embeddings"),
    ({"encoder_attention_heads": 3}, "not a multiple of its 3 heads"),
    ({"encoder_layers": None}, "no 'encoder_layers'"),
])
def test_architecture_transformers_cannot_compute_is_refused(overrides, message):
    with pytest.raises(UserError, match=message) as err:
        mbart_config_from_fairseq(fairseq_args(**overrides), len(SYMBOLS))
    assert "\n" not in str(err.value)


def test_config_and_mapping_without_a_directory():
    """The two steps on their own, as other loaders (a hub download, a converted file) can use them."""
    args = fairseq_args(no_scale_embedding=True, relu_dropout=0.2, activation_dropout=0.0)
    config = mbart_config_from_fairseq({"model": args, "task": None}, len(SYMBOLS))
    assert (config.d_model, config.max_position_embeddings, config.scale_embedding) == (16, 32, False)
    assert (config.activation_dropout, config.tie_word_embeddings) == (0.2, True)
    model = twin(fairseq_args())
    mapped = map_fairseq_state_dict(to_fairseq(model), config)
    assert set(mapped) == set(model.state_dict())
    assert mapped["lm_head.weight"] is mapped["model.shared.weight"]
    assert torch.equal(mapped["final_logits_bias"], torch.zeros(1, len(SYMBOLS)))


def test_untied_embeddings_map_one_to_one():
    args = fairseq_args(share_all_embeddings=False, share_decoder_input_output_embed=False)
    config = mbart_config_from_fairseq(args, len(SYMBOLS))
    state = to_fairseq(twin(fairseq_args()))
    for key in ("decoder.embed_tokens.weight", "decoder.output_projection.weight"):
        state[key] = torch.randn(len(SYMBOLS), 16)
    state["decoder.embed_out"] = state.pop("decoder.output_projection.weight")   # fairseq < 0.10's name
    mapped = map_fairseq_state_dict(state, config)
    assert mapped["lm_head.weight"] is state["decoder.embed_out"]
    assert mapped["model.decoder.embed_tokens.weight"] is state["decoder.embed_tokens.weight"]
    assert mapped["model.shared.weight"] is mapped["model.encoder.embed_tokens.weight"]


# ==================================================================================================
# against fairseq itself

def _fairseq_mbart(dictionary: Path, langs: str):
    """A tiny mBART built by fairseq: the ``mbart_large`` architecture shrunk, its dictionaries
    extended by fairseq's own translation_from_pretrained_bart task."""
    from fairseq.data import Dictionary
    from fairseq.models.bart import BARTModel
    from fairseq.models.bart.model import mbart_large_architecture
    from fairseq.tasks.translation_from_pretrained_bart import TranslationFromPretrainedBARTTask

    task_args = argparse.Namespace(_name="translation_from_pretrained_bart", langs=langs)
    task = TranslationFromPretrainedBARTTask(task_args, Dictionary.load(str(dictionary)),
                                             Dictionary.load(str(dictionary)))
    args = argparse.Namespace(arch="mbart_large", encoder_layers=2, decoder_layers=1, encoder_embed_dim=16,
                              decoder_embed_dim=16, encoder_ffn_embed_dim=32, decoder_ffn_embed_dim=32,
                              encoder_attention_heads=2, decoder_attention_heads=4,
                              encoder_normalize_before=True, decoder_normalize_before=True,
                              layernorm_embedding=True, max_source_positions=32, max_target_positions=32)
    mbart_large_architecture(args)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BARTModel.build_model(args, task)
        for parameter in model.parameters():
            parameter.data.normal_(0.0, 0.5)
    return model.eval(), args, task_args, task


def _fairseq_logits(model, source=SOURCE, previous=PREVIOUS) -> torch.Tensor:
    with torch.no_grad():
        return model(source, source.ne(PAD).sum(dim=1), previous)[0]


@pytest.mark.parametrize("saved_as", ["trainer cfg", "DictConfig", "args"])
def test_fairseq_logits_match(tmp_path, saved_as):
    pytest.importorskip("fairseq", reason=FAIRSEQ_REASON)
    from omegaconf import OmegaConf

    directory = write_directory(tmp_path / "mbart", {})
    model, args, task_args, task = _fairseq_mbart(directory / "dict.txt", "ar_AR,en_XX,ro_RO")
    cfg = OmegaConf.create({"common": {"seed": 1}, "model": args, "task": task_args},
                           flags={"allow_objects": True})
    saved = {"trainer cfg": {"args": None, "model": model.state_dict(),   # as fairseq 0.12's Trainer.state_dict
                             "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)},
             "DictConfig": {"args": None, "cfg": cfg, "model": model.state_dict()},   # re-saved after loading
             "args": {"args": argparse.Namespace(**vars(args), task=task_args._name, langs=task_args.langs),
                      "model": model.state_dict()}}[saved_as]
    torch.save(saved, directory / "model.pt")

    loaded, symbols, _ = load_fairseq_mbart(directory)

    assert symbols == task.source_dictionary.symbols == task.target_dictionary.symbols
    source = SOURCE.clone()
    source[source == EN] = task.source_dictionary.index("[en_XX]")
    previous = PREVIOUS.clone()
    previous[previous == RO] = task.source_dictionary.index("[ro_RO]")
    expected = _fairseq_logits(model, source, previous)
    assert torch.allclose(logits(loaded, source, previous), expected, atol=1e-5, rtol=0)
    assert expected.abs().max() > 1.0   # the weights are far from their initialisation


def test_fairseq_train_checkpoint_loads(tmp_path):
    """What fairseq-train writes (fairseq 0.12, translation_multi_simple_epoch in mBART style, the way
    SMC-Bench's fairseq fork fine-tunes; fairseq 0.12's translation_from_pretrained_bart cannot train,
    its load_dataset reads a ``self.args`` the task no longer has)."""
    pytest.importorskip("fairseq", reason=FAIRSEQ_REASON)
    from fairseq import checkpoint_utils

    raw = write_directory(tmp_path / "raw", {})
    sentences = [" ".join(WORDS[(3 * i + j) % len(WORDS)] for j in range(3 + i % 5)) for i in range(24)]
    # 8 validation sentences: with 6, fairseq-train reported an empty validation set
    for split, rows in (("train", sentences), ("valid", sentences[:8])):
        (raw / f"{split}.en_XX").write_text("\n".join(rows) + "\n", encoding="utf-8")
        (raw / f"{split}.ro_RO").write_text("\n".join(" ".join(reversed(r.split())) for r in rows) + "\n",
                                            encoding="utf-8")
    (raw / "langs.txt").write_text("ar_AR\nen_XX\nro_RO\n", encoding="utf-8")
    data, saves = tmp_path / "bin", tmp_path / "checkpoints"
    common = ["--source-lang", "en_XX", "--target-lang", "ro_RO"]
    _run("preprocess", *common, "--trainpref", raw / "train", "--validpref", raw / "valid", "--destdir", data,
         "--srcdict", raw / "dict.txt", "--tgtdict", raw / "dict.txt", "--workers", "1")
    _run("train", data, "--arch", "mbart_large", "--encoder-layers", "1", "--decoder-layers", "1",
         "--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
         "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
         "--encoder-normalize-before", "--decoder-normalize-before", "--layernorm-embedding",
         "--task", "translation_multi_simple_epoch", "--lang-tok-style", "mbart", "--encoder-langtok", "src",
         "--decoder-langtok", "--lang-dict", raw / "langs.txt", "--lang-pairs", "en_XX-ro_RO",
         "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.2", "--optimizer", "adam",
         "--lr-scheduler", "inverse_sqrt", "--lr", "0.05", "--warmup-updates", "2", "--max-update", "4",
         "--max-tokens", "200", "--dropout", "0.3", "--save-dir", saves, "--cpu", "--num-workers", "0",
         "--max-source-positions", "64", "--max-target-positions", "64", "--no-epoch-checkpoints",
         "--seed", "222", "--log-format", "simple")
    directory = write_directory(tmp_path / "mbart", {})
    (directory / "model.pt").write_bytes((saves / "checkpoint_last.pt").read_bytes())
    (directory / "langs.txt").write_text((raw / "langs.txt").read_text())

    loaded, symbols, _ = load_fairseq_mbart(directory)

    # fairseq 0.12 cannot read its own checkpoints under torch >= 2.6 (weights_only by default) unless
    # argparse.Namespace is admitted
    with torch.serialization.safe_globals([argparse.Namespace]):
        models, _, task = checkpoint_utils.load_model_ensemble_and_task(
            [str(directory / "model.pt")], arg_overrides={"data": str(data), "lang_dict": str(raw / "langs.txt")})
    assert symbols == task.source_dictionary.symbols
    source = SOURCE.clone()
    source[source == EN] = task.source_dictionary.index("[en_XX]")
    previous = PREVIOUS.clone()
    previous[previous == RO] = task.source_dictionary.index("[ro_RO]")
    assert torch.allclose(logits(loaded, source, previous), _fairseq_logits(models[0].eval(), source, previous),
                          atol=1e-5, rtol=0)


def _run(command: str, *arguments) -> None:
    result = subprocess.run([sys.executable, "-m", f"fairseq_cli.{command}", *map(str, arguments)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


# ==================================================================================================
# the ``local`` model source end to end

def test_local_source_builds_a_translator_from_a_fairseq_directory(tmp_path):
    """``model.source: local`` on a fairseq directory: the vocabulary reads dict.txt over a real
    SentencePiece model (pieces looked up by text, cc25's [xx_YY] tokens), the recipe's dropout
    replaces the checkpoint's, and generation forces the target language after ``</s>``."""
    from smctune.config.settings import ModelSettings, TrainSettings
    from smctune.trainables.translation import data
    from smctune.trainables.translation.languages import LANGUAGES
    from smctune.trainables.translation.models import load_translator
    from smctune.trainables.translation.tokenizer import train_sentencepiece

    text = list(data.load("mt-2to2", None).train.text())[:600]
    spm_file = train_sentencepiece(text, 1500, tmp_path / "spm")
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(spm_file))
    pieces = tuple(processor.id_to_piece(i) for i in range(1, processor.get_piece_size()))
    languages = ck.CC25_LANGUAGES
    args = fairseq_args(langs=",".join(languages))
    symbols = SPECIALS + pieces + ck.mbart_symbols(languages)
    directory = write_directory(tmp_path / "ckpt", layout("args", args, to_fairseq(twin(args, vocab=len(symbols)))),
                                words=pieces)
    (directory / "sentence.bpe.model").write_bytes(spm_file.read_bytes())
    translator = load_translator(ModelSettings(source="local", name=str(directory)),
                                 TrainSettings(dropout=0.2, max_length=32), [],
                                 [LANGUAGES[code].mbart for code in LANGUAGES])
    vocab, model = translator.vocab, translator.model
    assert len(vocab) == model.config.vocab_size == len(symbols)
    assert model.config.dropout == 0.2 and model.training
    sentence = "The cat sat on the mat."
    ids = vocab.source_ids(sentence, "en_XX", 32)
    assert ids[0] == symbols.index("[en_XX]") and ids[-1] == 2
    assert vocab.decode(ids) == sentence
    model.eval()
    generated = model.generate(input_ids=torch.tensor([ids]), num_beams=2, max_new_tokens=5,
                               decoder_start_token_id=vocab.eos_id, forced_bos_token_id=vocab.lang_id("fr_XX"),
                               eos_token_id=vocab.eos_id, pad_token_id=vocab.pad_id)
    assert generated[0, 0].item() == vocab.eos_id and generated[0, 1].item() == symbols.index("[fr_XX]")
    assert "[fr_XX]" not in vocab.decode(generated[0].tolist())
