"""The step's discount at a click: one code per cart and step, made when first clicked.

The row is decided and written under the cart's lock, before any platform call, so clicks that
race find it and share its code (the table's unique keys back that up). The code is then made
on the platform outside the lock, from a ``DiscountToApply`` read off the row.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlmodel import Session, select

from connectors.base import CreatedDiscount, DiscountKind, DiscountRequest
from sequences.engine import policy
from sequences.engine.messages import discount_amount
from sequences.merchant.store_settings import Offer
from sequences.models import Cart, Discount

# Alphabet without look-alikes (0/O, 1/I) for codes a shopper may have to read out.
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8


def new_code() -> str:
    return "CB-" + "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


@dataclass(frozen=True, slots=True)
class DiscountDecision:
    """The discount row this click uses (None: no discount), and whether that is because the
    step's offer ran out before the click (the shopper is told so)."""

    discount: Discount | None
    offer_expired: bool = False


@dataclass(frozen=True, slots=True)
class DiscountToApply:
    """The step's discount read off its row under the lock, for the platform calls after it."""

    code: str
    kind: str
    value: Decimal
    max_amount: Decimal | None
    min_subtotal: Decimal | None
    ends_at: datetime
    # None until a click has made the code on the platform.
    platform_discount_id: str | None

    @classmethod
    def of(cls, row: Discount) -> DiscountToApply:
        return cls(
            code=row.code,
            kind=row.kind,
            value=row.value,
            max_amount=row.max_amount,
            min_subtotal=row.min_subtotal,
            ends_at=row.ends_at,
            platform_discount_id=row.platform_discount_id,
        )


def step_discount(session: Session, cart_id: int, step_number: int) -> Discount | None:
    """The discount an earlier click made for this step, if any."""
    return session.exec(
        select(Discount).where(Discount.cart_id == cart_id, Discount.step_number == step_number)
    ).first()


def decide_discount(
    session: Session,
    *,
    existing: Discount | None,
    offer: Offer | None,
    store_id: int,
    cart: Cart,
    step_number: int,
    sent_at: datetime,
    now: datetime,
    time_scale: float,
) -> DiscountDecision:
    """The existing row while it runs; else a new row when the step has an offer this cart
    qualifies for and the offer's hours (from the message's sending) have not run out.

    Call under the cart's lock: the new row is added to ``session`` so that it commits with
    the click, and a second click finds it.
    """
    assert cart.id is not None
    if offer is not None and existing is None and discount_amount(offer, cart.subtotal) is not None:
        ends_at = sent_at + policy.scaled(offer.valid_hours * 60, time_scale)
        if ends_at <= now:
            return DiscountDecision(None, offer_expired=True)
        discount = Discount(
            store_id=store_id,
            cart_id=cart.id,
            step_number=step_number,
            code=new_code(),
            kind=offer.kind,
            value=offer.value,
            max_amount=offer.max_amount,
            currency=cart.currency,
            min_subtotal=offer.min_subtotal,
            ends_at=ends_at,
        )
        session.add(discount)
        return DiscountDecision(discount)
    if existing is not None and existing.ends_at <= now:
        return DiscountDecision(None, offer_expired=True)
    return DiscountDecision(existing)


def discount_request(
    discount: DiscountToApply,
    *,
    currency: str,
    cart_subtotal: Decimal,
    starts_at: datetime,
    customer_email: str | None,
) -> DiscountRequest:
    """The code as the platform makes it: from the click until the offer ends."""
    return DiscountRequest(
        code=discount.code,
        kind=DiscountKind(discount.kind),
        value=discount.value,
        currency=currency,
        ends_at=discount.ends_at,
        min_subtotal=discount.min_subtotal,
        max_amount=discount.max_amount,
        cart_subtotal=cart_subtotal,
        starts_at=starts_at,
        customer_email=customer_email,
    )


def note_made_on_platform(session: Session, store_id: int, created: CreatedDiscount) -> None:
    """Keep the platform's id of a code a click made there (to delete it when unused)."""
    row = session.exec(
        select(Discount).where(Discount.store_id == store_id, Discount.code == created.code)
    ).first()
    if row is not None:
        row.platform_discount_id = created.platform_discount_id
