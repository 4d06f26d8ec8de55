"""Failing-sparsity criterion: absolute and relative tolerance, Welch significance, outcomes.
Expected values are worked out by hand (and the Welch p against scipy's own implementation)."""
from __future__ import annotations

import math

import pytest

from smctune.report.analysis import FAILS_AT, NEVER, failing_sparsity
from smctune.report.cell_stats import CellStat, cell_stat
from smctune.report.criterion import Criterion, Tolerance, parse_alpha, parse_tolerance, welch_p_below
from smctune.errors import UserError


def stat(*values) -> CellStat:
    return cell_stat(values)


@pytest.mark.parametrize("text,expected", [("1", Tolerance(1.0)), ("0.5", Tolerance(0.5)),
                                           ("2%", Tolerance(2.0, True)), (" 3 % ", Tolerance(3.0, True)),
                                           ("0", Tolerance(0.0))])
def test_parse_tolerance(text, expected):
    assert parse_tolerance(text) == expected


@pytest.mark.parametrize("text", ["-1", "x", "", "100%", "1e999", "2%%"])
def test_parse_tolerance_rejects(text):
    with pytest.raises(UserError, match="--tolerance"):
        parse_tolerance(text)


def test_parse_alpha():
    assert parse_alpha(None) is None and parse_alpha(0.05) == 0.05
    for bad in (0.0, 1.0, -0.1, 2):
        with pytest.raises(UserError, match="--alpha"):
            parse_alpha(bad)


def test_absolute_and_relative_thresholds():
    # dense 0.80: 1 point absolute -> 0.79; 2 % relative -> 0.784
    assert Tolerance(1).threshold(0.80) == pytest.approx(0.79)
    assert Tolerance(2, relative=True).threshold(0.80) == pytest.approx(0.784)
    curve = {0.2: 0.789, 0.36: 0.785, 0.488: 0.78}
    assert failing_sparsity(curve, 0.80, Criterion(Tolerance(1))).fails_at == 0.2
    assert failing_sparsity(curve, 0.80, Criterion(Tolerance(2, True))).fails_at == 0.488
    # relative scales with dense: the same 2 % is 0.8 points at dense 0.40
    assert failing_sparsity({0.2: 0.393, 0.36: 0.391}, 0.40, Criterion(Tolerance(2, True))).fails_at == 0.36


def test_outcomes_never_first_level_and_non_monotone():
    crit = Criterion()
    never = failing_sparsity({0.2: 0.80, 0.36: 0.795}, 0.80, crit)
    assert never.outcome == NEVER and never.fails_at is None
    first = failing_sparsity({0.2: 0.70, 0.36: 0.60}, 0.80, crit)
    assert first.outcome == FAILS_AT and first.fails_at == 0.2 and first.fails_at_first_level
    bumpy = failing_sparsity({0.2: 0.80, 0.36: 0.70, 0.488: 0.80, 0.59: 0.5}, 0.80, crit)
    assert bumpy.fails_at == 0.36 and bumpy.non_monotone and bumpy.failing_levels == (0.36, 0.59)
    monotone = failing_sparsity({0.2: 0.80, 0.36: 0.70, 0.488: 0.60}, 0.80, crit)
    assert not monotone.non_monotone


def test_welch_p_matches_scipy_and_a_hand_computation():
    from scipy import stats

    a, b = [0.70, 0.72, 0.69], [0.80, 0.79, 0.81, 0.80]
    expected = stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue
    assert welch_p_below(a, b) == pytest.approx(expected, rel=1e-9)
    # by hand: t = (mean_a - mean_b) / sqrt(va/na + vb/nb)
    ma, mb = sum(a) / 3, sum(b) / 4
    va = sum((x - ma) ** 2 for x in a) / 2
    vb = sum((x - mb) ** 2 for x in b) / 3
    t = (ma - mb) / math.sqrt(va / 3 + vb / 4)
    assert stats.ttest_ind(a, b, equal_var=False).statistic == pytest.approx(t)
    assert welch_p_below([0.7], b) is None and welch_p_below(a, [0.8]) is None
    assert welch_p_below([0.5, 0.5], [0.6, 0.6]) == 0.0 and welch_p_below([0.6, 0.6], [0.6, 0.6]) == 1.0


def test_significance_on_and_off():
    dense = stat(0.80, 0.81, 0.79)
    noisy = stat(0.60, 0.85, 0.80)     # mean 0.75: below 0.79, but not significantly
    clear = stat(0.60, 0.61, 0.59)     # far below, tight
    curve = {0.2: noisy, 0.36: clear}
    off = failing_sparsity(curve, dense, Criterion())
    assert off.fails_at == 0.2 and off.p_values == {}
    on = failing_sparsity(curve, dense, Criterion(alpha=0.05))
    assert on.fails_at == 0.36 and on.not_significant == (0.2,) and on.untestable == ()
    assert on.p_values[0.2] > 0.05 and on.p_values[0.36] < 0.001
    # the test is against the threshold (dense - 1 pt), not dense itself: a level just 1.5 points
    # down with almost no spread is significant against dense but not against dense - 1 pt
    near = failing_sparsity({0.2: stat(0.785, 0.786, 0.784)}, dense, Criterion(alpha=0.05))
    assert near.outcome == NEVER and near.not_significant == (0.2,)


def test_significance_needs_two_seeds_on_each_side():
    result = failing_sparsity({0.2: stat(0.5)}, stat(0.8, 0.81), Criterion(alpha=0.05))
    assert result.outcome == NEVER and result.untestable == (0.2,) and result.p_values == {0.2: None}
    result = failing_sparsity({0.2: stat(0.5, 0.51)}, stat(0.8), Criterion(alpha=0.05))
    assert result.untestable == (0.2,)


def test_criterion_description_and_dict():
    crit = Criterion(Tolerance(2, True), 0.05)
    assert "2% of dense" in crit.label and "Welch" in crit.label
    assert crit.as_dict()["tolerance"] == {"value": 2.0, "unit": "percent_of_dense"}
    assert Criterion().as_dict()["alpha"] is None and Criterion().label == "tolerance 1 pt"
