"""The commonsense family's model side: input tensors (choice counts, RACE's article-only truncation),
the ``paper`` preset's RoBERTa build on a tiny config, smoke builds of every task, and ``--keep-dense``
reaching the pruned model."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

torch = pytest.importorskip("torch")

from smctune.config.settings import ModelSettings
from smctune.config.specs import TrialSpec
from smctune.config.search_space import load_search_space
from smctune.config.values import parse_keep_dense  # noqa: E402
from smctune.pruning import select_prunable  # noqa: E402
from smctune.trainables.backbone import CONFIG_TOKENIZER_PACKAGE, package_model_path  # noqa: E402
from smctune.trainables.commonsense.csqa import CSQATask  # noqa: E402
from smctune.trainables.commonsense.data import Question  # noqa: E402
from smctune.trainables.commonsense.features import encode, second_budget  # noqa: E402
from smctune.trainables.commonsense.race import RaceHighTask, RaceMiddleTask  # noqa: E402
from smctune.trainables.commonsense.winogrande import WinoGrandeTask  # noqa: E402
from test_commonsense_data import write_race  # noqa: E402

TASKS = {"csqa": CSQATask, "winogrande": WinoGrandeTask, "race-m": RaceMiddleTask, "race-h": RaceHighTask}
BUNDLED = Path(__file__).resolve().parents[1] / "trainables/commonsense/data"


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(package_model_path(CONFIG_TOKENIZER_PACKAGE))


# --------------------------------------------------------------------------------------------------
# input tensors

def test_race_truncation_cuts_only_the_article(tokenizer):
    article = " ".join(f"sentence number {i} of a very long article about bees." for i in range(200))
    question = Question(stem="What does the article say about _ ?", context=article, label=2,
                        choices=("the bees and their honey", "nothing", "the weather in spring", "rivers"))
    task = RaceMiddleTask()
    encoded = encode([task.pairs(question)], [question.label], tokenizer, max_length=64, truncation="first")
    assert encoded.input_ids.shape == (1, 4, 64)  # one question, 4 choices, filled to max_length
    assert encoded.lengths.tolist() == [64]
    for choice, option in enumerate(question.choices):
        ids, segments = encoded.input_ids[0, choice], encoded.token_type_ids[0, choice]
        second = tokenizer.decode(ids[segments == 1], skip_special_tokens=True)
        first = tokenizer.decode(ids[segments == 0], skip_special_tokens=True)
        assert second == f"what does the article say about {option}?"  # question + option whole
        assert article.lower().startswith(first) and len(first) < len(article) // 10  # article cut


def test_race_keeps_at_most_the_second_budget_for_question_and_option(tokenizer):
    long_question = "why " * 100 + "?"
    question = Question(stem=long_question, context="A short article.", label=0, choices=("a", "b", "c", "d"))
    encoded = encode([RaceMiddleTask().pairs(question)], [0], tokenizer, max_length=64, truncation="first")
    segments = encoded.token_type_ids[0, 0]
    assert int((segments == 1).sum()) == second_budget(64) + 1  # capped question + option, plus [SEP]
    assert int((segments == 0).sum()) == len(tokenizer("A short article.")["input_ids"])  # article whole


@pytest.mark.parametrize("name, choices", [("csqa", 5), ("winogrande", 2), ("race-m", 4)])
def test_smoke_build_of_each_bundled_task(name, choices):
    settings = load_search_space(name).preset("smoke")
    train = dataclasses.replace(settings.train, train_limit=16, eval_limit=8)
    runtime = TASKS[name]().build(preset="smoke", model=settings.model, train=train, data_dir=None, device="cpu")
    assert runtime.train_set.input_ids.shape[:2] == (16, choices)
    assert runtime.dev_set.input_ids.shape[:2] == (8, choices)
    assert runtime.train_set.input_ids.shape[2] <= train.max_length
    torch.manual_seed(0)
    model = runtime.new_model()
    batch = next(runtime.train_batches(seed=0))
    assert batch["input_ids"].dtype == torch.long
    logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    assert logits.shape == (train.batch_size, choices)
    loss = runtime.loss(model, batch)
    assert torch.isfinite(loss)
    metrics = runtime.evaluate(model)
    assert 0 <= metrics["accuracy"] <= 1


def test_csqa_tensors_are_unchanged_by_the_compact_storage(tokenizer):
    """The family's encoder gives CSQA exactly what one padded tokenizer call gives."""
    task = CSQATask()
    questions = task.load_local(None).splits["dev"][:6]
    encoded = encode([task.pairs(q) for q in questions], [q.label for q in questions], tokenizer, 48)
    firsts = [f"Q: {q.stem}" for q in questions for _ in q.choices]
    seconds = [f"A: {c}" for q in questions for c in q.choices]
    reference = tokenizer(firsts, seconds, truncation=True, max_length=48, padding="longest", return_tensors="pt")
    batch = encoded.select(slice(0, 6), "cpu")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(batch[key], reference[key].view(6, 5, -1)), key


