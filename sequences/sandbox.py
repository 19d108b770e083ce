"""The sandbox transport: messages "delivered" to an outbox table, shown at /outbox.

The development and demo stand-in for WhatsApp. It lives beside the engine, not in
``channels``, because it writes to cartback's own database.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from channels.transport import GO_NOW, OutboundMessage, OutboundText, Sender, SendOutcome, Slot
from sequences.db import Database
from sequences.models import SandboxOutboxMessage


class SandboxTransport:
    """Delivers to the outbox table. Idempotent per message id, like an idempotency key."""

    name = "sandbox"
    needs_whatsapp_account = False

    def __init__(self, database: Database) -> None:
        self._database = database

    def reserve(self, recipients: Sequence[tuple[Sender | None, str]]) -> list[Slot]:
        """The outbox has no sending limits."""
        return [GO_NOW] * len(recipients)

    def warm_up(self) -> None:
        """Nothing to start: the outbox is a table."""

    def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        """The batch in one insert; one already in the outbox sends the batch one by one."""
        rows = [_outbox_row(message) for message in messages]
        try:
            with self._database.engine.begin() as connection:
                connection.execute(insert(OUTBOX), rows)
        except IntegrityError:
            return [self.send(message) for message in messages]
        return [SendOutcome.sent(row["provider_message_id"]) for row in rows]

    def send(self, message: OutboundMessage) -> SendOutcome:
        row = _outbox_row(message)
        provider_id = row["provider_message_id"]
        try:
            with self._database.engine.begin() as connection:
                connection.execute(insert(OUTBOX), [row])
        except IntegrityError:
            # Already in the outbox: report the original, never a second copy.
            with self._database.session() as session:
                existing = session.exec(
                    select(SandboxOutboxMessage).where(SandboxOutboxMessage.message_id == message.message_id)
                ).one()
                provider_id = existing.provider_message_id
        return SendOutcome.sent(provider_id)

    def send_text(self, message: OutboundText) -> SendOutcome:
        provider_id = f"sandbox.{uuid.uuid4().hex}"
        with self._database.session() as session:
            session.add(
                SandboxOutboxMessage(
                    store_id=message.store_id,
                    provider_message_id=provider_id,
                    to_phone=message.to_phone_e164,
                    template_name="(reply)",
                    body=message.body,
                )
            )
        return SendOutcome.sent(provider_id)


OUTBOX: Table = SandboxOutboxMessage.__table__  # type: ignore[attr-defined]


def _outbox_row(message: OutboundMessage) -> dict[str, Any]:
    preview = message.preview
    return {
        "store_id": message.store_id,
        "message_id": message.message_id,
        "provider_message_id": f"sandbox.{uuid.uuid4().hex}",
        "to_phone": message.to_phone_e164,
        "template_name": message.template_name,
        "body": "\n\n".join(str(part) for part in (preview.get("body"), preview.get("footer")) if part),
        "image_url": preview.get("image_url"),
        "buttons": list(preview.get("buttons", [])),
        "created_at": datetime.now(UTC),
    }
