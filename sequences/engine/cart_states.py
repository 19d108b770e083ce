"""The cart's one state machine: every change of a cart's status is written here, nowhere else.

DESIGN.md's cart states: ``active`` -> ``abandoned`` (inactivity passed, reachable) ->
``recovering`` (a message went out) -> one of ``recovered``, ``converted_unassisted``,
``opted_out``, ``unreachable``, ``expired``; terminal states never go back to sending.

``TRANSITIONS`` is what the engine does, which is more than that main path: a cart can close
from any open state (bought, opted out, deleted, the store uninstalled), the shopper coming
back re-opens an abandoned cart, a never-messaged unreachable cart re-opens when a later
snapshot brings a phone, an order arriving late still records itself on a closed cart, and a
send whose answer comes back "undeliverable" closes its cart as unreachable whatever closed it
meanwhile. Callers keep their own guards (why a move happens); this module says which moves
exist and writes them, and a move the table does not hold raises ``IllegalCartTransition``.

Invariant: an open cart (active, abandoned, recovering) carries no ``status_reason`` and no
``closed_at``; a closed one has no alarm (``next_wake_at``), its close time (except after an
uninstall, which never wrote one) and its reason (none for a recovered cart).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Update
from sqlmodel import col

from sequences.models import TERMINAL_CART_STATUSES, Cart, CartStatus

OPEN_CART_STATUSES = frozenset(CartStatus) - TERMINAL_CART_STATUSES
# An order recorded on a cart, whatever its state, unless the shopper had opted out (tracking).
_ORDER_OUTCOMES = frozenset({CartStatus.RECOVERED, CartStatus.CONVERTED_UNASSISTED})

# from-status -> the statuses it may move to. Each edge names the code that takes it.
TRANSITIONS: Mapping[CartStatus, frozenset[CartStatus]] = {
    # Abandoned when the inactivity passed (sending); recovering when a message went out
    # before the abandonment was recorded (sending: an uncertain or Meta-confirmed send);
    # closed from any open state (tracking, sending, consent, inbound).
    CartStatus.ACTIVE: frozenset({CartStatus.ABANDONED, CartStatus.RECOVERING}) | TERMINAL_CART_STATUSES,
    # Active again when the shopper is back (tracking: a newer snapshot).
    CartStatus.ABANDONED: frozenset({CartStatus.ACTIVE, CartStatus.RECOVERING}) | TERMINAL_CART_STATUSES,
    CartStatus.RECOVERING: TERMINAL_CART_STATUSES,
    # Closed carts: a send answered "undeliverable" after they closed marks them unreachable
    # (sending), and an order is still recorded on one that has none yet (tracking.apply_order;
    # a recovered cart always has its order, an opted-out one keeps its status).
    CartStatus.RECOVERED: frozenset({CartStatus.UNREACHABLE}),
    CartStatus.CONVERTED_UNASSISTED: _ORDER_OUTCOMES | {CartStatus.UNREACHABLE},
    CartStatus.OPTED_OUT: frozenset({CartStatus.UNREACHABLE}),
    # "Nobody to message": a later snapshot can bring a phone (tracking, never-messaged only).
    CartStatus.UNREACHABLE: _ORDER_OUTCOMES | {CartStatus.UNREACHABLE, CartStatus.ACTIVE},
    CartStatus.EXPIRED: _ORDER_OUTCOMES | {CartStatus.UNREACHABLE},
}


class IllegalCartTransition(RuntimeError):
    """A status change the state machine does not hold: a bug in the caller's guards."""

    def __init__(self, cart_id: int | None, current: str, wanted: CartStatus) -> None:
        allowed = ", ".join(sorted(allowed_from(current))) or "nothing"
        super().__init__(
            f"cart {cart_id}: {current} -> {wanted} is not a cart transition (from {current}: {allowed})"
        )
        self.cart_id, self.current, self.wanted = cart_id, current, wanted


def allowed_from(current: str) -> frozenset[CartStatus]:
    """Where a cart in ``current`` may go (a status the machine does not know goes nowhere)."""
    try:
        return TRANSITIONS[CartStatus(current)]
    except ValueError:
        return frozenset()


def may_move(current: str, wanted: CartStatus) -> bool:
    return wanted in allowed_from(current)


def _move(cart: Cart, wanted: CartStatus) -> None:
    if not may_move(cart.status, wanted):
        raise IllegalCartTransition(cart.id, cart.status, wanted)
    cart.status = wanted


def abandon(cart: Cart, at: datetime) -> None:
    """The inactivity passed with someone to message: the sequence starts (active only)."""
    _move(cart, CartStatus.ABANDONED)
    cart.abandoned_at = at


def abandon_values(cart: Cart, at: datetime) -> dict[str, Any]:
    """``abandon`` as the columns a Core UPDATE writes (engine.batch_send)."""
    if not may_move(cart.status, CartStatus.ABANDONED):
        raise IllegalCartTransition(cart.id, cart.status, CartStatus.ABANDONED)
    return {"status": CartStatus.ABANDONED, "abandoned_at": at}


def recovering_values(cart: Cart) -> dict[str, Any]:
    """``start_recovering`` as the columns a Core UPDATE writes, for a cart already recovering
    too (a later step's message): it stays so."""
    if cart.status != CartStatus.RECOVERING and not may_move(cart.status, CartStatus.RECOVERING):
        raise IllegalCartTransition(cart.id, cart.status, CartStatus.RECOVERING)
    return {"status": CartStatus.RECOVERING}


def start_recovering(cart: Cart) -> None:
    """A message went out, or may have: the cart is being recovered."""
    _move(cart, CartStatus.RECOVERING)


def reopen(cart: Cart) -> None:
    """The shopper is back (abandoned), or a never-messaged unreachable cart got someone to
    message: the cart is open again, with no close reason or time."""
    _move(cart, CartStatus.ACTIVE)
    cart.status_reason, cart.closed_at = None, None


def close(cart: Cart, status: CartStatus, reason: str | None, now: datetime) -> None:
    """Close the cart in a terminal status; its alarm goes with it."""
    if status not in TERMINAL_CART_STATUSES:
        raise IllegalCartTransition(cart.id, cart.status, status)
    _move(cart, status)
    cart.status_reason, cart.closed_at, cart.next_wake_at = reason, now, None


def close_all(statement: Update, status: CartStatus, reason: str, now: datetime | None) -> Update:
    """``close`` for a bulk ``update(Cart)``: only rows whose status may move to ``status`` are
    touched (a racing order or opt-out wins). ``now`` None leaves ``closed_at`` unwritten, as
    the uninstall has always done."""
    if status not in TERMINAL_CART_STATUSES:
        raise IllegalCartTransition(None, "open", status)
    may_not_move = sorted(current for current in CartStatus if status not in TRANSITIONS[current])
    values: dict[str, Any] = {"status": status, "status_reason": reason, "next_wake_at": None}
    if now is not None:
        values["closed_at"] = now
    return statement.where(col(Cart.status).not_in(may_not_move)).values(**values)
