"""Experiments simulated with the shipped statistics: many experiments, each read at many looks
(the tests and bench (h) use it)."""

from __future__ import annotations

import math

import numpy as np

from sequences.experiments.stats import MIN_CARTS_PER_ARM, Sample, difference

LOOKS = 50


def looks_at(per_arm: int) -> list[int]:
    return sorted({round(float(x)) for x in np.linspace(MIN_CARTS_PER_ARM, per_arm, LOOKS)})


def simulate(
    outcomes_a: np.ndarray, outcomes_b: np.ndarray, *, rate: bool, planned: int, truth: float
) -> dict:
    """Each experiment read at every look with the shipped ``difference``: whether it ever
    declared either arm better, whether B was found better, whether every interval held the
    truth."""
    looks = looks_at(outcomes_a.shape[1])
    sums = [np.cumsum(outcomes, axis=1) for outcomes in (outcomes_a, outcomes_b)]
    squares = [np.cumsum(outcomes * outcomes, axis=1) for outcomes in (outcomes_a, outcomes_b)]
    ever_declared = found = covered = 0
    for e in range(outcomes_a.shape[0]):
        declared = b_better = False
        holds = True
        for n in looks:
            a = Sample(n, float(sums[0][e, n - 1]), float(squares[0][e, n - 1]))
            b = Sample(n, float(sums[1][e, n - 1]), float(squares[1][e, n - 1]))
            interval = difference(a, b, rate=rate, planned_per_arm=planned)
            assert interval is not None
            declared = declared or interval.above_zero or interval.below_zero
            b_better = b_better or interval.above_zero
            holds = holds and interval.covers(truth)
        ever_declared += declared
        found += b_better
        covered += holds
    count = outcomes_a.shape[0]
    return {"declared": ever_declared / count, "found": found / count, "covered": covered / count}


def net_revenue(rng: np.random.Generator, shape: tuple[int, int], rate: float) -> np.ndarray:
    """A cart's net revenue: most carts do not buy and cost a message or two (₹0.88 each);
    a recovered one brings a log-normal order (median ₹1,100, a long tail: 1 in 100 above
    ₹11,000) at a 40 % margin, less a ₹100 discount."""
    bought = rng.random(shape) < rate
    orders = np.exp(rng.normal(math.log(1_100), 1.0, shape))
    messages = rng.integers(1, 4, shape) * 0.88
    return np.where(bought, orders * 0.4 - 100, 0.0) - messages
