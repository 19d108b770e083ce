"""An experiment's results per arm, from the figures kept as its carts, their orders and their
messages change (``experiments.figures``, which defines what each cart counts).

Every arm is counted by intent to treat: all the carts given the arm, whatever happened to
them after (a holdout cart is never messaged; an arm's cart the shopper bought before any
message still counts in that arm). A cart counts as recovered when its order came by the
end of the store's attribution window from the moment the cart became eligible
(``ExperimentAssignment.counts_until``), in every arm alike: an order does not need a
message to count, or the holdout could never show what happens without cartback; nor does an
order cancelled since.

A cart's net revenue is its recovered order (refunds taken off) times the store's gross
margin, less the discount it used and what its messages cost. The intervals
(experiments.stats) compare each arm with the control and each messaging arm with the
holdout; an arm is declared better only when its interval on the experiment's metric lies
above zero and its opt-out rate is not worse than the control's.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from scipy.stats import chisquare
from sqlalchemy import select
from sqlmodel import Session, col

from sequences.experiments import figures, stats
from sequences.merchant.store_settings import StoreSettings
from sequences.models import Experiment, ExperimentArm

RECOVERY_RATE, NET_REVENUE, OPT_OUT_RATE = "recovery_rate", "net_revenue_per_cart", "opt_out_rate"
# A shopper's orders over the 90 days after their first cart in the experiment.
CUSTOMER_VALUE = "customer_value_per_shopper"
# A sample-ratio mismatch this unlikely under the weights means assignment is broken (a
# 1-in-1,000 chance of a false alarm on a healthy experiment, read every day for a year).
SRM_P_VALUE = 0.001


@dataclass(frozen=True)
class ArmResult:
    arm_id: int
    name: str
    weight: int
    control: bool
    holdout: bool
    eligible: int
    messaged: int
    read: int
    clicked: int
    recovered: int
    opted_out: int
    revenue: Decimal
    discounts: Decimal
    messaging_cost: Decimal
    net_revenue: Decimal
    # Sum of each cart's net revenue squared (the intervals' variance).
    net_squares: float
    # Per shopper (their first cart in the experiment): how many, their orders over 90 days
    # and its sum of squares, and how many abandoned another cart within them.
    shoppers: int = 0
    customer_value: Decimal = Decimal(0)
    customer_value_squares: float = 0.0
    abandoned_again: int = 0

    @property
    def recovery_rate(self) -> float:
        return self.recovered / self.eligible if self.eligible else 0.0

    @property
    def opt_out_rate(self) -> float:
        return self.opted_out / self.eligible if self.eligible else 0.0

    @property
    def customer_value_per_shopper(self) -> Decimal:
        return (
            (self.customer_value / self.shoppers).quantize(Decimal("0.01")) if self.shoppers else Decimal(0)
        )

    @property
    def abandon_again_rate(self) -> float:
        return self.abandoned_again / self.shoppers if self.shoppers else 0.0

    @property
    def net_revenue_per_cart(self) -> Decimal:
        return (self.net_revenue / self.eligible).quantize(Decimal("0.01")) if self.eligible else Decimal(0)

    def sample(self, metric: str) -> stats.Sample:
        if metric == RECOVERY_RATE:
            return stats.Sample(self.eligible, float(self.recovered), float(self.recovered))
        if metric == OPT_OUT_RATE:
            return stats.Sample(self.eligible, float(self.opted_out), float(self.opted_out))
        if metric == CUSTOMER_VALUE:
            return stats.Sample(self.shoppers, float(self.customer_value), self.customer_value_squares)
        return stats.Sample(self.eligible, float(self.net_revenue), self.net_squares)


@dataclass(frozen=True)
class Comparison:
    """``arm`` against ``reference`` (the control or the holdout) on one metric."""

    arm_id: int
    reference_id: int
    against: str
    metric: str
    interval: stats.Interval | None


@dataclass(frozen=True)
class SampleRatio:
    """Assignment counts against the weights: a mismatch means carts are lost or mis-assigned."""

    p_value: float | None

    @property
    def mismatch(self) -> bool:
        return self.p_value is not None and self.p_value < SRM_P_VALUE


@dataclass(frozen=True)
class Results:
    experiment: Experiment
    arms: list[ArmResult]
    comparisons: list[Comparison]
    sample_ratio: SampleRatio
    # Arms declared better than the control on the experiment's metric, guardrail held.
    better: list[int]
    gross_margin_percent: Decimal

    def comparison(self, arm_id: int, against: str, metric: str) -> Comparison | None:
        return next(
            (
                c
                for c in self.comparisons
                if c.arm_id == arm_id and c.against == against and c.metric == metric
            ),
            None,
        )


def _per_arm(session: Session, experiment_id: int, margin: Decimal) -> dict[int, dict[str, Any]]:
    """Each arm's figures, from the ones kept as its carts change (experiments.figures)."""
    found: dict[int, dict[str, Any]] = {}
    for arm_id, kept in figures.arm_figures(session, experiment_id).items():
        net, squares = figures.net_revenue(kept, margin)
        found[arm_id] = {name: kept[name] for name in figures.COUNTS} | {
            "revenue": kept["revenue"],
            "discounts": kept["discounts"],
            "messaging_cost": kept["messaging_cost"],
            "net_revenue": net,
            "net_squares": squares,
            "customer_value": kept["customer_value"],
            "customer_value_squares": kept["customer_value_squares"],
        }
    return found


