"""Adaptive threshold search (``smctune.sweep.threshold``) on simulated trainables with known response surfaces."""
from __future__ import annotations

import math
import random

import pytest

from smctune.report.analysis import failing_sparsity
from smctune.report.criterion import Criterion, Tolerance
from smctune.errors import UserError
from smctune.sweep.threshold import ThresholdSearch, grid_answer, logistic_curve, paper_grid, run_search
from smctune.sweep.threshold_multi import MultiSearch, plan_threshold_search

DENSE, TOL = 0.60, 0.01
CRITERION = Criterion(Tolerance(100 * TOL))   # the report's rule at the search's tolerance
PASS, FAIL = 0.60, 0.30
G8 = paper_grid(8)
G10 = paper_grid(10)


def step_curve(grid, failing) -> dict:
    """Pass everywhere except at the grid indices in ``failing``."""
    return {s: (FAIL if i in failing else PASS) for i, s in enumerate(grid)}


def monotone(grid, first_fail: int) -> dict:
    return step_curve(grid, set(range(first_fail, len(grid))))


def proposals(search, curve) -> list:
    """Grid indices in the order the (sequential) search proposed them."""
    order = []
    while not search.done:
        levels = search.next_levels()
        assert len(levels) == 1
        order.append(search.grid.index(levels[0]))
        search.tell(levels[0], curve[levels[0]])
    return order


# ------------------------------------------------------------------------------------------------
# monotone curves: exactly the grid answer, fewer trials

@pytest.mark.parametrize("grid", [G8, paper_grid(9), G10], ids=["8", "9", "10"])
def test_every_failing_position_matches_the_grid_with_fewer_trials(grid):
    n = len(grid)
    for first in range(n + 1):    # n: never fails
        curve = monotone(grid, first)
        result = run_search(ThresholdSearch(grid, DENSE, TOL), curve)
        expected = failing_sparsity(curve, DENSE, CRITERION).fails_at
        assert result.fails_at == expected == grid_answer(curve, DENSE, TOL)
        assert result.done and not result.non_monotone and result.evidence == ()
        assert result.trials_used < n and result.grid_size == n
        assert result.trials_used <= math.ceil(math.log2(n + 1)) + 1
        assert result.fails_at_first_level == (first == 0)


@pytest.mark.parametrize("first, order", [
    (0, [3, 1, 0]),          # fails at the first level: nothing below to verify
    (2, [3, 1, 2, 0]),       # bracket (1, 2); verification measures 0
    (5, [3, 5, 4]),          # bracket (4, 5); 3 (below 4) was measured by the bisection
    (6, [3, 5, 6, 4]),       # bracket (5, 6); verification measures 4
    (8, [3, 5, 6, 7]),       # never: bracket (7, 8); 6 already measured
])
def test_hand_computed_trial_sequences_on_8_levels(first, order):
    search = ThresholdSearch(G8, DENSE, TOL)
    assert proposals(search, monotone(G8, first)) == order
    result = search.result()
    assert result.trials_used == len(order)
    assert result.fails_at == (G8[first] if first < 8 else None)
    assert result.ratio == len(order) / 8


def test_trial_counts_over_all_positions():
    counts8 = [run_search(ThresholdSearch(G8, DENSE, TOL), monotone(G8, f)).trials_used for f in range(9)]
    counts10 = [run_search(ThresholdSearch(G10, DENSE, TOL), monotone(G10, f)).trials_used
                for f in range(11)]
    assert counts8 == [3, 3, 4, 3, 4, 3, 4, 4, 4]      # 32 of 72 grid trials (0.44)
    assert counts10 == [3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4]   # 42 of 110 (0.38)


def test_bound_on_any_grid_size_and_verify_setting():
    for n in range(1, 21):
        grid = [i / (n + 1) for i in range(1, n + 1)]
        for verify, above in ((0, 0), (1, 0), (2, 0), (1, 1)):
            for first in range(n + 1):
                curve = monotone(grid, first)
                search = ThresholdSearch(grid, DENSE, TOL, verify=verify, verify_above=above)
                result = run_search(search, curve)
                assert result.fails_at == grid_answer(curve, DENSE, TOL)
                assert result.trials_used <= math.ceil(math.log2(n + 1)) + verify + above


