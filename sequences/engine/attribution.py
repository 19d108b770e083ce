"""Attribution: which cart an order belongs to, and what our discount took off it.

An order webhook names its checkout in platform terms; ``find_cart_for_order`` matches it to a
cart, strongest evidence first: an order already recorded on a cart, our own single-use
discount code (the shopper came through our link, even into a rebuilt checkout), the checkout
id, the storefront cart token, and last the same shopper (phone or email) within the store's
attribution window. ``is_attributed`` says whether a matched order counts as recovered: placed
within the attribution window after our first message, by a shopper who had not opted out.

Read under the caller's transaction; the only write is marking a matched discount code
redeemed (it stays on the platform for the orders that refer to it).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import ColumnElement, func, or_
from sqlmodel import Session, col, select

from connectors.base import OrderEvent
from sequences.engine import policy
from sequences.engine.messages import discount_amount
from sequences.merchant.store_settings import Offer
from sequences.models import TERMINAL_CART_STATUSES, Cart, CartStatus, Contact, Discount, Store
from sequences.runtime import Runtime


def find_cart_for_order(runtime: Runtime, session: Session, store: Store, order: OrderEvent) -> Cart | None:
    scoped = select(Cart).where(Cart.store_id == store.id)
    # Already recorded (a later update of the same order): the same cart, never another one.
    recorded = session.exec(scoped.where(Cart.order_platform_id == order.order_id)).first()
    if recorded is not None:
        return recorded
    # Our own single-use code is the strongest evidence: the shopper came through our link,
    # even when the platform rebuilt the cart as a new checkout (a permalink fallback).
    if order.discount_codes:
        discount = session.exec(
            select(Discount).where(
                Discount.store_id == store.id, col(Discount.code).in_(list(order.discount_codes))
            )
        ).first()
        if discount:
            # Used: `cartback purge` leaves redeemed codes on the platform (orders refer to them).
            discount.redeemed_at = discount.redeemed_at or order.created_at
            return session.get(Cart, discount.cart_id)
    if order.cart_id:
        cart = session.exec(scoped.where(Cart.platform_cart_id == order.cart_id)).first()
        if cart:
            return cart
    if order.cart_token:
        cart = session.exec(scoped.where(Cart.platform_cart_token == order.cart_token)).first()
        if cart:
            return cart
    same_shopper = shopper_conditions(order)
    if not same_shopper:
        return None
    settings = runtime.store_settings(store)
    since = order.created_at - policy.attribution_window(settings, runtime.time_scale)
    by_shopper = scoped.join(Contact, col(Contact.id) == col(Cart.contact_id)).where(
        or_(*same_shopper), col(Cart.order_platform_id).is_(None)
    )
    # The shopper's latest messaged cart inside the attribution window.
    messaged = session.exec(
        by_shopper.where(
            col(Cart.first_message_at).is_not(None), col(Cart.first_message_at) >= since
        ).order_by(col(Cart.first_message_at).desc())
    ).first()
    if messaged is not None:
        return messaged
    # Not messaged yet: they bought through another checkout (on WooCommerce, a new order
    # instead of paying the one left pending). Their open cart is done, and must not be chased.
    return session.exec(
        by_shopper.where(
            col(Cart.first_message_at).is_(None),
            col(Cart.status).not_in(list(TERMINAL_CART_STATUSES)),
            col(Cart.last_activity_at) >= since,
            col(Cart.last_activity_at) <= order.created_at,
        ).order_by(col(Cart.last_activity_at).desc())
    ).first()


def shopper_conditions(order: OrderEvent) -> list[ColumnElement[bool]]:
    """The contact the order names, by its phone or email (any one of them matching)."""
    same_shopper: list[ColumnElement[bool]] = []
    if order.phone_e164:
        same_shopper.append(col(Contact.phone_e164) == order.phone_e164)
    if order.email:
        same_shopper.append(func.lower(col(Contact.email)) == order.email.lower())
    return same_shopper


def discount_given(session: Session, cart: Cart, order: OrderEvent) -> Decimal | None:
    """What our code took off this order: the offer applied to the cart as it was ordered."""
    if not order.discount_codes:
        return None
    discount = session.exec(
        select(Discount).where(
            Discount.cart_id == cart.id, col(Discount.code).in_(list(order.discount_codes))
        )
    ).first()
    if discount is None or discount.currency != cart.currency:
        return None
    # Not validated: this runs inside recording the order, which must never fail on it.
    offer = Offer.model_construct(
        kind="percent" if discount.kind == "percent" else "fixed",
        value=discount.value,
        max_amount=discount.max_amount,
        min_subtotal=discount.min_subtotal,
    )
    return discount_amount(offer, cart.subtotal)


def is_attributed(cart: Cart, order: OrderEvent, window: timedelta) -> bool:
    """Recovered: ordered inside the attribution window after our first message, not opted out."""
    return (
        cart.first_message_at is not None
        and cart.status != CartStatus.OPTED_OUT
        and cart.first_message_at <= order.created_at <= cart.first_message_at + window
    )
