"""Trials of the adaptive threshold search (``smctune.sweep.threshold``) against the full grid, on simulated curves.

Each curve is a logistic accuracy-vs-sparsity surface ``chance + (dense - chance) / (1 + exp((s - s0) / w))``
(dense 0.60, chance 0.20, tolerance 0.01 as in ``smctune report``) on SMC-Bench's grid ``1 - 0.8**k``,
k = 1..8 and k = 1..10, with the collapse point ``s0`` swept across (and beyond) the grid, widths
``w`` from a cliff to a slow decline, and seeded per-level noise (sd 0, 0.005, 0.01, 0.02: the
simulated trainable returns the same value for a level to the grid and to the search). A second
family is non-monotone on purpose: a spurious dip below the threshold or a recovery above it.

Per family it prints the mean and max of (search trials / grid trials), the agreement rate of the
search's failing sparsity with the full grid's, and how often non-monotonicity was present on the grid
(``analysis.failing_sparsity``) and detected by the search. Goal: mean ratio <= 0.5 with agreement 1.0
on noise-free curves. Also compares ``verify`` = 0/1/2 and ``parallel`` = 1/2/3 (k-ary) on the noisy
family. Run: ``python benchmarks/bench_threshold.py [--seeds 10]`` (a few seconds, pure Python).
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

from smctune.report.analysis import failing_sparsity
from smctune.report.criterion import Criterion, Tolerance
from smctune.sweep.threshold import ThresholdSearch, grid_answer, logistic_curve, paper_grid, run_search

DENSE, CHANCE, TOL = 0.60, 0.20, 0.01
CRITERION = Criterion(Tolerance(100 * TOL))   # the report's rule at the search's tolerance (points)
WIDTHS = (0.005, 0.02, 0.05)
NOISES = (0.0, 0.005, 0.01, 0.02)


def collapse_points(grid, per_gap: int = 3) -> list:
    """``s0`` values: below the grid, ``per_gap`` points inside every gap between levels, above it."""
    points = [grid[0] - 0.1]
    for a, b in zip(grid, grid[1:]):
        points += [a + (b - a) * (j + 0.5) / per_gap for j in range(per_gap)]
    return points + [grid[-1] + 0.1]


def monotone_family(grid, noise: float, seeds: int):
    for s0 in collapse_points(grid):
        for width in WIDTHS:
            for seed in (range(seeds) if noise else (0,)):
                yield logistic_curve(grid, dense=DENSE, chance=CHANCE, s0=s0, width=width,
                                     noise=noise, seed=seed)


def non_monotone_family(grid, seeds: int):
    """A clean cliff with one perturbed level: a dip below the threshold at a passing level, or a
    recovery to dense at a failing level (where on the grid: every position)."""
    rng = random.Random(1234)
    for s0 in collapse_points(grid, per_gap=1):
        for _ in range(seeds):
            curve = logistic_curve(grid, dense=DENSE, chance=CHANCE, s0=s0, width=0.005)
            level = rng.choice(list(curve))
            passing = curve[level] >= DENSE - TOL
            curve[level] = DENSE - 3 * TOL if passing else DENSE
            yield curve


def evaluate(curves, **options) -> dict:
    ratios, agree, on_grid, detected = [], 0, 0, 0
    for curve in curves:
        grid = sorted(curve)
        result = run_search(ThresholdSearch(grid, DENSE, TOL, **options), curve,
                            rng=random.Random(0) if options.get("parallel", 1) > 1 else None)
        truth = grid_answer(curve, DENSE, TOL)
        assert truth == failing_sparsity(curve, DENSE, CRITERION).fails_at
        ratios.append(result.trials_used / len(grid))
        agree += result.fails_at == truth
        grid_non_monotone = failing_sparsity(curve, DENSE, CRITERION).non_monotone
        on_grid += grid_non_monotone
        detected += result.non_monotone
        if result.non_monotone or result.certified:   # the documented guarantee
            assert result.fails_at == truth, (curve, result)
    n = len(ratios)
    return {"curves": n, "mean": statistics.fmean(ratios), "max": max(ratios), "agree": agree / n,
            "grid_nm": on_grid / n, "detected": detected / n}


def row(label: str, stats: dict) -> str:
    return (f"{label:<28} {stats['curves']:>6} {stats['mean']:>6.3f} {stats['max']:>6.3f} "
            f"{stats['agree']:>7.3f} {stats['grid_nm']:>8.3f} {stats['detected']:>9.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="noise seeds per noisy surface")
    args = parser.parse_args()
    start = time.perf_counter()
    header = (f"{'family':<28} {'curves':>6} {'mean':>6} {'max':>6} {'agree':>7} {'grid nm':>8} "
              f"{'search nm':>9}")
    print("search trials / grid trials (mean, max), agreement with the full grid's failing sparsity,")
    print("fraction of curves non-monotone on the full grid and flagged non-monotone by the search")
    print(header)
    totals = []
    for levels in (8, 10):
        grid = paper_grid(levels)
        for noise in NOISES:
            stats = evaluate(monotone_family(grid, noise, args.seeds))
            totals.append(stats)
            print(row(f"{levels} levels, noise {noise}", stats))
        stats = evaluate(non_monotone_family(grid, args.seeds))
        print(row(f"{levels} levels, perturbed", stats))
    mean = statistics.fmean(s["mean"] for s in totals)
    clean = [s for s in totals[::len(NOISES)]]
    print(f"logistic families: mean ratio {mean:.3f} (goal <= 0.5), max ratio "
          f"{max(s['max'] for s in totals):.3f}; noise-free agreement "
          f"{min(s['agree'] for s in clean):.3f}")

    print()
    print("options on the noisy families (noise 0.01, 8 and 10 levels together)")
    print(header)
    noisy = [c for levels in (8, 10) for c in monotone_family(paper_grid(levels), 0.01, args.seeds)]
    for label, options in (("verify=0", {"verify": 0}), ("verify=1 (default)", {}),
                           ("verify=2", {"verify": 2}), ("verify=1, verify_above=1", {"verify_above": 1}),
                           ("parallel=2", {"parallel": 2}), ("parallel=3", {"parallel": 3})):
        print(row(label, evaluate(noisy, **options)))
    print(f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
