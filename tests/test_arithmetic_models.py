"""The arithmetic family's model side: word alignment, the constrained beam search (always a
well-formed prefix tree), GTS learning a small real subset, Graph2Tree's forward/backward, parameter
shapes, seeded model and batch construction, and ``model.layers`` checks. Tiny random backbone,
real MAWPS problems from the bundled fold 0."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

torch = pytest.importorskip("torch")

from smctune.config.settings import ModelSettings, TrainSettings  # noqa: E402
from smctune.errors import UserError  # noqa: E402
from smctune.trainables.arithmetic import layers as layer_settings  # noqa: E402
from smctune.trainables.arithmetic.data import load_split  # noqa: E402
from smctune.trainables.arithmetic.encoder import (NUMBER_WORD, backbone_words,  # noqa: E402
                                                  tokenize_problem)
from smctune.trainables.arithmetic.expressions import (OutputVocab, is_well_formed,  # noqa: E402
                                                      slot_index)
from smctune.trainables.arithmetic.graphs import REFERENCE_HEADS  # noqa: E402
from smctune.trainables.arithmetic.models import ARCHITECTURES, build_model  # noqa: E402
from smctune.trainables.arithmetic.problem import is_number_slot  # noqa: E402
from smctune.trainables.arithmetic.runtime import ArithmeticRuntime  # noqa: E402
from smctune.trainables.backbone import load_backbone  # noqa: E402

TINY = ModelSettings(source="config", config={"hidden_size": 32, "num_hidden_layers": 1,
                                              "num_attention_heads": 2, "intermediate_size": 64,
                                              "max_position_embeddings": 128},
                     layers={"hidden_size": 32, "beam_size": 3})
TRAIN = TrainSettings(batch_size=4, eval_batch_size=16, max_length=128, dropout=0.0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def split():
    return load_split("mawps", None, 0)


@pytest.fixture(scope="module")
def vocab(split):
    return OutputVocab.build(split.train, extra_problems=split.dev)


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(TINY, TRAIN)


def runtime(backbone, vocab, train_problems, dev_problems, arch="gts", layers=None, train=TRAIN):
    tokenizer, encoder = backbone
    return ArithmeticRuntime(arch, tokenizer, encoder, train_problems, dev_problems, vocab,
                             TINY.layers if layers is None else layers, train, "cpu")


# --------------------------------------------------------------------------------------------------
# inputs

def test_words_align_with_their_subwords(backbone, split):
    tokenizer, _ = backbone
    problem = split.train[0]
    tokens = tokenize_problem(problem, tokenizer, max_length=128)
    assert tokens.num_words == len(problem.text)
    for word, subwords in zip(problem.text, tokens.word_subwords):
        assert subwords, word
        text = tokenizer.decode([tokens.input_ids[i] for i in subwords]).replace(" ", "")
        assert text == (NUMBER_WORD if is_number_slot(word) else word).lower()
    short = tokenize_problem(problem, tokenizer, max_length=8)  # truncation: late words get nothing
    assert len(short.input_ids) == 8 and short.word_subwords[-1] == ()


@pytest.mark.parametrize("trim_offsets", [True, False])
def test_words_align_under_byte_level_bpe(split, trim_offsets):
    """RoBERTa-style tokenizer (byte-level BPE, 'Ġ' marks a leading space; untrimmed offsets include
    the space): a tiny one trained in memory, so no hub access is needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [" ".join(backbone_words(p)) for p in split.train[:100]]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "<pad>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=trim_offsets)
    bpe.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>")
    for problem in split.dev[:5]:
        tokens = tokenize_problem(problem, tokenizer, max_length=128)
        words = [tokenizer.decode([tokens.input_ids[i] for i in s]).strip() for s in tokens.word_subwords]
        assert words == backbone_words(problem)


def test_batches_are_seeded_and_skip_inexpressible_equations(backbone, vocab, split):
    problems = split.train[:60]
    rt = runtime(backbone, vocab, problems, problems[:4])
    usable = [p for p in problems if vocab.usable_for_training(p)]
    assert len(rt.train_set) == len(usable) and rt.steps_per_epoch == len(usable) // TRAIN.batch_size
    first, again, other = rt.train_batches(3), rt.train_batches(3), rt.train_batches(4)
    a, b, c = next(first), next(again), next(other)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["targets"], c["targets"]) or not torch.equal(a["input_ids"], c["input_ids"])
    assert a["input_ids"].size(0) == TRAIN.batch_size
    slots = vocab.size - vocab.number_offset
    assert a["number_positions"].shape == a["number_present"].shape == (TRAIN.batch_size, slots)
    assert a["word_map"].shape[:2] == (TRAIN.batch_size, int(a["word_lengths"].max()))
    with pytest.raises(UserError, match="batch_size"):
        next(runtime(backbone, vocab, usable[:3], usable[:1]).train_batches(0))


# --------------------------------------------------------------------------------------------------
# beam search

