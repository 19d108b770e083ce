"""Signing in to the admin, and a seeded data set whose dashboard figures are known exactly."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlparse

from flask.testing import FlaskClient
from sqlmodel import select

from app.admin.session import issue_login_link
from sequences.models import (
    AdminLogin,
    Cart,
    CartStatus,
    ConsentEvent,
    Contact,
    Message,
    MessageStatus,
    RecoveryStep,
    StepStatus,
    Store,
)
from sequences.runtime import Runtime


def login_token(runtime: Runtime, store_id: int) -> str:
    link = issue_login_link(runtime, store_id, "test")
    # The token travels in the fragment (never sent to a server, so never logged).
    return parse_qs(urlparse(link).fragment)["token"][0]


def sign_in(client: FlaskClient, runtime: Runtime, store_id: int) -> str:
    """Sign the test client in to the store's admin; returns the session's CSRF token."""
    response = client.post("/admin/login", data={"token": login_token(runtime, store_id)})
    assert response.status_code == 303, response.get_data(as_text=True)
    with client.session_transaction() as session:
        return str(session["csrf"])


def logins(runtime: Runtime) -> list[AdminLogin]:
    with runtime.database.session() as session:
        return list(session.exec(select(AdminLogin)).all())


# -- a data set with known figures ------------------------------------------------------------

# Noon IST on 20 Nov 2026; the period shown is 1-28 Nov 2026 (Asia/Kolkata).
DAY = datetime(2026, 11, 20, 6, 30, tzinfo=UTC)
PERIOD = {"from": "2026-11-01", "to": "2026-11-28"}


@dataclass(frozen=True)
class Expected:
    # Carts 1-7 were abandoned in the period; cart 6 had nobody to message.
    abandoned: int = 7
    reachable: int = 6
    # Carts 1 and 2; cart 3's order was cancelled, so it is not a recovery.
    recovered: int = 2
    # 2,499.00 + (1,299.00 - 299.00 refunded); the cancelled order's 5,000 does not count.
    revenue: Decimal = Decimal("3499.00")
    # Only the first recovered order has been verified by reconciliation.
    revenue_verified: Decimal = Decimal("2499.00")
    discounts: Decimal = Decimal("100.00")
    # Cart 7's only message failed before WhatsApp accepted it: failed, not sent.
    sent: int = 5
    delivered: int = 5
    read: int = 3
    clicked: int = 2
    failed: int = 1
    cost: Decimal = Decimal("4.30")  # 5 delivered × 0.86
    # Carts 1-4 were messaged (cart 7's message failed); cart 4's shopper opted out.
    opt_outs: int = 1
    carts_messaged: int = 4


def _contact(session: Any, store: Store, phone: str, name: str) -> Contact:
    contact = Contact(store_id=store.id or 0, phone_e164=phone, first_name=name, marketing_consent=True)
    session.add(contact)
    session.flush()
    return contact


def _cart(session: Any, store: Store, number: int, contact: Contact | None, **fields: Any) -> Cart:
    abandoned_at = fields.pop("abandoned_at", DAY)
    cart = Cart(
        store_id=store.id or 0,
        platform_cart_id=f"chk_seed_{number}",
        contact_id=contact.id if contact else None,
        currency=store.currency,
        subtotal=fields.pop("subtotal", Decimal("1499.00")),
        total=fields.pop("total", Decimal("1499.00")),
        platform_updated_at=(abandoned_at or DAY) - timedelta(minutes=15),
        last_activity_at=(abandoned_at or DAY) - timedelta(minutes=15),
        abandoned_at=abandoned_at,
        line_count=1,
        **fields,
    )
    session.add(cart)
    session.flush()
    return cart


def _message(session: Any, cart: Cart, step: int, status: str, **fields: Any) -> Message:
    assert cart.id is not None and cart.contact_id is not None
    ledger = RecoveryStep(
        store_id=cart.store_id,
        cart_id=cart.id,
        step_number=step,
        status=StepStatus.SENT,
        sent_at=cart.abandoned_at,
    )
    session.add(ledger)
    session.flush()
    message = Message(
        store_id=cart.store_id,
        cart_id=cart.id,
        step_id=ledger.id or 0,
        step_number=step,
        cart_abandoned_at=cart.abandoned_at,
        contact_id=cart.contact_id,
        transport="cloud",
        template_name="cart_recovery_text_v1",
        language="en",
        status=status,
        created_at=cart.abandoned_at or DAY,
        **({"sent_at": cart.abandoned_at} | fields),
    )
    session.add(message)
    return message


def seed_dashboard(runtime: Runtime, store: Store, *, phone_prefix: str = "+9198765") -> Expected:
    """Six carts abandoned in the period (one unreachable), two recovered, and noise outside it."""
    paise = Decimal("0.86")
    with runtime.database.session() as session:
        store = session.merge(store)
        asha = _contact(session, store, f"{phone_prefix}00001", "Asha")
        ravi = _contact(session, store, f"{phone_prefix}00002", "Ravi")
        meena = _contact(session, store, f"{phone_prefix}00003", "Meena")
        kabir = _contact(session, store, f"{phone_prefix}00004", "Kabir")
        kabir.opted_out_at = DAY + timedelta(hours=1)
        later = DAY + timedelta(hours=1)

        # 1: recovered after step 2 (our ₹100 code), verified; delivered and read, clicked.
        one = _cart(
            session,
            store,
            1,
            asha,
            status=CartStatus.RECOVERED,
            first_message_at=DAY,
            order_platform_id="o-1001",
            order_total=Decimal("2499.00"),
            order_currency=store.currency,
            order_total_store=Decimal("2499.00"),
            ordered_at=later,
            order_verified_at=later,
            discount_given=Decimal("100.00"),
            recovered_step=2,
        )
        _message(
            session,
            one,
            1,
            MessageStatus.READ,
            delivered_at=DAY,
            read_at=DAY,
            cost=paise,
            cost_currency="INR",
        )
        _message(
            session,
            one,
            2,
            MessageStatus.READ,
            delivered_at=DAY,
            read_at=DAY,
            clicked_at=later,
            cost=paise,
            cost_currency="INR",
        )
        # 2: recovered after step 1, partly refunded, not yet verified.
        two = _cart(
            session,
            store,
            2,
            ravi,
            status=CartStatus.RECOVERED,
            first_message_at=DAY,
            order_platform_id="o-1002",
            order_total=Decimal("1299.00"),
            order_currency=store.currency,
            order_total_store=Decimal("1299.00"),
            order_refunded=Decimal("299.00"),
            ordered_at=later,
            recovered_step=1,
        )
        _message(
            session,
            two,
            1,
            MessageStatus.READ,
            delivered_at=DAY,
            read_at=DAY,
            clicked_at=later,
            cost=paise,
            cost_currency="INR",
        )
        # 3: recovered, then the order was cancelled: no revenue, not counted as recovered revenue.
        three = _cart(
            session,
            store,
            3,
            meena,
            status=CartStatus.RECOVERED,
            first_message_at=DAY,
            order_platform_id="o-1003",
            order_total=Decimal("5000.00"),
            order_currency=store.currency,
            order_total_store=Decimal("5000.00"),
            ordered_at=later,
            order_cancelled_at=later,
            recovered_step=1,
        )
        _message(
            session, three, 1, MessageStatus.DELIVERED, delivered_at=DAY, cost=paise, cost_currency="INR"
        )
        # 4: the shopper opted out after a delivered message.
        four = _cart(session, store, 4, kabir, status=CartStatus.OPTED_OUT, first_message_at=DAY)
        _message(session, four, 1, MessageStatus.DELIVERED, delivered_at=DAY, cost=paise, cost_currency="INR")
        session.add(
            ConsentEvent(
                store_id=store.id or 0,
                contact_id=kabir.id or 0,
                kind="opt_out",
                source="stop_button",
                created_at=later,
            )
        )
        # 5: still abandoned, no message yet (quiet hours).
        _cart(session, store, 5, asha, status=CartStatus.ABANDONED)
        # 6: unreachable (no consent): abandoned, never messaged.
        _cart(session, store, 6, None, status=CartStatus.UNREACHABLE)
        # 7: its only message failed before WhatsApp accepted it.
        seven = _cart(
            session,
            store,
            7,
            ravi,
            status=CartStatus.EXPIRED,
            first_message_at=None,
            abandoned_at=DAY + timedelta(days=1),
        )
        _message(session, seven, 1, MessageStatus.FAILED, sent_at=None, failed_at=DAY, error_code="131026")
        # Noise the period must leave out: abandoned in October, and a cart never abandoned.
        old = _cart(
            session,
            store,
            8,
            asha,
            status=CartStatus.RECOVERED,
            abandoned_at=datetime(2026, 10, 20, tzinfo=UTC),
            order_total_store=Decimal("9999.00"),
            first_message_at=datetime(2026, 10, 20, tzinfo=UTC),
        )
        _message(
            session,
            old,
            1,
            MessageStatus.READ,
            delivered_at=DAY,
            read_at=DAY,
            cost=paise,
            cost_currency="INR",
        )
        _cart(session, store, 9, asha, status=CartStatus.ACTIVE, abandoned_at=None)
        session.commit()
    return Expected()
