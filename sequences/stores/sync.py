"""For platforms that give up on failed deliveries (WooCommerce disables a webhook after a few
failures and never retries): keep the store's webhooks registered and active, and read back
every order changed since the last sync, so what a lost delivery would have said still arrives.

Polled orders go through the same door as webhooks: stored as deliveries under the same keys
(a change the webhook already reported is a duplicate and changes nothing), then processed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import col, select

from connectors.base import (
    PayloadError,
    PlatformError,
    RegistersWebhooks,
    StoreAccess,
    WebhookIdentity,
    WebhookSync,
)
from sequences.models import PlatformConnection, Store, StoreStatus
from sequences.redis_locks import redis_lock
from sequences.runtime import Runtime
from sequences.stores.access import call_platform, refresh_store_details
from sequences.stores.deliveries import delivery_values, record_delivery

log = logging.getLogger("cartback.platform_sync")

# Orders modified this long before the last sync are read again: the store's clock and ours
# may disagree, and a row saved during the last poll may carry an earlier time.
POLL_OVERLAP = timedelta(minutes=5)
# A poll looks back this far at most (a worker stopped for longer misses older changes; the
# orders are long settled by then).
MAX_POLL_LOOKBACK = timedelta(days=30)
# Seconds one store's sync may hold its lock (a slow store's pages of orders).
SYNC_LOCK_SECONDS = 300
# A connection row is kept this long after it lapsed (for an operator's look), then deleted.
LAPSED_CONNECTION_KEPT = timedelta(days=7)


@dataclass
class SyncReport:
    stores: int = 0
    orders_read: int = 0
    orders_new: int = 0
    orders_unreadable: int = 0
    webhooks_created: int = 0
    webhooks_reactivated: int = 0
    failed_stores: int = 0
    # Per store, in words: what its sync found, or why it could not run (the CLI prints these).
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.stores} stores synced: {self.orders_read} changed orders read, {self.orders_new} "
            f"not delivered before, {self.webhooks_created} webhooks created, {self.webhooks_reactivated} "
            f"re-activated, {self.failed_stores} stores could not be reached"
        )


def delivery_url(runtime: Runtime, platform: str) -> str:
    return f"{runtime.settings.app_url}/webhooks/{platform}"


def ensure_webhooks(
    runtime: Runtime,
    store_id: int,
    platform: str,
    *,
    set_secret: bool = False,
    wait_seconds: float = SYNC_LOCK_SECONDS,
) -> WebhookSync:
    """Register or re-activate one store's webhooks, one process at a time per store."""
    registrar = runtime.connectors.capable(platform, RegistersWebhooks)
    if registrar is None:
        raise ValueError(f"platform {platform!r} does not register webhooks through cartback")
    url = delivery_url(runtime, platform)
    # Redis down (held None): two creates at once make a duplicate webhook at worst, and the
    # next sync keeps one.
    key = f"cartback:webhooks:{store_id}"
    with redis_lock(runtime.redis, key, timeout=SYNC_LOCK_SECONDS, wait=wait_seconds) as held:
        if held is False:
            raise PlatformError("a worker is registering them right now; reload in a minute", retryable=True)
        return call_platform(
            runtime,
            store_id,
            lambda _, access: registrar.ensure_webhooks(access, url, set_secret=set_secret),
            operation="ensure_webhooks",
        )


def set_up_store(
    runtime: Runtime, store_id: int, platform: str, *, wait_seconds: float = SYNC_LOCK_SECONDS
) -> tuple[WebhookSync | None, str | None]:
    """After a connect: the store's details read and our webhooks registered; (what the
    webhooks look like, the problem in words if they could not be registered)."""
    try:
        refresh_store_details(runtime, store_id)
    except PlatformError as exc:
        # The defaults (INR, Asia/Kolkata) stand until the next connect; nothing depends on more.
        log.warning("store details not read", extra={"store_id": store_id, "reason": exc.reason})
    try:
        # A connect may follow an earlier install whose webhooks were signed otherwise.
        return ensure_webhooks(runtime, store_id, platform, set_secret=True, wait_seconds=wait_seconds), None
    except PlatformError as exc:
        log.warning("webhooks not registered", extra={"store_id": store_id, "reason": exc.reason})
        return None, exc.reason


