"""A store connecting by handing us keys (WooCommerce's app authorization), as rows: a
connection started, its keys held, then proven on the store and made the store's.

Why this module exists: the connection's bookkeeping (``PlatformConnection``) is written by
three requests (the start, the store's key delivery, the merchant's return) and by a job, and
a view writes nothing itself; these are the writes, for the views and the job alike.
``app.woocommerce.connect`` tells the whole flow. Keys reach this module as the platform's
connector holds them (``StoreAccess.access_token``), and the connector proves them
(``VerifiesKeys``), so nothing here knows a platform's key format.

Invariants: only digests of the connection id and of the browser's cookie are stored. Keys a
store posts are held, encrypted, on the connection until they work on the store itself; only
then do they become the store's (``complete_connection``), and the connection keeps no copy.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from sqlmodel import Session, select

from connectors.base import PlatformError, VerifiesKeys
from sequences.models import PlatformConnection, Store
from sequences.runtime import Runtime
from sequences.stores.installs import installed_store, retry_on_store_race

# The name these lines have always been logged under (they were WooCommerce's connect view's).
log = logging.getLogger("cartback.woocommerce.connect")

# How long a merchant has to approve at their store before the connection id lapses.
CONNECTION_LIFETIME = timedelta(hours=1)


def digest(value: str) -> str:
    """What is stored of a connection id or a browser cookie (SHA-256, hex)."""
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class StartedConnection:
    """The one-time id the store will name (``user_id``) and the cookie of the browser that
    started it; only their digests are stored."""

    connection_id: str
    browser: str


class KeysRefused(Enum):
    UNKNOWN = "unknown"
    ALREADY_RECEIVED = "already received"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Completion:
    """A connection's keys proven and made the store's (``store_id``), or ``problem`` in words
    for the merchant; ``platform`` is the connection's ("" when there is no such connection)."""

    platform: str
    store_id: int | None
    problem: str | None = None


@dataclass(frozen=True)
class Returned:
    """The merchant's return: whether it is the first (only that one signs in) and the store's
    webhook secret (shown once, for the companion plugin)."""

    first_return: bool
    webhook_secret: str


def start_connection(runtime: Runtime, platform: str, site: str) -> StartedConnection:
    """A pending connection for the store at ``site``, valid for ``CONNECTION_LIFETIME``."""
    started = StartedConnection(secrets.token_urlsafe(24), secrets.token_urlsafe(24))
    now = runtime.now()
    with runtime.database.session() as session:
        session.add(
            PlatformConnection(
                connection_sha256=digest(started.connection_id),
                browser_sha256=digest(started.browser),
                platform=platform,
                store_url=site,
                created_at=now,
                expires_at=now + CONNECTION_LIFETIME,
            )
        )
    return started


def hold_keys(runtime: Runtime, platform: str, connection_id: str, access_token: str) -> int | KeysRefused:
    """Hold the keys a store delivered on the connection it names (encrypted, not yet the
    store's: ``complete_connection`` proves them first); the connection's row id."""
    now = runtime.now()
    with runtime.database.locked_session() as session:
        connection = session.exec(
            select(PlatformConnection)
            .where(PlatformConnection.connection_sha256 == digest(connection_id))
            .with_for_update()
        ).first()
        if connection is None or connection.platform != platform:
            return KeysRefused.UNKNOWN
        if connection.keys_received_at is not None:
            return KeysRefused.ALREADY_RECEIVED
        if connection.expires_at < now:
            return KeysRefused.EXPIRED
        connection.keys_ciphertext = runtime.secrets.encrypt(access_token)
        connection.keys_received_at = now
        connection_pk = connection.id
    assert connection_pk is not None
    return connection_pk


def complete_connection(runtime: Runtime, connection_pk: int) -> Completion:
    """Prove the held keys on the store and make them the store's."""
    with runtime.database.session() as session:
        connection = session.get(PlatformConnection, connection_pk)
        platform = connection.platform if connection is not None else ""
        if connection is None or not connection.keys_ciphertext:
            return Completion(platform, None, "no keys were received for this connection")
        if connection.store_id is not None:
            return Completion(platform, connection.store_id)
        typed = connection.store_url
        access_token = runtime.secrets.decrypt(connection.keys_ciphertext)
    verifier = runtime.connectors.capable(platform, VerifiesKeys)
    assert verifier is not None, f"{platform} takes no keys"
    try:
        # Outside any lock: the store may be slow. The site's own address names the store.
        site = verifier.verify_keys(typed, access_token)
    except PlatformError as exc:
        with runtime.database.session() as session:
            connection = session.get(PlatformConnection, connection_pk)
            if connection is not None:
                connection.problem = exc.reason
        log.warning("woocommerce keys not proven", extra={"connection": connection_pk, "reason": exc.reason})
        return Completion(platform, None, exc.reason)
    now = runtime.now()

    def attach(session: Session) -> tuple[int, bool]:
        connection = session.exec(
            select(PlatformConnection).where(PlatformConnection.id == connection_pk).with_for_update()
        ).one()
        if connection.store_id is not None:  # the job and the return raced: one won
            return connection.store_id, False
        store = installed_store(session, platform, site, now)
        store.api_base_url = store.storefront_url = site
        store.access_token_ciphertext = connection.keys_ciphertext
        if not store.webhook_secret_ciphertext:
            # Signs our webhooks and the companion plugin's captures; kept across reconnects
            # so an installed plugin keeps working.
            store.webhook_secret_ciphertext = runtime.secrets.encrypt(secrets.token_urlsafe(32))
        store.updated_at = now
        session.flush()
        assert store.id is not None
        connection.store_id, connection.problem = store.id, None
        # The keys now live on the store only.
        connection.keys_ciphertext = None
        return store.id, True

    attached = retry_on_store_race(runtime.database.locked_session, attach)
    if attached is None:
        return Completion(
            platform, None, "another connection for this store finished at the same moment; try again"
        )
    store_id, connected_now = attached
    if connected_now:
        log.info("woocommerce store connected", extra={"store_id": store_id})
    return Completion(platform, store_id)


def mark_returned(runtime: Runtime, connection_pk: int, store_id: int, now: datetime) -> Returned:
    """Record the merchant's return (first at ``now``) on a completed connection."""
    with runtime.database.locked_session() as session:
        connection = session.exec(
            select(PlatformConnection).where(PlatformConnection.id == connection_pk).with_for_update()
        ).one()
        first_return = connection.returned_at is None
        connection.returned_at = connection.returned_at or now
        store = session.get(Store, store_id)
        assert store is not None
        return Returned(first_return, runtime.secrets.decrypt(store.webhook_secret_ciphertext or ""))
