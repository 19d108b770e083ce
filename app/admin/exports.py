"""CSV exports of the dashboard's period: its carts and their messages.

Streamed in batches (keyset pagination on the id), so a year of a big store's carts never sits
in memory. Phones appear as their last 4 digits only, as everywhere in the admin. Times are
the store's local time with their offset; money is exact, in the store's currency.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select as sql_select
from sqlmodel import col

from sequences.merchant.dashboard import Period, in_plain_words
from sequences.models import Cart, CartStatus, Contact, Message, Store
from sequences.runtime import Runtime

BATCH = 1000
# A cell starting with one of these is a formula to a spreadsheet: quoted so it stays text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

CART_COLUMNS = (
    "cart_id",
    "checkout_id",
    "status",
    "status_reason",
    "abandoned_at",
    "last_activity_at",
    "phone_ending",
    "items",
    "currency",
    "cart_total",
    "first_message_at",
    "order_id",
    "ordered_at",
    "order_total",
    "refunded",
    "order_cancelled_at",
    "revenue_verified_at",
    "recovered_revenue",
    "discount_given",
    "recovered_after_step",
)
MESSAGE_COLUMNS = (
    "message_id",
    "cart_id",
    "step",
    "template",
    "language",
    "status",
    "created_at",
    "sent_at",
    "delivered_at",
    "read_at",
    "clicked_at",
    "failed_at",
    "failure_reason",
    "cost",
    "cost_currency",
)


def _cell(value: Any, zone: ZoneInfo) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(zone).isoformat(timespec="seconds")
    if isinstance(value, Decimal):
        return format(value.quantize(Decimal("0.01")), "f")
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _lines(header: Sequence[str], rows: Iterator[Sequence[Any]], zone: ZoneInfo) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    yield buffer.getvalue()
    for row in rows:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([_cell(value, zone) for value in row])
        yield buffer.getvalue()


def _recovered_revenue(cart: Cart) -> Decimal | None:
    if (
        cart.status != CartStatus.RECOVERED
        or cart.order_cancelled_at is not None
        or cart.order_total_store is None
    ):
        return None
    return cart.order_total_store - (cart.order_refunded or Decimal(0))


def _cart_rows(runtime: Runtime, store: Store, period: Period) -> Iterator[Sequence[Any]]:
    after = 0
    while True:
        with runtime.database.session() as session:
            batch = session.execute(
                sql_select(Cart, col(Contact.phone_e164))
                .outerjoin(Contact, col(Contact.id) == col(Cart.contact_id))
                .where(
                    col(Cart.store_id) == store.id,
                    col(Cart.abandoned_at) >= period.start,
                    col(Cart.abandoned_at) < period.end,
                    col(Cart.id) > after,
                )
                .order_by(col(Cart.id))
                .limit(BATCH)
            ).all()
        if not batch:
            return
        for cart, phone in batch:
            yield (
                cart.id,
                cart.platform_cart_id,
                cart.status,
                cart.status_reason,
                cart.abandoned_at,
                cart.last_activity_at,
                phone[-4:] if phone and phone.startswith("+") else "",
                cart.line_count,
                cart.currency,
                cart.total,
                cart.first_message_at,
                cart.order_platform_id,
                cart.ordered_at,
                cart.order_total_store,
                cart.order_refunded,
                cart.order_cancelled_at,
                cart.order_verified_at,
                _recovered_revenue(cart),
                cart.discount_given,
                cart.recovered_step,
            )
        after = batch[-1][0].id


def _message_rows(runtime: Runtime, store: Store, period: Period) -> Iterator[Sequence[Any]]:
    after = 0
    while True:
        with runtime.database.session() as session:
            batch = (
                session.execute(
                    sql_select(Message)
                    .where(
                        col(Message.store_id) == store.id,
                        col(Message.cart_abandoned_at) >= period.start,
                        col(Message.cart_abandoned_at) < period.end,
                        col(Message.id) > after,
                    )
                    .order_by(col(Message.id))
                    .limit(BATCH)
                )
                .scalars()
                .all()
            )
        if not batch:
            return
        for message in batch:
            failed = message.status == "failed"
            yield (
                message.id,
                message.cart_id,
                message.step_number,
                message.template_name,
                message.language,
                message.status,
                message.created_at,
                message.sent_at,
                message.delivered_at,
                message.read_at,
                message.clicked_at,
                message.failed_at,
                in_plain_words(message.error_code, message.error_detail) if failed else "",
                message.cost,
                message.cost_currency,
            )
        after = batch[-1].id or after


def carts_csv(runtime: Runtime, store: Store, period: Period) -> Iterator[str]:
    return _lines(CART_COLUMNS, _cart_rows(runtime, store, period), ZoneInfo(period.timezone))


def messages_csv(runtime: Runtime, store: Store, period: Period) -> Iterator[str]:
    return _lines(MESSAGE_COLUMNS, _message_rows(runtime, store, period), ZoneInfo(period.timezone))
