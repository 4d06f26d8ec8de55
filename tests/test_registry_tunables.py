"""The method registry and its tunables: groups, validation, SMC-Bench values, planning effects."""
import dataclasses

import pytest

from smctune.catalog import registry
from smctune.config.search_space import SearchSpace, load_search_space
from smctune.config.specs import SweepSpec
from smctune.errors import UserError
from smctune.pruning import GMPSchedule
from smctune.sweep.plan import plan_trials
from smctune.catalog.tunables import Tunable, check_all

PAPER_ELEVEN = ("lth", "omp_after", "random_after", "gmp", "omp_before", "random_before", "snip",
                "omp_rigl", "random_rigl", "snip_rigl", "obert")


def test_method_groups():
    assert registry.PAPER_METHODS == PAPER_ELEVEN
    assert registry.parse_methods("all") == ("dense",) + PAPER_ELEVEN
    beyond = registry.parse_methods("paper+beyond")
    assert beyond[:12] == ("dense",) + PAPER_ELEVEN
    assert {"wanda", "sparsegpt", "obert_gmp", "obert_imp"} <= set(beyond)
    assert registry.parse_methods("wanda, gmp") == ("gmp", "wanda")
    with pytest.raises(UserError, match=r"unknown method 'movment' \(valid: .*paper\+beyond"):
        registry.parse_methods("movment")


def test_every_method_criterion_is_registered_and_options_are_tunables():
    from smctune.pruning import CRITERIA

    for spec in registry.METHODS.values():
        assert spec.criterion is None or spec.criterion in CRITERIA, spec.name
        assert set(spec.options) <= set(spec.tunables), spec.name
        for key, value in spec.defaults().items():  # every default passes its own check
            assert spec.tunables[key].check(value, key) == value


@pytest.mark.parametrize("tunable,value,message", [
    (Tunable(5, "int", "x", low=1), 0, r"m\.x = 0 is not valid \(valid: a whole number in \[1, inf\]\)"),
    (Tunable(5, "int", "x", low=1), 2.5, "whole number"),
    (Tunable(0.3, "float", "x", low=0.0, high=1.0, low_open=True), 0.0, r"\(0, 1\]"),
    (Tunable(0.3, "float", "x", low=0.0, high=1.0), True, "a number"),
    (Tunable("a", "choice", "x", choices=("a", "b")), "c", r"valid: a \| b"),
    (Tunable(True, "bool", "x"), "yes", "true | false"),
])
def test_bad_values_name_the_valid_ones(tunable, value, message):
    with pytest.raises(UserError, match=message):
        check_all({"x": tunable}, {"x": value}, "m")


def test_faithful_smcbench_switches_every_departing_default():
    gmp = registry.method_spec("gmp")
    assert gmp.defaults()["schedule"] == "exact_end"
    assert gmp.defaults("smcbench")["schedule"] == "smcbench"
    assert registry.method_spec("random_before").defaults("smcbench")["mask"] == "bernoulli"
    assert registry.method_spec("omp_rigl").defaults("smcbench")["variant"] == "smcbench"
    assert registry.method_spec("obert").defaults("smcbench")["variant"] == "smcbench"
    assert all(spec.defaults("smcbench")["optimizer_state"] == "smcbench"
               for spec in registry.METHODS.values() if spec.criterion)
    # settings where SMC-Bench agrees with the paper keep their value
    assert gmp.defaults("smcbench")["frequency"] == gmp.defaults()["frequency"]
    with pytest.raises(UserError, match="valid: paper, smcbench"):
        gmp.defaults("exact")


def test_gmp_smcbench_schedule_falls_short_of_the_target_like_smcbench():
    """CSQA: 3000 steps, every 500, t0 = 300, t1 = 2400: prunes at 500..2000, ends at ≈0.993·s_f."""
    paper = GMPSchedule(final=0.5, start_step=300, end_step=2400, frequency=500)
    smc = GMPSchedule(final=0.5, start_step=300, end_step=2400, frequency=500, exact_end=False)
    assert paper.update_steps() == [300, 800, 1300, 1800, 2300, 2400] and paper.final_sparsity() == 0.5
    assert smc.update_steps() == [500, 1000, 1500, 2000]
    assert [s for s in range(1, 3001) if smc.is_update_step(s)] == [500, 1000, 1500, 2000]
    expected = 0.5 * (1 - (1 - 1700 / 2100) ** 3)
    assert smc.final_sparsity() == pytest.approx(expected) and 0.99 < expected / 0.5 < 0.995


def _sweep(methods, faithful="paper", sparsities=(0.2, 0.5)):
    return SweepSpec(task="csqa", methods=registry.parse_methods(methods), sparsities=sparsities,
                     seeds=(0,), preset="smoke", preset_reason="test", name="t", run_dir="/tmp/t/r",
                     mlflow_uri="sqlite:////tmp/t/m.db", faithful=faithful)


def test_plan_records_the_tunables_and_pattern_fixes_the_sparsity():
    space = load_search_space("csqa")
    trials = plan_trials(_sweep("random_before,wanda", faithful="smcbench"), space)
    random = [t for t in trials if t.method == "random_before"]
    assert [t.sparsity for t in random] == [0.2, 0.5]
    assert all(t.tunables["mask"] == "bernoulli" for t in random)
    methods = {"wanda": {"pattern": "2:4"}}
    patterned = SearchSpace(task="csqa", sparsities=space.sparsities, methods=methods,
                            presets=space.presets, prunable=space.prunable, source="x.yaml")
    wanda = [t for t in plan_trials(_sweep("wanda"), patterned) if t.method == "wanda"]
    assert [(t.sparsity, t.tunables["pattern"]) for t in wanda] == [(0.5, "2:4")]


def _with_smoke_methods(space, methods):
    presets = dict(space.presets)
    presets["smoke"] = dataclasses.replace(presets["smoke"], methods=methods)
    return SearchSpace(task="csqa", sparsities=space.sparsities, methods={}, presets=presets,
                       prunable=space.prunable, source="bad.yaml")


def test_plan_rejects_bad_tunables_in_the_search_space():
    space = load_search_space("csqa")
    with pytest.raises(UserError, match=r"bad.yaml: gmp.frequency = 0 is not valid"):
        plan_trials(_sweep("gmp"), _with_smoke_methods(space, {"gmp": {"frequency": 0}}))
    bad = _with_smoke_methods(space, {"gmp": {"start_fraction": 0.9, "end_fraction": 0.5}})
    with pytest.raises(UserError, match="start_fraction 0.9 must be below end_fraction 0.5"):
        plan_trials(_sweep("gmp"), bad)
