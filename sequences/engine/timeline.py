"""The cart timeline: what happened to a cart, in a merchant's words (append-only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from sequences.models import Cart, CartEvent


def row(cart: Cart, kind: str, at: datetime, **detail: Any) -> dict[str, Any]:
    """``record`` as a row for a Core insert (the engine's batches): the same rule for ``detail``."""
    return {"store_id": cart.store_id, "cart_id": cart.id, "kind": kind, "detail": detail, "created_at": at}


def record(session: Session, cart: Cart, kind: str, **detail: Any) -> None:
    """Never put personal data in ``detail``: the timeline is shown and exported."""
    assert cart.id is not None
    session.add(CartEvent(store_id=cart.store_id, cart_id=cart.id, kind=kind, detail=detail))
