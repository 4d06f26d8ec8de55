"""Schedules as objects (``smctune.train.schedules``): what each one plans, checks, costs and trains."""
from __future__ import annotations

import pytest

from smctune.catalog import registry
from smctune.config.settings import ModelSettings, TrainSettings
from smctune.config.specs import TrialSpec
from smctune.errors import UserError
from smctune.train.level import LevelState
from smctune.train.schedules import SCHEDULES, lth_levels, schedule_of

GRID = (0.2, 0.36, 0.488)


def common(method: str, tunables: dict, max_steps: int = 100) -> dict:
    return dict(task="csqa", method=method, seed=0, preset="smoke", model=ModelSettings(),
                train=TrainSettings(max_steps=max_steps), tunables=tunables, prunable={}, data_dir=None,
                cache_root="/tmp/cache")


def test_every_catalog_method_names_a_schedule():
    for name, method in registry.METHODS.items():
        assert schedule_of(method).name == method.schedule, name


def test_an_unknown_schedule_names_the_valid_ones():
    with pytest.raises(UserError, match=r"unknown schedule 'cosine' \(valid: gmp, imp, none, oneshot, rigl\)"):
        schedule_of("cosine")


def test_lth_levels_follow_one_minus_keep_to_the_k_until_the_top_of_the_grid():
    assert lth_levels(GRID, 0.2) == (0.2, 0.36, 0.488)
    assert lth_levels((0.2, 0.5), 0.2) == (0.2, 0.36, 0.488, 0.5904)   # 0.488 < 0.5: one more round
    assert lth_levels((0.75,), 0.5) == (0.5, 0.75)


def test_plans_by_schedule():
    dense = SCHEDULES["none"].plan({}, GRID, common("dense", {}))
    assert [t.sparsity for t in dense] == [None]
    oneshot = SCHEDULES["oneshot"].plan({}, GRID, common("omp_after", {}))
    assert [t.sparsity for t in oneshot] == list(GRID)
    nm = SCHEDULES["oneshot"].plan({"pattern": "2:4"}, GRID, common("omp_after", {"pattern": "2:4"}))
    assert [t.sparsity for t in nm] == [0.5]
    imp = SCHEDULES["imp"].plan({"rate": 0.2}, GRID, common("lth", {"rate": 0.2}))
    assert len(imp) == 1 and imp[0].levels == GRID and imp[0].sparsity == GRID[-1]


def test_threshold_search_applies_to_grid_levels_only():
    trial = TrialSpec(sparsity=0.5, **common("gmp", {}))
    assert SCHEDULES["gmp"].searchable(trial) and SCHEDULES["oneshot"].searchable(trial)
    assert SCHEDULES["rigl"].searchable(trial)
    assert not SCHEDULES["none"].searchable(trial) and not SCHEDULES["imp"].searchable(trial)
    pattern = TrialSpec(sparsity=0.5, **common("omp_after", {"pattern": "2:4"}))
    assert not SCHEDULES["oneshot"].searchable(pattern)


def test_fine_tune_cost_of_an_imp_trial_is_per_round():
    lth = TrialSpec(sparsity=0.488, levels=GRID, **common("lth", {"round_fraction": 0.75}, max_steps=100))
    assert SCHEDULES["imp"].fine_tunes(lth) == 3
    assert SCHEDULES["imp"].fine_tune_steps(lth) == 75
    gmp = TrialSpec(sparsity=0.5, **common("gmp", {}, max_steps=100))
    assert (SCHEDULES["gmp"].fine_tunes(gmp), SCHEDULES["gmp"].fine_tune_steps(gmp)) == (1, 100)


def test_gmp_refuses_a_window_that_ends_before_it_starts():
    gmp = registry.method_spec("gmp")
    values = dict(gmp.defaults(), start_fraction=0.5, end_fraction=0.5)
    with pytest.raises(UserError, match="start_fraction 0.5 must be below end_fraction 0.5"):
        SCHEDULES["gmp"].check(gmp, values, "csqa.yaml")
    SCHEDULES["gmp"].check(gmp, dict(values, start_fraction=0.1), "csqa.yaml")


class RecordingTrial:
    """The pieces of ``smctune.train.trial.Trial`` a schedule drives, recording the calls."""

    def __init__(self, spec: TrialSpec):
        self.spec, self.calls, self.model = spec, [], None

    def load_start_weights(self):
        self.calls.append(("load",))

    def prune(self, target, current=None, zero=True):
        self.calls.append(("prune", round(target, 6), zero))
        return FakeMask(self.calls)

    def rewind(self):
        self.calls.append(("rewind",))

    def reinit_head(self, round_):
        self.calls.append(("reinit_head", round_))

    def fine_tune(self, mask, level: LevelState, restored, **kwargs):
        self.calls.append(("fine_tune", level.round, level.target, level.max_steps, sorted(kwargs)))
        return True

    def cache_dense(self, level):
        self.calls.append(("cache",))


class FakeMask:
    def __init__(self, calls):
        self.calls = calls

    def apply(self, model):
        self.calls.append(("apply",))


def test_imp_prunes_rewinds_and_fine_tunes_once_per_round():
    spec = TrialSpec(sparsity=0.36, levels=(0.2, 0.36),
                     **common("lth", {"rate": 0.2, "rewind": True, "round_fraction": 0.5}))
    trial = RecordingTrial(spec)
    SCHEDULES["imp"].train(trial, None)
    assert trial.calls == [
        ("load",),
        ("prune", 0.2, False), ("rewind",), ("apply",), ("fine_tune", 1, 0.2, 50, []),
        ("prune", 0.36, False), ("rewind",), ("apply",), ("fine_tune", 2, 0.36, 50, []),
    ]


def test_one_level_schedules_start_where_their_papers_do():
    spec = TrialSpec(sparsity=0.5, **common("gmp", dict(registry.method_spec("gmp").defaults())))
    trial = RecordingTrial(spec)
    SCHEDULES["gmp"].train(trial, None)
    assert trial.calls == [("prune", 0.0, True), ("fine_tune", None, 0.5, None, ["gmp"])]   # from dense
    spec = TrialSpec(sparsity=0.5, **common("omp_after", {}))
    trial = RecordingTrial(spec)
    SCHEDULES["oneshot"].train(trial, None)
    assert trial.calls == [("load",), ("prune", 0.5, True), ("fine_tune", None, 0.5, None, [])]
    trial = RecordingTrial(TrialSpec(sparsity=None, **common("dense", {})))
    SCHEDULES["none"].train(trial, None)
    assert trial.calls == [("fine_tune", None, 0.0, None, []), ("cache",)]


def test_lth_and_dense_are_not_threshold_searched_by_their_catalog_entries():
    trial = TrialSpec(sparsity=0.5, **common("x", {}))
    assert not schedule_of(registry.METHODS["lth"]).searchable(trial)
    assert not schedule_of(registry.METHODS["dense"]).searchable(trial)
    assert all(schedule_of(registry.METHODS[m]).searchable(trial) for m in ("omp_after", "gmp", "snip_rigl"))
