"""The protein family's model side: ESM-2, ESM-1b and TAPE backbones on tiny configs, the classifier's
residue-only mean pooling, loading fair-esm and TAPE checkpoints without unpickling code, cropping, and
the runtime's seeded batches, evaluation and model factory."""
from __future__ import annotations

import argparse
import json
import os
import pickle
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("esm")

from smctune.config.settings import ModelSettings, TrainSettings  # noqa: E402
from smctune.errors import UserError  # noqa: E402
from smctune.trainables.protein import backbones  # noqa: E402
from smctune.trainables.protein.backbones import check_model, load_backbone, load_checkpoint  # noqa: E402
from smctune.trainables.protein.modeling import ProteinClassifier, mean_over_residues, residue_mask  # noqa: E402
from smctune.trainables.protein.runtime import ProteinRuntime  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

ESM2_TINY = {"class": "esm2", "num_layers": 2, "embed_dim": 16, "attention_heads": 2}
ESM1B_TINY = {"class": "esm1b", "num_layers": 2, "embed_dim": 16, "attention_heads": 2, "ffn_embed_dim": 32,
              "max_positions": 66}
TAPE_TINY = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32,
             "max_position_embeddings": 66}
CONFIGS = {"esm2": ("esm1b", ESM2_TINY), "esm1b": ("esm1b", ESM1B_TINY), "tape": ("tape", TAPE_TINY)}
TRAIN = TrainSettings(max_length=48, batch_size=4, eval_batch_size=3, dropout=0.1)
SEQUENCES = ("MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVK", "ACDEFGHIKLMNPQRSTVWY",
             "MKV", "XBZUOMKVLA", "GSHMSLFDFFKNKGSAATATDRLKLFLLHFLKQHG", "W", "PEPTIDEPEPTIDE", "MALWMRLLPLLALLALWG",
             "KKKKRRRRDDDDEEEE")


def settings(name: str) -> ModelSettings:
    arch, config = CONFIGS[name]
    return ModelSettings(source="config", arch=arch, config=dict(config), layers={"head_hidden": 8})


def proteins(count: int = len(SEQUENCES)) -> list:
    return [SimpleNamespace(sequence=SEQUENCES[i % len(SEQUENCES)], label=i % 3) for i in range(count)]


@pytest.fixture(scope="module")
def built():
    """One backbone per tiny config (TAPE's import of transformers costs seconds; build each once)."""
    return {name: load_backbone(settings(name), TRAIN) for name in CONFIGS}


def classifier(backbone, seed: int = 0) -> ProteinClassifier:
    import copy

    torch.manual_seed(seed)
    return ProteinClassifier(copy.deepcopy(backbone.module), represent=backbone.represent,
                             hidden_size=backbone.hidden_size, special_ids=backbone.special_ids,
                             head_hidden=8, num_classes=3)


# --------------------------------------------------------------------------------------------------
# backbones through the classifier

@pytest.mark.parametrize("name, expected", [
    ("esm2", ["backbone.layers.0.self_attn.q_proj.weight", "backbone.layers.0.fc1.weight"]),
    ("esm1b", ["backbone.layers.1.self_attn.out_proj.weight", "backbone.layers.1.fc2.weight"]),
    ("tape", ["backbone.encoder.layer.0.attention.self.query.weight",
              "backbone.encoder.layer.0.intermediate.dense.weight", "backbone.encoder.layer.0.output.dense.weight"]),
])
def test_forward_and_backward(built, name, expected):
    backbone = built[name]
    model = classifier(backbone).train()
    tokens = backbone.tokenize(list(SEQUENCES[:4]))
    logits = model(tokens)
    assert logits.shape == (4, 3)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    names = dict(model.named_parameters())
    for key in expected + ["head.0.weight", "head.1.weight", "head.3.weight"]:
        assert key in names, key
        assert names[key].grad is not None and names[key].grad.abs().sum() > 0, key
    assert tuple(names["head.3.weight"].shape) == (3, 8)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_padding_does_not_change_a_sequences_logits(built, name):
    backbone = built[name]
    model = classifier(backbone).eval()
    with torch.no_grad():
        alone = model(backbone.tokenize([SEQUENCES[2]]))
        together = model(backbone.tokenize([SEQUENCES[2], SEQUENCES[0]]))
    assert together.shape == (2, 3)
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_mean_pooling_reads_residues_only(built, name):
    backbone = built[name]
    model = classifier(backbone).eval()
    tokens = backbone.tokenize([SEQUENCES[1], SEQUENCES[2]])  # 20 and 3 residues
    mask = residue_mask(tokens, backbone.special_ids)
    assert mask.sum(1).tolist() == [20, 3]
    with torch.no_grad():
        states = backbone.represent(model.backbone, tokens)
        features = model.features(tokens)
    torch.testing.assert_close(features[1], states[1, 1:4].mean(0))  # BOS/CLS at 0, then 3 residues


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_linear_module_is_called(built, name):
    """Wanda and SparseGPT read each nn.Linear's input through a forward hook: fair-esm's ESM-1b
    attention must call its projections instead of passing their weights to a fused function."""
    backbone = built[name]
    model = classifier(backbone).eval()
    called = set()
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_pre_hook(lambda mod, args, key=module_name: called.add(key))
    with torch.no_grad():
        model(backbone.tokenize(list(SEQUENCES[:2])))
    projections = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                   and not n.startswith(("backbone.lm_head", "backbone.contact_head"))}
    assert projections <= called, sorted(projections - called)