def _poll(
    runtime: Runtime, registrar: RegistersWebhooks, store: Store, since: datetime, report: SyncReport
) -> None:
    assert store.id is not None
    store_id, platform = store.id, store.platform
    connector = runtime.connectors[platform]

    def read(_: object, access: StoreAccess) -> None:
        for topic, raw in registrar.changed_orders(access, since):
            report.orders_read += 1
            identity = WebhookIdentity(store_ref=store.platform_store_id, topic=topic, delivery_id="poll")
            try:
                event = connector.parse_webhook(identity, raw, default_region=store.default_region)
                values = delivery_values(
                    runtime, connector, store_id=store_id, identity=identity, raw_body=raw, event=event
                )
            except PayloadError as exc:
                report.orders_unreadable += 1
                log.warning("polled order unreadable", extra={"store_id": store_id, "reason": str(exc)})
                continue
            # Stored pending, like a webhook: the workers' drain processes it.
            if record_delivery(runtime, values) is not None:
                report.orders_new += 1

    call_platform(runtime, store_id, read, operation="read_changed_orders")


def active_store_ids(runtime: Runtime, platform: str, store_ref: str | None = None) -> list[int]:
    with runtime.database.session() as session:
        query = select(Store.id).where(Store.platform == platform, Store.status == StoreStatus.ACTIVE)
        if store_ref:
            query = query.where(Store.platform_store_id == store_ref)
        return [store_id for store_id in session.exec(query.order_by(col(Store.id))).all() if store_id]


def sync_store(runtime: Runtime, store_id: int, report: SyncReport | None = None) -> SyncReport:
    """One store: webhooks checked, then every order changed since its last sync read back."""
    report = report or SyncReport()
    with runtime.database.session() as session:
        store = session.get(Store, store_id)
        if store is None or store.status != StoreStatus.ACTIVE:
            return report
        session.expunge(store)
    registrar = runtime.connectors.capable(store.platform, RegistersWebhooks)
    if registrar is None:
        return report
    report.stores += 1
    started = runtime.now()
    # The first poll starts at the connect: orders left before it are not cartback's to chase.
    since = store.orders_synced_at or store.installed_at or started
    before = report.orders_read
    try:
        webhooks = ensure_webhooks(runtime, store_id, store.platform)
        report.webhooks_created += len(webhooks.created)
        report.webhooks_reactivated += len(webhooks.reactivated)
        _poll(runtime, registrar, store, max(since - POLL_OVERLAP, started - MAX_POLL_LOOKBACK), report)
    except PlatformError as exc:
        report.failed_stores += 1
        report.notes.append(f"{store.platform_store_id}: could not sync ({exc.reason}); run again later")
        log.warning("store not synced", extra={"store_id": store_id, "reason": exc.reason})
        return report
    with runtime.database.session() as session:
        row = session.get(Store, store_id)
        if row is not None:
            row.orders_synced_at = started
            session.commit()
    report.notes.append(
        f"{store.platform_store_id}: {webhooks}; {report.orders_read - before} changed orders read"
    )
    return report


def sync_platform(
    runtime: Runtime,
    platform: str,
    *,
    store_ref: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> SyncReport:
    """Webhooks checked and changed orders read back, for each active store of the platform."""
    report = SyncReport()
    if runtime.connectors.capable(platform, RegistersWebhooks) is None:
        return report
    for store_id in active_store_ids(runtime, platform, store_ref):
        sync_store(runtime, store_id, report)
        while report.notes:
            progress(report.notes.pop(0))
    log.info("platform synced", extra={"platform": platform, "report": str(report)})
    return report


def forget_lapsed_connections(runtime: Runtime) -> int:
    """Connections started and never finished (or long finished): their rows go."""
    with runtime.database.session() as session:
        result = session.exec(
            delete(PlatformConnection).where(
                col(PlatformConnection.expires_at) < runtime.now() - LAPSED_CONNECTION_KEPT
            )
        )
        session.commit()
        return int(result.rowcount or 0)
