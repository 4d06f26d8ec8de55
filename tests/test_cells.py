"""Search within a cell (``smctune.sweep.cell_search`` and its parts): the ``search:`` declaration,
the Optuna-in-cells searcher (one Tuner over every cell, studies persisted in the run directory)
and ASHA that never compares across cells, seeds or folds."""
from __future__ import annotations

import json
import pickle
from types import SimpleNamespace

import pytest

from smctune.catalog import registry
from smctune.config.search_decl import check_trials_per_cell, parse_search
from smctune.config.specs import SweepSpec
from smctune.config.search_space import load_search_space
from smctune.errors import UserError
from smctune.rundir.layout import RunDir
from smctune.rundir.records import finished_values
from smctune.sweep.cell_asha import CellRungs
from smctune.sweep.cell_keys import base_trial_id, cell_key, member_key, trial_id_of
from smctune.sweep.cell_search import FINISHED, CellSearchCore
from smctune.sweep.plan import plan_trials

TUNABLES = {name: spec.tunables for name, spec in registry.METHODS.items()}
# csqa's smoke preset runs GMP every 4 steps (start 0.1, end 0.8): the declared space contains it
GMP_SEARCH = {"frequency": {"choices": [2, 4, 8]}, "start_fraction": {"low": 0.0, "high": 0.3}}


def planned(tmp_path, methods=("gmp", "omp_rigl"), sparsities=(0.5, 0.8), seeds=(0, 1)):
    """TrialSpec dicts exactly as the driver plans them (csqa, smoke): dense + methods x levels x seeds."""
    sweep = SweepSpec(task="csqa", methods=methods, sparsities=sparsities, seeds=seeds, preset="smoke",
                      preset_reason="test", name="t", run_dir=str(tmp_path / "run"), mlflow_uri="")
    return [spec.to_dict() for spec in plan_trials(sweep, load_search_space("csqa"))]


def gmp_only(tmp_path, sparsities=(0.5,), seeds=(0,)):
    return [t for t in planned(tmp_path, ("gmp",), sparsities, seeds) if t["method"] == "gmp"]


def decl(methods=None, trials_per_cell=4, **extra):
    block = {"trials_per_cell": trials_per_cell, "methods": methods or {"gmp": GMP_SEARCH}, **extra}
    return parse_search(block, TUNABLES, "t.yaml")


def _make_surface(flat_above: float = 1.0):
    def surface(trial: dict) -> float:
        """A response surface: sparsity costs accuracy; for GMP, pruning less often (higher
        frequency) and starting earlier help, except above ``flat_above`` where the settings do not
        matter. Seeds shift it a little."""
        import math

        sparsity = trial["sparsity"] or 0.0
        value = 0.9 - 0.4 * sparsity + 0.001 * trial["seed"]
        if trial["method"] == "gmp" and sparsity <= flat_above:
            t = trial["tunables"]
            value += 0.02 * math.log2(t["frequency"] / 4) - 0.1 * t["start_fraction"]
        return value
    return surface


surface = _make_surface()  # nested, so Ray ships it by value (workers cannot import this test module)


def drain(searcher, value=surface, prefix="r"):
    """Drive the Searcher protocol without Ray: suggest until FINISHED, completing every trial at once.
    Returns the emitted configs in order."""
    emitted = []
    while True:
        config = searcher.suggest(f"{prefix}{len(emitted)}")
        assert config is not None, "nothing in flight: the searcher must not wait"
        if config == FINISHED:
            return emitted
        searcher.on_trial_complete(f"{prefix}{len(emitted)}",
                                   {"best": value(config["trial"]), "level_done": True})
        emitted.append(config)


# ---------------------------------------------------------------------------------- declaration

