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

from sequences.db import lock_cart, lock_contact
from sequences.engine import cart_states, steps, timeline
from sequences.engine.scheduling import enqueue_opt_out_syncs
from sequences.models import TERMINAL_CART_STATUSES, Cart, CartStatus, ConsentEvent, Contact, OptOutSync
from sequences.runtime import Runtime

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
        "प्रमोशन बंद करें",
        "प्रचार बंद करें",
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
        contact.consent_changed_at = now
        contact.opted_out_at = now
        contact.updated_at = now
        session.add(
            ConsentEvent(
                store_id=contact.store_id,
                contact_id=contact.id,
                kind="opt_out",
                source=source,
                evidence=evidence or {},
                # Told to the platform after the commit (sequences.stores.opt_out_sync); a contact the
                # platform does not know as a customer has nothing to tell.
                platform_sync=OptOutSync.PENDING if contact.platform_customer_id else OptOutSync.SKIPPED,
                created_at=now,
            )
        )
    for cart in carts:
        assert cart.id is not None
        steps.cancel_open(session, cart.id, "shopper opted out")
        if cart.status not in TERMINAL_CART_STATUSES:
            cart_states.close(cart, CartStatus.OPTED_OUT, f"opted out ({source})", now)
            timeline.record(session, cart, "opted_out", source=source)


@dataclass(frozen=True)
class ReplyResult:
    intent: ReplyIntent
    contact_id: int | None
    carts_closed: int = 0
    # The contact's consent changed now (not a repeat): worth a confirmation reply.
    changed: bool = False


def _open_carts_locked(session: Session, contact: Contact) -> list[Cart]:
    cart_ids = session.exec(
        select(Cart.id)
        .where(Cart.store_id == contact.store_id, Cart.contact_id == contact.id)
        .where(col(Cart.status).not_in(list(TERMINAL_CART_STATUSES)))
        .order_by(col(Cart.id))
    ).all()
    # In id order, one by one (the lock order, sequences.db); a cart that moved to another
    # contact before its lock was granted is no longer this shopper's to close.
    locked = [cart for cart_id in cart_ids if cart_id is not None and (cart := lock_cart(session, cart_id))]
    return [cart for cart in locked if cart.contact_id == contact.id]


def opt_out_contact_locked(
    session: Session,
    contact: Contact,
    now: datetime,
    *,
    source: str,
    evidence: dict[str, Any],
    said_at: datetime | None = None,
) -> ReplyResult:
    """Opt the contact out and close every open cart of theirs; the caller holds the contact lock."""
    assert contact.id is not None
    already = contact.opted_out_at is not None
    carts = _open_carts_locked(session, contact)
    opt_out_locked(session, contact, carts, now, source=source, evidence=evidence)
    # The shopper's own time; a late opt-out (a failed status) never moves it backwards.
    said = said_at or now
    contact.consent_changed_at = max(said, contact.consent_changed_at) if contact.consent_changed_at else said
    log.info("opt-out recorded", extra={"contact_id": contact.id, "carts": len(carts), "source": source})
    return ReplyResult(ReplyIntent.STOP, contact.id, len(carts), changed=not already)


def opt_in_locked(
    session: Session,
    contact: Contact,
    now: datetime,
    *,
    source: str,
    evidence: dict[str, Any],
    said_at: datetime | None = None,
) -> ReplyResult:
    """START: lift an opt-out (recorded as evidence); nothing to do for a contact not opted out."""
    assert contact.id is not None
    if contact.opted_out_at is None:
        return ReplyResult(ReplyIntent.START, contact.id)
    contact.consent_changed_at = said_at or now
    contact.opted_out_at = None
    contact.marketing_consent, contact.consent_source = True, source
    contact.updated_at = now
    session.add(
        ConsentEvent(
            store_id=contact.store_id,
            contact_id=contact.id,
            kind="opt_in",
            source=source,
            evidence=evidence,
            created_at=now,
        )
    )
    log.info("opt-in recorded", extra={"contact_id": contact.id, "source": source})
    return ReplyResult(ReplyIntent.START, contact.id, changed=True)


def hold_for_a_person_locked(session: Session, contact: Contact, now: datetime, **detail: Any) -> ReplyResult:
    """The shopper wrote something else: their sequences wait for a person to answer."""
    assert contact.id is not None
    carts = _open_carts_locked(session, contact)
    for cart in carts:
        assert cart.id is not None
        cart.shopper_replied_at = now
        steps.cancel_open(session, cart.id, "the shopper replied; a person should answer")
        timeline.record(session, cart, "shopper_replied", **detail)
    return ReplyResult(ReplyIntent.OTHER, contact.id, len(carts))


def apply_intent_locked(
    session: Session,
    contact: Contact,
    intent: ReplyIntent,
    now: datetime,
    *,
    source: str,
    evidence: dict[str, Any],
    said_at: datetime | None = None,
) -> ReplyResult:
    """Act on what the shopper said at ``said_at`` (default: now). A STOP or START said before
    the last change on record (a retried delivery arriving late) changes nothing."""
    # Meta stamps whole seconds, so with its times a tie is possible and goes to STOP; our own
    # clock (the sandbox outbox) orders replies as they are handled.
    whole_seconds = said_at is not None
    said_at = said_at or now
    last = contact.consent_changed_at
    if intent == ReplyIntent.STOP:
        if last is not None and said_at < last:
            return ReplyResult(intent, contact.id)
        return opt_out_contact_locked(
            session, contact, now, source=source, evidence=evidence, said_at=said_at
        )
    if intent == ReplyIntent.START:
        # Meta's times are whole seconds: a START in the same second as a STOP loses to it.
        if last is not None and (said_at < last or (whole_seconds and said_at == last)):
            return ReplyResult(intent, contact.id)
        return opt_in_locked(session, contact, now, source=source, evidence=evidence, said_at=said_at)
    return hold_for_a_person_locked(session, contact, now, source=source)


def handle_reply(
    runtime: Runtime, store_id: int, phone_e164: str, text: str, *, source: str, evidence: dict[str, Any]
) -> ReplyResult:
    """A shopper's reply: STOP opts out, START opts back in, anything else waits for a person."""
    intent = classify_reply(text)
    with runtime.database.locked_session() as session:
        peek = session.exec(
            select(Contact.id).where(Contact.store_id == store_id, Contact.phone_e164 == phone_e164)
        ).first()
        contact = lock_contact(session, peek) if peek is not None else None
        if contact is None or contact.id is None:
            return ReplyResult(intent, None)
        result = apply_intent_locked(
            session, contact, intent, runtime.now(), source=source, evidence=evidence
        )
    if intent == ReplyIntent.STOP:
        # After the commit: the local opt-out stands whatever the platform says.
        enqueue_opt_out_syncs(runtime, contact_id=result.contact_id)
    return result