def test_verify_off_is_plain_bisection():
    search = ThresholdSearch(G8, DENSE, TOL, verify=0)
    assert proposals(search, monotone(G8, 2)) == [3, 1, 2]
    assert not search.result().certified        # level 0 was never measured


def test_logistic_surfaces_noise_free_match_the_grid():
    for grid in (G8, G10):
        for s0 in [grid[0] - 0.1] + [(a + b) / 2 for a, b in zip(grid, grid[1:])] + [grid[-1] + 0.1]:
            for width in (0.005, 0.03, 0.1):
                curve = logistic_curve(grid, dense=DENSE, chance=0.2, s0=s0, width=width)
                result = run_search(ThresholdSearch(grid, DENSE, TOL), curve)
                assert result.fails_at == failing_sparsity(curve, DENSE, CRITERION).fails_at
                assert result.trials_used <= len(grid) // 2


def test_the_boundary_is_strict_like_the_report():
    # exactly dense - tolerance passes (within COMPARE_EPS); a hair below fails
    curve = {s: DENSE - TOL for s in G8}
    assert run_search(ThresholdSearch(G8, DENSE, TOL), curve).fails_at is None
    curve[G8[4]] = DENSE - TOL - 1e-6
    curve.update({s: 0.2 for s in G8[5:]})
    assert run_search(ThresholdSearch(G8, DENSE, TOL), curve).fails_at == G8[4]


# ------------------------------------------------------------------------------------------------
# non-monotone curves

def test_verification_below_detects_a_dip_and_the_scan_gives_the_grid_answer():
    curve = step_curve(G8, {4, 6, 7})           # 5 passes above the failing 4
    search = ThresholdSearch(G8, DENSE, TOL)
    assert proposals(search, curve) == [3, 5, 6, 4, 0, 1, 2]
    result = search.result()
    assert result.fails_at == G8[4] == failing_sparsity(curve, DENSE, CRITERION).fails_at
    assert result.non_monotone and result.certified
    assert result.evidence == ((G8[4], G8[5]),)
    assert result.trials_used == 7 < 8


def test_scan_stops_at_the_first_failure_it_meets():
    curve = step_curve(G8, {1, 4, 6, 7})
    search = ThresholdSearch(G8, DENSE, TOL)
    assert proposals(search, curve) == [3, 5, 6, 4, 0, 1]
    result = search.result()
    assert result.fails_at == G8[1] == failing_sparsity(curve, DENSE, CRITERION).fails_at
    assert result.evidence == ((G8[1], G8[3]), (G8[1], G8[5]), (G8[4], G8[5]))
    assert search.phase == "done"


def test_verify_above_detects_a_recovery():
    curve = step_curve(G8, {5, 7})              # 6 recovers
    plain = run_search(ThresholdSearch(G8, DENSE, TOL), curve)
    assert plain.fails_at == G8[5] and not plain.non_monotone    # right answer, not seen
    search = ThresholdSearch(G8, DENSE, TOL, verify_above=1)
    assert proposals(search, curve) == [3, 5, 4, 6, 0, 1, 2]
    result = search.result()
    assert result.non_monotone and result.evidence == ((G8[5], G8[6]),)
    assert result.fails_at == G8[5] and result.certified


def test_unseen_non_monotonicity_is_the_documented_limit():
    curve = step_curve(G8, {2, 5, 6, 7})        # dip at 2, never measured
    result = run_search(ThresholdSearch(G8, DENSE, TOL), curve)
    assert grid_answer(curve, DENSE, TOL) == G8[2]
    assert result.fails_at == G8[5]             # consistent with every measured point
    assert not result.non_monotone and not result.certified
    assert set(result.measured) == {G8[3], G8[4], G8[5]}


def test_guarantee_on_noisy_and_perturbed_surfaces():
    """Seen non-monotonicity or a certified answer always equals the grid; monotone noisy curves too."""
    rng = random.Random(7)
    checked = flagged = 0
    for grid in (G8, G10):
        for seed in range(40):
            curve = logistic_curve(grid, dense=DENSE, chance=0.2, s0=rng.uniform(0.1, 0.95),
                                   width=rng.choice((0.005, 0.03)), noise=0.01, seed=seed)
            if seed % 4 == 0:
                curve[rng.choice(grid)] = rng.choice((DENSE, DENSE - 3 * TOL))
            for options in ({}, {"verify_above": 1}, {"parallel": 3}):
                result = run_search(ThresholdSearch(grid, DENSE, TOL, **options), curve,
                                    rng=random.Random(seed))
                truth = grid_answer(curve, DENSE, TOL)
                if result.non_monotone or result.certified or not failing_sparsity(
                        curve, DENSE, CRITERION).non_monotone:
                    checked += 1
                    assert result.fails_at == truth
                flagged += result.non_monotone
                if result.non_monotone:
                    assert all(curve[f] < DENSE - TOL < curve[p] + 1e-9 for f, p in result.evidence)
    assert checked > 200 and flagged > 5


