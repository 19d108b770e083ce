"""The alert rules: each looks at one store (or the service) now and returns a Finding when its
condition holds, with the evidence and what to do. Cheap reads only (indexed ranges, the
dashboard's kept buckets, rows of the store): they run every minute for every store.

A rule says nothing about how long the condition must hold or clear: ``incidents`` adds that
(hysteresis), so one flapping condition is one incident.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import func
from sqlalchemy import select as sql_select
from sqlmodel import Session, col, select

from sequences.models import (
    Cart,
    DashboardCartBucket,
    DashboardMessageBucket,
    DeliveryStatus,
    Message,
    MessageStatus,
    ReconciliationRun,
    RunStatus,
    Store,
    TemplateStatus,
    WebhookDelivery,
    WhatsAppAccount,
    WhatsAppTemplate,
)
from sequences.runtime import Runtime
from sequences.whatsapp.messaging_limit import limit_of, shoppers_messaged

WARNING, CRITICAL = "warning", "critical"

# Webhook silence: the store's usual gap between checkout activity is learned from this much
# history (at least LEARN_MIN_GAPS gaps), as a high quantile so that nights and quiet days are
# part of "usual"; silence counts once it lasts SILENCE_FACTOR times that, and never less than
# SILENCE_FLOOR (a busy store's 2-minute gap is no reason to page anyone after 6 minutes).
LEARN_WINDOW = timedelta(days=28)
LEARN_MIN_GAPS = 20
GAP_QUANTILE = 0.99
SILENCE_FACTOR = 3.0
SILENCE_FLOOR = timedelta(hours=1)
LEARNED_GAP_KEY = "cartback:usual-gap:{store_id}"
LEARNED_GAP_TTL_S = 3600
# Failed deliveries: over the last 30 minutes, at least this many and this share of attempts.
FAILED_WINDOW = timedelta(minutes=30)
FAILED_MIN = 10
FAILED_SHARE = 0.25
# Rates: the carts abandoned 48 to 24 hours ago (their reads and orders have mostly arrived)
# against the 28 days before; a fall counts when it is beyond chance (z below -3, one-sided
# p < 0.0015 per evaluation) and at least RATE_DROP of the baseline, on RATE_MIN_N messages.
RATE_RECENT = (timedelta(hours=48), timedelta(hours=24))
RATE_BASELINE = timedelta(days=28)
RATE_Z = -3.0
RATE_DROP = 0.2
RATE_MIN_N = 50
# A platform that has failed every call for this long.
PLATFORM_FAILING_FOR = timedelta(minutes=15)
# Meta's daily messaging limit: warn at this share of it.
LIMIT_NEAR = 0.8
# Reconciliation differences: a run of the last week that found new ones.
RECONCILIATION_RECENT = timedelta(days=8)
# Service: a due cart waiting this long means the workers are not keeping up; a delivery
# stored and not applied for this long means the intake is stalled.
STEPS_LATE_AFTER = timedelta(seconds=60)
DELIVERIES_PENDING_AFTER = timedelta(minutes=5)


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    title: str
    action: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoreContext:
    runtime: Runtime
    session: Session
    store: Store
    now: datetime

    @property
    def store_id(self) -> int:
        assert self.store.id is not None
        return self.store.id


def _minutes(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} minutes"
    return f"{minutes // 60} hours" if minutes < 72 * 60 else f"{minutes // 1440} days"


# -- the store's rules ---------------------------------------------------------------------------


def usual_gap(ctx: StoreContext) -> timedelta | None:
    """The store's usual longest quiet spell between checkouts (learned, cached an hour)."""
    key = LEARNED_GAP_KEY.format(store_id=ctx.store_id)
    try:
        cached = ctx.runtime.redis.get(key)
    except RedisError:
        cached = None
    if cached is not None:
        seconds = float(cached)
        return None if seconds < 0 else timedelta(seconds=seconds)
    times = ctx.session.exec(
        select(Cart.last_activity_at)
        .where(Cart.store_id == ctx.store_id, col(Cart.last_activity_at) >= ctx.now - LEARN_WINDOW)
        .order_by(col(Cart.last_activity_at))
    ).all()
    gaps = sorted((b - a).total_seconds() for a, b in itertools.pairwise(times))
    learned = gaps[min(len(gaps) - 1, int(GAP_QUANTILE * len(gaps)))] if len(gaps) >= LEARN_MIN_GAPS else -1.0
    with contextlib.suppress(RedisError):
        ctx.runtime.redis.set(key, learned, ex=LEARNED_GAP_TTL_S)
    return None if learned < 0 else timedelta(seconds=learned)


