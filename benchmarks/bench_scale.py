"""The driver's and the readers' cost as a sweep grows to paper scale (tens of thousands of trials),
without training: time, peak memory and the fitted growth exponent (issue 20's goals: every
exponent <= 1.1; at 20k trials ``report`` with masks <= 30 s and <= 1 GB, ``status`` <= 5 s,
threshold-search bookkeeping <= 5 s; experiment-state snapshots per trial bounded by a constant).

Runs are built from smctune's own planner (CSQA, ``--methods all``, SMC-Bench's 10 levels
``1 - 0.8**k``, as many seeds as the size needs) and written by ``SimulatedStageRunner``: the real
``RecordKeeper`` records (4 evaluations per trial, per-layer sparsity) and the real mask files
(random bits at each level's density; ``--mask-weights`` weights per mask in 8 tensors).

Measured per size, each in this process, medians of 3 runs, peak memory as the growth of the
kernel's peak-RSS counter (reset before each run, Linux):

- ``plan``: ``smctune plan`` of the sweep;
- ``searcher``: the cell searcher handing out every trial to 64 slots (``suggest`` and
  ``on_trial_complete``); a second series grows the number of cells instead (one seed, distinct
  levels);
- ``threshold``: ``--search threshold``'s bookkeeping on a run whose trials are all recorded (a
  resume: everything around the Tuners, which have nothing to run);
- ``report``: ``smctune report`` with the masks, first on a fresh run directory (every mask pair
  computed) and again (pairs from ``similarity_cache.json``);
- ``status``: ``smctune status``.

Then a real Ray Tune run of ``--tune-trials`` trials of one step that each checkpoint twice counts
the experiment-state snapshots Tune writes (its DEBUG log line per snapshot), with
``CheckpointConfig(num_to_keep=1)`` (the setting smctune used to have) and with smctune's own
checkpoint pruner (``smctune.sweep.checkpoints``).

Run: ``python benchmarks/bench_scale.py [--trials 1000,5000,20000] [--cells 1000,5000,10000]
[--mask-weights 262144] [--tune-trials 300]``; about 5 minutes and 1 GB of temporary disk with
the defaults.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import io
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from peak_rss import memory_bytes, reset_peak  # beside this script (sys.path[0])

GRID = tuple(round(1 - 0.8 ** k, 4) for k in range(1, 11))
TENSORS = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", default="1000,5000,20000")
    parser.add_argument("--cells", default="1000,5000,10000")
    parser.add_argument("--mask-weights", type=int, default=1 << 18)
    parser.add_argument("--tune-trials", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the synthetic runs (printed)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    work = Path(tempfile.mkdtemp(prefix="smctune-bench-scale-"))
    try:
        rows = {}
        for size in (int(n) for n in args.trials.split(",")):
            rows[size] = measure_size(work, size, args.mask_weights)
            print_row(size, rows[size], flush=True)
        print_fits("trials", rows)
        cell_rows = {cells: {"searcher (cells)": searcher_over_cells(work, cells)}
                     for cells in (int(n) for n in args.cells.split(","))}
        for cells, row in cell_rows.items():
            print(f"  {cells:>6} cells  searcher {row['searcher (cells)'][0]:8.2f} s")
        print_fits("cells", cell_rows)
        if args.tune_trials:
            snapshots(work, args.tune_trials)
    finally:
        if args.keep:
            print(f"runs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------ one size

def measure_size(work: Path, size: int, mask_weights: int) -> dict:
    from smctune.cli.main import main as cli
    from smctune.config.search_space import load_search_space
    from smctune.rundir.layout import RunDir
    from smctune.sweep.plan import plan_trials
    from smctune.sweep.simulated_stage import SimulatedStageRunner
    from smctune.sweep.threshold_stage import threshold_stage

    sweep, seeds = sweep_of(work, size)
    space = load_search_space("csqa")
    specs = plan_trials(sweep, space)
    run_dir = Path(sweep.run_dir)
    (run_dir / "results").mkdir(parents=True)
    (run_dir / "sweep.json").write_text(sweep.to_json())
    began = time.perf_counter()
    SimulatedStageRunner(run_dir, sweep, mask_shapes=mask_shapes(mask_weights)).run("build", specs, specs)
    built = time.perf_counter() - began
    row = {"_trials": len(specs), "_build_s": built,
           "_masks": sum(1 for _ in (run_dir / "masks").glob("*.mask"))}
    argv = ["--methods", "all", "--sparsities", ",".join(map(str, GRID)), "--seeds", str(seeds)]
    row["plan"] = measured(lambda: quiet(cli, ["plan", "csqa", *argv]))
    row["searcher"] = measured(lambda: drain(specs))
    threshold_sweep = type(sweep)(**{**vars(sweep), "search": "threshold"})
    stage1 = [s for s in specs if s.method in ("dense", "omp_before", "gmp", "snip", "random_before")]
    row["threshold"] = measured(lambda: threshold_stage(SimulatedStageRunner(run_dir, threshold_sweep), 1, stage1,
                                                       _Silent()))
    (run_dir / "threshold.json").unlink(missing_ok=True)
    cache = RunDir(run_dir).similarity_cache
    row["report"] = measured(lambda: quiet(cli, ["report", str(run_dir)]),
                             before=lambda: cache.unlink(missing_ok=True))   # every pair computed
    row["report again"] = measured(lambda: quiet(cli, ["report", str(run_dir)]))
    row["status"] = measured(lambda: quiet(cli, ["status", str(run_dir)]))
    shutil.rmtree(run_dir, ignore_errors=True)
    return row


def sweep_of(work: Path, size: int):
    """The CSQA sweep (--methods all, 10 levels) with the fewest seeds that reach ``size`` trials."""
    from smctune.config.search_space import load_search_space
    from smctune.sweep.plan import plan_trials
    from smctune.sweep.request import SweepRequest, resolve

    def sweep(seeds: int):
        request = SweepRequest.of("csqa", methods="all", sparsities=",".join(map(str, GRID)), seeds=seeds,
                                  storage=work, name=f"scale{size}")
        return resolve(request, for_plan=True)[0]

    per_seed = len(plan_trials(sweep(1), load_search_space("csqa")))
    seeds = max(1, math.ceil(size / per_seed))
    return sweep(seeds), seeds


def mask_shapes(weights: int) -> dict:
    rows = max(1, int(math.sqrt(weights / TENSORS)))
    return {f"encoder.layer.{i}.weight": (rows, max(1, weights // TENSORS // rows)) for i in range(TENSORS)}


def drain(specs, slots: int = 64) -> None:
    from smctune.catalog import registry
    from smctune.config.search_decl import parse_search
    from smctune.gc_pause import long_lived
    from smctune.sweep.cell_search import FINISHED, CellSearchCore

    tunables = {name: spec.tunables for name, spec in registry.METHODS.items()}
    with tempfile.TemporaryDirectory() as storage:
        searcher = CellSearchCore([s.to_dict() for s in specs],
                                  parse_search({"trials_per_cell": 1, "methods": {}}, tunables, "bench"),
                                  storage_dir=storage)
        with long_lived():   # as StageRunner.run holds a stage's Tuner
            serve(searcher, slots, FINISHED)


def serve(searcher, slots: int, finished) -> None:
    """Hand out every trial to ``slots`` slots, completing the oldest when all are busy."""
    running, issued = [], 0
    while True:
        config = searcher.suggest(f"t{issued}")
        if config == finished:
            return
        if config is None or len(running) == slots:
            searcher.on_trial_complete(running.pop(0), {"best": 0.5, "level_done": True, "time_total_s": 1.0})
        if config is not None:
            running.append(f"t{issued}")
            issued += 1


def searcher_over_cells(work: Path, cells: int) -> tuple:
    """The searcher with ``cells`` cells of one trial each (distinct levels, one seed)."""
    import dataclasses

    from smctune.config.search_space import load_search_space
    from smctune.sweep.plan import plan_trials

    sweep, _ = sweep_of(work, 1)
    # one trial of each one-level method (the plan has one per level)
    templates = list({s.method: s for s in plan_trials(sweep, load_search_space("csqa"))
                      if s.sparsity and not s.levels}.values())
    per_method = math.ceil(cells / len(templates))   # distinct levels at the 4 decimals trial ids keep
    specs = [dataclasses.replace(templates[i % len(templates)],
                                 sparsity=round(0.05 + 0.9 * (i // len(templates)) / per_method, 4))
             for i in range(cells)]
    return measured(lambda: drain(specs))


class _Silent:
    def message(self, text, level=1):
        pass


def quiet(cli, argv: list) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli(argv)
    if code != 0:
        raise SystemExit(f"smctune {' '.join(argv[:2])} exited {code}")


# ------------------------------------------------------------------------------------ measuring

def measured(step, before=None, repeats: int = 3) -> tuple:
    """Medians over ``repeats`` runs of ``step()`` (``before()`` ahead of each, untimed): (seconds,
    peak RSS growth in MB)."""
    runs = []
    for _ in range(repeats):
        if before is not None:
            before()
        gc.collect()
        start = memory_bytes("VmRSS")
        reset_peak()
        began = time.perf_counter()
        step()
        seconds = time.perf_counter() - began
        runs.append((seconds, max(0.0, (memory_bytes("VmHWM") - start) / 2**20)))
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def exponent(points: dict) -> float:
    """Least-squares slope of log(seconds) on log(size)."""
    xs = [math.log(size) for size in points]
    ys = [math.log(max(seconds, 1e-6)) for seconds in points.values()]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def print_row(size: int, row: dict, flush: bool = False) -> None:
    print(f"\n{row['_trials']} trials ({row['_masks']} mask files, built in {row['_build_s']:.0f} s)")
    for name, value in row.items():
        if not name.startswith("_"):
            seconds, peak = value
            print(f"  {name:14} {seconds:8.2f} s  peak +{peak:7.1f} MB")
    sys.stdout.flush()


def print_fits(what: str, rows: dict) -> None:
    names = [name for name in next(iter(rows.values())) if not name.startswith("_")]
    sizes = sorted(rows)
    if len(sizes) < 2:
        return
    print(f"\ngrowth exponents over {what} {', '.join(map(str, sizes))} (goal <= 1.1):")
    for name in names:
        points = {size: rows[size][name][0] for size in sizes}
        print(f"  {name:16} {exponent(points):5.2f}")


# ------------------------------------------------------------------------------------ Tune snapshots

def snapshots(work: Path, trials: int) -> None:
    from ray import tune

    from smctune.sweep.checkpoints import checkpoint_pruner
    from smctune.sweep.ray_session import ensure_ray, stop_ray

    counter = _SnapshotCounter()
    logger = logging.getLogger("ray.tune.execution.experiment_state")
    logger.addHandler(counter)
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False   # counted here, not printed
    ensure_ray(num_cpus=2)
    try:
        print(f"\nTune experiment-state snapshots, {trials} trials of one step, 2 checkpoints each:")
        for label, checkpoint_config, callbacks in (
                ("CheckpointConfig(num_to_keep=1)", tune.CheckpointConfig(num_to_keep=1), []),
                ("smctune's checkpoint pruner", None, [checkpoint_pruner()])):
            counter.count = 0
            began = time.perf_counter()
            tuner = tune.Tuner(_two_checkpoints, param_space={"x": tune.grid_search(list(range(trials)))},
                               tune_config=tune.TuneConfig(reuse_actors=True),
                               run_config=tune.RunConfig(storage_path=str(work / "tune"), name=label[:10].strip("("),
                                                         verbose=0, callbacks=callbacks,
                                                         checkpoint_config=checkpoint_config))
            tuner.fit()
            seconds = time.perf_counter() - began
            left = sum(1 for _ in (work / "tune").rglob("checkpoint_0*"))
            print(f"  {label:32} {counter.count:5d} snapshots = {counter.count / trials:.3f} per trial, "
                  f"{seconds:6.1f} s, {left} checkpoint directories left")
            shutil.rmtree(work / "tune", ignore_errors=True)
    finally:
        stop_ray()
        logger.removeHandler(counter)
        logger.setLevel(level)
        logger.propagate = propagate


def _two_checkpoints(config):
    from ray import tune

    for step in range(2):
        with tempfile.TemporaryDirectory() as directory:
            Path(directory, "state.txt").write_text(str(step))
            tune.report({"step": step, "x": config["x"]}, checkpoint=tune.Checkpoint.from_directory(directory))


class _SnapshotCounter(logging.Handler):
    """Counts Tune's DEBUG line written after every experiment-state snapshot."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record):
        if record.getMessage().startswith("Experiment state snapshotting took"):
            self.count += 1


if __name__ == "__main__":
    main()
