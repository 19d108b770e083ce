"""The carts and contacts views: search, a cart's timeline, a contact's consent history.

Every query is scoped by the store (invariant 9): a cart or contact of another store is simply
not found. Phones leave this module as their last 4 digits only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, or_, union
from sqlalchemy import select as sql_select
from sqlmodel import Session, col, select

from sequences.models import (
    Cart,
    CartEvent,
    CartLine,
    ConsentEvent,
    Contact,
    LinkClick,
    Message,
    RecoveryStep,
)

PAGE_SIZE = 50
# Row ids are 32-bit on PostgreSQL: anything larger is no row of ours.
MAX_ID = 2**31 - 1
# Longest search text we look up (ids and tokens are shorter).
MAX_QUERY = 255


@dataclass(frozen=True)
class CartRow:
    id: int
    checkout_id: str
    status: str
    last_activity_at: datetime
    abandoned_at: datetime | None
    phone_end: str | None
    contact_id: int | None
    total: Decimal
    currency: str
    order_id: str | None


def phone_end(phone: str | None) -> str | None:
    # An erased contact's phone_e164 is a key, not a number: nothing to show.
    return phone[-4:] if phone and phone.startswith("+") else None


def encode_cursor(row: CartRow) -> str:
    return f"{row.last_activity_at.isoformat()}_{row.id}"


def decode_cursor(cursor: str | None) -> tuple[datetime, int] | None:
    if not cursor:
        return None
    moment, _, ident = cursor.rpartition("_")
    try:
        parsed, number = datetime.fromisoformat(moment), int(ident)
    except ValueError:
        return None
    if not (2000 <= parsed.year <= 2100 and 0 < number <= MAX_ID):
        return None  # not a cursor we made; also keeps the UTC conversion from overflowing
    # A cursor we made is aware UTC; a hand-typed one without a zone is read as UTC.
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)), number


def search_carts(
    session: Session,
    store_id: int,
    query: str | None = None,
    before: str | None = None,
    limit: int = PAGE_SIZE,
) -> tuple[list[CartRow], str | None]:
    """Newest activity first; ``query`` is a checkout id or token, an order id, or a phone's last 4
    digits. Returns the page and the cursor of the next one (None at the end)."""
    statement = (
        sql_select(Cart, col(Contact.phone_e164))
        .outerjoin(Contact, col(Contact.id) == col(Cart.contact_id))
        .where(col(Cart.store_id) == store_id)
    )
    # NUL cannot be in a PostgreSQL text value, nor in any id we store.
    text = (query or "").replace("\x00", "").strip()[:MAX_QUERY]
    if text:
        # One index lookup per way a cart can be named, united: an OR across the cart and its
        # joined contact would make the database read every cart of the store.
        in_store = col(Cart.store_id) == store_id
        lookups: list[Any] = [
            sql_select(col(Cart.id)).where(in_store, col(Cart.platform_cart_id) == text),
            sql_select(col(Cart.id)).where(in_store, col(Cart.platform_cart_token) == text),
            sql_select(col(Cart.id)).where(in_store, col(Cart.order_platform_id) == text),
        ]
        if len(text) == 4 and text.isdigit():
            lookups.append(
                sql_select(col(Cart.id))
                .join(Contact, col(Contact.id) == col(Cart.contact_id))
                .where(col(Contact.store_id) == store_id, col(Contact.phone_last4) == text, in_store)
            )
        statement = statement.where(col(Cart.id).in_(union(*lookups).scalar_subquery()))
    cursor = decode_cursor(before)
    if cursor is not None:
        moment, ident = cursor
        statement = statement.where(
            or_(
                col(Cart.last_activity_at) < moment,
                and_(col(Cart.last_activity_at) == moment, col(Cart.id) < ident),
            )
        )
    rows = session.execute(
        statement.order_by(col(Cart.last_activity_at).desc(), col(Cart.id).desc()).limit(limit + 1)
    ).all()
    page = [_cart_row(cart, phone) for cart, phone in rows[:limit]]
    return page, (encode_cursor(page[-1]) if len(rows) > limit and page else None)


def cart_detail(session: Session, store_id: int, cart_id: int) -> dict[str, Any] | None:
    cart = session.exec(select(Cart).where(Cart.id == cart_id, Cart.store_id == store_id)).first()
    if cart is None:
        return None
    contact = session.get(Contact, cart.contact_id) if cart.contact_id else None
    return {
        "cart": cart,
        "phone_end": phone_end(contact.phone_e164 if contact else None),
        "contact_id": contact.id if contact else None,
        "lines": session.exec(
            select(CartLine).where(CartLine.cart_id == cart_id).order_by(col(CartLine.position))
        ).all(),
        "steps": session.exec(
            select(RecoveryStep)
            .where(RecoveryStep.cart_id == cart_id, RecoveryStep.store_id == store_id)
            .order_by(col(RecoveryStep.step_number))
        ).all(),
        "messages": session.exec(
            select(Message)
            .where(Message.cart_id == cart_id, Message.store_id == store_id)
            .order_by(col(Message.id))
        ).all(),
        "clicks": session.exec(
            select(LinkClick)
            .where(LinkClick.cart_id == cart_id, LinkClick.store_id == store_id)
            .order_by(col(LinkClick.id))
        ).all(),
        "events": session.exec(
            select(CartEvent)
            .where(CartEvent.cart_id == cart_id, CartEvent.store_id == store_id)
            .order_by(col(CartEvent.id))
        ).all(),
    }


def contact_detail(session: Session, store_id: int, contact_id: int) -> dict[str, Any] | None:
    contact = session.exec(
        select(Contact).where(Contact.id == contact_id, Contact.store_id == store_id)
    ).first()
    if contact is None:
        return None
    carts, _next = _contact_carts(session, store_id, contact_id)
    return {
        "contact": contact,
        "phone_end": phone_end(contact.phone_e164),
        "consent_events": session.exec(
            select(ConsentEvent)
            .where(ConsentEvent.contact_id == contact_id, ConsentEvent.store_id == store_id)
            .order_by(col(ConsentEvent.id))
        ).all(),
        "carts": carts,
    }


def _contact_carts(session: Session, store_id: int, contact_id: int) -> tuple[list[CartRow], None]:
    rows = session.exec(
        select(Cart)
        .where(Cart.store_id == store_id, Cart.contact_id == contact_id)
        .order_by(col(Cart.last_activity_at).desc())
        .limit(PAGE_SIZE)
    ).all()
    return [_cart_row(cart, None) for cart in rows], None


def _cart_row(cart: Cart, phone: str | None) -> CartRow:
    return CartRow(
        id=cart.id or 0,
        checkout_id=cart.platform_cart_id,
        status=cart.status,
        last_activity_at=cart.last_activity_at,
        abandoned_at=cart.abandoned_at,
        phone_end=phone_end(phone),
        contact_id=cart.contact_id,
        total=cart.total,
        currency=cart.currency,
        order_id=cart.order_platform_id,
    )


def consent_evidence(event: ConsentEvent) -> str:
    """What the shopper did, in words, without the number (evidence holds ids and times)."""
    evidence = event.evidence or {}
    labels = {
        "text": "said",
        "preference": "WhatsApp preference",
        "code": "Meta error",
        "message_id": "about message",
    }
    parts = [f"{label} {evidence[key]}" for key, label in labels.items() if evidence.get(key) is not None]
    return "; ".join(parts)