def webhooks_silent(ctx: StoreContext) -> Finding | None:
    gap = usual_gap(ctx)
    if gap is None:
        return None  # too little history to know what quiet means for this store
    last: datetime | None = ctx.session.exec(
        select(func.max(Cart.last_activity_at)).where(Cart.store_id == ctx.store_id)
    ).one()
    if last is None:  # the type says otherwise; max() over no rows is NULL
        return None
    threshold = max(gap * SILENCE_FACTOR, SILENCE_FLOOR)
    silent = ctx.now - last
    if silent <= threshold:
        return None
    return Finding(
        "webhooks_silent",
        CRITICAL,
        f"No checkout has reached cartback for {_minutes(silent)} (your store's usual longest gap is {_minutes(gap)})",
        "Check that your store still sends cartback its checkouts: on Shopify, that cartback is installed "
        "(Apps); on WooCommerce, that the cartback plugin is active and its webhooks are not disabled "
        "(WooCommerce → Settings → Advanced → Webhooks). A theme or checkout change can also stop them.",
        {"last_checkout_at": last.isoformat(), "silent_seconds": int(silent.total_seconds()),
         "usual_gap_seconds": int(gap.total_seconds()), "threshold_seconds": int(threshold.total_seconds())},
    )  # fmt: skip


def failed_deliveries(ctx: StoreContext) -> Finding | None:
    since = ctx.now - FAILED_WINDOW
    failed = ctx.session.exec(
        select(func.count())
        .select_from(Message)
        .where(
            Message.store_id == ctx.store_id,
            Message.status == MessageStatus.FAILED,
            col(Message.failed_at) >= since,
        )
    ).one()
    if failed < FAILED_MIN:
        return None
    # Steps go out within a day of the abandonment: the dashboard's index bounds the range.
    attempted = ctx.session.exec(
        select(func.count())
        .select_from(Message)
        .where(
            Message.store_id == ctx.store_id,
            col(Message.cart_abandoned_at) >= since - timedelta(days=2),
            col(Message.created_at) >= since,
        )
    ).one()
    share = failed / max(attempted, failed)
    if share < FAILED_SHARE:
        return None
    return Finding(
        "failed_deliveries",
        CRITICAL,
        f"{failed} of {max(attempted, failed)} reminders failed in the last 30 minutes",
        "Open the dashboard's latest failures for Meta's reasons: a paused template, numbers not on "
        "WhatsApp, Meta's per-user limits. Sending pauses by itself when the number is at risk.",
        {"failed": failed, "attempted": max(attempted, failed), "share": round(share, 3)},
    )


def _fall(recent_hits: int, recent_n: int, base_hits: int, base_n: int) -> tuple[float, float, float] | None:
    """(z, recent rate, baseline rate) when the recent rate fell beyond chance and by enough."""
    if recent_n < RATE_MIN_N or base_n < RATE_MIN_N:
        return None
    baseline = base_hits / base_n
    if not 0 < baseline < 1:
        return None
    rate = recent_hits / recent_n
    z = (recent_hits - recent_n * baseline) / math.sqrt(recent_n * baseline * (1 - baseline))
    if z >= RATE_Z or rate > baseline * (1 - RATE_DROP):
        return None
    return z, rate, baseline


def _bucket_sums(
    ctx: StoreContext, table: Any, names: tuple[str, str], start: datetime, end: datetime
) -> tuple[int, int]:
    row = ctx.session.execute(
        sql_select(*(func.coalesce(func.sum(getattr(table, name)), 0) for name in names)).where(
            table.store_id == ctx.store_id, table.bucket_start >= start, table.bucket_start < end
        )
    ).one()
    return int(row[0]), int(row[1])


def read_rate_fall(ctx: StoreContext) -> Finding | None:
    return _rate_rule(ctx, DashboardMessageBucket, ("read", "sent"), "read_rate_fall", "read",
                      "Fewer shoppers read your reminders: check the number's quality and the template's wording "
                      "(WhatsApp Manager), and whether your offers changed.")  # fmt: skip