# --------------------------------------------------------------------------------------------------
# the paper preset's architecture, on a tiny config

@pytest.fixture(scope="module")
def tiny_roberta_dir(tmp_path_factory, tokenizer):
    """A directory a ``hub`` model name can point at: a RobertaModel with a tiny config and random
    weights (the class roberta-large loads as), plus a tokenizer (borrowed, RoBERTa's BPE files are
    not available offline). Positions as in roberta-large: 512 usable + 2 (padding offset)."""
    from transformers import RobertaConfig, RobertaModel

    directory = tmp_path_factory.mktemp("tiny-roberta")
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=514,
                           type_vocab_size=2,  # the borrowed BERT tokenizer marks the second segment
                           pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    RobertaModel(config, add_pooling_layer=False).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _paper_data_dir(name: str, root: Path) -> Path:
    """A few real bundled questions (hand-written ones for RACE-H) in each task's official layout."""
    root.mkdir()
    if name == "csqa":
        for split, target in (("train", "train_rand_split.jsonl"), ("dev", "dev_rand_split.jsonl")):
            lines = (BUNDLED / "csqa" / f"{split}.jsonl").read_text().splitlines()[:20]
            (root / target).write_text("\n".join(lines) + "\n")
    elif name == "winogrande":
        for split, target in (("train", "train_xl.jsonl"), ("dev", "dev.jsonl")):
            lines = (BUNDLED / "winogrande" / f"{split}.jsonl").read_text().splitlines()[:20]
            (root / target).write_text("\n".join(lines) + "\n")
    else:
        write_race(root, "articles" if name == "race-h" else "lines",
                   level="high" if name == "race-h" else "middle")
    return root


@pytest.mark.parametrize("name", list(TASKS))
def test_paper_preset_builds_a_roberta_model(name, tiny_roberta_dir, tmp_path):
    space = load_search_space(name)
    paper = space.preset("paper")
    assert paper.model == ModelSettings(source="hub", name="roberta-large")
    model_settings = dataclasses.replace(paper.model, name=str(tiny_roberta_dir))
    # the paper's training settings, only the batch shrunk to the few questions of the test data
    train = dataclasses.replace(paper.train, batch_size=4, eval_batch_size=4)
    runtime = TASKS[name]().build(preset="paper", model=model_settings, train=train,
                                  data_dir=str(_paper_data_dir(name, tmp_path / "data")), device="cpu")
    torch.manual_seed(0)
    model = runtime.new_model()
    assert type(model.encoder).__name__ == "RobertaModel"
    assert model.encoder.config.hidden_dropout_prob == 0.1
    assert model.encoder.config.attention_probs_dropout_prob == 0.1
    assert runtime.train_set.input_ids.shape[1] == TASKS[name].num_choices
    batch = next(runtime.train_batches(seed=0))
    loss = runtime.loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and model.head.out_proj.weight.grad is not None

    # the paper's main evaluation prunes embeddings and head too; --keep-dense keeps them dense
    everything = {p.name for p in select_prunable(model)}
    assert "encoder.embeddings.word_embeddings.weight" in everything and "head.dense.weight" in everything
    rules = space.prunable_rules(parse_keep_dense("embeddings,head", space))
    kept = {p.name for p in select_prunable(model, include=rules["include"] or None, exclude=rules["exclude"])}
    assert kept == {n for n in everything if not n.startswith(("encoder.embeddings.", "head."))}
    assert kept and all(".encoder.layer." in f".{n}" for n in kept)


