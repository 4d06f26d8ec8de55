"""What a protein model has to beat: amino-acid counting.

Prints the dev accuracy of a multinomial logistic regression on the 20 standard amino-acid frequencies
of each sequence (standardised; L2, C = 1; fitted with L-BFGS), for ``thermo`` and ``thermo-hotcold``
on the bundled split, or on a ``--data-dir`` (e.g. ThermoProt's full ``training_sequences/``). Growth
temperature leaves a strong trace in composition (thermophiles: more charged residues, fewer Q and N),
so a sequence model that cannot beat this has learned nothing beyond counting. The README's protein
numbers stand next to these.

    python benchmarks/bench_protein_baseline.py [--data-dir ../shared/data/thermostability]
"""
from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
from scipy.optimize import minimize

from smctune.trainables.protein import data
from smctune.trainables.protein.classes import scheme
from smctune.trainables.protein.fasta import STANDARD


def composition(proteins) -> np.ndarray:
    """(n, 20) frequencies of the standard residues over each sequence's length."""
    features = np.zeros((len(proteins), len(STANDARD)))
    for row, protein in enumerate(proteins):
        counts = Counter(protein.sequence)
        features[row] = [counts[residue] / len(protein.sequence) for residue in STANDARD]
    return features


def fit_softmax(features: np.ndarray, labels: np.ndarray, classes: int, c: float = 1.0):
    """Weights and biases minimising cross-entropy + ||W||^2 / (2c)."""
    n_features = features.shape[1]
    onehot = np.eye(classes)[labels]

    def objective(flat):
        weights, bias = flat[:-classes].reshape(n_features, classes), flat[-classes:]
        logits = features @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        loss = -np.sum(onehot * np.log(probs + 1e-300)) + np.sum(weights ** 2) / (2 * c)
        error = probs - onehot
        grad = np.concatenate([(features.T @ error + weights / c).ravel(), error.sum(axis=0)])
        return loss, grad

    result = minimize(objective, np.zeros(n_features * classes + classes), jac=True, method="L-BFGS-B",
                      options={"maxiter": 5000})
    return result.x[:-classes].reshape(n_features, classes), result.x[-classes:]


def baseline(task: str, data_dir) -> tuple[float, int, int]:
    loaded = data.load(task, data_dir)
    train, dev = loaded.splits["train"], loaded.splits["dev"]
    x_train, x_dev = composition(train), composition(dev)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-12
    y_train = np.array([p.label for p in train])
    y_dev = np.array([p.label for p in dev])
    weights, bias = fit_softmax((x_train - mean) / std, y_train, int(y_train.max()) + 1)
    predicted = (((x_dev - mean) / std) @ weights + bias).argmax(axis=1)
    return float((predicted == y_dev).mean()), len(train), len(dev)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="a ThermoProt-style directory (default: the bundled sample)")
    args = parser.parse_args()
    where = args.data_dir or "bundled sample"
    for task in ("thermo", "thermo-hotcold"):
        accuracy, n_train, n_dev = baseline(task, args.data_dir)
        chance = 1 / len(scheme(task).classes)
        print(f"{task:<15} amino-acid composition + logistic regression: {accuracy:.1%} on {n_dev} dev "
              f"sequences (trained on {n_train}; {where}; chance {chance:.0%})")


if __name__ == "__main__":
    main()
