"""Apply webhook events to carts: snapshots (newest wins), deletions, orders, uninstalls.

Each delivery is applied in one transaction together with marking it processed, so a
re-run after a crash either finds it processed or applies it from scratch (invariant 3).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError
from rq.exceptions import DuplicateJobError
from sqlalchemy import delete, func, update
from sqlmodel import Session, col, select

from connectors.base import (
    AppUninstalled,
    Buyer,
    CartDeleted,
    CartSnapshot,
    CustomerDataRequest,
    CustomerRedact,
    Ignored,
    OrderChanged,
    OrderEvent,
    PayloadError,
    PrivacyRequest,
    StoreRedact,
    WebhookEvent,
    WebhookIdentity,
)
from sequences import queue
from sequences.db import lock_cart, lock_cart_with_contact
from sequences.engine import attribution, cart_states, policy, steps, timeline
from sequences.experiments import assignment, orders
from sequences.merchant.store_settings import STORE_POLICY_CONSENT, StoreSettings
from sequences.models import (
    TERMINAL_CART_STATUSES,
    Cart,
    CartLine,
    CartStatus,
    Contact,
    DeliveryStatus,
    Message,
    RecoveryStep,
    StepStatus,
    Store,
    StoreStatus,
    WebhookDelivery,
)
from sequences.privacy import requests as privacy_requests
from sequences.privacy.erasure import is_suppressed
from sequences.reconciliation import orders as reconciled_orders
from sequences.runtime import Runtime
from sequences.stores.line_images import fetch_missing_images, fill_lines_from_cache

log = logging.getLogger("cartback.tracking")


# How long a late delivery's cart is held off the schedule while its photos are fetched
# (line_images gives up well within this: its retry budget plus an HTTP timeout).
IMAGE_FETCH_HOLD = timedelta(seconds=30)


@dataclass(frozen=True)
class ImageHold:
    held_until: datetime
    due_at: datetime


@dataclass
class Applied:
    outcome: str
    # A cart whose lines lack images the cache could not supply (fetched after the commit).
    images_for_cart: int | None = None
    hold: ImageHold | None = None
    # The store's data was deleted, this delivery's row with it: nothing left to mark.
    delivery_deleted: bool = False
    # A recovered order the platform says changed: read again after the commit (its cart id).
    order_to_recheck: tuple[int, str] | None = None


def process_delivery(runtime: Runtime, delivery_id: int) -> str:
    """Apply one stored delivery exactly once; returns what happened, for logs and tests."""
    with runtime.database.locked_session() as session:
        delivery = session.exec(
            select(WebhookDelivery).where(WebhookDelivery.id == delivery_id).with_for_update()
        ).first()
        if delivery is None or delivery.status != DeliveryStatus.PENDING:
            return "already processed"
        store = session.get(Store, delivery.store_id)
        assert store is not None and store.id is not None
        store_id = store.id
        connector = runtime.connectors[delivery.platform]
        identity = WebhookIdentity(
            store.platform_store_id,
            delivery.topic,
            delivery.delivery_id,
            event_id=delivery.event_id,
            # A queued event happened when the platform said, never "now": a backlog must not
            # make an old uninstall look newer than a reinstall. The header is not signed, so
            # it may only make an event older than its arrival, never newer.
            triggered_at=min(delivery.triggered_at or delivery.received_at, delivery.received_at),
        )
        try:
            event = connector.parse_webhook(
                identity, delivery.payload.encode(), default_region=store.default_region
            )
        except PayloadError as exc:
            # Validated at ingest already; a stored payload that no longer parses is kept for
            # an operator, not retried forever.
            delivery.status, delivery.outcome = DeliveryStatus.FAILED, str(exc)
            delivery.processed_at = runtime.now()
            return "failed"
        if store.status != StoreStatus.ACTIVE and not isinstance(event, AppUninstalled | PrivacyRequest):
            # Received before the uninstall, processed after it: nothing to act on any more.
            applied = Applied("ignored: store uninstalled cartback")
            event = Ignored("store uninstalled cartback")
        else:
            applied = apply_event(runtime, session, store, event)
        if applied.delivery_deleted:
            # The delivery row went with the rest of the store's data.
            log.info("delivery processed", extra={"delivery_id": delivery_id, "outcome": applied.outcome})
            return applied.outcome
        delivery.status = DeliveryStatus.IGNORED if isinstance(event, Ignored) else DeliveryStatus.PROCESSED
        delivery.outcome = applied.outcome
        delivery.cart_id = _cart_named(session, store_id, event)
        delivery.processed_at = runtime.now()
    if applied.images_for_cart is not None:
        try:
            fetch_missing_images(runtime, store_id, applied.images_for_cart)
        except Exception:  # the delivery is done: a message without a photo beats none
            log.exception("variant images not fetched", extra={"cart_id": applied.images_for_cart})
    if applied.hold is not None and applied.images_for_cart is not None:
        _release_hold(runtime, applied.images_for_cart, applied.hold)
    if applied.order_to_recheck is not None:
        _queue_recheck(runtime, store_id, *applied.order_to_recheck)
    log.info("delivery processed", extra={"delivery_id": delivery_id, "outcome": applied.outcome})
    return applied.outcome


def _release_hold(runtime: Runtime, cart_id: int, hold: ImageHold) -> None:
    """The photos are stored (or given up on): the cart is due when it was, unless something
    set its next moment meanwhile."""
    with runtime.database.engine.begin() as connection:
        connection.execute(
            update(Cart)
            .where(col(Cart.id) == cart_id, col(Cart.next_wake_at) == hold.held_until)
            .values(next_wake_at=hold.due_at)
        )


def _queue_recheck(runtime: Runtime, store_id: int, cart_id: int, order_id: str) -> None:
    """The order is read again by a job (never inside the delivery's transaction); a refund
    and the order update that follows it share one read. Lost (Redis down): the weekly
    reconciliation reads it."""
    options = queue.JobOptions(f"recheck-order-{cart_id}", "recheck a recovered order")
    try:
        queue.enqueue(runtime.queue, queue.RECHECK_ORDER, store_id, order_id, options=options)
    except DuplicateJobError:
        pass
    except RedisError:
        log.warning("order recheck not queued: Redis unreachable", extra={"cart_id": cart_id})


def _cart_named(session: Session, store_id: int, event: WebhookEvent) -> int | None:
    """The cart a delivery was about: an erasure empties its payload by this, even where the
    payload names the shopper in ways no search would find (a phone as typed, an order id)."""
    scoped = select(Cart.id).where(Cart.store_id == store_id)
    if isinstance(event, CartSnapshot | CartDeleted):
        found = session.exec(scoped.where(Cart.platform_cart_id == event.cart_id)).first()
        if found is None and event.cart_token:
            found = session.exec(scoped.where(Cart.platform_cart_token == event.cart_token)).first()
        return found
    if isinstance(event, OrderEvent | OrderChanged):
        return session.exec(scoped.where(Cart.order_platform_id == event.order_id)).first()
    return None


def apply_event(runtime: Runtime, session: Session, store: Store, event: WebhookEvent) -> Applied:
    """Route the event to its handler (``_HANDLERS``, after the handlers below); a type with
    none is applied as ``Ignored``."""
    return _HANDLERS.get(type(event), apply_ignored)(runtime, session, store, event)


def apply_ignored(runtime: Runtime, session: Session, store: Store, event: Ignored) -> Applied:
    return Applied(f"ignored: {event.reason}")


# -- privacy requests -----------------------------------------------------------------------


def apply_data_request(
    runtime: Runtime, session: Session, store: Store, event: CustomerDataRequest
) -> Applied:
    export = privacy_requests.export_customer(session, store, event)
    session.flush()
    found = "found" if export.content.get("found") else "nothing held"
    return Applied(f"data export {export.id} ready ({found})")


def apply_customer_redact(runtime: Runtime, session: Session, store: Store, event: CustomerRedact) -> Applied:
    report = privacy_requests.redact_customer(session, runtime, store, event)
    return Applied(f"customer erased ({report.contacts} contacts)")


def apply_store_redact(runtime: Runtime, session: Session, store: Store, event: StoreRedact) -> Applied:
    if _reinstalled_since_redact_was_due(store, event):
        return Applied("ignored: the shop has installed cartback again")
    privacy_requests.redact_store(session, store)
    return Applied("store data deleted", delivery_deleted=True)


def _reinstalled_since_redact_was_due(store: Store, event: StoreRedact) -> bool:
    """shop/redact follows an uninstall (Shopify: by 48 h). An install newer than that
    uninstall means the shop came back: keep its data. An older one means the uninstall
    webhook was lost: the shop is gone all the same, and its data must go."""
    if store.status != StoreStatus.ACTIVE:
        return False
    if store.installed_at is None or event.uninstalled_by is None:
        return True  # nothing to judge by: never delete a live shop's data on a guess
    return store.installed_at > event.uninstalled_by


# -- snapshots ------------------------------------------------------------------------------


def _lock_contact(runtime: Runtime, session: Session, store: Store, buyer: Buyer) -> Contact | None:
    """The buyer's contact, locked (created if new); nothing of the snapshot applied yet."""
    if buyer.phone_e164 is None:
        return None
    assert store.id is not None
    contact = session.exec(
        select(Contact)
        .where(Contact.store_id == store.id, Contact.phone_e164 == buyer.phone_e164)
        .with_for_update()
    ).first()
    if contact is None:
        contact = Contact(store_id=store.id, phone_e164=buyer.phone_e164)
        erased = is_suppressed(session, runtime, store.id, buyer.phone_e164)
        if erased is not None:
            # This number opted out before its data was erased: the opt-out still stands.
            contact.opted_out_at = erased.opted_out_at
        session.add(contact)
        session.flush()
    return contact


def _apply_buyer(
    runtime: Runtime, contact: Contact, buyer: Buyer, settings: StoreSettings, observed_at: datetime
) -> None:
    """Only a snapshot newer than any the contact was read from may change who they are or
    their consent (across all their checkouts, not only this one)."""
    if contact.consent_observed_at is not None and observed_at <= contact.consent_observed_at:
        return
    contact.consent_observed_at = observed_at
    contact.first_name = buyer.first_name or contact.first_name
    contact.email = buyer.email or contact.email
    contact.platform_customer_id = buyer.customer_id or contact.platform_customer_id
    if settings.consent_policy == "store_collects_optin":
        contact.marketing_consent, contact.consent_source = True, STORE_POLICY_CONSENT
    else:
        contact.marketing_consent = buyer.marketing_consent
        contact.consent_source = buyer.consent_source.value
    contact.updated_at = runtime.now()


def apply_snapshot(runtime: Runtime, session: Session, store: Store, snapshot: CartSnapshot) -> Applied:
    assert store.id is not None
    settings = runtime.store_settings(store)
    now = runtime.now()
    held_at = session.exec(
        select(Cart.platform_updated_at).where(
            Cart.store_id == store.id, Cart.platform_cart_id == snapshot.cart_id
        )
    ).first()
    if held_at is not None and snapshot.updated_at <= held_at:
        # Shopify's deliveries are not ordered: an older one changes nothing, not even consent.
        return Applied("stale: a newer snapshot is already held")
    # Contact before cart: the lock order every writer follows (see db.lock_cart_with_contact).
    contact = _lock_contact(runtime, session, store, snapshot.buyer)
    cart = session.exec(
        select(Cart)
        .where(Cart.store_id == store.id, Cart.platform_cart_id == snapshot.cart_id)
        .with_for_update()
    ).first()
    if cart is not None and snapshot.updated_at <= cart.platform_updated_at:
        return Applied("stale: a newer snapshot is already held")
    if contact is not None:
        _apply_buyer(runtime, contact, snapshot.buyer, settings, snapshot.updated_at)

    # Activity cannot be in the future: a platform clock ahead of ours would delay sending.
    activity_at = min(snapshot.activity_at or snapshot.updated_at, now)
    created = cart is None
    if cart is None:
        cart = Cart(
            store_id=store.id,
            platform_cart_id=snapshot.cart_id,
            currency=snapshot.currency,
            subtotal=snapshot.subtotal,
            total=snapshot.total,
            platform_updated_at=snapshot.updated_at,
            last_activity_at=activity_at,
        )
        session.add(cart)
        session.flush()
    assert cart.id is not None
    cart.platform_cart_token = snapshot.cart_token or cart.platform_cart_token
    cart.contact_id = contact.id if contact else cart.contact_id
    cart.currency, cart.subtotal, cart.total = snapshot.currency, snapshot.subtotal, snapshot.total
    cart.checkout_url = snapshot.checkout_url or cart.checkout_url
    if snapshot.billing:
        cart.buyer_details = dict(snapshot.billing)
    cart.platform_updated_at = snapshot.updated_at
    cart.last_activity_at = max(cart.last_activity_at, activity_at)
    cart.line_count = len(snapshot.lines)
    cart.updated_at = now
    session.exec(delete(CartLine).where(col(CartLine.cart_id) == cart.id))
    lines = [
        CartLine(
            cart_id=cart.id,
            position=position,
            platform_product_id=line.product_id,
            platform_variant_id=line.variant_id,
            title=line.title,
            variant_title=line.variant_title,
            quantity=line.quantity,
            unit_price=line.unit_price,
            image_url=line.image_url,
        )
        for position, line in enumerate(snapshot.lines)
    ]
    needs_images = fill_lines_from_cache(session, runtime, store.id, lines)
    session.add_all(lines)
    timeline.record(
        session,
        cart,
        "cart_captured" if created else "cart_updated",
        items=len(snapshot.lines),
        total=str(snapshot.total),
        currency=snapshot.currency,
        reachable=contact is not None and contact.marketing_consent and contact.opted_out_at is None,
    )

    if cart.status in TERMINAL_CART_STATUSES:
        if not (cart.status == CartStatus.UNREACHABLE and cart.first_message_at is None):
            return Applied(f"updated; cart already {cart.status}")
        # Unreachable means "nobody to message"; a later snapshot can bring a phone.
        cart_states.reopen(cart)

    if snapshot.completed:
        return _checkout_completed(runtime, session, cart)
    if not snapshot.lines:
        steps.cancel_open(session, cart.id, "cart emptied")
        cart.next_wake_at = None
        if cart.status == CartStatus.ABANDONED:
            cart_states.reopen(cart)
        return Applied("updated; cart is empty")

    if cart.status == CartStatus.ABANDONED:
        cart_states.reopen(cart)  # the shopper is back
    # A cart just created has no arm yet: one statement fewer on the intake's path.
    resolved = assignment.cart_settings(session, cart.id, store.id, settings, may_have_arm=not created)
    settings, arm = resolved.settings, resolved.arm
    if steps.steps_of(session, cart.id):
        steps.plan(session, cart, store, settings, runtime.time_scale, holdout=bool(arm and arm.holdout))
    moment = policy.abandoned_at(cart.last_activity_at, settings, runtime.time_scale)
    hold = None
    if needs_images and moment < (held_until := runtime.now() + IMAGE_FETCH_HOLD):
        # A late delivery: the cart is due (or nearly) but its photos are fetched after this
        # commit. Held so no worker claims it first; process_delivery releases the hold.
        hold = ImageHold(held_until, moment)
        moment = held_until
    _arm(cart, moment)
    return Applied(
        "captured" if created else "updated", images_for_cart=cart.id if needs_images else None, hold=hold
    )


def _arm(cart: Cart, at: datetime) -> None:
    """Set the cart's next moment unless an earlier one is already set (it re-arms itself)."""
    if cart.next_wake_at is None or cart.next_wake_at > at:
        cart.next_wake_at = at


def _checkout_completed(runtime: Runtime, session: Session, cart: Cart) -> Applied:
    assert cart.id is not None
    steps.cancel_open(session, cart.id, "checkout completed")
    if cart.first_message_at is None:
        cart_states.close(
            cart, CartStatus.CONVERTED_UNASSISTED, "checkout completed before any message", runtime.now()
        )
        timeline.record(session, cart, "converted_unassisted")
        return Applied("checkout completed")
    # A message went out: the order webhook decides attribution; expire if none comes.
    settings_window = policy.sequence_window_end(cart.last_activity_at, runtime.time_scale)
    _arm(cart, settings_window)
    return Applied("checkout completed; awaiting the order")


def apply_deleted(runtime: Runtime, session: Session, store: Store, event: CartDeleted) -> Applied:
    cart = session.exec(
        select(Cart).where(Cart.store_id == store.id, Cart.platform_cart_id == event.cart_id)
    ).first()
    if cart is None and event.cart_token:
        # One storefront cart can have been checked out more than once: only an unambiguous
        # match is closed, never a guess that could stop a live sequence.
        candidates = session.exec(
            select(Cart).where(
                Cart.store_id == store.id,
                Cart.platform_cart_token == event.cart_token,
                col(Cart.status).not_in(list(TERMINAL_CART_STATUSES)),
            )
        ).all()
        cart = candidates[0] if len(candidates) == 1 else None
    if cart is None or cart.id is None:
        return Applied("deleted checkout was never tracked")
    cart, _contact = lock_cart_with_contact(session, cart.id)
    assert cart is not None and cart.id is not None
    if cart.status in TERMINAL_CART_STATUSES:
        return Applied(f"deleted; cart already {cart.status}")
    steps.cancel_open(session, cart.id, "checkout deleted on the platform")
    cart_states.close(cart, CartStatus.EXPIRED, "checkout deleted on the platform", runtime.now())
    timeline.record(session, cart, "cart_deleted")
    return Applied("deleted")


# -- orders ---------------------------------------------------------------------------------


def apply_order(runtime: Runtime, session: Session, store: Store, order: OrderEvent) -> Applied:
    found = attribution.find_cart_for_order(runtime, session, store, order)
    if found is None or found.id is None:
        # Still the shopper's order, if an experiment follows their customer value.
        orders.record_order(session, store, order, None, None)
        return Applied("order matches no tracked cart")
    cart, _contact = lock_cart_with_contact(session, found.id)
    assert cart is not None and cart.id is not None
    if cart.order_platform_id is not None:
        if cart.order_platform_id == order.order_id:
            if order.status is not None and cart.status == CartStatus.RECOVERED:
                reconciled_orders.apply_status(session, cart, order.status, store.currency, runtime.now())
                return Applied("order already recorded; its change recorded")
            return Applied("order already recorded")
        orders.record_order(session, store, order, cart.contact_id, None)
        return Applied("cart already matched another order")
    settings = runtime.store_settings(store)
    now = runtime.now()
    steps.cancel_open(session, cart.id, "order placed")
    cart.order_platform_id, cart.order_total = order.order_id, order.total
    cart.order_currency, cart.ordered_at = order.currency, order.created_at
    cart.discount_given = attribution.discount_given(session, cart, order)
    cart.order_total_store = order.total_in(store.currency)
    orders.record_order(session, store, order, cart.contact_id, cart.id)
    attributed = attribution.is_attributed(
        cart, order, policy.attribution_window(settings, runtime.time_scale)
    )
    timeline.record(
        session,
        cart,
        "order_placed",
        order_id=order.order_id,
        total=str(order.total),
        currency=order.currency,
    )
    _close_other_carts(runtime, session, cart, order)
    if attributed:
        cart_states.close(cart, CartStatus.RECOVERED, None, now)
        sent = select(func.max(Message.step_number)).where(
            Message.cart_id == cart.id, col(Message.sent_at).is_not(None)
        )
        # The last message before the order; a platform clock behind ours falls back to the last.
        cart.recovered_step = (
            session.exec(sent.where(col(Message.sent_at) <= order.created_at)).one()
            or session.exec(sent).one()
        )
        timeline.record(session, cart, "cart_recovered", revenue=str(order.total), currency=order.currency)
        return Applied("recovered")
    if cart.status == CartStatus.OPTED_OUT:
        cart.next_wake_at = None
        return Applied("order recorded; contact had opted out")
    reason = (
        "bought before any message" if cart.first_message_at is None else "outside the attribution window"
    )
    cart_states.close(cart, CartStatus.CONVERTED_UNASSISTED, reason, now)
    timeline.record(session, cart, "converted_unassisted", reason=reason)
    return Applied("converted unassisted")


def apply_order_change(runtime: Runtime, session: Session, store: Store, change: OrderChanged) -> Applied:
    """A refund, cancellation or edit of an order: only recovered carts' orders matter (their
    revenue is on the dashboard). The platform's word is recorded at once when the body holds
    it, else the order is read again after the commit."""
    cart_id = session.exec(
        select(Cart.id).where(
            Cart.store_id == store.id,
            Cart.order_platform_id == change.order_id,
            Cart.status == CartStatus.RECOVERED,
        )
    ).first()
    if cart_id is None:
        return Applied("order change: no recovered cart has this order")
    if change.status is None:
        return Applied("order change: read again", order_to_recheck=(cart_id, change.order_id))
    cart = lock_cart(session, cart_id)
    if cart is None or cart.status != CartStatus.RECOVERED or cart.order_platform_id != change.order_id:
        return Applied("order change: the cart changed meanwhile")
    reconciled_orders.apply_status(session, cart, change.status, store.currency, runtime.now())
    return Applied("order change recorded")


def _close_other_carts(runtime: Runtime, session: Session, cart: Cart, order: OrderEvent) -> None:
    """The shopper bought: their other open carts from before the order are done too (on
    WooCommerce, an order left pending and then paid for with a new one). No reminder about a
    cart they have just bought."""
    if cart.contact_id is None:
        return
    others = session.exec(
        select(Cart)
        .where(
            Cart.store_id == cart.store_id,
            Cart.contact_id == cart.contact_id,
            col(Cart.id) != cart.id,
            col(Cart.status).not_in(list(TERMINAL_CART_STATUSES)),
            col(Cart.last_activity_at) <= order.created_at,
        )
        .order_by(col(Cart.id))
        .with_for_update()
    ).all()
    for other in others:
        assert other.id is not None
        steps.cancel_open(session, other.id, "the shopper ordered in another checkout")
        cart_states.close(
            other, CartStatus.EXPIRED, f"the shopper ordered (order {order.order_id})", runtime.now()
        )
        timeline.record(session, other, "closed_by_order", order_id=order.order_id)


def apply_uninstall(runtime: Runtime, session: Session, store: Store, event: AppUninstalled) -> Applied:
    if store.installed_at is not None and event.occurred_at < store.installed_at:
        # A late or retried uninstall from before the merchant installed again.
        return Applied("ignored: uninstall predates the current install")
    # The bulk updates below would lock steps before their carts, and carts in no fixed order:
    # a sender holding a cart and writing its steps (or pausing the store) would wait in a
    # cycle with them. So the locks are taken in the lock order first (sequences.db): the open
    # carts' contacts, then the carts, each by id; the store row is written last.
    still_open = (col(Cart.store_id) == store.id, col(Cart.status).not_in(list(TERMINAL_CART_STATUSES)))
    their_contacts = select(Cart.contact_id).where(*still_open)
    session.exec(
        select(Contact.id)
        .where(col(Contact.id).in_(their_contacts))
        .order_by(col(Contact.id))
        .with_for_update()
    ).all()
    session.exec(select(Cart.id).where(*still_open).order_by(col(Cart.id)).with_for_update()).all()
    session.exec(
        update(RecoveryStep)
        .where(col(RecoveryStep.store_id) == store.id, col(RecoveryStep.status) == StepStatus.SCHEDULED)
        .values(status=StepStatus.CANCELLED, reason="store uninstalled cartback")
    )
    # Open to expired changes none of the dashboard's figures: no recount needed (rollups.mark).
    session.exec(
        cart_states.close_all(
            update(Cart).where(col(Cart.store_id) == store.id),
            CartStatus.EXPIRED,
            "store uninstalled cartback",
            now=None,
        )
    )
    store.status = StoreStatus.UNINSTALLED
    # The platform revoked them; keeping dead secrets helps nobody.
    store.access_token_ciphertext = store.refresh_token_ciphertext = None
    store.access_token_expires_at = store.refresh_token_expires_at = None
    store.updated_at = runtime.now()
    return Applied("store uninstalled")


# The connector's event type -> what applies it (one handler per type of the WebhookEvent union).
EventHandler = Callable[[Runtime, Session, Store, Any], Applied]
_HANDLERS: dict[type[Any], EventHandler] = {
    CartSnapshot: apply_snapshot,
    OrderEvent: apply_order,
    OrderChanged: apply_order_change,
    CartDeleted: apply_deleted,
    AppUninstalled: apply_uninstall,
    CustomerDataRequest: apply_data_request,
    CustomerRedact: apply_customer_redact,
    StoreRedact: apply_store_redact,
    Ignored: apply_ignored,
}