# --------------------------------------------------------------------------------------------------
# --keep-dense through a real (Ray-free) trial on hand-written RACE-H files

def test_keep_dense_trial_on_race_h_leaves_embeddings_and_head_dense(tmp_path):
    from smctune.catalog import registry
    from smctune.train.trial import CallbackReporter, Trial

    data_dir = write_race(tmp_path / "race", "articles")
    space = load_search_space("race-h")
    smoke = space.preset("smoke")
    train = dataclasses.replace(smoke.train, max_steps=4, eval_every=4, eval_limit=4)
    spec = registry.method_spec("omp_before")
    trial = TrialSpec(task="race-h", method="omp_before", sparsity=0.5, seed=0, preset="smoke",
                      model=smoke.model, train=train,
                      tunables=space.tunables("omp_before", "smoke", spec.defaults()),
                      prunable=space.prunable_rules(("embeddings", "head")), data_dir=str(data_dir),
                      cache_root=str(tmp_path / "cache"))
    assert trial.prunable["keep_dense"] == ["embeddings", "head"]
    reporter = CallbackReporter()
    runner = Trial(trial, reporter, device="cpu")
    runner.run()
    final = reporter.reports[-1]
    assert final["level_done"] and abs(final["sparsity"] - 0.5) < 1e-3
    layers = final["layerwise_csv"]
    assert "embeddings" not in layers and "head." not in layers
    model = runner.model

    def zero_fraction(weight):
        return float((weight == 0).float().mean())

    # only the padding row of the token embeddings is zero (by construction), nothing was pruned there
    assert zero_fraction(model.encoder.embeddings.word_embeddings.weight[1:]) == 0
    assert zero_fraction(model.head.dense.weight) == 0
    encoder_layers = [p for n, p in model.named_parameters() if ".layer." in n and p.dim() == 2]
    assert zero_fraction(torch.cat([p.detach().flatten() for p in encoder_layers])) == pytest.approx(0.5, abs=1e-3)
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
    json.dumps(final, default=str)  # the record stays serialisable


# --------------------------------------------------------------------------------------------------
# the head's pooling (model.config.pooling)

def test_mean_pooling_scores_the_average_of_the_real_tokens():
    from smctune.trainables.commonsense.modeling import MultipleChoiceModel

    settings = load_search_space("race-m").preset("smoke")
    runtime = RaceMiddleTask().build(preset="smoke", model=settings.model,
                                     train=dataclasses.replace(settings.train, train_limit=4, eval_limit=4),
                                     data_dir=None, device="cpu")
    torch.manual_seed(0)
    first = runtime.new_model().eval()
    assert first.pooling == "first"
    mean = MultipleChoiceModel(first.encoder, dropout=0.1, pooling="mean").eval()
    mean.head.load_state_dict(first.head.state_dict())
    batch = runtime.dev_set.select(slice(0, 2), "cpu")
    with torch.no_grad():
        hidden = first.encoder(input_ids=batch["input_ids"][1, 3:4], attention_mask=batch["attention_mask"][1, 3:4],
                               token_type_ids=batch["token_type_ids"][1, 3:4]).last_hidden_state
        real = int(batch["attention_mask"][1, 3].sum())
        expected = first.head(hidden[:, :real].mean(1))
        scores = mean(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert torch.allclose(scores[1, 3], expected[0], atol=1e-5)


@pytest.mark.parametrize("source, config, needle", [
    ("package", {"pooling": "max"}, "model.config.pooling: 'max' (valid: first, mean)"),
    ("package", {"hidden_size": 8}, "key 'hidden_size' only applies to source 'config'"),
])
def test_bad_model_config_for_the_head_is_a_user_error(source, config, needle):
    from smctune.errors import UserError

    settings = load_search_space("winogrande").preset("small")
    model = ModelSettings(source=source, name=settings.model.name, config=config)
    with pytest.raises(UserError) as info:
        WinoGrandeTask().build(preset="small", model=model, train=settings.train, data_dir=None, device="cpu")
    assert needle in str(info.value)
