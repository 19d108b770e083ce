"""What Meta charged for a store's reminders, day by day, against what cartback recorded.

Meta sends no price with a message: cartback prices each delivered marketing template from its
rate card (``whatsapp.inbound.statuses.MARKETING_RATES``). Meta's own figures come from the
WhatsApp Business Account's pricing analytics (``GET /{waba}?fields=pricing_analytics...``),
per UTC day, for the store's number and the MARKETING category. Each day that differs is
explained; GST, which Meta adds on its invoice to an Indian business, is shown on top.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from channels.whatsapp.graph import GraphError, GraphUnreachable
from sequences.models import Message, WhatsAppAccount
from sequences.runtime import Runtime
from sequences.whatsapp.accounts import graph_for

# GST on Meta's WhatsApp charges to a business in India (IGST, 18 %), added on Meta's invoice;
# the analytics and the rate card are both before tax.
GST_PERCENT = Decimal(18)
# A day's costs agree when they differ by less than this (Meta rounds per message).
COST_TOLERANCE = Decimal("0.01")
# Steps go out within a day or two of the abandonment: a message delivered on a day belongs to
# a cart abandoned at most this long before (lets the query use the dashboard's index).
STEP_SPAN = timedelta(days=3)
CENTS = Decimal("0.01")
ZERO = Decimal(0)


@dataclass(frozen=True)
class CostDay:
    day: date
    recorded_messages: int
    recorded_cost: Decimal
    meta_messages: int
    meta_cost: Decimal
    explanation: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "recorded_messages": self.recorded_messages,
            "recorded_cost": str(self.recorded_cost),
            "meta_messages": self.meta_messages,
            "meta_cost": str(self.meta_cost),
            "difference": str(self.meta_cost - self.recorded_cost),
            "explanation": self.explanation,
        }


def _recorded(runtime: Runtime, store_id: int, day: date) -> tuple[int, Decimal, str | None]:
    start = datetime.combine(day, time(), UTC)
    end = start + timedelta(days=1)
    with runtime.database.session() as session:
        count, total, currency = session.exec(
            select(func.count(), func.sum(Message.cost), func.max(Message.cost_currency)).where(
                Message.store_id == store_id,
                col(Message.cart_abandoned_at) >= start - STEP_SPAN,
                col(Message.cart_abandoned_at) < end,
                col(Message.delivered_at) >= start,
                col(Message.delivered_at) < end,
                col(Message.cost).is_not(None),
            )
        ).one()
    return int(count or 0), Decimal(total or 0).quantize(Decimal("0.0001")), currency


def _amount(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value is not None else ZERO
    except InvalidOperation:
        return ZERO


def _meta_days(
    runtime: Runtime, account: WhatsAppAccount, first: date, last: date
) -> tuple[dict[date, tuple[int, Decimal]], str]:
    """Meta's billed marketing messages and their cost per UTC day, and the account's currency."""
    start = int(datetime.combine(first, time(), UTC).timestamp())
    end = int(datetime.combine(last + timedelta(days=1), time(), UTC).timestamp())
    phone = re.sub(r"\D", "", account.display_phone_number or "")
    expansion = (
        f"pricing_analytics.start({start}).end({end}).granularity(DAILY)"
        '.metric_types(["COST","VOLUME"]).pricing_categories(["MARKETING"]).pricing_types(["REGULAR"])'
        + (f'.phone_numbers(["{phone}"])' if phone else "")
        + '.dimensions(["PRICING_CATEGORY"])'
    )
    answer = graph_for(runtime, account).get(account.waba_id, fields=f"currency,{expansion}")
    days: dict[date, tuple[int, Decimal]] = {}
    for block in (answer.get("pricing_analytics") or {}).get("data") or []:
        for point in block.get("data_points") or []:
            day = datetime.fromtimestamp(int(point.get("start") or 0), UTC).date()
            volume, cost = days.get(day, (0, ZERO))
            days[day] = (volume + int(point.get("volume") or 0), cost + _amount(point.get("cost")))
    return days, str(answer.get("currency") or "")


def _explain(
    recorded: int, recorded_cost: Decimal, billed: int, billed_cost: Decimal, money: str
) -> str | None:
    if billed > recorded:
        return (
            f"Meta billed {billed - recorded} more message(s) than cartback saw delivered: a delivery "
            "receipt was lost or came late, or another app sends marketing messages from this number"
        )
    if billed < recorded:
        return (
            f"cartback recorded {recorded - billed} delivered message(s) Meta did not bill: Meta's figures "
            "can lag by a day (the next run compares again), or Meta counted them free"
        )
    if abs(billed_cost - recorded_cost) >= COST_TOLERANCE and billed:
        per_message = (billed_cost / billed).quantize(Decimal("0.0001"))
        ours = (recorded_cost / recorded).quantize(Decimal("0.0001")) if recorded else ZERO
        return (
            f"the same {billed} message(s), but Meta charged {money}{per_message} each against cartback's "
            f"rate card of {money}{ours}: Meta's price changed, so the dashboard's cost is off until the "
            "rate card is updated"
        )
    return None


def compare_costs(runtime: Runtime, store_id: int, first: date, last: date) -> dict[str, Any]:
    """The report's messaging section for the UTC days ``first``..``last``."""
    if not runtime.transport.needs_whatsapp_account:
        return {"available": False, "note": "the sandbox transport sends nothing through Meta: no charges"}
    with runtime.database.session() as session:
        account = session.exec(select(WhatsAppAccount).where(WhatsAppAccount.store_id == store_id)).first()
    if account is None:
        return {"available": False, "note": "no WhatsApp number is connected"}
    try:
        billed, currency = _meta_days(runtime, account, first, last)
    except GraphError as error:
        return {
            "available": False,
            "note": f"Meta refused the pricing analytics ({error}); the next run tries again",
        }
    except GraphUnreachable as error:
        return {"available": False, "note": f"could not reach Meta ({error}); the next run tries again"}
    days: list[CostDay] = []
    recorded_currency: str | None = None
    day = first
    while day <= last:
        count, cost, currency_here = _recorded(runtime, store_id, day)
        recorded_currency = recorded_currency or currency_here
        meta_count, meta_cost = billed.get(day, (0, ZERO))
        days.append(
            CostDay(
                day,
                count,
                cost,
                meta_count,
                meta_cost,
                _explain(count, cost, meta_count, meta_cost, f"{currency} "),
            )
        )
        day += timedelta(days=1)
    meta_total = sum((d.meta_cost for d in days), ZERO)
    recorded_total = sum((d.recorded_cost for d in days), ZERO)
    # Meta's invoice to an Indian business (billed in rupees) carries GST on top.
    gst = (
        (meta_total * GST_PERCENT / 100).quantize(CENTS, rounding=ROUND_HALF_UP)
        if currency == "INR"
        else ZERO
    )
    section: dict[str, Any] = {
        "available": True,
        "currency": currency,
        "days": [d.as_json() for d in days],
        "recorded_messages": sum(d.recorded_messages for d in days),
        "recorded_cost": str(recorded_total.quantize(CENTS, rounding=ROUND_HALF_UP)),
        "meta_messages": sum(d.meta_messages for d in days),
        "meta_cost": str(meta_total.quantize(CENTS, rounding=ROUND_HALF_UP)),
        "gst_percent": str(GST_PERCENT) if currency == "INR" else None,
        "gst": str(gst),
        "meta_cost_with_gst": str((meta_total + gst).quantize(CENTS, rounding=ROUND_HALF_UP)),
        "days_differing": sum(1 for d in days if d.explanation),
    }
    if recorded_currency and currency and recorded_currency != currency:
        section["note"] = (
            f"cartback's rate card is in {recorded_currency} and Meta bills this account in {currency}: "
            "compare the message counts"
        )
    return section
