"""The per-trial translation runtime: model factory, seeded batch stream, loss, and beam-search
evaluation scored with BLEU and chrF, behind ``smctune.catalog.task.TaskRuntime``.

Sentences are tokenized once in the constructor (source ``[src_lang] pieces </s>``, target
``[tgt_lang] pieces </s>``, both cut to ``train.max_length`` tokens); a training batch mixes directions,
because the language tokens say which one each example is. The decoder reads ``</s> [tgt_lang]
pieces`` and predicts ``[tgt_lang] pieces </s>``, so at generation the decoder starts from ``</s>`` and
the target language is forced as the first token (``forced_bos_token_id``), as in Tang et al. (2020).

Evaluation translates every evaluation direction with beam search, one direction at a time (the forced
language token is per direction), sentences sorted by length to pad less. ``new_model`` copies a
cached starting model, because pruning methods such as LTH rebuild the model many times per trial.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from smctune.config.settings import TrainSettings
from smctune.errors import UserError
from smctune.train.offload import ModuleTemplate

from .languages import language
from .metrics import score_direction, summarize
from .models import Decoding, Translator

IGNORE = -100   # label id cross-entropy skips (padding)


def _direction_name(direction: tuple) -> str:
    return f"{direction[0]}-{direction[1]}"


class TranslationRuntime:
    """Implements ``smctune.catalog.task.TaskRuntime`` for multilingual translation (metric: BLEU / 100, the
    mean over the evaluation directions; per-direction BLEU and chrF go to the record as details).
    Mixed precision is the trial loop's (``smctune.train.precision``), not the runtime's."""

    def __init__(self, *, translator: Translator, train_pairs: dict, eval_pairs: dict, decoding: Decoding,
                 train: TrainSettings, device: Any) -> None:
        self.vocab = translator.vocab
        # the starting model every new model copies, kept in a file (smctune.train.offload)
        self._template = ModuleTemplate(translator.model.train())
        self.description = translator.description
        self.decoding = decoding
        self.settings = train
        self.device = device
        self.train_examples = [example for direction, pairs in sorted(train_pairs.items())
                               for example in self._encode(direction, pairs)]
        if len(self.train_examples) < train.batch_size:
            raise UserError(f"only {len(self.train_examples)} training sentence pairs for train.batch_size "
                            f"{train.batch_size}: no full batch can be formed")
        self.eval_sets = {direction: (pairs, self._encode(direction, pairs))
                          for direction, pairs in sorted(eval_pairs.items())}
        if not self.eval_sets or not all(pairs for pairs, _ in self.eval_sets.values()):
            raise UserError("the evaluation split has a direction without sentences")

    # ------------------------------------------------------------------ data
    def _encode(self, direction: tuple, pairs: Sequence) -> list:
        """(source ids, target ids) tensors for each pair of ``direction``."""
        limit = self.settings.max_length
        src, tgt = (language(code).mbart for code in direction)
        return [(torch.tensor(self.vocab.source_ids(source, src, limit), dtype=torch.long),
                 torch.tensor(self.vocab.target_ids(target, tgt, limit), dtype=torch.long))
                for source, target in pairs]

    def _batch(self, examples: Sequence) -> dict:
        """Padded source, decoder input (``</s>`` then the target without its last token) and labels."""
        pad, eos = self.vocab.pad_id, self.vocab.eos_id
        sources = pad_sequence([s for s, _ in examples], batch_first=True, padding_value=pad)
        starts = torch.full((1,), eos, dtype=torch.long)
        decoder = pad_sequence([torch.cat([starts, t[:-1]]) for _, t in examples], batch_first=True,
                               padding_value=pad)
        labels = pad_sequence([t for _, t in examples], batch_first=True, padding_value=IGNORE)
        return {"input_ids": sources.to(self.device), "attention_mask": sources.ne(pad).long().to(self.device),
                "decoder_input_ids": decoder.to(self.device), "labels": labels.to(self.device)}

    def new_model(self) -> Any:
        """A copy of the cached starting model on the trial's device, in train mode."""
        return self._template.new(self.device).train()

    def train_batches(self, seed: int) -> Iterator[dict]:
        """Endless epochs over every training pair of every direction; epoch ``e`` is the permutation
        seeded ``seed * 1000 + e``; the incomplete last batch of an epoch is dropped."""
        size, total = self.settings.batch_size, len(self.train_examples)
        epoch = 0
        while True:
            order = torch.randperm(total, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()
            for start in range(0, total - size + 1, size):
                yield self._batch([self.train_examples[i] for i in order[start:start + size]])
            epoch += 1

    # ------------------------------------------------------------------ loss
    def _token_losses(self, model: Any, batch: dict) -> tuple:
        """Summed cross-entropy over the target tokens, and their count."""
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=batch["decoder_input_ids"]).logits
        labels = batch["labels"]
        total = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                                ignore_index=IGNORE, reduction="sum")
        return total, int(labels.ne(IGNORE).sum())

    def loss(self, model: Any, batch: dict) -> torch.Tensor:
        """Mean cross-entropy per target token."""
        total, count = self._token_losses(model, batch)
        return total / max(count, 1)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, model: Any, final: bool = False) -> dict:
        """Mean BLEU over the evaluation directions (as a fraction), token-level loss, and BLEU and
        chrF per direction. Before the last evaluation of a level (``final``) each direction reads
        only its first ``model.layers.eval_sentences`` sentences."""
        cap = None if final else self.decoding.eval_sentences
        was_training = model.training
        model.eval()
        scores, loss_sum, tokens = {}, 0.0, 0
        try:
            with torch.no_grad():
                for direction, (pairs, encoded) in self.eval_sets.items():
                    pairs, encoded = pairs[:cap], encoded[:cap]
                    hypotheses = self._translate(model, direction, [s for s, _ in encoded])
                    scores[_direction_name(direction)] = score_direction(
                        hypotheses, [t for _, t in pairs], language(direction[1]).bleu_tokenizer)
                    for start in range(0, len(encoded), self.settings.eval_batch_size):
                        total, count = self._token_losses(
                            model, self._batch(encoded[start:start + self.settings.eval_batch_size]))
                        loss_sum, tokens = loss_sum + float(total), tokens + count
        finally:
            model.train(was_training)
        return {**summarize(scores), "loss": loss_sum / max(tokens, 1)}

    def _translate(self, model: Any, direction: tuple, sources: list) -> list:
        """Beam-search translations of ``sources`` (id tensors) into ``direction``'s target, in input
        order; each stops at ``</s>`` or at its batch's length limit, which follows the batch's longest
        source (as fairseq's ``max_len_a * src_len + max_len_b``). Sources are sorted by length first,
        so a batch's sources are of similar length."""
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        forced = self.vocab.lang_id(language(direction[1]).mbart)
        out: list = [""] * len(sources)
        size, pad = self.settings.eval_batch_size, self.vocab.pad_id
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            batch = pad_sequence([sources[i] for i in chunk], batch_first=True, padding_value=pad)
            longest = batch.size(1)
            new_tokens = min(self.settings.max_length,
                             int(self.decoding.length_ratio * longest) + self.decoding.length_slack)
            generated = model.generate(
                input_ids=batch.to(self.device), attention_mask=batch.ne(pad).long().to(self.device),
                num_beams=self.decoding.beam_size, max_new_tokens=new_tokens, early_stopping=True,
                decoder_start_token_id=self.vocab.eos_id, forced_bos_token_id=forced,
                eos_token_id=self.vocab.eos_id, pad_token_id=pad, do_sample=False)
            for index, row in zip(chunk, generated.tolist()):
                out[index] = self.vocab.decode(row)
        return out
