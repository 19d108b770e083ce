"""The recovery dashboard's figures for one store and one period.

The period is a range of days in the store's time zone. Its cohort is **the carts abandoned in
it** and everything that happened to them since: their messages (dated by the cart's
abandonment, copied onto each message), clicks, orders, refunds and messaging cost. So the
funnel, the recovery rate, the opt-out rate (carts messaged whose shopper opted out while their
sequence ran) and the return on messaging all describe the same carts.

The counts and sums come from the 15-minute buckets ``sequences.merchant.rollups`` keeps as carts and
messages change: at most 96 rows a day, however many carts. Money is Decimal in the store's
currency; rates are Decimal percentages, None when there is nothing to divide by.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, literal, text
from sqlalchemy import select as sql_select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlmodel import Session, col, select

from sequences.merchant import rollups
from sequences.merchant.store_settings import MAX_STEPS
from sequences.models import (
    Contact,
    DashboardCartBucket,
    DashboardMessageBucket,
    Message,
    MessageStatus,
    Store,
    WhatsAppAccount,
    WhatsAppTemplate,
)

DEFAULT_PERIOD_DAYS = 30
# A year at most: the daily series stays readable and the queries bounded.
MAX_PERIOD_DAYS = 366
FAILURES_SHOWN = 10
# PostgreSQL memory for the dashboard's grouping (per operation, this transaction only).
DASHBOARD_WORK_MEM = "32MB"
# Dates outside these years are typing mistakes (and year 1 overflows a UTC conversion).
EARLIEST_YEAR, LATEST_YEAR = 2000, 2100
PERCENT = Decimal("0.1")
ZERO = Decimal(0)

# Meta's codes, in the words a merchant needs (what happened, and whether to act).
PLAIN_WORDS = {
    "131049": "WhatsApp held it back: the shopper already had enough marketing messages today",
    "131050": "the shopper turned off marketing messages from businesses",
    "131026": "this number cannot receive WhatsApp messages (not on WhatsApp, or an old app)",
    "130472": "Meta held it back as part of a marketing experiment on this shopper",
    "131047": "more than 24 hours since the shopper's last reply",
    "131048": "Meta is limiting the number: shoppers reported messages as spam",
    "131053": "the product image could not be used (it must be a JPEG or PNG Meta can fetch)",
    "132001": "the template does not exist in this language on Meta",
    "132015": "Meta paused the template for low quality",
    "132016": "Meta disabled the template",
}


class PeriodError(ValueError):
    """A period the dashboard cannot show; the message names the parameter."""


@dataclass(frozen=True)
class Period:
    first_day: date
    last_day: date  # inclusive
    timezone: str

    @property
    def days(self) -> list[date]:
        return [self.first_day + timedelta(days=n) for n in range((self.last_day - self.first_day).days + 1)]

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first_day, time(0), tzinfo=ZoneInfo(self.timezone)).astimezone(UTC)

    @property
    def end(self) -> datetime:
        """Exclusive: midnight after the last day, local time."""
        after = self.last_day + timedelta(days=1)
        return datetime.combine(after, time(0), tzinfo=ZoneInfo(self.timezone)).astimezone(UTC)


def period_for(now: datetime, timezone: str, first: str | None = None, last: str | None = None) -> Period:
    """``first``/``last`` as YYYY-MM-DD (store days); by default the last 30 days, today included."""
    today = now.astimezone(ZoneInfo(timezone)).date()
    try:
        last_day = date.fromisoformat(last) if last else today
    except ValueError:
        raise PeriodError("to: use a date like 2026-11-28") from None
    if not EARLIEST_YEAR <= last_day.year <= LATEST_YEAR:
        raise PeriodError(f"to: choose a date between {EARLIEST_YEAR} and {LATEST_YEAR}")
    try:
        first_day = date.fromisoformat(first) if first else last_day - timedelta(days=DEFAULT_PERIOD_DAYS - 1)
    except ValueError:
        raise PeriodError("from: use a date like 2026-10-30") from None
    if not (first_day.year >= EARLIEST_YEAR and last_day.year <= LATEST_YEAR):
        raise PeriodError(f"from: choose dates between {EARLIEST_YEAR} and {LATEST_YEAR}")
    if first_day > last_day:
        raise PeriodError("from: must be on or before the 'to' date")
    if (last_day - first_day).days + 1 > MAX_PERIOD_DAYS:
        raise PeriodError(f"from: a period can be at most {MAX_PERIOD_DAYS} days")
    return Period(first_day, last_day, timezone)


class local_bucket(FunctionElement[Any]):
    """The group a time falls in, folded into store days afterwards: on PostgreSQL the store
    day itself (at most ~31 groups: hashed in memory, no sort); on SQLite, which has no time
    zones, its bucket number."""

    inherit_cache = True


@compiles(local_bucket, "postgresql")
def _bucket_pg(element: Any, compiler: Any, **kw: Any) -> str:
    column, zone = list(element.clauses)
    # The zone inline (quoted by SQLAlchemy): as a parameter, the SELECT's and the GROUP BY's
    # expressions would differ ($1 vs $2) and PostgreSQL would refuse the grouping.
    zone_sql = compiler.process(zone, **{**kw, "literal_binds": True})
    return f"CAST(timezone({zone_sql}, {compiler.process(column, **kw)}) AS DATE)"


@compiles(local_bucket, "sqlite")
def _bucket_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    column, _zone = list(element.clauses)
    return str(compiler.process(rollups.bucket_number(column), **kw))


@dataclass(frozen=True)
class StepFunnel:
    step: int
    sent: int
    delivered: int
    read: int
    clicked: int
    recovered: int


@dataclass(frozen=True)
class Day:
    day: date
    abandoned: int = 0
    messages: int = 0
    recovered: int = 0
    revenue: Decimal = ZERO


@dataclass(frozen=True)
class Failure:
    at: datetime
    step: int
    phone_end: str
    reason: str


@dataclass
class Dashboard:
    period: Period
    currency: str
    abandoned: int = 0
    reachable: int = 0
    recovered: int = 0
    revenue: Decimal = ZERO
    revenue_verified: Decimal = ZERO
    discounts: Decimal = ZERO
    sent: int = 0
    delivered: int = 0
    read: int = 0
    clicked: int = 0
    failed: int = 0
    cost: Decimal = ZERO
    # Delivered messages priced in a currency other than the store's (not in ``cost``).
    costs_in_other_currencies: int = 0
    # Carts messaged, and those whose shopper opted out while their sequence ran.
    carts_messaged: int = 0
    opt_outs: int = 0
    funnel: list[StepFunnel] = field(default_factory=list)
    daily: list[Day] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    quality_rating: str | None = None
    templates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def revenue_pending(self) -> Decimal:
        """Recovered revenue the platform has not confirmed yet: orders not re-read since they
        were placed, cash on delivery not collected, orders the platform no longer shows."""
        return self.revenue - self.revenue_verified

    @property
    def recovery_rate(self) -> Decimal | None:
        return percent(self.recovered, self.reachable)

    @property
    def delivered_rate(self) -> Decimal | None:
        return percent(self.delivered, self.sent)

    @property
    def read_rate(self) -> Decimal | None:
        return percent(self.read, self.sent)

    @property
    def clicked_rate(self) -> Decimal | None:
        return percent(self.clicked, self.sent)

    @property
    def opt_out_rate(self) -> Decimal | None:
        return percent(self.opt_outs, self.carts_messaged)

    @property
    def roi(self) -> Decimal | None:
        """Recovered revenue per unit of messaging cost ("₹212 back for every ₹1 spent"); none
        claimed while some costs are in another currency (they are not in ``cost``)."""
        if not self.cost or self.costs_in_other_currencies:
            return None
        return (self.revenue / self.cost).quantize(PERCENT, rounding=ROUND_HALF_UP)


def percent(part: int, whole: int) -> Decimal | None:
    if not whole:
        return None
    return (Decimal(part) * 100 / Decimal(whole)).quantize(PERCENT, rounding=ROUND_HALF_UP)


def _money(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def build(session: Session, store: Store, period: Period) -> Dashboard:
    """The period's figures from the kept 15-minute buckets (``sequences.merchant.rollups``), grouped
    by store day; then the latest failures and the number's health."""
    assert store.id is not None
    if session.get_bind().dialect.name == "postgresql":
        # A year is ~35,000 cart and ~140,000 message buckets to group by day: sorted on disk
        # with the default 4 MB of work_mem. For this transaction only.
        session.execute(text(f"SET LOCAL work_mem = '{DASHBOARD_WORK_MEM}'"))
    board = Dashboard(period=period, currency=store.currency)
    zone = ZoneInfo(period.timezone)
    days: dict[date, dict[str, Any]] = {
        day: {"abandoned": 0, "messages": 0, "recovered": 0, "revenue": ZERO} for day in period.days
    }
    recovered_by_step: dict[int, int] = {}
    _carts(session, store, period, board, zone, days, recovered_by_step)
    _messages(session, store, period, board, zone, days, recovered_by_step)
    # Sums are exact (4 decimals); shown in cents, each rounded once.
    board.revenue, board.revenue_verified = _money(board.revenue), _money(board.revenue_verified)
    board.discounts, board.cost = _money(board.discounts), _money(board.cost)
    board.daily = [
        Day(day, **(values | {"revenue": _money(values["revenue"])})) for day, values in days.items()
    ]
    board.failures = _failures(session, store, period)
    _channel(session, store, board)
    return board


