"""A recovery-link click: record it, make the step's discount, rebuild the checkout, redirect.

Platform calls are made outside any database lock (the platform may be slow, and the demo
platform writes to the same SQLite file). A click never errors at the shopper: every failure
lands them on the store with a note saying what happened.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from connectors.base import CartLine as SnapshotLine
from connectors.base import CheckoutRef, DiscountKind, DiscountRequest, PlatformError, with_query
from sequences.clicks.links import LinkCheck, LinkProblem
from sequences.db import lock_cart
from sequences.engine import policy, steps, timeline
from sequences.engine.messages import discount_amount
from sequences.models import (
    Cart,
    CartLine,
    CartStatus,
    Contact,
    Discount,
    LinkClick,
    Message,
    RecoveryStep,
    Store,
)
from sequences.redis_locks import redis_lock
from sequences.runtime import Runtime
from sequences.stores.access import call_platform

log = logging.getLogger("cartback.clicks")

# Alphabet without look-alikes (0/O, 1/I) for codes a shopper may have to read out.
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
# Upper bound for any link's age; each store's own lifetime is checked after.
MAX_LINK_AGE = timedelta(days=30)


class Notice:
    LINK_EXPIRED = "link_expired"
    LINK_INVALID = "link_invalid"
    ALREADY_ORDERED = "already_ordered"
    OFFER_EXPIRED = "offer_expired"
    OFFER_UNAVAILABLE = "offer_unavailable"


@dataclass(frozen=True)
class ClickResult:
    # None only when not even the store is known (a token that claims nothing): the web
    # layer shows its own friendly page then.
    redirect_url: str | None
    outcome: str
    notice: str | None = None
    discount_code: str | None = None


def with_notice(url: str, notice: str | None) -> str:
    return with_query(url, cartback_notice=notice) if notice else url


def new_code() -> str:
    return "CB-" + "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def _landing(
    runtime: Runtime, message_id: int | None, notice: str, outcome: str, *, trusted: bool = False
) -> ClickResult:
    """Where a link that cannot be honoured lands: the shopper's own cart when we can trust the
    token's ids (an expired but genuine link), else the store's front page."""
    if message_id is not None:
        with runtime.database.session() as session:
            message = session.get(Message, message_id)
            store = session.get(Store, message.store_id) if message else None
            cart = session.get(Cart, message.cart_id) if message and trusted else None
            target = (cart.checkout_url if cart else None) or (store.storefront_url if store else None)
            if target:
                return ClickResult(with_notice(target, notice), outcome, notice)
    return ClickResult(None, outcome, notice)


# Seconds a click may hold its link's lock (platform calls time out well within it).
CLICK_LOCK_SECONDS = 45


def handle_click(runtime: Runtime, token: str) -> ClickResult:
    """One click at a time per link: a double tap waits for the first and reuses its checkout,
    instead of making a second order or code on the platform."""
    check = runtime.links.check(token, MAX_LINK_AGE)
    if check.payload is None:
        return _handle_click(runtime, check)
    key = f"cartback:click:{check.payload.message_id}"
    # Redis down: the click still works; the database rows keep its discount single.
    with redis_lock(runtime.redis, key, timeout=CLICK_LOCK_SECONDS, wait=CLICK_LOCK_SECONDS):
        return _handle_click(runtime, check)


def _handle_click(runtime: Runtime, check: LinkCheck) -> ClickResult:
    if check.payload is None:
        expired = check.problem == LinkProblem.EXPIRED
        problem = Notice.LINK_EXPIRED if expired else Notice.LINK_INVALID
        # An expired token's signature was valid: its ids can be trusted to find the cart.
        return _landing(runtime, check.claimed_message_id, problem, f"link {check.problem}", trusted=expired)

    now = runtime.now()
    with runtime.database.locked_session() as session:
        message = session.get(Message, check.payload.message_id)
        if message is None:
            return ClickResult(None, "link for an unknown message", Notice.LINK_INVALID)
        cart = lock_cart(session, message.cart_id)
        store = session.get(Store, message.store_id)
        step = session.get(RecoveryStep, message.step_id)
        assert cart is not None and store is not None and step is not None
        assert cart.id is not None and store.id is not None and message.id is not None
        settings = runtime.store_settings(store)
        # The dashboard's "clicked": the first tap on a genuine link, whatever it led to.
        message.clicked_at = message.clicked_at or now
        sent_at = message.sent_at or message.created_at
        lifetime = policy.attribution_window(settings, runtime.time_scale)
        if now > sent_at + lifetime:
            session.add(
                LinkClick(store_id=store.id, cart_id=cart.id, message_id=message.id, outcome="expired")
            )
            landing = cart.checkout_url or store.storefront_url
            return ClickResult(with_notice(landing, Notice.LINK_EXPIRED), "link expired", Notice.LINK_EXPIRED)
        if cart.status in (CartStatus.RECOVERED, CartStatus.CONVERTED_UNASSISTED):
            session.add(
                LinkClick(
                    store_id=store.id, cart_id=cart.id, message_id=message.id, outcome="already_ordered"
                )
            )
            return ClickResult(
                with_notice(store.storefront_url, Notice.ALREADY_ORDERED),
                "already ordered",
                Notice.ALREADY_ORDERED,
            )
        timeline.record(session, cart, "link_clicked", step=step.step_number)
        offer = steps.step_offer(step, cart, store)
        discount = session.exec(
            select(Discount).where(Discount.cart_id == cart.id, Discount.step_number == step.step_number)
        ).first()
        notice: str | None = None
        if step.checkout_url and (discount is None or discount.ends_at > now):
            session.add(
                LinkClick(store_id=store.id, cart_id=cart.id, message_id=message.id, outcome="cached")
            )
            return ClickResult(
                step.checkout_url, "redirected (cached)", discount_code=discount.code if discount else None
            )
        if offer is not None and discount is None and discount_amount(offer, cart.subtotal) is not None:
            ends_at = sent_at + policy.scaled(offer.valid_hours * 60, runtime.time_scale)
            if ends_at <= now:
                notice = Notice.OFFER_EXPIRED
            else:
                discount = Discount(
                    store_id=store.id,
                    cart_id=cart.id,
                    step_number=step.step_number,
                    code=new_code(),
                    kind=offer.kind,
                    value=offer.value,
                    max_amount=offer.max_amount,
                    currency=cart.currency,
                    min_subtotal=offer.min_subtotal,
                    ends_at=ends_at,
                )
                session.add(discount)
        elif discount is not None and discount.ends_at <= now:
            discount, notice = None, Notice.OFFER_EXPIRED
        lines = session.exec(
            select(CartLine).where(CartLine.cart_id == cart.id).order_by(col(CartLine.position))
        ).all()
        checkout = CheckoutRef(
            cart_id=cart.platform_cart_id,
            cart_token=cart.platform_cart_token,
            checkout_url=cart.checkout_url,
            lines=[
                SnapshotLine(
                    title=line.title,
                    quantity=line.quantity,
                    unit_price=line.unit_price,
                    product_id=line.platform_product_id,
                    variant_id=line.platform_variant_id,
                )
                for line in lines
            ],
            billing=dict(cart.buyer_details or {}),
        )
        contact = session.get(Contact, cart.contact_id) if cart.contact_id else None
        # A platform that restricts codes by email keeps the code to this shopper: the email of
        # the checkout itself (the one its order will be checked against), else the contact's.
        customer_email = (cart.buyer_details or {}).get("email") or (contact.email if contact else None)
        discount_snapshot = (
            (
                discount.code,
                discount.kind,
                discount.value,
                discount.max_amount,
                discount.min_subtotal,
                discount.ends_at,
                discount.platform_discount_id,
            )
            if discount
            else None
        )
        ids = (store.id, cart.id, message.id, step.id)
        fallback = cart.checkout_url or store.storefront_url
        currency, subtotal = cart.currency, cart.subtotal

    # -- outside the lock: platform calls --
    store_id, cart_id, message_id, step_id = ids
    assert store_id is not None and message_id is not None and step_id is not None
    code: str | None = None
    platform_discount_id: str | None = None
    # The code made on the platform, kept even if the rebuild then fails (it exists there now).
    created_code: str | None = None
    try:
        if discount_snapshot is not None:
            code, kind, value, max_amount, min_subtotal, ends_at, platform_discount_id = discount_snapshot
            if platform_discount_id is None:
                request = DiscountRequest(
                    code=code,
                    kind=DiscountKind(kind),
                    value=value,
                    currency=currency,
                    ends_at=ends_at,
                    min_subtotal=min_subtotal,
                    max_amount=max_amount,
                    cart_subtotal=subtotal,
                    starts_at=now,
                    customer_email=customer_email,
                )
                created = call_platform(runtime, store_id, lambda c, a: c.create_discount(a, request))
                platform_discount_id, created_code = created.platform_discount_id, code
        applied_code = code
        rebuilt = call_platform(runtime, store_id, lambda c, a: c.rebuild_checkout(a, checkout, applied_code))
        url, new_cart_token = rebuilt.url, rebuilt.cart_token
        outcome = "redirected"
        if rebuilt.already_ordered:
            # The order went through (its webhook is on its way): no checkout to send them to.
            url, outcome, notice, code = rebuilt.url, "already ordered", Notice.ALREADY_ORDERED, None
    except PlatformError as exc:
        log.warning("checkout rebuild failed", extra={"cart_id": cart_id, "reason": exc.reason})
        url, outcome, notice, code = fallback, "fallback", notice or Notice.OFFER_UNAVAILABLE, None
        new_cart_token = None

    try:
        with runtime.database.locked_session() as session:
            step_row = session.get(RecoveryStep, step_id)
            cart_row = lock_cart(session, cart_id) if cart_id else None
            assert step_row is not None and cart_row is not None
            if created_code is not None and platform_discount_id is not None:
                row = session.exec(
                    select(Discount).where(Discount.store_id == store_id, Discount.code == created_code)
                ).first()
                if row is not None:
                    row.platform_discount_id = platform_discount_id
            if new_cart_token is not None:
                # The platform made a new checkout for this cart (WooCommerce: an order from a
                # cart captured before any): later steps rebuild that one, not another.
                cart_row.platform_cart_token = new_cart_token
            if outcome == "redirected":
                step_row.checkout_url = url
                timeline.record(
                    session, cart_row, "checkout_rebuilt", step=step_row.step_number, discount_code=code
                )
            session.add(LinkClick(store_id=store_id, cart_id=cart_id, message_id=message_id, outcome=outcome))
    except IntegrityError:
        log.warning("click bookkeeping lost a race", extra={"cart_id": cart_id})
    return ClickResult(with_notice(url, notice), outcome, notice, code)