def _sample_ratio(arms: list[ArmResult]) -> SampleRatio:
    total = sum(arm.eligible for arm in arms)
    weights = sum(arm.weight for arm in arms)
    if total < 100 or len(arms) < 2 or weights <= 0:
        return SampleRatio(None)
    expected = [total * arm.weight / weights for arm in arms]
    result = chisquare([arm.eligible for arm in arms], expected)
    return SampleRatio(float(result.pvalue))


def experiment_results(session: Session, experiment: Experiment, store_settings: StoreSettings) -> Results:
    assert experiment.id is not None
    margin = store_settings.gross_margin_percent
    arms = session.scalars(
        select(ExperimentArm)
        .where(col(ExperimentArm.experiment_id) == experiment.id)
        .order_by(col(ExperimentArm.position), col(ExperimentArm.id))
    ).all()
    figures = _per_arm(session, experiment.id, margin)
    empty = {
        "eligible": 0,
        "messaged": 0,
        "read": 0,
        "clicked": 0,
        "recovered": 0,
        "opted_out": 0,
        "revenue": Decimal("0.0000"),
        "discounts": Decimal("0.0000"),
        "messaging_cost": Decimal("0.0000"),
        "net_revenue": Decimal("0.0000"),
        "net_squares": 0.0,
    }
    results = [
        ArmResult(
            arm_id=arm.id or 0,
            name=arm.name,
            weight=arm.weight,
            control=arm.is_control,
            holdout=arm.is_holdout,
            **figures.get(arm.id or 0, empty),
        )
        for arm in arms
    ]
    control = next((arm for arm in results if arm.control), None)
    holdout = next((arm for arm in results if arm.holdout), None)
    challengers = [arm for arm in results if not arm.control and not arm.holdout]
    comparisons: list[Comparison] = []
    better: list[int] = []
    planned = experiment.planned_per_arm
    if control is not None:
        for arm in challengers:
            against_control = {
                metric: stats.difference(
                    control.sample(metric),
                    arm.sample(metric),
                    rate=metric in (RECOVERY_RATE, OPT_OUT_RATE),
                    planned_per_arm=planned,
                    comparisons=len(challengers),
                )
                for metric in (NET_REVENUE, RECOVERY_RATE, OPT_OUT_RATE, CUSTOMER_VALUE)
            }
            comparisons.extend(
                Comparison(arm.arm_id, control.arm_id, "control", metric, interval)
                for metric, interval in against_control.items()
            )
            chosen, guardrail = against_control[experiment.metric], against_control[OPT_OUT_RATE]
            # Better: clear of zero on the deciding figure, and opt-outs not clearly worse.
            if chosen is not None and chosen.above_zero and not (guardrail and guardrail.above_zero):
                better.append(arm.arm_id)
    if holdout is not None:
        treated = [arm for arm in results if not arm.holdout]
        for arm in treated:
            for metric in (NET_REVENUE, RECOVERY_RATE, CUSTOMER_VALUE):
                interval = stats.difference(
                    holdout.sample(metric),
                    arm.sample(metric),
                    rate=metric == RECOVERY_RATE,
                    planned_per_arm=planned,
                    comparisons=len(treated),
                )
                comparisons.append(Comparison(arm.arm_id, holdout.arm_id, "holdout", metric, interval))
    return Results(experiment, results, comparisons, _sample_ratio(results), better, margin)


@dataclass(frozen=True)
class ArmFunnel:
    """One arm's carts from abandoned to recovered, for the dashboard's funnel split by arm."""

    name: str
    holdout: bool
    carts: int
    messaged: int
    read: int
    clicked: int
    recovered: int


def latest_funnel(session: Session, store_id: int) -> tuple[Experiment, list[ArmFunnel]] | None:
    """The store's newest experiment and each arm's funnel over its whole life, from the kept
    figures (a few rows, whatever the store's size); None for a store that never ran one."""
    experiment = session.scalars(
        select(Experiment)
        .where(col(Experiment.store_id) == store_id)
        .order_by(col(Experiment.started_at).desc(), col(Experiment.id).desc())
    ).first()
    if experiment is None or experiment.id is None:
        return None
    kept = figures.arm_figures(session, experiment.id)
    arms = session.scalars(
        select(ExperimentArm)
        .where(col(ExperimentArm.experiment_id) == experiment.id)
        .order_by(col(ExperimentArm.position), col(ExperimentArm.id))
    ).all()
    funnel = []
    for arm in arms:
        counted = kept.get(arm.id or 0, {})
        funnel.append(
            ArmFunnel(
                arm.name,
                arm.is_holdout,
                *(
                    int(counted.get(name, 0))
                    for name in ("eligible", "messaged", "read", "clicked", "recovered")
                ),
            )
        )
    return experiment, funnel
