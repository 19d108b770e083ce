"""A recovery-link click: record it, make the step's discount, rebuild the checkout, redirect.

A click runs in three stages, with typed bundles (not tuples) between them:

1. Under the cart's lock, decide (``_decide_under_lock``): load the click's rows into a
   ``ClickContext``, mark the message clicked, and either answer at once (link past its
   lifetime, cart already bought, checkout already rebuilt for this step) or write the step's
   discount row and hand a ``RebuildPlan`` out of the lock. The discount row is made here so
   that two clicks can never make two codes for one step.
2. Outside any lock, ask the platform (``_rebuild_on_platform``): create the code there if it
   is not yet, then rebuild the checkout with it; the result is a ``ClickOutcome``. The platform
   may be slow, and the demo platform writes to the same SQLite file, so no database lock is
   held across these calls.
3. Under the cart's lock again, write down what happened (``_record_outcome``): the platform's
   discount id, the cart's new platform token, the rebuilt checkout URL that later clicks on
   this step reuse, and the click in the ledger.

A click never errors at the shopper: every failure lands them on the store with a note saying
what happened.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeAlias

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from connectors.base import CartLine as SnapshotLine
from connectors.base import CheckoutRef, CreatedDiscount, PlatformError, with_query
from sequences.clicks.discounts import (
    DiscountDecision,
    DiscountToApply,
    decide_discount,
    discount_request,
    note_made_on_platform,
    step_discount,
)
from sequences.clicks.links import LinkCheck, LinkProblem
from sequences.db import lock_cart
from sequences.engine import policy, steps, timeline
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

# Upper bound for any link's age; each store's own lifetime is checked after.
MAX_LINK_AGE = timedelta(days=30)
# Seconds a click may hold its link's lock (platform calls time out well within it).
CLICK_LOCK_SECONDS = 45


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


# -- what crosses the lock -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClickIds:
    """Which click this is, by ids: what the second locked session needs to find its rows."""

    store_id: int
    cart_id: int
    message_id: int
    step_id: int

    def link_click(self, outcome: str) -> LinkClick:
        """The click's row in the append-only ledger."""
        return LinkClick(
            store_id=self.store_id, cart_id=self.cart_id, message_id=self.message_id, outcome=outcome
        )


@dataclass(frozen=True, slots=True)
class ClickContext:
    """The rows a click acts on, loaded under the cart's lock: valid only inside that session."""

    ids: ClickIds
    message: Message
    cart: Cart
    store: Store
    step: RecoveryStep
    # The click's moment, read once before the lock (the link's and the offer's clocks).
    now: datetime

    @property
    def sent_at(self) -> datetime:
        """When the message went out: where the link's lifetime and the offer's hours start."""
        return self.message.sent_at or self.message.created_at


@dataclass(frozen=True, slots=True)
class RebuildPlan:
    """Everything the platform calls need, decided under the lock and used after it."""

    ids: ClickIds
    checkout: CheckoutRef
    discount: DiscountToApply | None
    # OFFER_EXPIRED when the step's offer ran out before this click, else None.
    notice: str | None
    # Where the shopper lands if the platform fails us: their checkout, else the store.
    fallback_url: str
    currency: str
    subtotal: Decimal
    # Keeps the code to this shopper on platforms that restrict codes by email.
    customer_email: str | None
    now: datetime


@dataclass(frozen=True, slots=True)
class ClickOutcome:
    """What the platform calls came to: the shopper's redirect and what to write down after."""

    # The ledger's word for it: "redirected", "already ordered" or "fallback".
    outcome: str
    url: str
    notice: str | None
    # The code the shopper's checkout carries, if any.
    code: str | None
    # The platform made a new checkout for this cart (WooCommerce): its token.
    new_cart_token: str | None
    # The code this click made on the platform, kept even if the rebuild then failed (it
    # exists there now).
    created_discount: CreatedDiscount | None

    def result(self) -> ClickResult:
        return ClickResult(with_notice(self.url, self.notice), self.outcome, self.notice, self.code)


# The first locked session either answers the click itself or plans the rebuild.
ClickDecision: TypeAlias = ClickResult | RebuildPlan


# -- the click -----------------------------------------------------------------------------


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
    """Link check, then decide under the lock, ask the platform outside it, record under it."""
    if check.payload is None:
        return _bad_link_landing(runtime, check)
    decision = _decide_under_lock(runtime, check.payload.message_id, runtime.now())
    if isinstance(decision, ClickResult):
        return decision
    outcome = _rebuild_on_platform(runtime, decision)
    _record_outcome(runtime, decision, outcome)
    return outcome.result()


