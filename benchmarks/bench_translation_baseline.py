"""What a translation model has to beat: copying the source sentence.

Prints BLEU and chrF, mean over the 20 evaluation directions (ten languages to and from English) and
per direction, of "translations" that are the untouched source sentences, on the bundled FLORES-200
evaluation split (or a ``--data-dir``). Names, numbers and Latin-script words survive between French,
Czech, Romanian, Vietnamese and English, so copying scores a few BLEU there and chrF points almost
everywhere; a model that does not beat it has learned nothing a copy would not give. The README's
translation numbers stand next to these.

    python benchmarks/bench_translation_baseline.py [--data-dir DIR] [--sentences N]
"""
from __future__ import annotations

import argparse

from smctune.trainables.translation import data
from smctune.trainables.translation.languages import direction_name, eval_directions, language
from smctune.trainables.translation.metrics import score_direction, summarize


def copy_scores(data_dir: str | None, sentences: int | None) -> dict:
    """``summarize``'s dict for the copy baseline over the 20 evaluation directions."""
    corpus = data.load("mt-10to10", data_dir)
    scores = {}
    for direction in eval_directions():
        pairs = corpus.eval.pairs(direction)[:sentences]
        scores[direction_name(direction)] = score_direction(
            [source for source, _ in pairs], [target for _, target in pairs],
            language(direction[1]).bleu_tokenizer)
    return summarize(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--sentences", type=int, default=None, help="first N sentences per direction")
    args = parser.parse_args()
    summary = copy_scores(args.data_dir, args.sentences)
    print(f"copy-the-source: BLEU {summary['bleu_points']:.2f}, chrF {summary['chrf']:.2f} "
          "(mean over 20 directions)")
    for direction in eval_directions():
        name = direction_name(direction)
        print(f"  {name:<6} BLEU {summary[f'bleu/{name}']:6.2f}  chrF {summary[f'chrf/{name}']:6.2f}")


if __name__ == "__main__":
    main()
