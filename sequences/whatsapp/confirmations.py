"""The one short reply to a STOP or START, sent inside the shopper's 24-hour window.

Claimed in the database before sending (``confirmation_sent_at``), so a job that runs twice
never sends two: a lost confirmation is better than a repeated one.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import update
from sqlmodel import col, select

from channels.transport import OutboundText, OutcomeKind
from channels.whatsapp.templates import copy_for
from sequences.models import Contact, InboundMessage, Store, WhatsAppAccount
from sequences.runtime import Runtime
from sequences.whatsapp.accounts import sender_for

log = logging.getLogger("cartback.whatsapp.confirmations")

# A confirmation can only go inside the shopper's 24-hour customer-service window.
REPLY_WINDOW = timedelta(hours=24)


def send_confirmation(runtime: Runtime, inbound_id: int) -> str:
    now = runtime.now()
    with runtime.database.locked_session() as session:
        inbound = session.get(InboundMessage, inbound_id)
        if inbound is None or inbound.contact_id is None:
            return "gone"
        if inbound.confirmation_sent_at is not None:
            return "already sent"
        if now - inbound.sent_at > REPLY_WINDOW:
            return "outside the 24-hour window"
        contact = session.get(Contact, inbound.contact_id)
        store = session.get(Store, inbound.store_id)
        account = session.exec(
            select(WhatsAppAccount).where(WhatsAppAccount.store_id == inbound.store_id)
        ).first()
        if contact is None or store is None or not contact.phone_e164.startswith("+"):
            return "contact erased"
        # Claimed by a conditional update (one winner on PostgreSQL too), before sending.
        claimed = session.exec(
            update(InboundMessage)
            .where(col(InboundMessage.id) == inbound_id, col(InboundMessage.confirmation_sent_at).is_(None))
            .values(confirmation_sent_at=now)
        ).rowcount
        if not claimed:
            return "already sent"
        words = copy_for(account.default_language if account else "en")
        template = words.opt_out_confirmation if inbound.intent == "stop" else words.opt_in_confirmation
        text = OutboundText(
            store_id=store.id or 0,
            to_phone_e164=contact.phone_e164,
            body=template.format(store=store.name),
            sender=sender_for(runtime, account)
            if account and runtime.transport.needs_whatsapp_account
            else None,
        )
    outcome = runtime.transport.send_text(text)
    log.info(
        "confirmation sent" if outcome.kind == OutcomeKind.SENT else "confirmation not sent",
        extra={"inbound_id": inbound_id, "outcome": outcome.kind.value, "code": outcome.error_code},
    )
    return outcome.kind.value