def _bad_link_landing(runtime: Runtime, check: LinkCheck) -> ClickResult:
    """Where a link that cannot be honoured lands: the shopper's own cart when we can trust the
    token's ids (an expired but genuine link), else the store's front page."""
    expired = check.problem == LinkProblem.EXPIRED
    notice = Notice.LINK_EXPIRED if expired else Notice.LINK_INVALID
    outcome = f"link {check.problem}"
    if check.claimed_message_id is not None:
        with runtime.database.session() as session:
            message = session.get(Message, check.claimed_message_id)
            store = session.get(Store, message.store_id) if message else None
            # An expired token's signature was valid: its ids can be trusted to find the cart.
            cart = session.get(Cart, message.cart_id) if message and expired else None
            target = (cart.checkout_url if cart else None) or (store.storefront_url if store else None)
            if target:
                return ClickResult(with_notice(target, notice), outcome, notice)
    return ClickResult(None, outcome, notice)


# -- 1. under the cart's lock: decide ------------------------------------------------------


def _decide_under_lock(runtime: Runtime, message_id: int, now: datetime) -> ClickDecision:
    """Answer the click, or plan its rebuild, holding the cart's lock.

    The lock serialises this with the sender and the order tracker, so the cart's status and
    the step's discount row are read and written as one: a bought cart is never rebuilt, and
    the step gets one discount row (one code) however many clicks race. Every answer made here
    is committed with the click's ledger row as the session ends.
    """
    with runtime.database.locked_session() as session:
        context = _load_context(session, message_id, now)
        if context is None:
            return ClickResult(None, "link for an unknown message", Notice.LINK_INVALID)
        settings = runtime.store_settings(context.store)
        # The dashboard's "clicked": the first tap on a genuine link, whatever it led to.
        context.message.clicked_at = context.message.clicked_at or now
        if now > context.sent_at + policy.attribution_window(settings, runtime.time_scale):
            return _answer_link_expired(session, context)
        if context.cart.status in (CartStatus.RECOVERED, CartStatus.CONVERTED_UNASSISTED):
            return _answer_already_ordered(session, context)
        timeline.record(session, context.cart, "link_clicked", step=context.step.step_number)
        offer = steps.step_offer(context.step, context.cart, context.store)
        existing = step_discount(session, context.ids.cart_id, context.step.step_number)
        if context.step.checkout_url and (existing is None or existing.ends_at > now):
            return _answer_cached(session, context, existing)
        decided = decide_discount(
            session,
            existing=existing,
            offer=offer,
            store_id=context.ids.store_id,
            cart=context.cart,
            step_number=context.step.step_number,
            sent_at=context.sent_at,
            now=now,
            time_scale=runtime.time_scale,
        )
        return _plan_rebuild(session, context, decided)


def _load_context(session: Session, message_id: int, now: datetime) -> ClickContext | None:
    """The click's rows, the cart locked until the session ends; None for an unknown message."""
    message = session.get(Message, message_id)
    if message is None:
        return None
    cart = lock_cart(session, message.cart_id)
    store = session.get(Store, message.store_id)
    step = session.get(RecoveryStep, message.step_id)
    assert cart is not None and store is not None and step is not None
    assert cart.id is not None and store.id is not None and message.id is not None
    assert step.id is not None
    ids = ClickIds(store_id=store.id, cart_id=cart.id, message_id=message.id, step_id=step.id)
    return ClickContext(ids=ids, message=message, cart=cart, store=store, step=step, now=now)


def _answer_link_expired(session: Session, context: ClickContext) -> ClickResult:
    """Past the store's link lifetime: to their cart (or the store) with a note, no discount."""
    session.add(context.ids.link_click("expired"))
    landing = context.cart.checkout_url or context.store.storefront_url
    return ClickResult(with_notice(landing, Notice.LINK_EXPIRED), "link expired", Notice.LINK_EXPIRED)


def _answer_already_ordered(session: Session, context: ClickContext) -> ClickResult:
    """The cart was bought: to the store, never to a second checkout."""
    session.add(context.ids.link_click("already_ordered"))
    return ClickResult(
        with_notice(context.store.storefront_url, Notice.ALREADY_ORDERED),
        "already ordered",
        Notice.ALREADY_ORDERED,
    )


def _answer_cached(session: Session, context: ClickContext, discount: Discount | None) -> ClickResult:
    """An earlier click rebuilt this step's checkout and its code still runs: reuse both, with
    no platform call."""
    session.add(context.ids.link_click("cached"))
    return ClickResult(
        context.step.checkout_url,
        "redirected (cached)",
        discount_code=discount.code if discount else None,
    )