def _carts(
    session: Session,
    store: Store,
    period: Period,
    board: Dashboard,
    zone: ZoneInfo,
    days: dict[date, dict[str, Any]],
    recovered_by_step: dict[int, int],
) -> None:
    table = DashboardCartBucket
    bucket = local_bucket(col(table.bucket_start), literal(period.timezone))
    rows = session.execute(
        sql_select(bucket, *(func.sum(getattr(table, name)) for name in rollups.CART_FIGURES))
        .where(rollups.in_buckets(table, store.id, period.start, period.end))
        .group_by(bucket)
    ).all()
    for at, *values in rows:
        figures = dict(zip(rollups.CART_FIGURES, values, strict=True))
        gained = rollups.exact(figures["revenue"])
        board.abandoned += int(figures["abandoned"])
        board.reachable += int(figures["reachable"])
        board.recovered += int(figures["recovered"])
        board.carts_messaged += int(figures["messaged"])
        board.opt_outs += int(figures["opted_out"])
        board.revenue += gained
        board.revenue_verified += rollups.exact(figures["revenue_verified"])
        board.discounts += rollups.exact(figures["discounts"])
        for step in range(1, MAX_STEPS + 1):
            recovered_by_step[step] = recovered_by_step.get(step, 0) + int(figures[f"recovered_step_{step}"])
        totals = days.get(_local_day(at, zone))
        if totals is not None:
            totals["abandoned"] += int(figures["abandoned"])
            totals["recovered"] += int(figures["recovered"])
            totals["revenue"] += gained