def test_parse_search_reads_ranges_choices_and_defaults():
    parsed = parse_search({
        "trials_per_cell": 3, "metric": "final",
        "methods": {"gmp": {"frequency": {"choices": [500, 1000, 4000]},
                            "start_fraction": {"low": 0.0, "high": 0.3}},
                    "omp_rigl": {"update_every": {"low": 100, "high": 1000, "log": True},
                                 "alpha": {"low": 0.1, "high": 0.5},
                                 "variant": {"choices": ["paper", "smcbench"]}},
                    "dense": None}}, TUNABLES, "csqa.yaml")
    assert parsed.trials_per_cell == 3 and parsed.metric == "final"
    assert set(parsed.methods) == {"gmp", "omp_rigl"}            # dense declares nothing
    assert parsed.space("gmp")["frequency"].choices == (500, 1000, 4000)
    rigl = parsed.space("omp_rigl")
    assert (rigl["update_every"].kind, rigl["update_every"].log) == ("int", True)
    assert rigl["alpha"].contains(0.3) and not rigl["alpha"].contains(0.6)
    assert parsed.space("lth") == {}
    empty = parse_search(None, TUNABLES, "csqa.yaml")
    assert (empty.trials_per_cell, empty.metric, dict(empty.methods)) == (1, "best", {})


