"""The store's rules on giving discounts, applied to a step's offer as it is sent.

- **No repeat offers** (``repeat_offer_days``, default 30): a shopper who was sent an offer for
  another cart within that many days gets this message without one, so abandoning a cart on
  purpose does not pay. Offers within the same cart's sequence (its steps 2 and 3) still go.
- **A monthly budget** (``monthly_discount_budget``): once the discounts shoppers used this
  calendar month (the store's time zone) reach it, messages go without offers until the month
  turns.
- **A ceiling** (``max_offer_percent``): no offer takes off more than this share of the cart's
  value; a larger one is cut down to it (a fixed amount to whole rupees), not dropped.

The message still goes, with the line for no offer: the rules hold back money, not reminders.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlmodel import Session, col

from sequences.engine import policy
from sequences.merchant.rollups import exact, exact_sum
from sequences.merchant.store_settings import Offer, StoreSettings
from sequences.models import Cart, RecoveryStep, Store

WHOLE = Decimal("1")


@dataclass(frozen=True)
class OfferHistory:
    """What the rules need to know of the past, read under the send's transaction."""

    # (contact id, store id) -> [(cart id, when an offer was sent)] within the longest window.
    offers_sent: dict[tuple[int, int], list[tuple[int, datetime]]]
    # store id -> discounts shoppers used this calendar month.
    spent_this_month: dict[int, Decimal]


def month_start(store: Store, now: datetime) -> datetime:
    local = now.astimezone(ZoneInfo(store.timezone))
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).astimezone(now.tzinfo)


def load_history(
    session: Session,
    stores: dict[int, Store],
    settings: dict[int, StoreSettings],
    contact_ids: Iterable[int],
    now: datetime,
    time_scale: float,
) -> OfferHistory:
    """Two statements for any number of carts: the contacts' offers sent, the stores' spend."""
    contacts = sorted(set(contact_ids))
    longest = max((s.repeat_offer_days for s in settings.values()), default=0)
    offers_sent: dict[tuple[int, int], list[tuple[int, datetime]]] = defaultdict(list)
    if contacts and longest:
        since = now - policy.scaled(longest * 24 * 60, time_scale)
        for contact_id, store_id, cart_id, sent_at, offer in session.execute(
            select(
                col(Cart.contact_id),
                col(Cart.store_id),
                col(Cart.id),
                col(RecoveryStep.sent_at),
                col(RecoveryStep.offer),
            )
            .join(Cart, col(Cart.id) == col(RecoveryStep.cart_id))
            .where(col(Cart.contact_id).in_(contacts), col(RecoveryStep.sent_at) >= since)
        ):
            # A JSON null is not an offer (the column stores None as JSON null).
            if offer:
                offers_sent[(contact_id, store_id)].append((cart_id, sent_at))
    spent: dict[int, Decimal] = {}
    for store_id, store in stores.items():
        if settings[store_id].monthly_discount_budget is None:
            continue
        total = session.execute(
            select(exact_sum(col(Cart.discount_given))).where(
                col(Cart.store_id) == store_id, col(Cart.ordered_at) >= month_start(store, now)
            )
        ).scalar()
        spent[store_id] = exact(total)
    return OfferHistory(dict(offers_sent), spent)


def allowed_offer(
    offer: Offer | None,
    cart: Cart,
    contact_id: int,
    settings: StoreSettings,
    history: OfferHistory,
    now: datetime,
    time_scale: float,
) -> Offer | None:
    """The step's offer as the rules let it go: unchanged, cut down, or none."""
    if offer is None:
        return None
    if settings.repeat_offer_days:
        since = now - policy.scaled(settings.repeat_offer_days * 24 * 60, time_scale)
        if any(
            other != cart.id and sent_at >= since
            for other, sent_at in history.offers_sent.get((contact_id, cart.store_id), [])
        ):
            return None
    budget = settings.monthly_discount_budget
    if budget is not None and history.spent_this_month.get(cart.store_id, Decimal(0)) >= budget:
        return None
    ceiling = settings.max_offer_percent
    if ceiling is not None:
        if offer.kind == "percent" and offer.value > ceiling:
            offer = offer.model_copy(update={"value": ceiling})
        elif offer.kind == "fixed":
            cap = (cart.subtotal * ceiling / 100).quantize(WHOLE, rounding=ROUND_DOWN)
            if cap <= 0:
                return None
            if offer.value > cap:
                offer = offer.model_copy(update={"value": cap})
    return offer


def count_sent(history: OfferHistory, contact_id: int, store_id: int, cart_id: int, at: datetime) -> None:
    """An offer going out in this batch counts for the shopper's next cart in the same batch."""
    history.offers_sent.setdefault((contact_id, store_id), []).append((cart_id, at))
