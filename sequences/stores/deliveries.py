"""Storing a webhook delivery: one row per event, whichever way it arrived.

A delivery is keyed three ways (``WebhookDelivery``'s unique constraints): the platform's
delivery id (or the connector's own key where that id is not unique), the platform's event id,
and a digest of the topic and body. Any match means the event was already received: the
insert fails, and nothing else is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Dialect, insert
from sqlalchemy.engine import Connection
from sqlalchemy.sql.schema import ScalarElementColumnDefault
from sqlmodel import col

from connectors.base import (
    Connector,
    KeysDeliveries,
    MalformedPayload,
    PrivacyRequest,
    WebhookEvent,
    WebhookIdentity,
)
from sequences.db import retry_while_busy
from sequences.models import DeliveryStatus, WebhookDelivery
from sequences.runtime import Runtime
from sequences.stores.spool import SPOOLS


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
    keys = runtime.connectors.capable(connector.platform, KeysDeliveries)
    if keys is not None:
        identity = replace(identity, delivery_id=keys.delivery_key(identity, raw_body, event))
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


def spool_delivery(runtime: Runtime, values: dict[str, Any]) -> bool:
    """Commit one delivery (``delivery_values``) to this process's spool, where the database
    has spools (a SQLite file: ``sequences.stores.spool``); False where it has none, and the
    caller records it itself. Whether it was received already is known when it is collected."""
    database = runtime.database
    if not database.sqlite:
        return False
    statement = _raw_insert(database.engine.dialect)
    assert statement.order is not None  # SQLite's paramstyle is positional
    spool = SPOOLS.own(database, statement.order)
    if spool is None:
        return False
    spool.append(statement.parameters(values))
    return True


def record_delivery(runtime: Runtime, values: dict[str, Any]) -> int | None:
    """Store one delivery (``delivery_values``) in its own transaction; None when it was
    already received.

    On the driver's own connection, with the statement compiled once: the request's one write
    costs ~0.18 ms of CPU this way against ~0.39 ms through SQLAlchemy's execution layer
    (measured on SQLite; bench (a) is ingest over a bare Flask app). Types go through the
    columns' own bind processors, so the row is the one ``insert_delivery`` would write."""
    database = runtime.database
    statement = _raw_insert(database.engine.dialect)
    parameters = statement.parameters(values)
    dbapi = database.engine.dialect.dbapi
    assert dbapi is not None
    if database.sqlite:
        with database.sqlite_writer() as connection:
            cursor = connection.cursor()
            try:
                # One statement, committed on its own (sequences.db leaves pysqlite in autocommit):
                # reading every row steps it to its end, where the commit happens and any error
                # in it is raised, before the platform is told "accepted".
                rows = retry_while_busy(lambda: cursor.execute(statement.sql, parameters).fetchall())
            except dbapi.IntegrityError:
                return None
            finally:
                cursor.close()
        return int(rows[0][0])
    raw = database.engine.raw_connection()
    try:
        cursor = raw.cursor()
        try:
            cursor.execute(statement.sql, parameters)
            row = cursor.fetchone()
            raw.commit()
        except dbapi.IntegrityError:
            raw.rollback()
            return None
        finally:
            cursor.close()
    finally:
        raw.close()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True)
class _RawInsert:
    """``_INSERT_DELIVERY`` compiled for one dialect, with each column's bind processor."""

    sql: str
    # The parameters' order for a positional paramstyle (SQLite's ``?``); None when named.
    order: tuple[str, ...] | None
    keys: tuple[str, ...]
    processors: dict[str, Callable[[Any], Any] | None]
    defaults: dict[str, Any]

    def parameters(self, values: dict[str, Any]) -> Any:
        bound = {}
        for key in self.keys:
            value = values[key] if key in values else self.defaults[key]
            processor = self.processors[key]
            bound[key] = processor(value) if processor is not None else value
        return [bound[key] for key in self.order] if self.order is not None else bound


_COMPILED: dict[str, _RawInsert] = {}


def _scalar_default(column: Any) -> Any:
    """What the ORM would write for a column the values leave out (``attempts``: 0)."""
    default = column.default
    return getattr(default, "arg", None) if isinstance(default, ScalarElementColumnDefault) else None


def _raw_insert(dialect: Dialect) -> _RawInsert:
    found = _COMPILED.get(dialect.name)
    if found is None:
        table = _INSERT_DELIVERY.table
        columns = [column for column in table.c if not column.primary_key]
        compiled = _INSERT_DELIVERY.compile(dialect=dialect, column_keys=[column.key for column in columns])
        order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
        keys = tuple(order) if order is not None else tuple(compiled.params)
        found = _RawInsert(
            sql=compiled.string,
            order=order,
            keys=keys,
            processors={key: table.c[key].type.bind_processor(dialect) for key in keys},
            defaults={column.key: _scalar_default(column) for column in columns},
        )
        _COMPILED[dialect.name] = found
    return found