@pytest.mark.parametrize("block, names", [
    ({"trials": 2}, ["unknown key 'trials' at search"]),
    ({"trials_per_cell": 0}, ["search.trials_per_cell", ">= 1"]),
    ({"metric": "loss"}, ["search.metric", "best, final"]),
    ({"methods": {"gpm": {}}}, ["unknown method 'gpm'", "gmp"]),
    ({"methods": {"gmp": {"freq": {"low": 1, "high": 9}}}}, ["unknown key 'freq' at search.methods.gmp",
                                                             "frequency"]),
    ({"methods": {"gmp": {"frequency": {"low": 0, "high": 900}}}}, ["search.methods.gmp.frequency.low = 0",
                                                                    "[1, inf]"]),
    ({"methods": {"gmp": {"start_fraction": {"low": 0.1, "high": 1.5}}}},
     ["search.methods.gmp.start_fraction.high = 1.5"]),
    ({"methods": {"omp_rigl": {"alpha": {"low": 0.0, "high": 0.5}}}},
     ["search.methods.omp_rigl.alpha.low = 0.0", "(0, 1]"]),
    ({"methods": {"gmp": {"frequency": {"choices": [500, 12.5]}}}},
     ["search.methods.gmp.frequency.choices = 12.5"]),
    ({"methods": {"gmp": {"schedule": {"choices": ["exact_end", "cubic"]}}}},
     ["search.methods.gmp.schedule.choices = 'cubic'", "exact_end | smcbench"]),
    ({"methods": {"gmp": {"frequency": {"choices": []}}}}, ["search.methods.gmp.frequency.choices",
                                                            "non-empty"]),
    ({"methods": {"gmp": {"frequency": {"choices": [4, 4]}}}}, ["twice"]),
    ({"methods": {"gmp": {"frequency": {"low": 900, "high": 100}}}}, ["low 900 must be below high 100"]),
    ({"methods": {"gmp": {"start_fraction": {"low": 0.0, "high": 0.3, "log": True}}}},
     ["log: true needs low > 0"]),
    ({"methods": {"gmp": {"frequency": {"low": 100}}}}, ["'high' is required"]),
    ({"methods": {"gmp": {"frequency": {"low": 100, "high": 900, "step": 100}}}}, ["unknown key 'step'"]),
    ({"methods": {"gmp": {"frequency": 500}}}, ["search.methods.gmp.frequency: expected"]),
    ({"methods": {"gmp": {"schedule": {"low": 0, "high": 1}}}}, ["choice tunable is searched with choices"]),
    ({"methods": {"lth": {"rate": {"low": 0.1, "high": 0.3}}}},
     ["search.methods.lth.rate cannot be searched"]),
    ({"methods": {"omp_after": {"pattern": {"choices": ["2:4"]}}}}, ["omp_after.pattern cannot be searched"]),
    ([1, 2], ["search: expected a mapping"]),
])
def test_parse_search_rejects_with_one_line_naming_the_key(block, names):
    with pytest.raises(UserError) as info:
        parse_search(block, TUNABLES, "t.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("t.yaml: ")
    for name in names:
        assert name in message, message


def test_ids_keys_and_records(tmp_path):
    from smctune.config.specs import TrialSpec

    trials = planned(tmp_path, methods=("gmp", "lth"), sparsities=(0.2, 0.5), seeds=(0,))
    for trial in trials:
        spec = TrialSpec.from_dict(trial)
        assert base_trial_id(trial) == trial_id_of({"trial": trial}) == spec.trial_id
        assert trial_id_of({"trial": {**trial, "tuning": 3}}) == spec.trial_id + "-t3"
    assert [cell_key(t) for t in trials] == ["dense/dense", "gmp/s0.2000", "gmp/s0.5000",
                                                   "lth/to0.5904"]
    assert member_key(trials[1]) == ("csqa", "", "gmp", "s0.2000", 0, None)
    results = tmp_path / "run" / "results"
    results.mkdir(parents=True)
    for trial_id, status, levels in (("a", "ok", [{"best": 0.5, "final": 0.4}]),
                                     ("b", "collapsed", [{"best": 0.2}]),
                                     ("c", "failed", [{"best": 0.9}]), ("d", "ok", [])):
        (results / f"{trial_id}.json").write_text(json.dumps({"trial_id": trial_id, "status": status,
                                                              "levels": levels}))
    assert finished_values(tmp_path / "run") == {"a": 0.5, "b": 0.2, "d": None}
    assert finished_values(tmp_path / "run", "final") == {"a": 0.4, "b": None, "d": None}
    assert finished_values(tmp_path / "run", also=("failed",))["c"] is None


def test_trials_per_cell_flag_is_checked():
    assert check_trials_per_cell("3") == 3
    with pytest.raises(UserError, match="--trials-per-cell: expected a whole number >= 1"):
        check_trials_per_cell("two")


# ---------------------------------------------------------------------------------- searcher (no Ray)

def test_cells_are_interleaved_and_only_declared_cells_are_tuned(tmp_path):
    trials = planned(tmp_path)
    searcher = CellSearchCore(trials, decl(), storage_dir=tmp_path / "run")
    emitted = drain(searcher)
    keys = [c["cell"] for c in emitted]
    # every method is started first (trial_order.py: its trials' length is not known yet), then cells
    # of equal length take turns (round-robin), not cell after cell
    assert keys[:3] == ["dense/dense", "gmp/s0.5000", "omp_rigl/s0.5000"]
    assert set(keys[3:8]) == {"dense/dense", "gmp/s0.5000", "gmp/s0.8000", "omp_rigl/s0.5000",
                              "omp_rigl/s0.8000"}
    planned_by_id = {trial_id_of({"trial": t}): t for t in trials}
    ids = [trial_id_of(c) for c in emitted]
    assert len(ids) == len(set(ids)) == 2 + 4 + 2 * 4 * 2      # dense, omp_rigl, gmp: 2 cells x 4 x 2 seeds
    for config in emitted:
        base = planned_by_id[base_trial_id(config["trial"])]
        changed = {k for k, v in config["trial"]["tunables"].items() if base["tunables"][k] != v}
        assert changed <= ({"frequency", "start_fraction"} if config["trial"]["method"] == "gmp" else set())
        if config["tuning"] == 0:                                 # the planned trial, untouched
            assert config["trial"] == base
            assert ids[emitted.index(config)] == trial_id_of({"trial": base})
    assert searcher.tuned_cells == ["gmp/s0.5000", "gmp/s0.8000"]
    assert searcher.remaining_trials == 0


def test_searcher_waits_for_results_and_respects_the_per_cell_concurrency(tmp_path):
    searcher = CellSearchCore(gmp_only(tmp_path), decl(), max_concurrent_per_cell=2,
                                    storage_dir=tmp_path / "run")
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert (first["tuning"], second["tuning"]) == (0, 1)
    assert searcher.suggest("c") is None                         # two study trials open: wait
    searcher.on_trial_complete("a", {"best": 0.5, "level_done": True})
    third = searcher.suggest("c")
    assert third["tuning"] == 2
    assert searcher.suggest("d") is None
    searcher.on_trial_complete("b", None, error=True)             # a failed member fails its tuning
    searcher.on_trial_complete("c", {"best": 0.6, "level_done": False})  # stopped early: pruned
    fourth = searcher.suggest("d")
    searcher.on_trial_complete("d", {"best": 0.7, "level_done": True})
    assert searcher.suggest("e") == FINISHED
    states = [t.state.name for t in searcher.study("gmp/s0.5000").trials]
    assert states == ["COMPLETE", "FAIL", "PRUNED", "COMPLETE"] and fourth["tuning"] == 3
    assert searcher.best()["gmp/s0.5000"]["value"] == pytest.approx(0.7)


def test_validation_rejects_impossible_combinations_without_spending_the_budget(tmp_path):
    trials = gmp_only(tmp_path)

    def validate(method, values):
        if values["start_fraction"] > 0.15:
            raise UserError("start too late")

    searcher = CellSearchCore(trials, decl(trials_per_cell=6), validate=validate,
                                    storage_dir=tmp_path / "run")
    emitted = drain(searcher)
    assert len(emitted) == 6 and all(c["trial"]["tunables"]["start_fraction"] <= 0.15 for c in emitted)
    study = searcher.study("gmp/s0.5000")
    infeasible = [t for t in study.trials if t.user_attrs.get("infeasible")]
    assert infeasible and all(t.state.name == "FAIL" for t in infeasible)
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 6


def test_defaults_outside_the_declared_space_number_tunings_from_one(tmp_path):
    trials = gmp_only(tmp_path)
    searcher = CellSearchCore(trials, decl({"gmp": {"frequency": {"choices": [500, 1000]}}}, 2),
                                    storage_dir=tmp_path / "run")
    assert "frequency 4 lies outside search.methods.gmp" in searcher.messages[0]
    emitted = drain(searcher)
    assert [c["tuning"] for c in emitted] == [1, 2]
    assert [trial_id_of(c) for c in emitted] == ["gmp-s0.5000-seed0-t1", "gmp-s0.5000-seed0-t2"]
    assert all(c["trial"]["tunables"]["frequency"] in (500, 1000) for c in emitted)


def test_resume_continues_the_studies_and_reuses_finished_default_trials(tmp_path):
    trials = planned(tmp_path)
    run = tmp_path / "run"
    # a run without search (budget 1) finished every planned trial: that is tuning 0 of every study
    first = drain(CellSearchCore(trials, decl(trials_per_cell=1), storage_dir=run))
    assert len(first) == len(trials) and not (RunDir(run).optuna_journal).exists()
    done = {trial_id_of(c): surface(c["trial"]) for c in first}

    # budget 3: the defaults are not run again; two tunings per gmp cell, on both seeds
    searcher = CellSearchCore(trials, decl(trials_per_cell=3), storage_dir=run, done=done)
    second = drain(searcher)
    assert sorted({c["tuning"] for c in second}) == [1, 2] and len(second) == 2 * 2 * 2
    assert all(c["trial"]["method"] == "gmp" for c in second)

    # interrupted mid-way through budget 5: tuning 3 of gmp/s0.5 has one seed back, one still running
    searcher = CellSearchCore(trials, decl(trials_per_cell=5), storage_dir=run, done=done,
                                    max_concurrent_per_cell=1)
    config = searcher.suggest("x")
    assert (config["cell"], config["tuning"]) == ("gmp/s0.5000", 3)
    searcher.on_trial_complete("x", {"best": surface(config["trial"]), "level_done": True})
    running = searcher.suggest("y")
    assert (running["cell"], running["tuning"]) == ("gmp/s0.8000", 3)
    # ... the driver dies. A new searcher on the same run directory:
    resumed = CellSearchCore(trials, decl(trials_per_cell=5), storage_dir=run, done=done)
    rest = drain(resumed)
    got = sorted((c["cell"], c["tuning"], c["trial"]["seed"]) for c in rest)
    assert got == [("gmp/s0.5000", 3, 1), ("gmp/s0.5000", 4, 0), ("gmp/s0.5000", 4, 1),
                   ("gmp/s0.8000", 3, 0), ("gmp/s0.8000", 3, 1), ("gmp/s0.8000", 4, 0), ("gmp/s0.8000", 4, 1)]
    for key in resumed.tuned_cells:
        study = resumed.study(key)
        assert [t.state.name for t in study.trials] == ["COMPLETE"] * 5
        assert study.trials[0].params == {"frequency": 4, "start_fraction": 0.1}    # tuning 0 = defaults
    # tuning 0's value is the mean of the recorded seeds
    expected = sum(done[f"gmp-s0.5000-seed{s}"] for s in (0, 1)) / 2
    assert resumed.study("gmp/s0.5000").trials[0].value == pytest.approx(expected)
    # nothing left: a fourth searcher finishes at once
    assert CellSearchCore(trials, decl(trials_per_cell=5), storage_dir=run, done=done).suggest("z") \
        == FINISHED


def test_resume_survives_a_driver_killed_mid_write(tmp_path):
    trials = gmp_only(tmp_path)
    run = tmp_path / "run"
    searcher = CellSearchCore(trials, decl(trials_per_cell=3), storage_dir=run)
    assert searcher.suggest("a")["tuning"] == 0
    searcher.on_trial_complete("a", {"best": 0.5, "level_done": True})
    searcher.study("gmp/s0.5000").ask().suggest_categorical("frequency", [2, 4, 8])  # died inside ask()
    with open(RunDir(run).optuna_journal, "ab") as journal:
        journal.write(b'{"op_code": 5, "worker')                                     # ... mid-append
    resumed = CellSearchCore(trials, decl(trials_per_cell=3), storage_dir=run)
    assert [c["tuning"] for c in drain(resumed)] == [2, 3]
    states = [(t.state.name, t.user_attrs.get("infeasible")) for t in resumed.study("gmp/s0.5000").trials]
    assert states == [("COMPLETE", None), ("FAIL", "interrupted ask"), ("COMPLETE", None), ("COMPLETE", None)]


@pytest.mark.parametrize("last, state, value", [({"best": 0.7, "level_done": False}, "PRUNED", 0.6),
                                                (None, "FAIL", None)])
def test_a_resumed_tuning_keeps_its_number_and_is_told_like_any_other(tmp_path, last, state, value):
    trials = gmp_only(tmp_path, (0.5,), (0, 1))
    run = tmp_path / "run"
    searcher = CellSearchCore(trials, decl(trials_per_cell=2), storage_dir=run)
    first = searcher.suggest("a")
    searcher.on_trial_complete("a", {"best": 0.5, "level_done": True})
    assert searcher.suggest("b")["trial"]["seed"] == 1                     # ... the driver dies here
    resumed = CellSearchCore(trials, decl(trials_per_cell=2), storage_dir=run)
    again = resumed.suggest("b2")
    assert (again["tuning"], again["trial"]["seed"]) == (first["tuning"], 1)
    resumed.on_trial_complete("b2", last, error=last is None)
    told = resumed.study("gmp/s0.5000").trials[0]
    assert (told.number, told.state.name, told.value) == (0, state, value)
    assert told.user_attrs["m:gmp-s0.5000-seed0"] == ["ok", 0.5]             # the first driver's member
    assert told.user_attrs["m:gmp-s0.5000-seed1"][0] == ("stopped" if last else "failed")


def test_a_changed_search_does_not_continue_an_old_study(tmp_path):
    trials = gmp_only(tmp_path)
    drain(CellSearchCore(trials, decl(trials_per_cell=2), storage_dir=tmp_path / "run"))
    other = decl({"gmp": {"frequency": {"choices": [2, 4]}}}, 2)
    with pytest.raises(UserError, match="cell gmp/s0.5000 was started with a different space"):
        CellSearchCore(trials, other, storage_dir=tmp_path / "run")


def test_searcher_state_round_trips_in_flight_trials(tmp_path):
    pytest.importorskip("ray")
    from smctune.sweep.tune_classes import CellSearcher

    trials = gmp_only(tmp_path, (0.5,), (0, 1))
    searcher = CellSearcher(trials, decl(trials_per_cell=2), storage_dir=tmp_path / "run")
    a, b = searcher.suggest("a"), searcher.suggest("b")
    searcher.on_trial_complete("a", {"best": 0.5, "level_done": True})
    searcher.save(str(tmp_path / "searcher.json"))
    # Tune restores the searcher and restarts trial "b" under its id: nothing is emitted twice
    restored = pickle.loads(pickle.dumps(searcher))
    restored.restore(str(tmp_path / "searcher.json"))
    following = restored.suggest("c")
    assert (following["tuning"], following["trial"]["seed"]) != (b["tuning"], b["trial"]["seed"])
    restored.on_trial_complete("b", {"best": 0.7, "level_done": True})
    assert restored.study("gmp/s0.5000").trials[0].value == pytest.approx(0.6)
    assert (a["tuning"], b["tuning"]) == (0, 0)


# ---------------------------------------------------------------------------------- ASHA

def _trial(config, trial_id):
    return SimpleNamespace(trial_id=trial_id, config={"trial": config}, status="RUNNING")


def test_cell_asha_never_stops_a_trial_because_of_another_sparsity(tmp_path):
    pytest.importorskip("ray")
    from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

    from smctune.sweep.tune_classes import CellASHA

    trials = gmp_only(tmp_path, (0.2, 0.8), (0,))
    low, high = sorted(trials, key=lambda t: t["sparsity"])
    low_a, low_b, high_a = _trial(low, "low-a"), _trial(low, "low-b"), _trial(high, "high-a")
    stream = [(low_a, 0.80), (low_b, 0.78), (high_a, 0.40)]  # results at global_step 1

    global_asha = AsyncHyperBandScheduler(metric="best", mode="max", time_attr="global_step", grace_period=1,
                                          max_t=8, reduction_factor=2)
    ours = CellASHA(time_attr="global_step", grace_period=1, max_t=8, reduction_factor=2)
    decisions = {"global": {}, "cell": {}}
    for trial, value in stream:
        global_asha.on_trial_add(None, trial)
        result = {"global_step": 1, "best": value}
        decisions["global"][trial.trial_id] = global_asha.on_trial_result(None, trial, result)
        decisions["cell"][trial.trial_id] = ours.on_trial_result(None, trial, result)
    # a global ASHA stops the high-sparsity trial for being worse than low-sparsity ones ...
    assert decisions["global"]["high-a"] == TrialScheduler.STOP
    # ... CellASHA compares it with nobody (the only tuning of its key) and lets it run
    assert decisions["cell"]["high-a"] == TrialScheduler.CONTINUE
    # within a key, the worse tuning is stopped: that is what ASHA is for
    assert decisions["cell"]["low-b"] == TrialScheduler.STOP
    # a second tuning of the high-sparsity key is compared with the first only
    high_b = _trial(high, "high-b")
    assert ours.on_trial_result(None, high_b, {"global_step": 1, "best": 0.45}) == TrialScheduler.CONTINUE
    for key, _, _, _, _, _, peers in ours.rungs.decisions:
        assert all(ours.rungs.rungs[key][0].get(peer) is not None for peer in peers)
    # other seeds and folds are other keys too
    seed1 = _trial({**low, "seed": 1}, "low-seed1")
    assert ours.on_trial_result(None, seed1, {"global_step": 1, "best": 0.1}) == TrialScheduler.CONTINUE


def test_cell_asha_state_round_trips_through_json(tmp_path):
    pytest.importorskip("ray")
    from ray.tune.schedulers import TrialScheduler

    from smctune.sweep.tune_classes import CellASHA

    low = gmp_only(tmp_path, (0.2,), (0,))[0]
    asha = CellASHA(time_attr="global_step", grace_period=1, max_t=8, reduction_factor=2)
    asha.on_trial_result(None, _trial(low, "a"), {"global_step": 1, "best": 0.8})
    asha.on_trial_result(None, _trial(low, "b"), {"global_step": 1, "best": 0.7})
    asha.save(str(tmp_path / "asha.json"))
    restored = CellASHA()
    restored.restore(str(tmp_path / "asha.json"))
    assert json.loads((tmp_path / "asha.json").read_text())["stopped"] == ["b"] == restored.stopped
    assert restored.rungs.rungs == asha.rungs.rungs and restored.rungs.decisions == asha.rungs.decisions
    # the restored rungs go on comparing within the key: a third tuning below "a" is stopped
    result = {"global_step": 1, "best": 0.72}
    assert restored.on_trial_result(None, _trial(low, "c"), result) == TrialScheduler.STOP


def test_rungs_compare_at_milestones_only_within_a_key():
    rungs = CellRungs(grace_period=2, max_t=8, reduction_factor=2)
    assert rungs.milestones == [2, 4, 8]
    assert not rungs.on_result("k", "a", 1, 0.1)           # before the first rung: never compared
    assert not rungs.on_result("k", "a", 2, 0.9)
    assert rungs.on_result("k", "b", 2, 0.5)               # below a's value at rung 2
    assert not rungs.on_result("other", "c", 2, 0.0)       # another key: compared with nobody
    assert not rungs.on_result("k", "a", 3, 0.1)           # judged at rung 2 already, rung 4 not reached
    minimize = CellRungs(grace_period=1, max_t=4, reduction_factor=2, mode="min")
    assert not minimize.on_result("k", "a", 1, 1.0)
    assert minimize.on_result("k", "b", 1, 2.0)


# ---------------------------------------------------------------------------------- one real Tuner

def _surface_trainable(steps: int = 4, flat_above: float = 1.0):
    response = _make_surface(flat_above)

    def trainable(config):
        from ray import tune

        trial = config["trial"]
        final = response(trial)
        for step in range(1, steps + 1):
            value = final * (0.5 + 0.5 * step / steps)
            tune.report({"global_step": step, "best": value, "accuracy": value, "metric_name": "accuracy",
                         "level_done": step == steps})
    return trainable


def _tuner(searcher, storage, name, scheduler=None, trainable=None):
    from ray import tune

    return tune.Tuner(
        trainable or _surface_trainable(),
        param_space={"threads": 1},
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, scheduler=scheduler,
                                    reuse_actors=True,
                                    trial_name_creator=lambda t: trial_id_of(t.config),
                                    trial_dirname_creator=lambda t: trial_id_of(t.config)),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0))


