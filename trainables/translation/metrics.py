"""BLEU and chrF of the translation family, computed by sacrebleu so every number can be reproduced
with its command line (``sacrebleu REF -i HYP -tok <tokenizer> -m bleu chrf``).

Why sacrebleu and its signatures: BLEU depends on the tokenizer, the casing and the smoothing as much
as on the model, and SMC-Bench's mBART numbers are only comparable with scores computed the same way.
Each ``DirectionScore`` therefore carries the signature of both metrics, and a record can say exactly
how its numbers were made.

Keys of ``summarize`` (a flat dict of floats, ready for MLflow and the sweep's records):

- ``bleu``               mean corpus BLEU over the directions **as a fraction** (points / 100): the
                         core reads ``metrics[task.metric]`` as a fraction in [0, 1] and prints it x100,
                         so the paper's metric (mean BLEU over directions) keeps the core's convention;
- ``bleu_points``        the same mean in BLEU points (0-100), as papers print it;
- ``chrf``               mean corpus chrF2 over the directions, in points;
- ``bleu/<src>-<tgt>``   each direction's corpus BLEU, in points;
- ``chrf/<src>-<tgt>``   each direction's corpus chrF2, in points.

The mean is unweighted, one vote per direction, as SMC-Bench averages its directions; a direction
with few sentences counts as much as a large one.

Torch-free and cheap to import: the driver validates tokenizer names before any trial starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean
from typing import Mapping, Sequence

import sacrebleu
from sacrebleu.metrics import BLEU, CHRF

from smctune.errors import UserError, choices

# Stand-in corpus for a direction with no sentences: sacrebleu cannot score an empty list (it indexes
# the first reference stream), but scoring one empty line against one empty reference gives 0 for both
# metrics and the same signatures, so an empty direction is recorded as a zero, not a crash.
_EMPTY_HYPOTHESES = [""]
_EMPTY_REFERENCES = [[""]]


@dataclass(frozen=True)
class DirectionScore:
    """One direction's corpus scores and how they were computed."""

    bleu: float             # corpus BLEU in points (0-100)
    chrf: float             # corpus chrF2 in points (0-100)
    sentences: int          # hypotheses scored (0: an empty direction, scored 0)
    bleu_signature: str     # sacrebleu's full signature, e.g. "nrefs:1|case:mixed|eff:no|tok:13a|..."
    chrf_signature: str


def bleu_tokenizers() -> tuple[str, ...]:
    """The tokenizer names the installed sacrebleu knows (some need extras or a download at first use)."""
    return tuple(BLEU.TOKENIZERS)


def check_bleu_tokenizer(name: str) -> None:
    """Reject a tokenizer sacrebleu does not know, so a typo fails in the driver, not after training."""
    if name not in BLEU.TOKENIZERS:
        raise UserError(f"unknown BLEU tokenizer {name!r}; sacrebleu {sacrebleu.__version__} offers "
                        f"{choices(BLEU.TOKENIZERS)}")


def _bleu(tokenizer: str) -> BLEU:
    """A BLEU scorer; a known tokenizer can still be unusable here (``ja-mecab`` needs an extra package,
    ``flores200`` downloads a model), which is the user's to fix, so that is a one-line error too."""
    check_bleu_tokenizer(tokenizer)
    try:
        return BLEU(tokenize=tokenizer)
    except (RuntimeError, OSError, ImportError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UserError(f"BLEU tokenizer {tokenizer!r} is unavailable here: {reason}") from None


def score_direction(hypotheses: Sequence[str], references: Sequence[str],
                    bleu_tokenizer: str) -> DirectionScore:
    """Corpus BLEU and chrF2 of one direction against one reference per sentence.

    Empty hypothesis strings (a model that stops at once) score like any other line; an empty
    direction scores 0 with ``sentences == 0``."""
    bleu = _bleu(bleu_tokenizer)
    hyps, refs = list(hypotheses), list(references)
    if len(hyps) != len(refs):
        raise UserError(f"{len(hyps)} hypotheses for {len(refs)} references: each sentence needs one "
                        f"of each")
    streams = (hyps, [refs]) if hyps else (_EMPTY_HYPOTHESES, _EMPTY_REFERENCES)
    chrf = CHRF()
    bleu_score = bleu.corpus_score(*streams)
    chrf_score = chrf.corpus_score(*streams)
    return DirectionScore(bleu=float(bleu_score.score), chrf=float(chrf_score.score),
                          sentences=len(hyps), bleu_signature=str(bleu.get_signature()),
                          chrf_signature=str(chrf.get_signature()))


def summarize(scores: Mapping[str, DirectionScore]) -> dict[str, float]:
    """The record of a set of directions keyed ``"<src>-<tgt>"``; the keys are described above."""
    if not scores:
        raise UserError("no translation directions to summarize")
    mean_bleu = fmean(score.bleu for score in scores.values())
    summary = {"bleu": mean_bleu / 100.0, "bleu_points": mean_bleu,
               "chrf": fmean(score.chrf for score in scores.values())}
    for direction in sorted(scores):
        summary[f"bleu/{direction}"] = scores[direction].bleu
        summary[f"chrf/{direction}"] = scores[direction].chrf
    return summary


def signatures(scores: Mapping[str, DirectionScore]) -> dict[str, str]:
    """How each direction's numbers were computed, keyed like ``summarize``'s per-direction values
    (strings: MLflow params or tags, not metrics)."""
    result = {}
    for direction in sorted(scores):
        result[f"bleu/{direction}"] = scores[direction].bleu_signature
        result[f"chrf/{direction}"] = scores[direction].chrf_signature
    return result


def recipe(tokenizers: Mapping[str, str]) -> str:
    """One line saying how BLEU and chrF are computed for targets with these tokenizers (target code ->
    sacrebleu tokenizer), with sacrebleu's own signatures, for ``plan`` and the sweep's output."""
    by_tokenizer: dict[str, list] = {}
    for code, name in tokenizers.items():
        by_tokenizer.setdefault(name, []).append(code)
    # a signature names the reference count, known once a corpus was scored: score one line
    parts = [f"{score_direction(['a'], ['a'], name).bleu_signature} for {', '.join(codes)}"
             for name, codes in by_tokenizer.items()]
    return f"BLEU: {'; '.join(parts)}; chrF: {score_direction(['a'], ['a'], '13a').chrf_signature}"