def _messages(
    session: Session,
    store: Store,
    period: Period,
    board: Dashboard,
    zone: ZoneInfo,
    days: dict[date, dict[str, Any]],
    recovered_by_step: dict[int, int],
) -> None:
    table = DashboardMessageBucket
    bucket = local_bucket(col(table.bucket_start), literal(period.timezone))
    rows = session.execute(
        sql_select(
            bucket,
            col(table.step_number),
            col(table.cost_currency),
            *(func.sum(getattr(table, name)) for name in rollups.MESSAGE_FIGURES),
        )
        .where(rollups.in_buckets(table, store.id, period.start, period.end))
        .group_by(bucket, col(table.step_number), col(table.cost_currency))
    ).all()
    funnel: dict[int, list[int]] = {}
    for at, step, currency, *values in rows:
        figures = dict(zip(rollups.MESSAGE_FIGURES, values, strict=True))
        counts = funnel.setdefault(int(step), [0, 0, 0, 0])
        for index, name in enumerate(("sent", "delivered", "read", "clicked")):
            counts[index] += int(figures[name])
        board.failed += int(figures["failed"])
        # Costs come from a rate card in its own currency; only those in the store's currency
        # add up here (others are counted, and then no return on messaging is claimed).
        if currency == store.currency:
            board.cost += rollups.exact(figures["cost"])
        elif currency:
            board.costs_in_other_currencies += int(figures["priced"])
        totals = days.get(_local_day(at, zone))
        if totals is not None:
            totals["messages"] += int(figures["sent"])
    for step in sorted(funnel):
        sent, step_delivered, step_read, clicked = funnel[step]
        board.funnel.append(
            StepFunnel(step, sent, step_delivered, step_read, clicked, recovered_by_step.get(step, 0))
        )
        board.sent += sent
        board.delivered += step_delivered
        board.read += step_read
        board.clicked += clicked