@pytest.mark.parametrize("name", ["esm2", "tape"])
def test_a_residue_outside_the_vocabulary_is_a_user_error(built, name):
    with pytest.raises(UserError, match=r"sequence letter 'J' at residue 3 of 'MKJV\.\.\.' is not in"):
        built[name].tokenize(["ACD", "MKJV"])


def test_mean_over_residues_ignores_masked_positions():
    states = torch.tensor([[[1.0, 1.0], [3.0, 5.0], [100.0, -100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert mean_over_residues(states, mask).tolist() == [[2.0, 3.0]]


def test_config_weights_are_fixed_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    first = load_backbone(settings("esm2"), TRAIN).module.state_dict()
    assert torch.equal(torch.rand(1), expected)
    second = load_backbone(settings("esm2"), TRAIN).module.state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


# --------------------------------------------------------------------------------------------------
# checkpoints

def tiny_esm1b_checkpoint(path):
    """A fair-esm ESM-1b file: fairseq-style args and ``encoder.sentence_encoder.``-prefixed weights."""
    import esm

    torch.manual_seed(7)
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    model = esm.ProteinBertModel(argparse.Namespace(arch="roberta_large", layers=2, embed_dim=16, ffn_embed_dim=32,
                                                    attention_heads=2, max_positions=66), alphabet)
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("contact_head."):
            continue  # fair-esm ships the contact regression in a separate file
        state[("encoder." if key.startswith("lm_head") else "encoder.sentence_encoder.") + key] = value
    args = argparse.Namespace(arch="roberta_large", encoder_layers=2, encoder_embed_dim=16,
                              encoder_ffn_embed_dim=32, encoder_attention_heads=2, max_positions=66)
    torch.save({"args": args, "model": state}, path)
    return model.eval()


def test_fair_esm_checkpoint_loads_with_the_same_representations(tmp_path):
    path = tmp_path / "esm1b_tiny.pt"
    original = tiny_esm1b_checkpoint(path)
    backbone = load_backbone(ModelSettings(source="local", name=str(path), arch="esm1b"), TRAIN)
    assert backbone.hidden_size == 16 and backbone.max_residues == 64
    tokens = backbone.tokenize(list(SEQUENCES[:3]))
    with torch.no_grad():
        torch.testing.assert_close(backbone.represent(backbone.module.eval(), tokens),
                                   backbone.represent(original, tokens))


def test_hub_name_reads_the_torch_hub_cache_and_never_downloads_when_present(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    original = tiny_esm1b_checkpoint(tmp_path / "checkpoints" / "esm1b_tiny.pt")

    def offline(url, dst, **kwargs):
        raise OSError(f"no network for {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    backbone = load_backbone(ModelSettings(source="hub", name="esm1b_tiny", arch="esm1b"), TRAIN)
    tokens = backbone.tokenize([SEQUENCES[1]])
    with torch.no_grad():
        torch.testing.assert_close(backbone.represent(backbone.module, tokens), backbone.represent(original, tokens))
    with pytest.raises(UserError, match=r"model\.name 'esm1b_absent': could not download "
                                        r"https://dl\.fbaipublicfiles\.com/fair-esm/models/esm1b_absent\.pt"):
        load_backbone(ModelSettings(source="hub", name="esm1b_absent", arch="esm1b"), TRAIN)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Evaluates:
    def __reduce__(self):
        return eval, ("1 + 1",)


@pytest.mark.parametrize("payload, refused", [(_RunsCode, "system"), (_Evaluates, "eval")])
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_a_code_executing_checkpoint_is_refused(tmp_path, payload, refused, writer):
    marker = tmp_path / "marker"
    obj = payload(marker) if payload is _RunsCode else payload()
    path = tmp_path / "esm1b_evil.pt"
    data = {"args": obj, "model": {}}
    if writer == "torch":
        torch.save(data, path)
    else:
        path.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(UserError, match=rf"esm1b_evil\.pt: refused to load: .*'[\w.]*{refused}'") as err:
        load_backbone(ModelSettings(source="local", name=str(path), arch="esm1b"), TRAIN)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_unreadable_and_wrong_checkpoints_are_one_line_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match=r"garbage\.pt: not a readable PyTorch checkpoint"):
        load_checkpoint(garbage)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(UserError, match=r"plain\.pt: not a fair-esm checkpoint"):
        load_backbone(ModelSettings(source="local", name=str(plain)), TRAIN)
    with pytest.raises(UserError, match=r"fair-esm checkpoint not found: .*missing\.pt"):
        load_backbone(ModelSettings(source="local", name=str(tmp_path / "missing.pt")), TRAIN)
    truncated = tmp_path / "esm1b_cut.pt"
    tiny_esm1b_checkpoint(truncated)
    data = load_checkpoint(truncated)
    del data["model"]["encoder.sentence_encoder.layers.1.fc2.weight"]
    torch.save(data, truncated)
    with pytest.raises(UserError, match=r"esm1b_cut\.pt: weights do not fit .*layers\.1\.fc2\.weight"):
        load_backbone(ModelSettings(source="local", name=str(truncated)), TRAIN)


def write_tape_directory(directory, model):
    directory.mkdir()
    config = {**TAPE_TINY, "vocab_size": 30, "hidden_act": "gelu", "type_vocab_size": 1, "layer_norm_eps": 1e-12,
              "hidden_dropout_prob": 0.1, "output_size": 16, "base_model": "transformer"}  # TAPE's extra keys
    (directory / "config.json").write_text(json.dumps(config))
    state = {f"bert.{key}": value for key, value in model.state_dict().items()}
    state["bert.pooler.dense.weight"] = torch.zeros(16, 16)
    state["mlm.bias"] = torch.zeros(30)
    torch.save(state, directory / "pytorch_model.bin")
    return state


def test_tape_directory_loads(built, tmp_path):
    source = classifier(built["tape"], seed=3).backbone.eval()
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.add_(0.01)  # differ from the seeded build, so loading must be what sets them
    write_tape_directory(tmp_path / "bert-base", source)
    backbone = load_backbone(ModelSettings(source="local", name=str(tmp_path / "bert-base"), arch="tape"), TRAIN)
    assert backbone.max_residues == 64
    tokens = backbone.tokenize(list(SEQUENCES[:3]))
    with torch.no_grad():
        torch.testing.assert_close(backbone.represent(backbone.module.eval(), tokens),
                                   backbone.represent(source, tokens))


def test_tape_directory_missing_encoder_weights(built, tmp_path):
    directory = tmp_path / "bert-base"
    state = write_tape_directory(directory, built["tape"].module)
    del state["bert.encoder.layer.1.output.dense.weight"]
    torch.save(state, directory / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"pytorch_model\.bin: 1 encoder weights missing, e\.g\. "
                                        r"'encoder\.layer\.1\.output\.dense\.weight'"):
        load_backbone(ModelSettings(source="local", name=str(directory), arch="tape"), TRAIN)


@pytest.mark.parametrize("model, message", [
    (ModelSettings(source="config", arch="esm1b", config={**ESM2_TINY, "dropout": 0.1}),
     r"model\.config: unknown key 'dropout' for class esm2 \(valid: class, num_layers"),
    (ModelSettings(source="config", arch="esm1b", config={"num_layers": 2}), r"model\.config\.class: None"),
    (ModelSettings(source="config", arch="esm1b", config={"class": "esm2", "num_layers": 2, "embed_dim": 16}),
     r"model\.config\.attention_heads is required"),
    (ModelSettings(source="config", arch="tape", config={"hidden_dropout_prob": 0.2}), r"from train\.dropout"),
    (ModelSettings(source="config", arch="tape", config={"vocab_size": 33}), r"vocab_size: 33"),
    (ModelSettings(source="hub", arch="tape", name="bert-base"), r"TAPE's weights are not on a hub"),
    (ModelSettings(source="hub", arch="esm1b", name="../x.pt"), r"not a fair-esm model name"),
    (ModelSettings(source="local", arch="esm1b"), r"model\.name: source 'local' needs"),
    (ModelSettings(source="package", arch="esm1b", name="x"), r"unknown model source 'package'"),
    (ModelSettings(source="config", arch="esm1b", config=ESM2_TINY, layers={"head_hidden": 0}),
     r"head_hidden: expected a positive integer"),
    (ModelSettings(source="config", arch="esm1b", config=ESM2_TINY, layers={"pooling": "mean"}),
     r"model\.layers: unknown key 'pooling' .*valid: head_hidden"),
    (ModelSettings(source="config", arch="lstm", config=ESM2_TINY), r"unknown protein model 'lstm'"),
])
def test_check_model_errors(model, message):
    with pytest.raises(UserError, match=message) as err:
        check_model(model)
    assert "\n" not in str(err.value)


def test_default_architecture_and_head():
    assert backbones.architecture(ModelSettings()) == "esm1b"
    assert backbones.head_hidden(ModelSettings()) == 512


# --------------------------------------------------------------------------------------------------
# runtime

def runtime(backbone, train: TrainSettings = TRAIN, count: int = 10) -> ProteinRuntime:
    return ProteinRuntime(backbone=backbone, train_set=proteins(count), dev_set=proteins(7), num_classes=3,
                          head_hidden=8, train=train, device="cpu")


def test_cropping_to_max_length(built):
    crop = TrainSettings(max_length=10, batch_size=4, eval_batch_size=3)
    run = runtime(built["esm2"], crop)
    longer = sum(len(p.sequence) > 10 for p in proteins(10))
    assert run.cropped == {"train": longer, "dev": sum(len(p.sequence) > 10 for p in proteins(7)), "limit": 10}
    assert max(len(row) for row in run.train_tokens) == 12  # BOS + 10 residues + EOS
    first = run.train_tokens[0]
    assert torch.equal(first, built["esm2"].tokenize([SEQUENCES[0][:10]])[0])
    with pytest.raises(UserError, match=r"train\.max_length 65 exceeds the 64 residues ESM-1b config"):
        runtime(built["esm1b"], TrainSettings(max_length=65, batch_size=4))


def test_batches_are_seeded_and_reproducible(built):
    run = runtime(built["tape"])
    first, again, other = run.train_batches(3), run.train_batches(3), run.train_batches(4)
    epoch = [next(first) for _ in range(4)]  # 10 sequences, batches of 4: 2 per epoch, the last 2 dropped
    for batch in epoch:
        repeat = next(again)
        assert torch.equal(batch["tokens"], repeat["tokens"]) and torch.equal(batch["labels"], repeat["labels"])
        assert batch["tokens"].shape[0] == 4 and batch["labels"].dtype == torch.long
        assert (batch["tokens"] != 0).sum(1).max() == batch["tokens"].shape[1]  # padded to the longest only
    assert not all(torch.equal(a["tokens"], next(other)["tokens"]) for a in epoch)  # another seed, another order
    assert not all(torch.equal(a["tokens"], b["tokens"]) for a, b in zip(epoch[:2], epoch[2:]))  # epochs differ


def test_evaluate_returns_accuracy_and_restores_mode(built):
    run = runtime(built["esm1b"])
    torch.manual_seed(0)
    model = run.new_model()
    loss = run.loss(model, next(run.train_batches(0)))
    assert loss.ndim == 0 and torch.isfinite(loss)
    metrics = run.evaluate(model)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0
    assert model.training
    assert (metrics["accuracy"] * 7) == round(metrics["accuracy"] * 7)


def test_new_model_follows_the_torch_seed(built):
    run = runtime(built["esm2"])
    torch.manual_seed(5)
    first = run.new_model().state_dict()
    torch.manual_seed(5)
    second = run.new_model().state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    torch.manual_seed(6)
    third = run.new_model().state_dict()
    assert not torch.equal(first["head.0.weight"], third["head.0.weight"])
    assert torch.equal(first["backbone.layers.0.fc1.weight"], third["backbone.layers.0.fc1.weight"])
    assert run.backbone_prefix == "backbone."


def test_runtime_rejects_too_few_sequences_and_bad_labels(built):
    with pytest.raises(UserError, match=r"only 3 training sequences for train\.batch_size 4"):
        runtime(built["esm2"], count=3)
    bad = [SimpleNamespace(sequence="MKV", label=3)] * 4
    with pytest.raises(UserError, match=r"train sequence 1: label 3 outside 0\.\.2"):
        ProteinRuntime(backbone=built["esm2"], train_set=bad, dev_set=proteins(2), num_classes=3, head_hidden=8,
                       train=TRAIN, device="cpu")
