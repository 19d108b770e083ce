"""Erasure and retention: personal data removed for good (invariant 7).

Erasing a contact removes their phone, email and name everywhere we hold them — the contact,
the rendered messages, the sandbox outbox, the consent evidence text — and keeps only what
proves we behaved: that a message was sent when, that they opted out when. An opted-out
shopper stays suppressed after erasure through a keyed hash of the number, never the number.

An erasure locks the contact, then its carts (the lock order, sequences.db). A webhook
delivery being applied at that moment is not waited for (its worker may be waiting for this
contact): it applies after the erasure, as one arriving a moment later would, and its payload
is emptied with the retention period.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, update
from sqlmodel import Session, col, select

from sequences.db import lock_carts_of
from sequences.models import (
    Cart,
    ConsentEvent,
    Contact,
    DeliveryStatus,
    InboundMessage,
    Message,
    RecoveryStep,
    SandboxOutboxMessage,
    WebhookDelivery,
)
from sequences.runtime import Runtime

log = logging.getLogger("cartback.erasure")

# Processed webhook payloads are kept this long for support questions, then emptied.
PAYLOAD_RETENTION = timedelta(days=7)


def suppression_key(secret_key: str, store_id: int, phone_e164: str) -> str:
    """A keyed hash: the same number maps to the same key, the key never gives the number back."""
    digest = hmac.new(secret_key.encode(), f"{store_id}:{phone_e164}".encode(), hashlib.sha256).hexdigest()
    return "x" + digest[:19]  # fits the E.164 column (20), cannot collide with a "+" number


def event_key(runtime: Runtime, value: str) -> str:
    """A keyed hash of a Meta event id: wamids encode the shopper's number, and a preference
    change is known by the number itself; the key de-duplicates without holding either."""
    digest = hmac.new(runtime.settings.secret_key.encode(), value.encode(), hashlib.sha256).hexdigest()
    return f"h:{digest[:48]}"


@dataclass
class ErasureReport:
    contacts: int = 0
    messages: int = 0
    outbox_messages: int = 0
    consent_events: int = 0
    deliveries: int = 0


def erase_contact(runtime: Runtime, store_id: int, phone_e164: str) -> ErasureReport:
    report = ErasureReport()
    with runtime.database.locked_session() as session:
        contact = session.exec(
            select(Contact)
            .where(Contact.store_id == store_id, Contact.phone_e164 == phone_e164)
            .with_for_update()
        ).first()
        if contact is None or contact.id is None:
            return report
        erase_locked(session, runtime, contact, report)
    log.info("contact erased", extra={"store_id": store_id, "contact_id": contact.id})
    return report


def erase_locked(session: Session, runtime: Runtime, contact: Contact, report: ErasureReport) -> None:
    """Erase one contact the caller has locked; adds what it did to ``report``."""
    assert contact.id is not None
    now = runtime.now()
    # The contact's carts are locked (in id order) before anything of theirs is written: the
    # lock order of sequences.db. A redact of several contacts has locked all their carts so.
    carts = lock_carts_of(session, [contact.id])
    cart_ids = [cart.id for cart in carts if cart.id is not None]
    messages = session.exec(select(Message).where(Message.contact_id == contact.id)).all()
    for message in messages:
        message.preview, message.components = {"erased": True}, []
        # Meta's message ids encode the recipient's number.
        if message.provider_message_id and message.provider_message_id.startswith("wamid."):
            message.provider_message_id = event_key(runtime, message.provider_message_id)
    report.messages += len(messages)
    report.outbox_messages += int(
        session.exec(
            delete(SandboxOutboxMessage).where(
                col(SandboxOutboxMessage.message_id).in_([m.id for m in messages if m.id is not None])
            )
        ).rowcount
        or 0
    )
    # Replies sent outside a sequence (opt-out confirmations) are addressed by number only.
    report.outbox_messages += int(
        session.exec(
            delete(SandboxOutboxMessage).where(
                col(SandboxOutboxMessage.store_id) == contact.store_id,
                col(SandboxOutboxMessage.to_phone) == contact.phone_e164,
            )
        ).rowcount
        or 0
    )
    # What the shopper wrote to us: the words go, the fact and time of the reply stay.
    session.exec(update(InboundMessage).where(col(InboundMessage.contact_id) == contact.id).values(text=None))
    events = session.exec(select(ConsentEvent).where(ConsentEvent.contact_id == contact.id)).all()
    for event in events:
        event.evidence = {
            key: value for key, value in event.evidence.items() if key not in ("text", "wamid")
        } | {"erased_at": now.isoformat()}
    report.consent_events += len(events)
    # Payloads of this contact's carts may quote the number as typed; empty them all, in SQL
    # rather than reading every payload of the store back into Python.
    if cart_ids:
        # A payload names its cart by id or token, or (a WooCommerce order) by the shopper's email.
        terms = {
            term for cart in carts for term in (cart.platform_cart_id, cart.platform_cart_token) if term
        } | ({contact.email} if contact.email else set())
        # Not a delivery being applied right now: its worker holds that row and may be waiting
        # for this contact, so waiting for it here would be a deadlock (the lock order,
        # sequences.db). It applies after this erasure, as one arriving a moment later would,
        # and its payload goes with the retention period. This delivery's own row is ours.
        idle = (
            select(WebhookDelivery.id)
            .where(
                col(WebhookDelivery.store_id) == contact.store_id,
                col(WebhookDelivery.payload) != "",
                or_(
                    col(WebhookDelivery.cart_id).in_(cart_ids),
                    *(col(WebhookDelivery.payload).contains(term, autoescape=True) for term in sorted(terms)),
                ),
            )
            .with_for_update(skip_locked=True)
        )
        report.deliveries += int(
            session.exec(
                update(WebhookDelivery).where(col(WebhookDelivery.id).in_(idle)).values(payload="")
            ).rowcount
            or 0
        )
    if cart_ids:
        # A checkout URL's key opens the checkout prefilled with the shopper's details.
        session.exec(
            update(Cart).where(col(Cart.id).in_(cart_ids)).values(checkout_url=None, buyer_details=None)
        )
        session.exec(
            update(RecoveryStep).where(col(RecoveryStep.cart_id).in_(cart_ids)).values(checkout_url=None)
        )
    contact.first_name = contact.email = contact.platform_customer_id = None
    if contact.opted_out_at is not None:
        # Honour the opt-out for good: a later cart with this number finds it by this key.
        contact.phone_e164 = suppression_key(
            runtime.settings.secret_key, contact.store_id, contact.phone_e164
        )
    else:
        contact.phone_e164 = "x" + secrets.token_hex(10)[:19]
    contact.marketing_consent = False
    contact.updated_at = now
    report.contacts += 1


def is_suppressed(session: Session, runtime: Runtime, store_id: int, phone_e164: str) -> Contact | None:
    """The erased contact standing for this number, if it had opted out."""
    key = suppression_key(runtime.settings.secret_key, store_id, phone_e164)
    return session.exec(
        select(Contact).where(
            Contact.store_id == store_id, Contact.phone_e164 == key, col(Contact.opted_out_at).is_not(None)
        )
    ).first()


def purge_processed_payloads(runtime: Runtime, now: datetime | None = None) -> int:
    """Empty raw payloads (they hold phones) once processed and past the retention period."""
    cutoff = (now or runtime.now()) - PAYLOAD_RETENTION
    with runtime.database.session() as session:
        result = session.exec(
            update(WebhookDelivery)
            .where(
                col(WebhookDelivery.status) != DeliveryStatus.PENDING,
                col(WebhookDelivery.received_at) < cutoff,
                col(WebhookDelivery.payload) != "",
            )
            .values(payload="")
        )
        return int(result.rowcount or 0)