def recovery_rate_fall(ctx: StoreContext) -> Finding | None:
    return _rate_rule(ctx, DashboardCartBucket, ("recovered", "reachable"), "recovery_rate_fall", "recovery",
                      "Fewer carts come back: try the recovery link yourself (Settings → Send test message), "
                      "check your checkout and your offers.")  # fmt: skip


def _rate_rule(
    ctx: StoreContext, table: Any, names: tuple[str, str], rule: str, what: str, action: str
) -> Finding | None:
    newest, oldest = RATE_RECENT
    recent = _bucket_sums(ctx, table, names, ctx.now - newest, ctx.now - oldest)
    base = _bucket_sums(ctx, table, names, ctx.now - newest - RATE_BASELINE, ctx.now - newest)
    fell = _fall(recent[0], recent[1], base[0], base[1])
    if fell is None:
        return None
    z, rate, baseline = fell
    return Finding(
        rule,
        WARNING,
        f"Your {what} rate fell to {rate:.1%} from its usual {baseline:.1%} (yesterday's carts against the 28 days before)",
        action,
        {"rate": round(rate, 4), "baseline": round(baseline, 4), "z": round(z, 2), "n": recent[1], "baseline_n": base[1]},
    )  # fmt: skip


def number_quality(ctx: StoreContext) -> Finding | None:
    account = ctx.session.exec(
        select(WhatsAppAccount).where(WhatsAppAccount.store_id == ctx.store_id)
    ).first()
    if account is None or account.quality_rating not in ("YELLOW", "RED"):
        return None
    red = account.quality_rating == "RED"
    return Finding(
        "number_quality",
        CRITICAL if red else WARNING,
        f"Your WhatsApp number's quality is {account.quality_rating}",
        "Shoppers are blocking or reporting your messages. Send fewer reminders (Settings: steps, cap), "
        "make the offer clearer, and check WhatsApp Manager → Insights."
        + (" Sending is paused until the rating recovers." if red else ""),
        {"quality": account.quality_rating, "number": (account.display_phone_number or "")[-4:]},
    )


def template_paused(ctx: StoreContext) -> Finding | None:
    bad = ctx.session.exec(
        select(WhatsAppTemplate.name, WhatsAppTemplate.language, WhatsAppTemplate.status).where(
            WhatsAppTemplate.store_id == ctx.store_id,
            col(WhatsAppTemplate.status).in_(
                [
                    TemplateStatus.PAUSED,
                    TemplateStatus.REJECTED,
                    TemplateStatus.DISABLED,
                    TemplateStatus.FAILING,
                ]
            ),
        )
    ).all()
    if not bad:
        return None
    names = [f"{name} ({language}): {status}" for name, language, status in bad]
    return Finding(
        "template_paused",
        CRITICAL,
        f"{len(bad)} reminder template{'s' if len(bad) > 1 else ''} cannot be used: {', '.join(names)}",
        "Meta paused or rejected the template: see its reason in Settings → WhatsApp, edit the wording and "
        "push it again (`cartback templates push`). Reminders that need it wait meanwhile.",
        {"templates": names},
    )


def token_refresh_failing(ctx: StoreContext) -> Finding | None:
    expires = ctx.store.access_token_expires_at
    if expires is None or expires > ctx.now:
        return None
    return Finding(
        "token_refresh_failing",
        CRITICAL,
        "cartback's access to your store expired and could not be renewed",
        "Open cartback from your store's admin once (Shopify: Apps → cartback): that renews the access. "
        "Until then, links cannot rebuild checkouts.",
        {"expired_at": expires.isoformat()},
    )


def platform_failing(ctx: StoreContext) -> Finding | None:
    since = ctx.store.platform_failing_since
    if since is None or ctx.now - since < PLATFORM_FAILING_FOR:
        return None
    return Finding(
        "platform_failing",
        CRITICAL,
        f"Your store's API has refused cartback for {_minutes(ctx.now - since)}",
        "Check your store's status and cartback's access (its API keys or app permissions); "
        f"the last answer was: {ctx.store.platform_failure or 'unknown'}.",
        {"since": since.isoformat(), "last_failure": ctx.store.platform_failure},
    )