@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_beam_search_always_returns_a_well_formed_tree(backbone, vocab, split, arch):
    problems = split.dev[:40]
    rt = runtime(backbone, vocab, split.train[:8], problems, arch=arch)
    default = rt.max_output_length
    assert default == 2 * max(len(p.equation) for p in split.train[:8] if vocab.usable_for_training(p))
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = rt.new_model()
        for max_length, op_bias in ((None, 0.0), (1, 0.0), (3, 8.0), (6, 8.0), (9, 8.0)):
            # A large operator bias makes every beam want to grow: only the budget closes the trees.
            with torch.no_grad():
                model.decoder.predict.ops.bias.add_(op_bias)
            rt.max_output_length = max_length or default
            predictions = rt.predictions(model)
            with torch.no_grad():
                model.decoder.predict.ops.bias.sub_(op_bias)
            limit = max_length or default
            for problem, tokens in zip(problems, predictions):
                assert is_well_formed(tokens), (max_length, tokens)
                assert len(tokens) <= limit
                assert all(slot_index(t) < len(problem.numbers) for t in tokens if is_number_slot(t))
                if op_bias and max_length >= 3:
                    assert len(tokens) >= max_length - 1  # grown as far as the budget allows
        assert model.training  # evaluation restores the mode


# --------------------------------------------------------------------------------------------------
# training

@pytest.mark.slow
def test_gts_learns_a_small_real_subset(backbone, vocab, split):
    problems = [p for p in split.train if vocab.usable_for_training(p)][:32]
    layers = {"hidden_size": 128, "beam_size": 3}
    rt = runtime(backbone, vocab, problems, problems, layers=layers)
    torch.manual_seed(0)
    model = rt.new_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = rt.evaluate(model)
    batches = rt.train_batches(0)
    for _ in range(rt.steps_per_epoch * 20):
        loss = rt.loss(model, next(batches))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = rt.evaluate(model)
    assert set(after) == {"accuracy", "equation_accuracy", "loss"}
    assert before["accuracy"] <= 0.1
    assert after["loss"] < 0.5 * before["loss"], (before, after)
    assert after["accuracy"] >= 0.4, (before, after)
    assert after["equation_accuracy"] <= after["accuracy"]


def test_graph2tree_forward_backward(backbone, vocab, split):
    problems = [p for p in split.train if vocab.usable_for_training(p)][:8]
    rt = runtime(backbone, vocab, problems, problems[:2], arch="graph2tree")
    torch.manual_seed(0)
    model = rt.new_model()
    batch = next(rt.train_batches(0))
    assert batch["graphs"].shape == (4, 2, batch["word_map"].size(1), batch["word_map"].size(1))
    # Every nn.Linear is called as a module (calibrated criteria such as Wanda hook its input).
    called: set = set()
    linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: called.add(name))
             for name, m in linears.items()]
    loss = rt.loss(model, batch)
    for hook in hooks:
        hook.remove()
    assert called == set(linears)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    for name in ("graph.heads.0.gc1.linear.weight", "graph.w_2.weight", "encoder.rnn.weight_ih_l0",
                 "decoder.merge.merge.weight", "embedder.embeddings.word_embeddings.weight"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    metrics = rt.evaluate(model)
    assert 0 <= metrics["accuracy"] <= 1 and metrics["loss"] > 0


# --------------------------------------------------------------------------------------------------
# model construction

@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_parameters_are_matrices_except_the_constant_embedding(backbone, vocab, split, arch):
    rt = runtime(backbone, vocab, split.train[:8], split.dev[:2], arch=arch)
    model = rt.new_model()
    shapes = {name: p.shape for name, p in model.named_parameters()}
    assert {name for name, s in shapes.items() if len(s) > 2} == {"decoder.predict.constant_embedding"}
    assert shapes["decoder.predict.constant_embedding"] == (1, vocab.num_constants, 32)
    backbone_names = {"embedder." + name for name, _ in backbone[1].named_parameters()}
    assert backbone_names == {name for name in shapes if name.startswith(rt.backbone_prefix)}
    assert rt.backbone_prefix == "embedder."


def test_new_model_is_reproducible_from_the_torch_seed(backbone, vocab, split):
    rt = runtime(backbone, vocab, split.train[:8], split.dev[:2], arch="graph2tree")
    states = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        states.append(rt.new_model().state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    differ = {k for k in states[0] if not torch.equal(states[0][k], states[2][k])}
    assert differ and not any(k.startswith("embedder.") for k in differ)  # only the task layers


def test_layers_are_checked(backbone, vocab, split):
    _, encoder = backbone
    with pytest.raises(UserError, match="unknown key 'hiden_size'.*valid: .*hidden_size"):
        build_model("gts", encoder, vocab, {"hiden_size": 8}, 0.1)
    with pytest.raises(UserError, match="graph_pooling"):
        runtime(backbone, vocab, split.train[:4], split.dev[:1], layers={"graph_pooling": "min"})
    with pytest.raises(UserError, match="divisible by 4"):
        layer_settings.resolve("graph2tree", {"hidden_size": 30})
    with pytest.raises(UserError, match="positive integer"):
        layer_settings.resolve("gts", {"beam_size": 0})
    with pytest.raises(UserError, match="unknown arithmetic architecture"):
        layer_settings.resolve("seq2seq", {})
    assert set(ARCHITECTURES) == set(layer_settings.ARCHITECTURES)
    assert layer_settings.GRAPH_HEADS == len(REFERENCE_HEADS)
    model = build_model("graph2tree", encoder, vocab, {"hidden_size": 16, "graph_pooling": "min",
                                                       "dropout": 0.5, "embedding_size": 8}, 0.1)
    assert model.decoder.generate.embeddings.weight.shape == (vocab.num_operators, 8)
    assert model.encoder.dropout.p == 0.5
