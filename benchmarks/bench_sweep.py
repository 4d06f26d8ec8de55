"""Orchestration overhead of a real smctune sweep on this machine (a ratio, no timed assertions).

Runs a 40-trial smoke sweep of CSQA (dense + five before/during methods x 8 sparsities; 41 trials with
the dense baseline) through the real driver (Ray Tune, MLflow, records, report) and prints

    efficiency = sweep wall time / (sum of trial seconds / concurrency)

where a trial's seconds are the time its trainable ran (first to last report, plus model set-up,
measured inside the worker as ``wall_s`` of its record) and concurrency is how many trials Ray runs
at once here (CPUs / CPUs per trial). 1.0 would mean the driver adds nothing. The measure that
matters is the span from the first trial's start to the last trial's end (MLflow run times) over that
ideal: it isolates the scheduling gaps between trials, which grow with a sweep. Goal: <= 1.05. The
fixed cost outside the span (Python imports, Ray start-up, data checks, the report) is printed in
seconds: it does not grow with trials that last minutes to hours, and smctune no longer uses private
APIs of Ray, Optuna or MLflow to shrink it.

Run: ``python benchmarks/bench_sweep.py [--storage DIR] [--keep]``; about 2-4 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = "dense,omp_before,random_before,snip,gmp,omp_rigl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", help="where the run goes (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args()
    storage = Path(args.storage or tempfile.mkdtemp(prefix="smctune-bench-sweep-")).resolve()
    env = dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"))
    started, started_epoch = time.monotonic(), time.time()
    subprocess.run([sys.executable, "-m", "smctune.cli", "sweep", "csqa", "--methods", METHODS,
                    "--preset", "smoke", "--storage", str(storage), "--name", "bench", "-q"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - started
    run_dir = storage / "bench"
    records = [json.loads(p.read_text()) for p in (run_dir / "results").glob("*.json")]
    spec = json.loads((run_dir / "sweep.json").read_text())
    import yaml
    from importlib import resources as res

    space = yaml.safe_load(res.files("smctune.search_spaces").joinpath("csqa.yaml").read_text())
    cpu = float(space["presets"][spec["preset"]]["resources"].get("cpu", 1))
    concurrency = max(1, int((os.cpu_count() or 1) // cpu))
    busy = sum(float(r["wall_s"]) for r in records)
    ideal = busy / concurrency
    import sqlite3

    with sqlite3.connect(run_dir / "mlflow.db") as db:
        first, last = db.execute("select min(start_time), max(end_time) from runs where run_uuid not in "
                                 "(select run_uuid from tags where key = 'kind' and value = 'sweep')"
                                 ).fetchone()
    span = (last - first) / 1000
    print(f"trials: {len(records)} ({sum(r['status'] == 'ok' for r in records)} ok), concurrency "
          f"{concurrency}")
    print(f"sum of trial seconds: {busy:.1f} s  -> ideal wall {ideal:.1f} s at concurrency {concurrency}")
    print(f"sweep wall time: {wall:.1f} s (includes Ray start-up, data validation and the report)")
    print(f"efficiency = wall / ideal = {wall / ideal:.3f}  (whole command, fixed start-up included)")
    trials_done = max(float(r["ended_at"]) for r in records) - started_epoch
    print(f"process start to last trial end (no report): {trials_done:.1f} s -> "
          f"{trials_done / ideal:.3f} of ideal")
    print(f"first trial start to last trial end: {span:.1f} s -> {span / ideal:.3f} of ideal "
          f"(goal <= 1.05; fixed start-up and report: {wall - span:.1f} s)")
    if not args.keep and not args.storage:
        shutil.rmtree(storage, ignore_errors=True)


if __name__ == "__main__":
    main()
