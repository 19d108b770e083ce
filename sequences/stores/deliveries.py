"""Storing a webhook delivery: one row per event, whichever way it arrived.

A delivery is keyed three ways (``WebhookDelivery``'s unique constraints): the platform's
delivery id (or the connector's own key where that id is not unique), the platform's event id,
and a digest of the topic and body. Any match means the event was already received: the
insert fails, and nothing else is written.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from connectors.base import (
    Connector,
    KeysDeliveries,
    MalformedPayload,
    PrivacyRequest,
    WebhookEvent,
    WebhookIdentity,
)
from sequences.models import DeliveryStatus, WebhookDelivery
from sequences.runtime import Runtime


def content_digest(topic: str, raw_body: bytes) -> str:
    return hashlib.sha256(topic.encode() + b"\n" + raw_body).hexdigest()


def delivery_values(
    runtime: Runtime,
    connector: Connector,
    *,
    store_id: int,
    identity: WebhookIdentity,
    raw_body: bytes,
    event: WebhookEvent,
) -> dict[str, Any]:
    """The row for a parsed delivery, keyed as its platform tells events apart.

    ``MalformedPayload`` when the body is not UTF-8: the row keeps it as text, and a connector
    may ignore a topic without ever reading its body.
    """
    try:
        payload = raw_body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPayload(f"body is not UTF-8 text (invalid byte at offset {exc.start})") from None
    if isinstance(connector, KeysDeliveries):
        identity = replace(identity, delivery_id=connector.delivery_key(identity, raw_body, event))
    return {
        "platform": connector.platform,
        "store_id": store_id,
        "delivery_id": identity.delivery_id[:255],
        "event_id": identity.event_id[:255] if identity.event_id else None,
        "triggered_at": identity.triggered_at,
        "topic": identity.topic[:64],
        # The same privacy request can rightly come twice with the same body (a customer asks
        # again): only the platform's ids de-duplicate those.
        "content_sha256": content_digest(
            identity.topic,
            raw_body + identity.delivery_id.encode() if isinstance(event, PrivacyRequest) else raw_body,
        ),
        "payload": payload,
        "status": DeliveryStatus.PENDING,
        "received_at": runtime.now(),
    }


# Built once: ingest's one statement. Executed with the values as parameters it is compiled
# once per process too, where ``.values(**values)`` rebuilt and re-keyed it every request
# (a third of a delivery's CPU time, bench/README.md (a)).
_INSERT_DELIVERY = insert(WebhookDelivery).returning(col(WebhookDelivery.id))


def insert_delivery(connection: Connection, values: dict[str, Any]) -> int:
    """The new delivery's id; IntegrityError when the event was already received."""
    delivery_id = connection.execute(_INSERT_DELIVERY, values).scalar_one()
    assert delivery_id is not None
    return delivery_id


def record_delivery(runtime: Runtime, values: dict[str, Any]) -> int | None:
    """Store one delivery (``delivery_values``) in its own transaction; None when it was
    already received."""
    try:
        with runtime.database.engine.begin() as connection:
            return insert_delivery(connection, values)
    except IntegrityError:
        return None