# ------------------------------------------------------------------------------------------------
# failed trials

def test_a_failed_trial_counts_as_failing():
    curve = monotone(G8, 8)
    curve[G8[3]] = None                         # crash at 3, passes elsewhere
    search = ThresholdSearch(G8, DENSE, TOL)
    assert proposals(search, curve) == [3, 1, 2]
    result = search.result()
    assert result.fails_at == G8[3] and result.failed_trials == (G8[3],)
    assert result.measured[G8[3]] is None


def test_nan_is_a_failed_trial_and_a_failed_trial_can_reveal_non_monotonicity():
    search = ThresholdSearch(G8, DENSE, TOL, verify_above=1)
    curve = monotone(G8, 5)
    curve[G8[5]] = float("nan")
    curve[G8[6]] = PASS                         # a crash at 5 with a pass above
    result = run_search(search, curve)
    assert result.failed_trials == (G8[5],) and result.non_monotone and result.fails_at == G8[5]


def test_cancel_withdraws_a_pending_level():
    search = ThresholdSearch(G8, DENSE, TOL)
    [level] = search.next_levels()
    assert search.next_levels() == []           # one slot, taken
    search.cancel(level)
    assert search.pending == () and search.next_levels() == [level]
    search.tell(level, PASS)
    assert search.result().trials_used == 1


# ------------------------------------------------------------------------------------------------
# parallel (k-ary)

def test_k_ary_proposals_split_the_bracket():
    assert ThresholdSearch(G8, DENSE, TOL, parallel=2).next_levels() == [G8[2], G8[5]]
    assert ThresholdSearch(G8, DENSE, TOL, parallel=3).next_levels() == [G8[1], G8[3], G8[5]]
    assert ThresholdSearch(G8, DENSE, TOL, parallel=20).next_levels() == list(G8)
    assert ThresholdSearch(G8, DENSE, TOL, parallel=3).next_levels(max_levels=1) == [G8[3]]


def test_k_ary_uses_pending_probes_as_split_points():
    search = ThresholdSearch(G10, DENSE, TOL, parallel=2)
    assert search.next_levels() == [G10[2], G10[6]]   # 11 outcomes in thirds
    search.tell(G10[2], PASS)                         # bracket (2, 10), 6 still running
    assert search.next_levels() == [G10[4]]           # parts (2, 6) and (6, 10) tie: the lower
    assert search.pending == (G10[6], G10[4])
    search = ThresholdSearch(G10, DENSE, TOL, parallel=2)
    search.next_levels()
    search.tell(G10[6], PASS)                         # bracket (6, 10); 2 is stale, not a split point
    assert search.next_levels() == [G10[8]]


@pytest.mark.parametrize("parallel", [2, 3])
def test_k_ary_matches_the_grid_in_any_completion_order(parallel):
    for grid in (G8, G10):
        for first in range(len(grid) + 1):
            curve = monotone(grid, first)
            for seed in range(3):
                search = ThresholdSearch(grid, DENSE, TOL, parallel=parallel)
                result = run_search(search, curve, rng=random.Random(seed))
                assert result.fails_at == grid_answer(curve, DENSE, TOL)
                assert result.trials_used < len(grid)


# ------------------------------------------------------------------------------------------------
# many curves

