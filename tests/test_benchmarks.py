"""The fast benchmark scripts still run against the current API (a ratio script that crashes
measures nothing). Slow ones (bench_sweep.py, about a minute) are run by hand and reported."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_threshold_benchmark_runs_and_prints_its_ratio():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench_threshold.py")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("logistic families: mean ratio"))
    assert float(line.split("mean ratio ")[1].split()[0]) <= 0.5


def test_protein_composition_baseline_runs():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench_protein_baseline.py")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    accuracy = {line.split()[0]: float(line.split(": ")[1].split("%")[0]) for line in done.stdout.splitlines()}
    # the numbers the README and the bundled PROVENANCE.md quote
    assert accuracy == {"thermo": 60.3, "thermo-hotcold": 82.2}