def _local_day(bucket: Any, zone: ZoneInfo) -> date:
    """The store day of a group: PostgreSQL answers the day, SQLite a bucket number."""
    if isinstance(bucket, date):
        return bucket
    return datetime.fromtimestamp(int(bucket) * rollups.BUCKET_SECONDS, UTC).astimezone(zone).date()


def in_plain_words(code: str | None, detail: str | None) -> str:
    if code and code in PLAIN_WORDS:
        return PLAIN_WORDS[code]
    if detail:
        return detail
    return f"WhatsApp error {code}" if code else "failed without a reason from WhatsApp"


def _failures(session: Session, store: Store, period: Period) -> list[Failure]:
    rows = session.execute(
        sql_select(
            col(Message.failed_at),
            col(Message.created_at),
            col(Message.step_number),
            col(Message.error_code),
            col(Message.error_detail),
            col(Contact.phone_e164),
        )
        .join(Contact, col(Contact.id) == col(Message.contact_id))
        .where(
            col(Message.store_id) == store.id,
            col(Message.status) == MessageStatus.FAILED,
            col(Message.cart_abandoned_at) >= period.start,
            col(Message.cart_abandoned_at) < period.end,
        )
        .order_by(col(Message.id).desc())
        .limit(FAILURES_SHOWN)
    ).all()
    return [
        Failure(
            at=failed_at or created_at,
            step=step,
            phone_end=phone[-4:] if phone.startswith("+") else "erased",
            reason=in_plain_words(code, detail),
        )
        for failed_at, created_at, step, code, detail, phone in rows
    ]


def _channel(session: Session, store: Store, board: Dashboard) -> None:
    account = session.exec(select(WhatsAppAccount).where(WhatsAppAccount.store_id == store.id)).first()
    board.quality_rating = account.quality_rating if account else None
    board.templates = [
        {"name": t.name, "language": t.language, "status": t.status, "reason": t.reason}
        for t in session.exec(
            select(WhatsAppTemplate)
            .where(WhatsAppTemplate.store_id == store.id)
            .order_by(col(WhatsAppTemplate.language), col(WhatsAppTemplate.name))
        ).all()
    ]


def as_json(board: Dashboard) -> dict[str, Any]:
    """The API's shape: money as strings (exact), rates as strings or null."""

    def as_text(value: Decimal | None) -> str | None:
        return None if value is None else str(value)

    return {
        "period": {
            "from": board.period.first_day.isoformat(),
            "to": board.period.last_day.isoformat(),
            "timezone": board.period.timezone,
        },
        "currency": board.currency,
        "carts": {
            "abandoned": board.abandoned,
            "reachable": board.reachable,
            "recovered": board.recovered,
            "recovery_rate": as_text(board.recovery_rate),
        },
        "revenue": {
            # Reconciled (confirmed by the platform) and pending add up to the recovered figure.
            "recovered": str(board.revenue),
            "reconciled": str(board.revenue_verified),
            "pending_reconciliation": str(board.revenue_pending),
            "verified": str(board.revenue_verified),
            "discounts": str(board.discounts),
        },
        "messages": {
            "sent": board.sent,
            "delivered": board.delivered,
            "read": board.read,
            "clicked": board.clicked,
            "failed": board.failed,
            "delivered_rate": as_text(board.delivered_rate),
            "read_rate": as_text(board.read_rate),
            "clicked_rate": as_text(board.clicked_rate),
            "cost": str(board.cost),
            "costs_in_other_currencies": board.costs_in_other_currencies,
        },
        "roi": as_text(board.roi),
        "opt_outs": {
            "count": board.opt_outs,
            "carts_messaged": board.carts_messaged,
            "rate": as_text(board.opt_out_rate),
        },
        "funnel": [vars(step) for step in board.funnel],
        "daily": [
            {
                "day": day.day.isoformat(),
                "abandoned": day.abandoned,
                "messages": day.messages,
                "recovered": day.recovered,
                "revenue": str(day.revenue),
            }
            for day in board.daily
        ],
        "failures": [
            {"at": f.at.isoformat(), "step": f.step, "phone_end": f.phone_end, "reason": f.reason}
            for f in board.failures
        ],
        "whatsapp": {"quality_rating": board.quality_rating, "templates": board.templates},
    }
