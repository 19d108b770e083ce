"""The experiments' statistics as shipped, simulated: false winners when the merchant looks
every day, the power the planner promises, and the coverage of the intervals."""

from __future__ import annotations

import numpy as np
import pytest

from sequences.experiments.stats import MIN_CARTS_PER_ARM, Sample, difference, plan_rates
from tests.support.simulation import net_revenue, simulate

EXPERIMENTS = 2_000
BASELINE, MDE = 0.08, 0.02


@pytest.fixture(scope="module")
def planned() -> int:
    return plan_rates(BASELINE, MDE).carts_per_arm


def test_the_planner_asks_for_more_carts_for_a_smaller_lift_and_more_arms():
    small, large = plan_rates(0.08, 0.01), plan_rates(0.08, 0.02)
    assert small.carts_per_arm > 3 * large.carts_per_arm
    assert plan_rates(0.08, 0.02, arms=3).carts_per_arm > large.carts_per_arm
    assert plan_rates(0.08, 0.02, power=0.9).carts_per_arm > large.carts_per_arm


@pytest.mark.parametrize(
    ("baseline", "mde", "power", "arms", "reason"),
    [
        (0, 0.02, 0.8, 2, "baseline rate"),
        (1.5, 0.02, 0.8, 2, "baseline rate"),
        (0.08, 0, 0.8, 2, "minimum detectable effect"),
        (0.08, 0.95, 0.8, 2, "minimum detectable effect"),
        (0.08, 0.02, 1.2, 2, "power"),
        (0.08, 0.02, 0.8, 1, "at least 2 arms"),
    ],
)
def test_a_plan_that_cannot_be_made_says_which_figure_is_wrong(baseline, mde, power, arms, reason):
    with pytest.raises(ValueError, match=reason):
        plan_rates(baseline, mde, power=power, arms=arms)


def test_a_aa_experiment_read_fifty_times_declares_a_winner_at_most_one_time_in_twenty(planned):
    rng = np.random.default_rng(20261207)
    shape = (EXPERIMENTS, planned)
    a = (rng.random(shape) < BASELINE).astype(np.float64)
    b = (rng.random(shape) < BASELINE).astype(np.float64)
    result = simulate(a, b, rate=True, planned=planned, truth=0.0)
    assert result["declared"] <= 0.05, result
    assert result["covered"] >= 0.95, result


def test_a_lift_as_large_as_planned_is_found_in_the_planned_carts_four_times_in_five(planned):
    rng = np.random.default_rng(7)
    shape = (EXPERIMENTS, planned)
    a = (rng.random(shape) < BASELINE).astype(np.float64)
    b = (rng.random(shape) < BASELINE + MDE).astype(np.float64)
    result = simulate(a, b, rate=True, planned=planned, truth=MDE)
    assert result["found"] >= 0.80, result
    assert result["covered"] >= 0.95, result


def test_net_revenue_with_a_long_tail_still_declares_at_most_one_aa_winner_in_twenty(planned):
    rng = np.random.default_rng(11)
    shape = (EXPERIMENTS, planned)
    a, b = net_revenue(rng, shape, BASELINE), net_revenue(rng, shape, BASELINE)
    result = simulate(a, b, rate=False, planned=planned, truth=0.0)
    assert result["declared"] <= 0.05, result
    assert result["covered"] >= 0.95, result


def test_no_interval_before_each_arm_has_its_first_carts():
    few, many = Sample(MIN_CARTS_PER_ARM - 1, 5, 5), Sample(5_000, 400, 400)
    assert difference(few, many, rate=True) is None
    assert difference(many, few, rate=True) is None
    assert difference(many, many, rate=True) is not None


def test_an_arm_without_a_single_sale_yet_is_not_taken_to_know_its_rate():
    # Raw variances are 0 for both arms: a zero-width interval would call 0 vs 1 sale a win.
    none, one = Sample(MIN_CARTS_PER_ARM, 0, 0), Sample(MIN_CARTS_PER_ARM, 1, 1)
    interval = difference(none, one, rate=True)
    assert interval is not None
    assert not interval.above_zero
    assert interval.high - interval.low > 0.02
