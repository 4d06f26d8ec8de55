"""The per-trial arithmetic runtime (GTS, Graph2Tree): model factory, seeded batch stream, loss and
beam-search evaluation, behind ``smctune.catalog.task.TaskRuntime``.

Tokenization, targets and (for Graph2Tree) graphs are computed once in the constructor; batches are
padded and moved to the device on demand. ``new_model`` copies a cached starting backbone, because
pruning methods such as LTH rebuild the model many times per trial.

A batch is a dict of tensors on the trial's device (B problems, T subwords, W words, M number slots of
the output vocabulary, L target tokens, G graphs):

- ``input_ids`` (B, T) long, padded with the tokenizer's pad id; ``attention_mask`` (B, T) long
- ``word_map`` (B, W, T) float: word vector = ``word_map @ subword states`` (mean or first subword)
- ``word_lengths`` (B,) long: words per problem
- ``number_positions`` (B, M) long: word index of ``numberK`` (0 where absent);
  ``number_present`` (B, M) bool: the problem has ``numberK`` (K below its count and below M)
- ``targets`` (B, L) long: the reference equation as output indices (0-padded);
  ``target_lengths`` (B,) long, 0 for a problem whose equation the vocabulary cannot express
- ``graphs`` (B, G, W, W) float, Graph2Tree only (the model's ``graph_indices`` of ``build_graphs``)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch

from smctune.config.settings import TrainSettings
from smctune.errors import UserError
from smctune.train.offload import ModuleTemplate

from . import layers as layer_settings
from .encoder import BACKBONE_PREFIX, TokenizedProblem, tokenize_problem, word_map
from .expressions import equation_correct, value_correct
from .graphs import build_graphs
from .models import ARCHITECTURES, build_model


@dataclass(frozen=True)
class EncodedProblem:
    """Everything a batch needs from one problem, computed once."""

    tokens: TokenizedProblem
    number_positions: tuple
    target: tuple                      # output indices; () if the vocabulary cannot express it
    graphs: Optional[torch.Tensor]     # (G, W, W) bool, Graph2Tree only


def encode_problem(problem: Any, tokenizer: Any, vocab: Any, max_length: int,
                   graph_indices: Optional[tuple]) -> EncodedProblem:
    target = vocab.encode(problem.equation) if vocab.usable_for_training(problem) else None
    graphs = None
    if graph_indices is not None:
        full = build_graphs(problem, len(problem.text))
        graphs = torch.from_numpy(full[list(graph_indices)]).bool()
    return EncodedProblem(tokenize_problem(problem, tokenizer, max_length), problem.number_positions,
                          tuple(target or ()), graphs)


def collate(items: list, *, pad_id: int, num_slots: int, word_pooling: str, device: Any) -> dict:
    """Pad ``items`` (``EncodedProblem``) into one batch dict (layout in the module docstring)."""
    size = len(items)
    tokens = max(len(item.tokens.input_ids) for item in items)
    words = max(item.tokens.num_words for item in items)
    steps = max(1, max(len(item.target) for item in items))
    input_ids = torch.full((size, tokens), pad_id, dtype=torch.long)
    attention = torch.zeros(size, tokens, dtype=torch.long)
    positions = torch.zeros(size, num_slots, dtype=torch.long)
    present = torch.zeros(size, num_slots, dtype=torch.bool)
    targets = torch.zeros(size, steps, dtype=torch.long)
    for b, item in enumerate(items):
        ids = item.tokens.input_ids
        input_ids[b, :len(ids)] = torch.tensor(ids)
        attention[b, :len(ids)] = 1
        slots = item.number_positions[:num_slots]
        positions[b, :len(slots)] = torch.tensor(slots, dtype=torch.long)
        present[b, :len(slots)] = True
        targets[b, :len(item.target)] = torch.tensor(item.target, dtype=torch.long)
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "word_map": word_map([item.tokens for item in items], word_pooling),
        "word_lengths": torch.tensor([item.tokens.num_words for item in items], dtype=torch.long),
        "number_positions": positions,
        "number_present": present,
        "targets": targets,
        "target_lengths": torch.tensor([len(item.target) for item in items], dtype=torch.long),
    }
    if items[0].graphs is not None:
        graphs = torch.zeros(size, items[0].graphs.size(0), words, words)
        for b, item in enumerate(items):
            n = item.graphs.size(-1)
            graphs[b, :, :n, :n] = item.graphs
        batch["graphs"] = graphs
    return {key: value.to(device) for key, value in batch.items()}


class ArithmeticRuntime:
    """Implements ``smctune.catalog.task.TaskRuntime`` for GTS and Graph2Tree (``arch``).

    Metrics of ``evaluate``: ``accuracy`` = value accuracy of the beam search's best expression over
    all dev problems (SMC-Bench's metric), ``equation_accuracy`` = exact match with the reference, and
    ``loss`` = teacher-forced cross-entropy per target token over the dev problems whose equation the
    vocabulary can express (0.0 if none)."""

    backbone_prefix = BACKBONE_PREFIX

    def __init__(self, arch: str, tokenizer: Any, backbone_encoder: Any, train_problems: list,
                 dev_problems: list, vocab: Any, layers: dict, train: TrainSettings, device: Any) -> None:
        self.arch = arch
        self.layers = dict(layers)
        self.settings_resolved = layer_settings.resolve(arch, self.layers)
        self.vocab = vocab
        self.settings = train
        self.device = device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # the starting backbone every new model copies, kept in a file (smctune.train.offload)
        self._backbone = ModuleTemplate(backbone_encoder.train())
        graph_indices = ARCHITECTURES[arch].graph_indices
        # training problems are kept encoded only; dev problems also as problems (scoring needs them)
        self.dev_problems = list(dev_problems)
        self.train_set = [encode_problem(p, tokenizer, vocab, train.max_length, graph_indices)
                          for p in train_problems if vocab.usable_for_training(p)]
        self.dev_set = [encode_problem(p, tokenizer, vocab, train.max_length, graph_indices)
                        for p in self.dev_problems]
        longest = max((len(item.target) for item in self.train_set), default=0)
        self.max_output_length = (self.settings_resolved["max_output_length"]
                                  or (2 * longest if longest else None))
        self.beam_size = self.settings_resolved["beam_size"]

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_set) // self.settings.batch_size

    def new_model(self) -> Any:
        """Copy of the cached starting backbone plus task layers drawn from the global torch RNG."""
        model = build_model(self.arch, self._backbone.new(self.device), self.vocab, self.layers,
                            self.settings.dropout)
        return model.to(self.device).train()

    def batch(self, items: list) -> dict:
        return collate(items, pad_id=self.pad_id, num_slots=self.vocab.size - self.vocab.number_offset,
                       word_pooling=self.settings_resolved["word_pooling"], device=self.device)

    def train_batches(self, seed: int) -> Iterator[dict]:
        """Endless epochs over the training problems the vocabulary can express; epoch ``e`` is the
        permutation seeded ``seed * 1000 + e``, and its incomplete last batch is dropped."""
        size, total = self.settings.batch_size, len(self.train_set)
        if total < size:
            raise UserError(f"only {total} training problems have an equation the output vocabulary "
                            f"can express, fewer than train.batch_size {size}")
        epoch = 0
        while True:
            order = torch.randperm(total, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
            for start in range(0, total - size + 1, size):
                yield self.batch([self.train_set[i] for i in order[start:start + size].tolist()])
            epoch += 1

    def loss(self, model: Any, batch: dict) -> torch.Tensor:
        """Mean token cross-entropy of the teacher-forced reference equations."""
        return model(batch)

    def _dev_batches(self, model: Any) -> Iterator[tuple[list, list, float, int]]:
        """Per dev batch: (problems, predicted tokens, summed target cross-entropy, target tokens),
        with the model in eval mode (its mode is restored afterwards)."""
        was_training = model.training
        model.eval()
        size = self.settings.eval_batch_size
        try:
            for start in range(0, len(self.dev_set), size):
                batch = self.batch(self.dev_set[start:start + size])
                predicted, loss_sum, tokens = model.evaluate_batch(batch, self.beam_size,
                                                                   self.max_output_length)
                yield self.dev_problems[start:start + size], predicted, loss_sum, tokens
        finally:
            model.train(was_training)

    def predictions(self, model: Any) -> list[list[str]]:
        """Beam-search output tokens for every dev problem."""
        return [tokens for _, predicted, _, _ in self._dev_batches(model) for tokens in predicted]

    def evaluate(self, model: Any, final: bool = False) -> dict:
        """Value accuracy, equation accuracy and teacher-forced loss on the dev split."""
        correct = exact = tokens = 0
        loss_sum = 0.0
        for problems, predicted, part, count in self._dev_batches(model):
            for problem, expression in zip(problems, predicted):
                correct += value_correct(expression, problem)
                exact += equation_correct(expression, problem)
            loss_sum += part
            tokens += count
        total = max(1, len(self.dev_set))
        return {"accuracy": correct / total, "equation_accuracy": exact / total,
                "loss": loss_sum / tokens if tokens else 0.0}
