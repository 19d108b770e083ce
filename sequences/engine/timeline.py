"""The cart timeline: what happened to a cart, in a merchant's words (append-only)."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from sequences.models import Cart, CartEvent


def record(session: Session, cart: Cart, kind: str, **detail: Any) -> None:
    """Never put personal data in ``detail``: the timeline is shown and exported."""
    assert cart.id is not None
    session.add(CartEvent(store_id=cart.store_id, cart_id=cart.id, kind=kind, detail=detail))
