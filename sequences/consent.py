"""Opt-out and opt-in: instant, permanent until the shopper says START, always on record.

An opt-out is written under the contact lock; senders take the same lock before their send
decision, so once an opt-out is committed no later decision can send (invariant 2).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlmodel import Session, col, select

from sequences import steps, timeline
from sequences.db import lock_cart, lock_contact
from sequences.models import TERMINAL_CART_STATUSES, Cart, CartStatus, ConsentEvent, Contact, OptOutSync
from sequences.runtime import Runtime
from sequences.scheduling import enqueue_opt_out_syncs

log = logging.getLogger("cartback.consent")

# Matched on the whole reply, case- and accent-insensitively (see normalise_reply). English,
# the WhatsApp quick-reply text, and common Hindi / Hinglish ways of saying it.
STOP_REPLIES = frozenset(
    {
        "stop",
        "stop promotions",
        "stop all",
        "unsubscribe",
        "opt out",
        "optout",
        "cancel",
        "end",
        "quit",
        "no more",
        "remove me",
        "dont message",
        "do not message",
        "band",
        "band karo",
        "band kar do",
        "bandh karo",
        "mat bhejo",
        "mat bhejna",
        "nahi chahiye",
        "message mat bhejo",
        "बंद",
        "बंद करो",
        "बंद करें",
        "रोकें",
        "रोको",
        "मत भेजो",
        "नहीं चाहिए",
    }
)
START_REPLIES = frozenset({"start", "subscribe", "resume", "unstop", "shuru", "shuru karo", "शुरू", "शुरू करो"})


class ReplyIntent(StrEnum):
    STOP = "stop"
    START = "start"
    OTHER = "other"


def normalise_reply(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = re.sub(r"[\s\u200c\u200d]+", " ", folded)
    return re.sub(r"[^\w\s\u0900-\u097f]", "", folded).strip()


def classify_reply(text: str) -> ReplyIntent:
    normalised = normalise_reply(text)
    if normalised in STOP_REPLIES:
        return ReplyIntent.STOP
    if normalised in START_REPLIES:
        return ReplyIntent.START
    return ReplyIntent.OTHER


def opt_out_locked(
    session: Session,
    contact: Contact,
    carts: Iterable[Cart],
    now: datetime,
    *,
    source: str = "recorded",
    evidence: dict[str, Any] | None = None,
) -> None:
    """Record the opt-out (once) and close the given carts; the caller holds the locks."""
    assert contact.id is not None
    if contact.opted_out_at is None:
        contact.opted_out_at = now
        contact.updated_at = now
        session.add(
            ConsentEvent(
                store_id=contact.store_id,
                contact_id=contact.id,
                kind="opt_out",
                source=source,
                evidence=evidence or {},
                # Told to the platform after the commit (sequences.opt_out_sync); a contact the
                # platform does not know as a customer has nothing to tell.
                platform_sync=OptOutSync.PENDING if contact.platform_customer_id else OptOutSync.SKIPPED,
                created_at=now,
            )
        )
    for cart in carts:
        assert cart.id is not None
        steps.cancel_open(session, cart.id, "shopper opted out")
        if cart.status not in TERMINAL_CART_STATUSES:
            cart.status, cart.status_reason, cart.closed_at, cart.next_wake_at = (
                CartStatus.OPTED_OUT,
                f"opted out ({source})",
                now,
                None,
            )
            timeline.record(session, cart, "opted_out", source=source)


@dataclass(frozen=True)
class ReplyResult:
    intent: ReplyIntent
    contact_id: int | None
    carts_closed: int = 0


def handle_reply(
    runtime: Runtime, store_id: int, phone_e164: str, text: str, *, source: str, evidence: dict[str, Any]
) -> ReplyResult:
    """A shopper's reply: STOP opts out, START opts back in, anything else is left to people."""
    intent = classify_reply(text)
    with runtime.database.locked_session() as session:
        peek = session.exec(
            select(Contact.id).where(Contact.store_id == store_id, Contact.phone_e164 == phone_e164)
        ).first()
        contact = lock_contact(session, peek) if peek is not None else None
        if contact is None or contact.id is None:
            return ReplyResult(intent, None)
        now = runtime.now()
        if intent == ReplyIntent.STOP:
            cart_ids = session.exec(
                select(Cart.id)
                .where(Cart.store_id == store_id, Cart.contact_id == contact.id)
                .where(col(Cart.status).not_in(list(TERMINAL_CART_STATUSES)))
                .order_by(col(Cart.id))
            ).all()
            carts = [
                cart for cart_id in cart_ids if cart_id is not None and (cart := lock_cart(session, cart_id))
            ]
            opt_out_locked(session, contact, carts, now, source=source, evidence=evidence)
            log.info("opt-out recorded", extra={"contact_id": contact.id, "carts": len(carts)})
            result = ReplyResult(intent, contact.id, len(carts))
        else:
            result = ReplyResult(intent, contact.id)
        if intent == ReplyIntent.START and contact.opted_out_at is not None:
            contact.opted_out_at = None
            contact.marketing_consent, contact.consent_source = True, source
            contact.updated_at = now
            session.add(
                ConsentEvent(
                    store_id=store_id,
                    contact_id=contact.id,
                    kind="opt_in",
                    source=source,
                    evidence=evidence,
                    created_at=now,
                )
            )
            log.info("opt-in recorded", extra={"contact_id": contact.id})
    if intent == ReplyIntent.STOP:
        # After the commit: the local opt-out stands whatever the platform says.
        enqueue_opt_out_syncs(runtime, contact_id=result.contact_id)
    return result