def _plan_rebuild(session: Session, context: ClickContext, decided: DiscountDecision) -> RebuildPlan:
    """Read off the rows what the platform calls will need, so that none is touched after the
    session ends."""
    cart = context.cart
    lines = session.exec(
        select(CartLine).where(CartLine.cart_id == context.ids.cart_id).order_by(col(CartLine.position))
    ).all()
    contact = session.get(Contact, cart.contact_id) if cart.contact_id else None
    # A platform that restricts codes by email keeps the code to this shopper: the email of
    # the checkout itself (the one its order will be checked against), else the contact's.
    customer_email = (cart.buyer_details or {}).get("email") or (contact.email if contact else None)
    return RebuildPlan(
        ids=context.ids,
        checkout=_checkout_ref(cart, lines),
        discount=DiscountToApply.of(decided.discount) if decided.discount else None,
        notice=Notice.OFFER_EXPIRED if decided.offer_expired else None,
        fallback_url=cart.checkout_url or context.store.storefront_url,
        currency=cart.currency,
        subtotal=cart.subtotal,
        customer_email=customer_email,
        now=context.now,
    )


def _checkout_ref(cart: Cart, lines: Sequence[CartLine]) -> CheckoutRef:
    """The cart as we hold it, in the connectors' terms."""
    return CheckoutRef(
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


# -- 2. outside any lock: the platform -----------------------------------------------------


def _rebuild_on_platform(runtime: Runtime, plan: RebuildPlan) -> ClickOutcome:
    """Make the code on the platform if no click has yet, then rebuild the checkout with it.

    No database lock is held here: the platform may be slow (and the demo platform writes to
    the same SQLite file). A platform error lands the shopper on their checkout or the store.
    """
    created: CreatedDiscount | None = None
    code = plan.discount.code if plan.discount is not None else None
    try:
        if plan.discount is not None and plan.discount.platform_discount_id is None:
            request = discount_request(
                plan.discount,
                currency=plan.currency,
                cart_subtotal=plan.subtotal,
                starts_at=plan.now,
                customer_email=plan.customer_email,
            )
            made = call_platform(
                runtime,
                plan.ids.store_id,
                lambda c, a: c.create_discount(a, request),
                operation="create_discount",
            )
            created = CreatedDiscount(code=plan.discount.code, platform_discount_id=made.platform_discount_id)
        rebuilt = call_platform(
            runtime,
            plan.ids.store_id,
            lambda c, a: c.rebuild_checkout(a, plan.checkout, code),
            operation="rebuild_checkout",
        )
    except PlatformError as exc:
        log.warning("checkout rebuild failed", extra={"cart_id": plan.ids.cart_id, "reason": exc.reason})
        return ClickOutcome(
            outcome="fallback",
            url=plan.fallback_url,
            notice=plan.notice or Notice.OFFER_UNAVAILABLE,
            code=None,
            new_cart_token=None,
            created_discount=created,
        )
    if rebuilt.already_ordered:
        # The order went through (its webhook is on its way): no checkout to send them to.
        return ClickOutcome(
            outcome="already ordered",
            url=rebuilt.url,
            notice=Notice.ALREADY_ORDERED,
            code=None,
            new_cart_token=rebuilt.cart_token,
            created_discount=created,
        )
    return ClickOutcome(
        outcome="redirected",
        url=rebuilt.url,
        notice=plan.notice,
        code=code,
        new_cart_token=rebuilt.cart_token,
        created_discount=created,
    )


# -- 3. under the cart's lock again: record ------------------------------------------------


def _record_outcome(runtime: Runtime, plan: RebuildPlan, outcome: ClickOutcome) -> None:
    """Write down what the platform did, under the cart's lock again: the rows are re-read, as
    a sender or the order tracker may have moved the cart meanwhile, and only these columns
    are written.

    If another writer got there first (a unique key refuses the write), only this bookkeeping
    is lost; the shopper is still sent where the platform said.
    """
    try:
        with runtime.database.locked_session() as session:
            step = session.get(RecoveryStep, plan.ids.step_id)
            cart = lock_cart(session, plan.ids.cart_id)
            assert step is not None and cart is not None
            if outcome.created_discount is not None:
                note_made_on_platform(session, plan.ids.store_id, outcome.created_discount)
            if outcome.new_cart_token is not None:
                # The platform made a new checkout for this cart (WooCommerce: an order from a
                # cart captured before any): later steps rebuild that one, not another.
                cart.platform_cart_token = outcome.new_cart_token
            if outcome.outcome == "redirected":
                # Later clicks on this step reuse it (``_answer_cached``) while its code runs.
                step.checkout_url = outcome.url
                timeline.record(
                    session, cart, "checkout_rebuilt", step=step.step_number, discount_code=outcome.code
                )
            session.add(plan.ids.link_click(outcome.outcome))
    except IntegrityError:
        log.warning("click bookkeeping lost a race", extra={"cart_id": plan.ids.cart_id})