def test_one_tuner_runs_every_cell_with_optuna_inside_two(tmp_path, ray_session):
    from smctune.sweep.tune_classes import CellSearcher

    trials = planned(tmp_path)
    run = tmp_path / "run"
    searcher = CellSearcher(trials, decl(), seed=3, storage_dir=run)
    results = _tuner(searcher, run / "ray", "stage1").fit()

    assert not results.errors
    configs = [r.config for r in results]
    assert {r.path.rsplit("/", 1)[0] for r in results} == {str(run / "ray" / "stage1")}  # one Tuner
    ids = sorted(trial_id_of(c) for c in configs)
    assert len(ids) == len(set(ids)) == 22
    by_cell = {}
    for config in configs:
        by_cell.setdefault(config["cell"], []).append(config)
    assert {k: len(v) for k, v in by_cell.items()} == {"dense/dense": 2, "omp_rigl/s0.5000": 2,
                                                       "omp_rigl/s0.8000": 2, "gmp/s0.5000": 8,
                                                       "gmp/s0.8000": 8}
    defaults = {t["method"]: t["tunables"] for t in trials}
    for config in configs:
        tunables = config["trial"]["tunables"]
        varied = {k for k in tunables if tunables[k] != defaults[config["trial"]["method"]][k]}
        assert varied <= ({"frequency", "start_fraction"} if config["trial"]["method"] == "gmp" else set())
    for key in ("gmp/s0.5000", "gmp/s0.8000"):
        study = searcher.study(key)
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        assert len(complete) == 4
        # every study value is the seed mean of its Tune trials
        for t in complete:
            seeds = [c for c in by_cell[key] if c["tuning"] == t.number]
            assert len(seeds) == 2
            assert t.value == pytest.approx(sum(surface(c["trial"]) for c in seeds) / 2)
        # the best tuning is where the surface points: the highest frequency tried, then earliest start
        best = study.best_trial.params
        top = max(t.params["frequency"] for t in complete)
        assert best["frequency"] == top
        assert best["start_fraction"] == min(t.params["start_fraction"] for t in complete
                                             if t.params["frequency"] == top)

    # resumed with a larger budget, a new searcher on the run directory asks only for what is left:
    # one more tuning of each GMP cell (on both seeds); the finished untuned trials come from `done`
    done = {trial_id_of(c): None for c in configs if c["trial"]["method"] != "gmp"}
    resumed = CellSearchCore(trials, decl(trials_per_cell=5), seed=3, storage_dir=run, done=done)
    assert resumed.remaining_trials == 4
    more = drain(resumed)
    assert sorted((c["cell"], c["tuning"], c["trial"]["seed"]) for c in more) == [
        ("gmp/s0.5000", 4, 0), ("gmp/s0.5000", 4, 1), ("gmp/s0.8000", 4, 0), ("gmp/s0.8000", 4, 1)]


