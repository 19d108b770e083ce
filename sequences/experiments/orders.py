"""The orders of shoppers in an experiment, whichever cart they came from or none: their
90-day customer value (``experiments.figures``) counts every one.

Kept only for shoppers some experiment of the store has assigned, and with no more than the
order's id, total and time: nobody else's order history is held.
"""

from __future__ import annotations

from sqlalchemy import or_
from sqlmodel import Session, col, select

from connectors.base import OrderEvent
from sequences.engine.attribution import shopper_conditions
from sequences.models import Contact, ExperimentAssignment, ShopperOrder, Store


def record_order(
    session: Session, store: Store, order: OrderEvent, contact_id: int | None, cart_id: int | None
) -> bool:
    """Record ``order`` for its shopper (the matched cart's contact, or the store's contact with
    the order's phone or email) if some experiment assigned them; True if recorded now."""
    assert store.id is not None
    if contact_id is None:
        contact_id = _shopper_of(session, store.id, order)
    if contact_id is None:
        return False
    in_experiment = session.exec(
        select(ExperimentAssignment.id).where(ExperimentAssignment.contact_id == contact_id).limit(1)
    ).first()
    if in_experiment is None:
        return False
    known = session.exec(
        select(ShopperOrder.id).where(
            ShopperOrder.store_id == store.id, ShopperOrder.order_platform_id == order.order_id
        )
    ).first()
    if known is not None:
        # A replay, or the order's update: recorded once, as first seen.
        return False
    session.add(
        ShopperOrder(
            store_id=store.id,
            contact_id=contact_id,
            order_platform_id=order.order_id,
            ordered_at=order.created_at,
            total_store=order.total_in(store.currency),
            cart_id=cart_id,
        )
    )
    return True


def _shopper_of(session: Session, store_id: int, order: OrderEvent) -> int | None:
    same_shopper = shopper_conditions(order)
    if not same_shopper:
        return None
    return session.exec(
        select(Contact.id).where(Contact.store_id == store_id, or_(*same_shopper)).order_by(col(Contact.id))
    ).first()
