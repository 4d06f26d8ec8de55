"""``--search threshold`` in the driver: per (architecture, method), bisect the grid for the first
failing level instead of running every level (``threshold.ThresholdSearch``), and record the answer
in ``threshold.json``.

A proposed level runs on every seed and fold and its search is told their mean, the value the report
compares. Trials that are not on a grid curve (dense, IMP ladders, N:M) run in the first round; the
searches start once the dense baselines of the stage are known (stage-2 methods: from the records of
stage 1). Rounds are Tuners over the levels proposed; a resumed sweep replays finished levels without
running them.
"""
from __future__ import annotations

import json
from pathlib import Path

from smctune.catalog import registry
from smctune.config.specs import TrialSpec
from smctune.rundir.layout import RunDir, write_atomic
from smctune.sweep.stages import StageRunner
from smctune.sweep.threshold import ThresholdSearch
from smctune.train.schedules import schedule_of
from smctune.sweep.threshold_multi import MultiSearch

TOLERANCE = 0.01   # the report's default: a level fails 1 point below dense


def threshold_stage(runner: StageRunner, stage: int, batch: list[TrialSpec], printer) -> None:
    """Run one stage's ``batch`` as threshold searches (see the module docstring)."""
    def searchable(t: TrialSpec) -> bool:
        return schedule_of(registry.method_spec(t.method)).searchable(t)

    fixed = [t for t in batch if not searchable(t)]
    curves: dict = {}
    for t in batch:
        if searchable(t):
            curves.setdefault((t.model.arch, t.method), {}).setdefault(t.sparsity, []).append(t)

    def done() -> dict:
        return runner.done("best")

    finished = done()
    runner.run(f"stage{stage}", fixed, [t for t in fixed if t.trial_id not in finished])
    if not curves:
        return
    dense = _dense_means(runner, {arch for arch, _ in curves})
    multi = MultiSearch()
    grid = tuple(sorted(runner.sweep.sparsities))
    for key in curves:
        if dense.get(key[0]) is None:
            printer.message(f"threshold search: no dense value for {key[0] or 'the task'}; "
                            f"{key[1]} runs its whole grid", level=0)
            continue
        multi.add(key, ThresholdSearch(grid, dense[key[0]], tolerance=TOLERANCE))
    unsearched = [t for key, levels in curves.items() if key not in multi.keys()
                  for members in levels.values() for t in members]
    if unsearched:
        runner.run(f"stage{stage}-grid", unsearched, unsearched)
    for round_number in range(1, 10 * len(grid) + 2):
        if multi.done:
            break
        proposals = multi.next_batch(len(multi) * len(grid))
        finished = done()
        to_run = [t for key, level in proposals for t in curves[key][level] if t.trial_id not in finished]
        if to_run:
            runner.run(f"stage{stage}-round{round_number}", to_run, to_run)
            finished = done()
        for key, level in proposals:
            values = [finished.get(t.trial_id) for t in curves[key][level]]
            known = [v for v in values if v is not None]
            multi.tell(key, level, sum(known) / len(known) if known else None)
    summary = multi.summary()
    printer.message(summary.text, level=0)
    write_threshold_record(runner.run_dir, stage, summary)


def _dense_means(runner, archs) -> dict:
    """Architecture -> the dense baseline the report compares with (``cell_stats.dense_baseline``:
    mean over seeds of the fold means); None where no dense trial has a value. Only the finished
    dense trials' records are read (``FinishedTrials.of_method``): the mean is over those alone."""
    from smctune.report.cell_stats import dense_baseline
    from smctune.report.load import DENSE, load_run

    run = load_run(runner.run_dir, trial_ids=runner.finished.of_method(DENSE))
    means = {}
    for arch in archs:
        stat = dense_baseline(run, "best", arch or None)
        means[arch] = stat.mean if stat is not None else None
    return means


def write_threshold_record(run_dir: Path, stage: int, summary) -> None:
    """``threshold.json``: per curve the failing level found and the trials it took (a stage's
    entry replaces the previous one)."""
    path = RunDir(run_dir).threshold_file
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        data = {}
    data[f"stage{stage}"] = {
        "text": summary.text, "trials_used": summary.trials_used, "grid_trials": summary.grid_trials,
        "curves": [{"model": key[0] or None, "method": key[1], "fails_at": r.fails_at,
                    "non_monotone": r.non_monotone, "certified": r.certified,
                    "trials_used": r.trials_used, "grid_size": r.grid_size,
                    "measured": {repr(level): value for level, value in r.measured.items()}}
                   for key, r in summary.results.items()]}
    write_atomic(path, json.dumps(data, indent=1))