def test_multi_search_round_robin_and_totals():
    curves = {("omp_before", 0): monotone(G8, 5), ("omp_before", 1): step_curve(G8, {4, 6, 7}),
              ("gmp", 0): monotone(G8, 8)}
    multi = plan_threshold_search(list(curves), G8, DENSE, TOL)
    first = multi.next_batch(2)
    assert [key for key, _ in first] == [("omp_before", 0), ("omp_before", 1)]
    assert multi.next_batch(5) == [(("gmp", 0), G8[3])]         # the others wait on their trials
    multi.tell(("omp_before", 1), G8[3], PASS)
    multi.tell(("omp_before", 0), G8[3], PASS)
    first = [(("omp_before", 0), G8[5]), (("omp_before", 1), G8[5])]
    assert multi.next_batch(1) == first[:1]                     # the round goes on after gmp
    assert multi.next_batch(1) == first[1:]
    in_flight = first + [(("gmp", 0), G8[3])]
    steps = 0
    while in_flight:
        key, level = in_flight.pop(0)
        multi.tell(key, level, curves[key][level])
        in_flight += multi.next_batch(2)
        steps += 1
    summary = multi.summary()
    assert multi.done and summary.done
    assert {key: r.fails_at for key, r in summary.results.items()} == {
        ("omp_before", 0): G8[5], ("omp_before", 1): G8[4], ("gmp", 0): None}
    assert [r.trials_used for r in summary.results.values()] == [3, 7, 4]
    assert summary.trials_used == steps + 2 == 14 and summary.grid_trials == 24
    assert summary.ratio == pytest.approx(14 / 24)
    assert summary.non_monotone == (("omp_before", 1),)
    assert summary.text == ("threshold search: 14 trials instead of 24 (0.58 of the grid); "
                            "non-monotone: omp_before seed 1")


def test_multi_search_per_key_dense_and_progress_text():
    multi = plan_threshold_search(["a", "b"], G8, {"a": 0.6, "b": 0.5}, TOL)
    assert multi["b"].threshold == pytest.approx(0.49)
    batch = multi.next_batch(10)
    assert batch == [("a", G8[3]), ("b", G8[3])]
    multi.tell("a", G8[3], 0.1)
    text = multi.summary().text
    assert text == "threshold search: 1 trial instead of 16 (0.06 of the grid), 2 curve(s) still searching"
    callable_dense = plan_threshold_search([("x", 0), ("x", 1)], G8, lambda key: 0.5 + key[1] / 10)
    assert callable_dense[("x", 1)].threshold == pytest.approx(0.59)


# ------------------------------------------------------------------------------------------------
# invalid input: UserError, one line

@pytest.mark.parametrize("make, match", [
    (lambda: ThresholdSearch([], DENSE, TOL), "empty grid"),
    (lambda: ThresholdSearch([0.5, 0.2], DENSE, TOL), "strictly ascending"),
    (lambda: ThresholdSearch([0.2, 0.2], DENSE, TOL), "strictly ascending"),
    (lambda: ThresholdSearch([0.2, float("nan")], DENSE, TOL), "finite numbers"),
    (lambda: ThresholdSearch(G8, None, TOL), "dense value"),
    (lambda: ThresholdSearch(G8, DENSE, -0.1), "tolerance"),
    (lambda: ThresholdSearch(G8, DENSE, TOL, parallel=0), "parallel"),
    (lambda: ThresholdSearch(G8, DENSE, TOL, verify=-1), "verify"),
    (lambda: ThresholdSearch(G8, DENSE, TOL).tell(G8[0], 0.5), "not proposed"),
    (lambda: ThresholdSearch(G8, DENSE, TOL).tell(0.123, 0.5), "not on the grid"),
    (lambda: ThresholdSearch(G8, DENSE, TOL).cancel(G8[3]), "not proposed"),
    (lambda: MultiSearch().tell("x", 0.2, 0.5), "no threshold search"),
    (lambda: plan_threshold_search(["a", "a"], G8, DENSE), "exists already"),
    (lambda: plan_threshold_search(["a"], G8, {"b": 0.5}), "no dense value"),
    (lambda: MultiSearch().next_batch(-1), "max_trials"),
])
def test_invalid_input_raises_one_line_user_error(make, match):
    with pytest.raises(UserError, match=match) as info:
        make()
    assert "\n" not in str(info.value)


def test_telling_twice_or_a_bad_value_is_refused():
    search = ThresholdSearch(G8, DENSE, TOL)
    [level] = search.next_levels()
    with pytest.raises(UserError, match="must be a number or None"):
        search.tell(level, "0.5")
    search.tell(level, 0.5)
    with pytest.raises(UserError, match="already told"):
        search.tell(level, 0.5)
