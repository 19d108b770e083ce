"""Always-valid statistics for experiments: intervals a merchant may read every day.

A fixed-sample test read daily declares false winners far more often than its 5 % (read 50
times, about a quarter of A/A tests "win" at some look). The intervals here are confidence
sequences: with probability 1 - alpha they hold at every look at once, however often the
results page is opened, so a difference that shows up is not an artefact of looking.

The sequence is the asymptotic confidence sequence of Waudby-Smith, Arnold, Wu, McAuliffe and
Ramdas ("Time-uniform central limit theory and asymptotic confidence sequences", Annals of
Statistics 2024), with Robbins' normal mixture boundary, applied to the difference in means
of two arms of a randomised experiment. At t carts in the two arms, with sigma^2 the
variance of the difference scaled to one cart (t * (s_a^2 / n_a + s_b^2 / n_b)):

    half-width = sigma * sqrt(2 (t rho^2 + 1) / (t^2 rho^2) * log(sqrt(t rho^2 + 1) / alpha))

and rho tuned so the sequence is tightest at the planned number of carts (``rho_for``).

Why a normal-limit sequence is fit for revenue, which is heavy-tailed: it needs a finite
variance, not normal data. A cart's net revenue is bounded (no order is larger than the
largest cart a store sells, and a cart that did not buy counts its discount and messaging
cost only), so its variance is finite; the price is that the guarantee is asymptotic. The
simulation test (tests/sequences/experiments) checks it where it matters, on zero-inflated
log-normal revenue with a long tail at the sizes merchants run: the share of A/A tests that
ever declare a winner over 50 looks, and the coverage of the true difference. Before each arm
has MIN_CARTS_PER_ARM carts no interval is given: the variance estimate is not to be trusted
yet, and a rate's variance is estimated as (x + 1) / (n + 2), never as zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from scipy.optimize import brentq

# Two-sided: the chance that any interval, at any look, misses the true difference.
ALPHA = 0.05
DEFAULT_POWER = 0.8
# Before this many eligible carts in each arm no interval is drawn and no arm can win.
MIN_CARTS_PER_ARM = 100
# The number of carts per arm a sequence is tuned for when no plan names one.
DEFAULT_PLANNED_PER_ARM = 5_000


@dataclass(frozen=True)
class Sample:
    """One arm's outcomes for one metric, as sums (what a GROUP BY returns)."""

    n: int
    total: float
    squares: float

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    def variance(self, *, rate: bool) -> float:
        """The outcome's variance; for a rate (0/1 outcomes) smoothed so that an arm with no
        success yet does not claim to know its rate exactly."""
        if self.n < 2:
            return 0.0
        if rate:
            smoothed = (self.total + 1) / (self.n + 2)
            return smoothed * (1 - smoothed)
        return max(0.0, (self.squares - self.total * self.total / self.n) / (self.n - 1))


@dataclass(frozen=True)
class Interval:
    """An arm's difference from a reference arm (arm minus reference) and its always-valid
    interval."""

    estimate: float
    low: float
    high: float

    @property
    def above_zero(self) -> bool:
        return self.low > 0

    @property
    def below_zero(self) -> bool:
        return self.high < 0

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high


def rho_for(planned_total: int, alpha: float) -> float:
    """The mixture's rho that makes the sequence tightest when ``planned_total`` carts are in
    the two arms (Waudby-Smith et al., the closed form for the normal mixture)."""
    log_term = -2 * math.log(alpha)
    return math.sqrt((log_term + math.log(log_term + 1)) / max(planned_total, 1))


def boundary(t: int, rho: float, alpha: float) -> float:
    """The half-width of the sequence for a unit variance at t observations."""
    growth = t * rho * rho + 1
    return math.sqrt(2 * growth / (t * t * rho * rho) * math.log(math.sqrt(growth) / alpha))


def difference(
    reference: Sample,
    arm: Sample,
    *,
    rate: bool,
    planned_per_arm: int = DEFAULT_PLANNED_PER_ARM,
    alpha: float = ALPHA,
    comparisons: int = 1,
) -> Interval | None:
    """``arm`` minus ``reference``, with an interval valid at every look; None until each arm
    has MIN_CARTS_PER_ARM carts. ``comparisons``: how many differences the decision reads at
    once (each gets alpha / comparisons, Bonferroni)."""
    if min(reference.n, arm.n) < MIN_CARTS_PER_ARM:
        return None
    t = reference.n + arm.n
    scaled_variance = t * (reference.variance(rate=rate) / reference.n + arm.variance(rate=rate) / arm.n)
    level = alpha / max(comparisons, 1)
    half = math.sqrt(scaled_variance) * boundary(t, rho_for(2 * planned_per_arm, level), level)
    estimate = arm.mean - reference.mean
    return Interval(estimate, estimate - half, estimate + half)


def mean(
    sample: Sample, *, planned: int = DEFAULT_PLANNED_PER_ARM, alpha: float = ALPHA, comparisons: int = 1
) -> Interval | None:
    """One group's mean with an interval valid at every look (the same sequence as
    ``difference``, for one mean); None below MIN_CARTS_PER_ARM."""
    if sample.n < MIN_CARTS_PER_ARM:
        return None
    level = alpha / max(comparisons, 1)
    half = math.sqrt(sample.variance(rate=False)) * boundary(sample.n, rho_for(planned, level), level)
    return Interval(sample.mean, sample.mean - half, sample.mean + half)


@dataclass(frozen=True)
class Plan:
    carts_per_arm: int
    baseline_rate: float
    mde: float
    power: float
    arms: int
    alpha: float


def plan_rates(
    baseline_rate: float,
    mde: float,
    *,
    power: float = DEFAULT_POWER,
    arms: int = 2,
    alpha: float = ALPHA,
) -> Plan:
    """Eligible carts each arm needs for the sequence to find an absolute lift of ``mde`` on a
    rate of ``baseline_rate`` with probability ``power`` by the time that many carts are in
    (every arm compared with the control: alpha shared by arms - 1 comparisons)."""
    if not 0 < baseline_rate < 1:
        raise ValueError("the baseline rate is a fraction between 0 and 1 (0.08 for 8 %)")
    if not 0 < mde < 1 - baseline_rate:
        raise ValueError(
            f"the minimum detectable effect is an absolute lift above 0 and below {1 - baseline_rate:g} "
            "(0.02 for 8 % against 10 %)"
        )
    if not 0.5 <= power < 1:
        raise ValueError("power is a fraction from 0.5 to below 1 (0.8 for 80 %)")
    if arms < 2:
        raise ValueError("an experiment has at least 2 arms")
    treated = baseline_rate + mde
    variance = baseline_rate * (1 - baseline_rate) + treated * (1 - treated)
    level = alpha / (arms - 1)
    z = NormalDist().inv_cdf(power)

    def shortfall(n: float) -> float:
        # Lift minus (the interval's half-width + z standard errors) at n carts per arm, the
        # sequence tuned for n: >= 0 once the lift is found with the chance asked for.
        per_arm = max(int(n), 2)
        t = 2 * per_arm
        half = math.sqrt(t * variance / per_arm) * boundary(t, rho_for(t, level), level)
        return mde - half - z * math.sqrt(variance / per_arm)

    high = 1_000.0
    while shortfall(high) < 0:
        high *= 2
        if high > 1e12:
            raise ValueError("that lift is too small to find with any number of carts")
    carts = math.ceil(brentq(shortfall, 2.0, high, xtol=0.5))
    return Plan(max(carts, MIN_CARTS_PER_ARM), baseline_rate, mde, power, arms, alpha)
