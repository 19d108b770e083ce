"""Shopper messages and WhatsApp preference changes: STOP, START or anything else they say.

Each is recorded once under its Meta id (an ``InboundMessage``); a STOP or a "stop marketing"
preference is an instant opt-out, applied here inside the webhook request under the contact
lock the senders take, so a step due a second later re-checks and does not go out (invariant 2).
A STOP from a number we hold nothing for is remembered, so no later cart ever messages it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from channels.whatsapp.templates import STOP_PAYLOAD
from channels.whatsapp.webhook_events import InboundEvent, PreferenceEvent
from sequences.db import lock_contact
from sequences.engine.consent import ReplyIntent, ReplyResult, apply_intent_locked, classify_reply
from sequences.models import Contact, InboundMessage, Message
from sequences.privacy.erasure import event_key, is_suppressed
from sequences.runtime import Runtime
from sequences.whatsapp.inbound.applied import Applied

log = logging.getLogger("cartback.whatsapp.inbound")


def _has_number(session: Session, contact_id: int | None) -> bool:
    phone = session.exec(select(Contact.phone_e164).where(Contact.id == contact_id)).first()
    return bool(phone and phone.startswith("+"))


def _intent(event: InboundEvent) -> ReplyIntent:
    if event.payload == STOP_PAYLOAD:
        return ReplyIntent.STOP
    return classify_reply(event.text) if event.text else ReplyIntent.OTHER


def _contact_for(
    session: Session, runtime: Runtime, store_id: int, wa_id: str | None, context_wamid: str | None
) -> tuple[int | None, int | None]:
    """(contact id, our message id): by the message answered, else by the sender's number."""
    if context_wamid:
        row = session.exec(
            select(Message.contact_id, Message.id).where(
                Message.store_id == store_id, Message.provider_message_id == context_wamid
            )
        ).first()
        # An erased contact's number is gone: a reply to its old message is matched by the
        # sender's number like any other, so a STOP still protects that number.
        if row is not None and _has_number(session, row[0]):
            return row[0], row[1]
    if wa_id:
        phone = f"+{wa_id}"
        contact_id = session.exec(
            select(Contact.id).where(Contact.store_id == store_id, Contact.phone_e164 == phone)
        ).first()
        if contact_id is None:
            erased = is_suppressed(session, runtime, store_id, phone)
            contact_id = erased.id if erased is not None else None
        return contact_id, None
    return None, None


def apply_message(runtime: Runtime, store_id: int, event: InboundEvent, result: Applied) -> bool:
    intent = _intent(event)
    source = "whatsapp_button" if event.payload == STOP_PAYLOAD else "whatsapp_reply"
    key = event_key(runtime, event.wamid)
    try:
        with runtime.database.locked_session() as session:
            if _seen(session, store_id, key):
                return False
            contact_id, reply_to = _contact_for(
                session, runtime, store_id, event.from_wa_id, event.context_wamid
            )
            contact = lock_contact(session, contact_id) if contact_id is not None else None
            if contact is None and intent == ReplyIntent.STOP and event.from_wa_id:
                # STOP from a number we hold nothing for: remember it, so no cart ever messages it.
                contact = _new_opted_out_contact(session, store_id, f"+{event.from_wa_id}", event.at)
            if contact is None:
                log.info("message from an unknown shopper", extra={"store_id": store_id, "kind": event.kind})
                return False
            inbound = InboundMessage(
                store_id=store_id,
                contact_id=contact.id,
                provider_event_id=key,
                kind=event.kind,
                intent=intent.value,
                text=event.text,
                reply_to_message_id=reply_to,
                sent_at=event.at,
            )
            session.add(inbound)
            session.flush()
            evidence: dict[str, Any] = {
                "wamid": event.wamid,
                "text": (event.text or "")[:160],
                "at": event.at.isoformat(),
                "inbound_id": inbound.id,
            }
            if reply_to is not None:
                evidence["message_id"] = reply_to
            outcome = apply_intent_locked(
                session, contact, intent, runtime.now(), source=source, evidence=evidence, said_at=event.at
            )
    except IntegrityError:
        return False  # the same message applied by a concurrent delivery
    _after(result, outcome, inbound.id if outcome.changed and intent != ReplyIntent.OTHER else None)
    return True


def apply_preference(runtime: Runtime, store_id: int, event: PreferenceEvent, result: Applied) -> bool:
    if event.category != "marketing_messages" or event.value not in ("stop", "resume"):
        return False
    intent = ReplyIntent.STOP if event.value == "stop" else ReplyIntent.START
    key = event_key(runtime, f"user_preferences:{event.wa_id}:{int(event.at.timestamp())}:{event.value}")
    try:
        with runtime.database.locked_session() as session:
            if _seen(session, store_id, key):
                return False
            contact_id, _ = _contact_for(session, runtime, store_id, event.wa_id, None)
            contact = lock_contact(session, contact_id) if contact_id is not None else None
            if contact is None and intent == ReplyIntent.STOP:
                contact = _new_opted_out_contact(session, store_id, f"+{event.wa_id}", event.at)
            if contact is None:
                return False
            session.add(
                InboundMessage(
                    store_id=store_id,
                    contact_id=contact.id,
                    provider_event_id=key,
                    kind="user_preferences",
                    intent=intent.value,
                    sent_at=event.at,
                )
            )
            evidence = {"preference": event.value, "at": event.at.isoformat()}
            outcome = apply_intent_locked(
                session,
                contact,
                intent,
                runtime.now(),
                source="whatsapp_user_preferences",
                evidence=evidence,
                said_at=event.at,
            )
    except IntegrityError:
        return False
    # WhatsApp itself confirmed this choice to the shopper: no reply of ours.
    _after(result, outcome, None)
    return True


def _seen(session: Session, store_id: int, key: str) -> bool:
    return (
        session.exec(
            select(InboundMessage.id).where(
                InboundMessage.store_id == store_id, InboundMessage.provider_event_id == key
            )
        ).first()
        is not None
    )


def _new_opted_out_contact(session: Session, store_id: int, phone: str, at: datetime) -> Contact:
    contact = Contact(
        store_id=store_id, phone_e164=phone, marketing_consent=False, created_at=at, updated_at=at
    )
    session.add(contact)
    session.flush()
    return contact


def _after(result: Applied, outcome: ReplyResult, confirm_inbound_id: int | None) -> None:
    if outcome.intent == ReplyIntent.STOP and outcome.contact_id is not None:
        result.opted_out_contacts.add(outcome.contact_id)
    if confirm_inbound_id is not None:
        result.confirmations.append(confirm_inbound_id)
