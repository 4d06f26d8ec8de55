"""Longest-expected-first ordering of a stage's trials (``smctune.sweep.trial_order`` in the cell searcher):
every method is started early, measured methods go longest first, and on a simulated cluster the
stage ends sooner than in plan order, with every planned trial run exactly once."""
from __future__ import annotations

import heapq

from smctune.sweep import estimate
from smctune.config.specs import SweepSpec
from smctune.config.search_space import load_search_space
from smctune.sweep.cell_keys import trial_id_of
from smctune.sweep.cell_search import FINISHED, CellSearchCore
from smctune.sweep.plan import plan_trials, stage_of
from smctune.sweep.trial_order import TrialLengths, planned_work

from test_cells import decl, planned

# seconds per trial on the simulated cluster (a RigL update costs a dense gradient: longer trials)
SECONDS = {"dense": 2.0, "gmp": 2.0, "omp_before": 1.6, "snip": 1.6, "omp_rigl": 3.0}


def _stage2(tmp_path):
    sweep = SweepSpec(task="csqa", methods=("omp_after", "lth"), sparsities=(0.2, 0.36, 0.488, 0.5904),
                      seeds=(0,), preset="smoke", preset_reason="test", name="t",
                      run_dir=str(tmp_path / "run"), mlflow_uri="")
    specs = plan_trials(sweep, load_search_space("csqa"))
    return [spec.to_dict() for spec in specs if stage_of(spec) == 2]


def test_planned_work_counts_every_fine_tune_of_an_lth_trial(tmp_path):
    trials = _stage2(tmp_path)
    lth = next(t for t in trials if t["method"] == "lth")
    after = next(t for t in trials if t["method"] == "omp_after")
    steps = lth["train"]["max_steps"]
    assert len(lth["levels"]) == 4
    assert planned_work(lth) == 4 * steps
    assert planned_work(after) == steps


def test_lengths_start_every_method_then_longest_measured_first():
    lengths = TrialLengths()
    assert lengths.priority("lth", 500) > lengths.priority("gmp", 100)     # unstarted: by planned work
    for method in ("gmp", "snip", "omp_rigl"):
        lengths.started(method)
    assert lengths.priority("omp_after", 100) > lengths.priority("gmp", 100)   # never started first
    # the first trial on a worker pays its imports: the median ignores that one slow trial
    for seconds in (6.0, 2.0, 2.1):
        lengths.observe("gmp", 100, seconds)
    lengths.observe("omp_rigl", 100, 3.0)
    assert lengths.rate("gmp") == 2.1 / 100
    assert lengths.priority("omp_rigl", 100) > lengths.priority("gmp", 100)
    # started but not measured yet: the median rate of the measured methods (2.55 s here)
    assert lengths.priority("gmp", 100) < lengths.priority("snip", 100) < lengths.priority("omp_rigl", 100)
    lengths.observe("snip", 100, None)          # no time reported: nothing learned
    lengths.observe("snip", 0, 5.0)
    assert lengths.rate("snip") is None


def simulate(searcher, slots: int, seconds) -> tuple[float, list]:
    """Tune's loop on ``slots`` equal slots: a free slot takes the searcher's next trial; a trial
    reports its length as ``time_total_s`` when it ends. Returns (makespan, emitted configs)."""
    clock, running, emitted = 0.0, [], []
    while True:
        while len(running) < slots:
            trial_id = f"t{len(emitted)}"
            config = searcher.suggest(trial_id)
            if config is None or config == FINISHED:
                break
            emitted.append(config)
            heapq.heappush(running, (clock + seconds(config["trial"]), trial_id, config))
        if not running:
            return clock, emitted
        clock, trial_id, config = heapq.heappop(running)
        searcher.on_trial_complete(trial_id, {"best": 0.5, "level_done": True,
                                              "time_total_s": seconds(config["trial"])})


def _plan_order_makespan(trials, slots, seconds) -> float:
    return estimate.makespan([seconds(t) for t in trials], slots)


def test_searcher_starts_long_trials_first_and_the_stage_ends_sooner(tmp_path):
    trials = planned(tmp_path, methods=("gmp", "omp_before", "snip", "omp_rigl"),
                     sparsities=(0.2, 0.36, 0.488, 0.5904, 0.672, 0.738, 0.79, 0.832), seeds=(0,))
    searcher = CellSearchCore(trials, decl(trials_per_cell=1), storage_dir=tmp_path / "run")
    makespan, emitted = simulate(searcher, 2, lambda t: SECONDS[t["method"]])
    ids = [trial_id_of(c) for c in emitted]
    assert sorted(ids) == sorted(trial_id_of({"trial": t}) for t in trials)   # each once
    methods = [c["trial"]["method"] for c in emitted]
    assert set(methods[:5]) == set(SECONDS)                      # every method started first
    rigl = [i for i, m in enumerate(methods) if m == "omp_rigl"]
    short = [i for i, m in enumerate(methods) if m in ("omp_before", "snip")]
    assert max(rigl) < sorted(short)[2]                          # RigL's long trials done early
    assert methods[-1] in ("omp_before", "snip")                 # the tail is a short trial
    before = _plan_order_makespan(trials, 2, lambda t: SECONDS[t["method"]])
    ideal = sum(SECONDS[t["method"]] for t in trials) / 2
    assert makespan < before
    assert makespan - ideal <= 1.6 / 2 + 1e-9                    # idle tail at most half a short trial


def test_lth_trial_starts_before_the_one_fine_tune_trials(tmp_path):
    # worst case for plan order: the LTH trial (one fine-tune per round) planned last
    trials = sorted(_stage2(tmp_path), key=lambda t: t["method"] == "lth")
    assert trials[-1]["method"] == "lth"
    length = lambda t: float(len(t["levels"]) or 1)   # noqa: E731 - seconds per fine-tune: 1
    searcher = CellSearchCore(trials, decl(trials_per_cell=1), storage_dir=tmp_path / "run")
    makespan, emitted = simulate(searcher, 2, length)
    assert emitted[0]["trial"]["method"] == "lth"
    assert len(emitted) == len(trials)
    assert makespan == sum(length(t) for t in trials) / 2 == 4.0       # LTH on one slot, the rest beside it
    assert _plan_order_makespan(trials, 2, length) == 6.0              # LTH alone for its last 2 rounds


def test_the_plan_estimate_assumes_the_same_order(tmp_path):
    """``smctune plan``'s wall-clock models the searcher: longest first, not plan order."""
    from smctune.config.specs import TrialSpec

    trials = [TrialSpec.from_dict(t) for t in sorted(_stage2(tmp_path), key=lambda t: t["method"] == "lth")]
    steps = trials[0].train.max_steps
    times = estimate.StepTime(1.0, 0.0, 0.0, "cpu", "")                 # one second per step
    result = estimate.estimate(trials, stage_of, times, cpu=1, gpu=0, slots=2)
    assert result.stage_seconds == ((2, 4.0 * steps),)                  # not 6 x steps: LTH first
