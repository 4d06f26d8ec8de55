import pytest

from smctune.errors import UserError
from smctune.pruning import GMPSchedule, gmp_sparsity, imp_sparsity


pytestmark = pytest.mark.usefixtures("single_thread")


def cubic(step, final, start, end, initial=0.0):
    return final + (initial - final) * (1 - (step - start) / (end - start)) ** 3


@pytest.mark.parametrize("initial", [0.0, 0.3])
def test_gmp_sparsity_is_the_cubic_and_exact_at_the_ends(initial):
    kw = dict(final=0.9, start_step=300, end_step=2400, initial=initial)
    for step in (301, 500, 1000, 1350, 2000, 2399):
        assert gmp_sparsity(step, **kw) == pytest.approx(cubic(step, 0.9, 300, 2400, initial), abs=1e-15)
    assert gmp_sparsity(0, **kw) == initial
    assert gmp_sparsity(300, **kw) == initial
    assert gmp_sparsity(2400, **kw) == 0.9
    assert gmp_sparsity(10_000, **kw) == 0.9
    # strictly increasing inside the window
    values = [gmp_sparsity(s, **kw) for s in range(300, 2401, 100)]
    assert all(a < b for a, b in zip(values, values[1:]))
    # concrete value: halfway, 1 - 0.5**3 of the way from initial to final
    assert gmp_sparsity(1350, **kw) == pytest.approx(initial + (0.9 - initial) * 0.875)


def test_gmp_schedule_fires_at_end_step_exactly():
    sched = GMPSchedule(final=0.893, start_step=300, end_step=2400, frequency=500)
    assert sched.update_steps() == [300, 800, 1300, 1800, 2300, 2400]
    fired = [s for s in range(0, 3000) if sched.is_update_step(s)]
    assert fired == sched.update_steps()
    assert sched.target(2400) == 0.893
    assert sched.target(2300) < 0.893
    assert GMPSchedule(0.5, 0, 10, 5).update_steps() == [0, 5, 10]
    assert GMPSchedule(0.5, 0, 10, 1).update_steps() == list(range(11))


def test_gmp_validation():
    with pytest.raises(UserError, match="start_step"):
        GMPSchedule(0.9, 100, 100, 10)
    with pytest.raises(UserError, match="frequency"):
        GMPSchedule(0.9, 0, 100, 0)
    with pytest.raises(UserError, match="final sparsity"):
        GMPSchedule(1.0, 0, 100, 10)
    with pytest.raises(UserError, match="start_step"):
        gmp_sparsity(5, final=0.5, start_step=10, end_step=3)


def test_imp_ladder():
    for k in range(11):
        assert imp_sparsity(k) == 1 - 0.8 ** k
    assert imp_sparsity(0) == 0
    assert imp_sparsity(2, rate=0.5) == 0.75
    with pytest.raises(UserError):
        imp_sparsity(-1)
    with pytest.raises(UserError):
        imp_sparsity(1, rate=1.0)