def messaging_limit(ctx: StoreContext) -> Finding | None:
    account = ctx.session.exec(
        select(WhatsAppAccount).where(WhatsAppAccount.store_id == ctx.store_id)
    ).first()
    limit = limit_of(account.messaging_limit_tier if account is not None else None)
    if limit is None:
        return None
    messaged = shoppers_messaged(ctx.session, ctx.store_id, ctx.now)
    if messaged < limit * LIMIT_NEAR:
        return None
    reached = messaged >= limit
    return Finding(
        "messaging_limit",
        CRITICAL if reached else WARNING,
        f"{messaged:,} of your {limit:,} shoppers a day on WhatsApp: Meta's daily messaging limit is "
        + ("reached" if reached else "near"),
        "Meta lets your business message this many different shoppers a day; beyond it, reminders fail. "
        "Keep quality high and Meta raises the limit by itself (WhatsApp Manager → Messaging limits); "
        "meanwhile fewer steps per cart leave room for more shoppers.",
        {"messaged_24h": messaged, "limit": limit, "tier": account.messaging_limit_tier if account else None},
    )


def reconciliation_differences(ctx: StoreContext) -> Finding | None:
    run = ctx.session.exec(
        select(ReconciliationRun)
        .where(ReconciliationRun.store_id == ctx.store_id, ReconciliationRun.status == RunStatus.DONE)
        .order_by(col(ReconciliationRun.created_at).desc())
        .limit(1)
    ).first()
    if run is None or run.finished_at is None or ctx.now - run.finished_at > RECONCILIATION_RECENT:
        return None
    new = [
        d for d in run.report.get("differences") or [] if d.get("new") and d.get("kind") != "awaiting_payment"
    ]
    cost_days = [
        d["day"] for d in (run.report.get("messaging") or {}).get("days") or [] if d.get("explanation")
    ]
    if not new and not cost_days:
        return None
    parts = ([f"{len(new)} recovered order{'s' if len(new) > 1 else ''} changed"] if new else []) + (
        [f"Meta's charges differ on {len(cost_days)} day{'s' if len(cost_days) > 1 else ''}"]
        if cost_days
        else []
    )
    return Finding(
        "reconciliation_differences",
        WARNING,
        f"Reconciliation found differences: {' and '.join(parts)}",
        "Read the report (Reconciliation): each difference says why. Your dashboard already counts "
        "the reconciled figures.",
        {"run_id": run.id, "orders": [d["order_id"] for d in new], "cost_days": cost_days},
    )


STORE_RULES: list[Callable[[StoreContext], Finding | None]] = [
    webhooks_silent,
    failed_deliveries,
    read_rate_fall,
    recovery_rate_fall,
    number_quality,
    template_paused,
    token_refresh_failing,
    platform_failing,
    messaging_limit,
    reconciliation_differences,
]


# -- the operator's rules ----------------------------------------------------------------------


def steps_late(session: Session, now: datetime) -> Finding | None:
    oldest = session.exec(select(func.min(Cart.next_wake_at)).where(col(Cart.next_wake_at) <= now)).one()
    if oldest is None or now - oldest <= STEPS_LATE_AFTER:
        return None
    late = session.exec(
        select(func.count()).select_from(Cart).where(col(Cart.next_wake_at) < now - STEPS_LATE_AFTER)
    ).one()
    return Finding(
        "steps_late",
        CRITICAL,
        f"{late} carts are over a minute past their moment (the oldest by {_minutes(now - oldest)})",
        "Workers are not keeping up or have stopped: check `cartback worker` runs, its logs, the database "
        "and Redis; add workers.",
        {"late_carts": late, "oldest_due_at": oldest.isoformat()},
    )


def deliveries_pending(session: Session, now: datetime) -> Finding | None:
    oldest = session.exec(
        select(func.min(WebhookDelivery.received_at)).where(
            col(WebhookDelivery.status) == DeliveryStatus.PENDING
        )
    ).one()
    if oldest is None or now - oldest <= DELIVERIES_PENDING_AFTER:
        return None
    return Finding(
        "deliveries_pending",
        CRITICAL,
        f"Webhook deliveries have waited {_minutes(now - oldest)} to be applied",
        "The workers apply deliveries: check they run and can reach the database; `cartback sweep` applies "
        "what is waiting.",
        {"oldest_received_at": oldest.isoformat()},
    )


SERVICE_RULES: list[Callable[[Session, datetime], Finding | None]] = [steps_late, deliveries_pending]