def test_cell_asha_in_a_tuner_never_stops_a_trial_of_another_sparsity(tmp_path, ray_session):
    from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

    from smctune.sweep.tune_classes import CellASHA, CellSearcher

    trials = gmp_only(tmp_path, (0.5, 0.8))
    run = tmp_path / "run"
    # one tuning at a time per cell: each new tuning meets the finished ones at every rung
    searcher = CellSearcher(trials, decl(trials_per_cell=4), seed=1, storage_dir=run,
                                  max_concurrent_per_cell=1)
    asha = CellASHA(time_attr="global_step", grace_period=1, max_t=4, reduction_factor=2)
    # at sparsity 0.8 the GMP settings do not matter (every tuning scores the same), and every
    # 0.8 trial scores below every 0.5 trial
    trainable = _surface_trainable(flat_above=0.7)
    results = _tuner(searcher, run / "ray", "asha", scheduler=asha, trainable=trainable).fit()
    assert not results.errors and len(results) == 8
    key_of = {r.metrics["trial_id"]: member_key(r.config["trial"]) for r in results}
    assert len(set(key_of.values())) == 2
    for key, trial_id, _, _, _, _, peers in asha.rungs.decisions:
        assert key_of[trial_id] == key and all(key_of[peer] == key for peer in peers)
    high = [r for r in results if r.config["trial"]["sparsity"] == 0.8]
    assert len(high) == 4 and all(r.metrics["level_done"] for r in high)     # none stopped
    stopped = [r for r in results if not r.metrics["level_done"]]
    assert all(r.config["trial"]["sparsity"] == 0.5 for r in stopped)
    # an early-stopped member makes its tuning PRUNED; each study spent exactly its budget
    states = [t.state.name for t in searcher.study("gmp/s0.5000").trials]
    assert len(states) == 4 and states.count("PRUNED") == len(stopped)
    assert [t.state.name for t in searcher.study("gmp/s0.8000").trials] == ["COMPLETE"] * 4

    # the same stream of results through Ray's (global) ASHA stops high-sparsity trials
    # (max_t 8, stop_last_trials off: Ray's ASHA would otherwise "stop" every trial reaching max_t)
    global_asha = AsyncHyperBandScheduler(metric="best", mode="max", time_attr="global_step",
                                          grace_period=1, max_t=8, reduction_factor=2,
                                          stop_last_trials=False)
    global_stops = set()
    for key, trial_id, milestone, value, *_ in asha.rungs.decisions:
        trial = SimpleNamespace(trial_id=trial_id)
        if trial_id not in global_asha._trial_info:
            global_asha.on_trial_add(None, trial)
        result = {"global_step": milestone, "best": value}
        if global_asha.on_trial_result(None, trial, result) == TrialScheduler.STOP:
            global_stops.add(trial_id)
    assert any(key_of[trial_id][3] == "s0.8000" for trial_id in global_stops), global_stops
