"""The deterministic train/dev split of class-per-file FASTA data, and the command that made the sample.

ThermoProt ships one FASTA file per class and no split, so smctune makes one: per class, the records
are sorted (so the split does not depend on file order), shuffled with ``random.Random(seed)`` and the
first ``round(n * dev_fraction)`` become dev. ``data`` splits a user's class files with this function
and the same seed and fraction, and the bundled sample is the first records of each part, so the
bundled train and dev sets are subsets of the train and dev sets a full ThermoProt copy gets: no
bundled training sequence is ever a dev sequence of a full run, or the other way round.

The split is random within each class; no sequence-identity clustering is done, so close homologues
can fall on both sides (HotProtein's own clustered splits are not available).

Run ``python -m smctune.trainables.protein.sample <class fasta dir> <out dir> --train-per-class N
--dev-per-class M`` to write ``<out>/{train,dev}/<class>.fasta`` (one line per sequence, headers and
residues as in the source).
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Optional, Sequence

from smctune.errors import UserError

from .fasta import read_fasta

SEED = 0
DEV_FRACTION = 0.25

Item = tuple[str, str]    # (header, sequence)


def stratified_split(per_class: dict[str, list[Item]], dev_fraction: float = DEV_FRACTION,
                     seed: int = SEED) -> tuple[dict[str, list[Item]], dict[str, list[Item]]]:
    """``(train, dev)``, each class -> its items in shuffled order. A class of two or more items keeps
    at least one on each side; a single item goes to train."""
    if not 0.0 < dev_fraction < 1.0:
        raise UserError(f"the dev fraction must be between 0 and 1, got {dev_fraction}")
    train, dev = {}, {}
    for name in sorted(per_class):
        items = sorted(per_class[name])
        random.Random(seed).shuffle(items)
        count = round(len(items) * dev_fraction)
        if len(items) >= 2:
            count = min(max(count, 1), len(items) - 1)
        else:
            count = 0
        dev[name], train[name] = items[:count], items[count:]
    return train, dev


def read_class_files(directory: Path) -> dict[str, list[Item]]:
    """Every ``*.fasta`` file of ``directory``, keyed by file stem (the class name)."""
    if not directory.is_dir():
        raise UserError(f"source directory not found: {directory}")
    files = sorted(directory.glob("*.fasta"))
    if not files:
        raise UserError(f"no *.fasta files in {directory}")
    return {path.stem: [(r.header, r.sequence) for r in read_fasta(path)] for path in files}


def write_fasta(path: Path, items: Sequence[Item]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as stream:
        for header, sequence in items:
            stream.write(f">{header}\n{sequence}\n")


def write_sample(source: Path, out: Path, train_per_class: int, dev_per_class: int,
                 dev_fraction: float = DEV_FRACTION, seed: int = SEED) -> dict[str, tuple[int, int]]:
    """Write the first ``train_per_class`` / ``dev_per_class`` items of each class's split part;
    returns class -> (train, dev) counts written."""
    train, dev = stratified_split(read_class_files(source), dev_fraction, seed)
    written = {}
    for name in train:
        for split, part, wanted in (("train", train, train_per_class), ("dev", dev, dev_per_class)):
            if wanted > len(part[name]):
                raise UserError(f"class '{name}' has only {len(part[name])} {split} sequences after the "
                                f"split, fewer than the {wanted} asked for")
            write_fasta(out / split / f"{name}.fasta", part[name][:wanted])
        written[name] = (train_per_class, dev_per_class)
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m smctune.trainables.protein.sample",
        description="Write a stratified train/dev sample of class-per-file FASTA data.")
    parser.add_argument("source", type=Path, help="directory with one <class>.fasta file per class")
    parser.add_argument("out", type=Path, help="output directory (gets train/ and dev/)")
    parser.add_argument("--train-per-class", type=int, required=True)
    parser.add_argument("--dev-per-class", type=int, required=True)
    parser.add_argument("--dev-fraction", type=float, default=DEV_FRACTION)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    try:
        written = write_sample(args.source, args.out, args.train_per_class, args.dev_per_class,
                               args.dev_fraction, args.seed)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, (n_train, n_dev) in written.items():
        print(f"{name}: train {n_train}, dev {n_dev}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
