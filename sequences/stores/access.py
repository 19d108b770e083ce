"""Calling a store's platform API with a live token: refreshed before expiry and after a 401.

Expiring tokens (Shopify's expiring offline tokens last an hour) are refreshed here, one
process at a time per store (a Redis lock): Shopify replaces the refresh token on every use,
so two processes refreshing at once would leave one holding a dead token. Platform calls are
never made under a database lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import func, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from connectors.base import (
    Connector,
    DescribesStore,
    IssuedToken,
    PlatformError,
    PlatformUnauthorized,
    RefreshesTokens,
    StoreAccess,
)
from sequences.models import Store, StoreStatus
from sequences.redis_locks import redis_lock
from sequences.runtime import Runtime

log = logging.getLogger("cartback.platform")

T = TypeVar("T")
# Longer than a refresh call can take (the connector's own timeouts are ~10 s).
REFRESH_LOCK_SECONDS = 30
# A token valid for longer than this is used as it is, without taking the lock. Wider than
# the connector's own margin (shopifyapp refreshes within 60 s of expiry), which stays the
# one that decides when to refresh; this only spares every API call a lock round trip.
NO_REFRESH_NEEDED = timedelta(minutes=5)


def store_token_update(runtime: Runtime, store: Store, issued: IssuedToken) -> None:
    """Write a newly issued token pair onto the store row (encrypted; invariant 7)."""
    store.access_token_ciphertext = runtime.secrets.encrypt(issued.access_token)
    store.access_token_expires_at = issued.expires_at
    store.refresh_token_ciphertext = (
        runtime.secrets.encrypt(issued.refresh_token) if issued.refresh_token else None
    )
    store.refresh_token_expires_at = issued.refresh_token_expires_at
    store.scopes = issued.scope or store.scopes
    store.updated_at = runtime.now()


def _load(runtime: Runtime, store_id: int) -> Store:
    with runtime.database.session() as session:
        store = session.get(Store, store_id)
        if store is None:
            raise PlatformUnauthorized("the store is no longer installed")
        session.expunge(store)
        return store


def fresh_access(
    runtime: Runtime, store_id: int, *, force: bool = False, rejected_token: str | None = None
) -> StoreAccess:
    """The store's API access, refreshing the token first when it is (nearly) expired.

    ``force`` after a 401: refresh even if the token looks valid, unless the token the
    platform rejected (``rejected_token``) has already been replaced by another process.
    """
    return _fresh(runtime, _load(runtime, store_id), force=force, rejected_token=rejected_token)


def _fresh(runtime: Runtime, store: Store, *, force: bool, rejected_token: str | None) -> StoreAccess:
    assert store.id is not None
    store_id = store.id
    connector = runtime.connectors.capable(store.platform, RefreshesTokens)
    if connector is None or not store.refresh_token_ciphertext:
        return runtime.store_access(store)
    expires_at = store.access_token_expires_at
    if not force and expires_at is not None and expires_at > runtime.now() + NO_REFRESH_NEEDED:
        return runtime.store_access(store)
    # Redis down (held None): refreshing unlocked beats not reaching the platform at all.
    key = f"cartback:token-refresh:{store_id}"
    with redis_lock(runtime.redis, key, timeout=REFRESH_LOCK_SECONDS, wait=REFRESH_LOCK_SECONDS) as held:
        if held is False:
            raise PlatformError("another process is still refreshing this store's token", retryable=True)
        # Re-read under the lock: another process may have refreshed while we waited.
        store = _load(runtime, store_id)
        if not store.refresh_token_ciphertext:
            return runtime.store_access(store)
        current = runtime.store_access(store)
        if force and rejected_token is not None and current.access_token != rejected_token:
            return current
        issued = connector.refresh_access(
            runtime.store_access(store),
            runtime.secrets.decrypt(store.refresh_token_ciphertext),
            expires_at=store.access_token_expires_at,
            refresh_expires_at=store.refresh_token_expires_at,
            force=force,
        )
        if issued is None:
            return runtime.store_access(store)
        with runtime.database.session() as session:
            row = session.get(Store, store_id)
            assert row is not None
            store_token_update(runtime, row, issued)
            session.commit()
            session.refresh(row)
            session.expunge(row)
        log.info("access token refreshed", extra={"store_id": store_id, "forced": force})
        return runtime.store_access(row)


# Refresh tokens (Shopify: 90 days) are replaced on every refresh; a quiet store would let
# its lapse. The sweep refreshes any whose refresh token has less than this left.
RENEW_REFRESH_TOKENS_WITHIN = timedelta(days=7)


def renew_lapsing_tokens(runtime: Runtime) -> int:
    """Refresh the tokens of active stores whose refresh token lapses soon; returns how many."""
    with runtime.database.session() as session:
        store_ids = session.exec(
            select(Store.id).where(
                Store.status == StoreStatus.ACTIVE,
                col(Store.refresh_token_ciphertext).is_not(None),
                col(Store.refresh_token_expires_at) < runtime.now() + RENEW_REFRESH_TOKENS_WITHIN,
            )
        ).all()
    renewed = 0
    for store_id in store_ids:
        if store_id is None:
            continue
        try:
            fresh_access(runtime, store_id, force=True)
            renewed += 1
        except PlatformError as exc:
            log.warning("lapsing token not renewed", extra={"store_id": store_id, "reason": exc.reason})
    return renewed


def refresh_store_details(runtime: Runtime, store_id: int) -> None:
    """Read the store's name, currency, zone, country and storefront from its platform (also
    proves the access works); PlatformError when it cannot be read."""
    store = _load(runtime, store_id)
    describer = runtime.connectors.capable(store.platform, DescribesStore)
    if describer is None:
        return
    details = call_platform(
        runtime, store_id, lambda _, access: describer.store_details(access), operation="store_details"
    )
    with runtime.database.session() as session:
        row = session.get(Store, store_id)
        assert row is not None
        row.name, row.currency, row.timezone = details.name, details.currency, details.timezone
        row.default_region = (details.country or row.default_region).upper()[:2]
        row.storefront_url = details.storefront_url or row.storefront_url
        session.commit()


def call_platform(
    runtime: Runtime, store_id: int, call: Callable[[Connector, StoreAccess], T], *, operation: str
) -> T:
    """Run one platform call; after a 401, refresh the token once and try again. Each attempt
    is timed, and counted by its error, under ``operation`` (telemetry)."""
    store = _load(runtime, store_id)
    connector = runtime.connectors[store.platform]
    try:
        access = _fresh(runtime, store, force=False, rejected_token=None)
        try:
            result = _timed(runtime, store.platform, operation, call, connector, access)
        except PlatformUnauthorized:
            # Re-read: the app page may have exchanged a new token meanwhile.
            renewed = _fresh(
                runtime, _load(runtime, store_id), force=True, rejected_token=access.access_token
            )
            result = _timed(runtime, store.platform, operation, call, connector, renewed)
    except PlatformError as exc:
        _note_platform(runtime, store_id, exc.reason)
        raise
    if store.platform_failing_since is not None:
        _note_platform(runtime, store_id, None)
    return result


def _note_platform(runtime: Runtime, store_id: int, failure: str | None) -> None:
    """Keep on the store since when its platform has been failing (None: working again), for
    the platform_failing alert. Bookkeeping: never the reason a platform call fails."""
    values: dict[str, Any] = (
        {"platform_failing_since": None, "platform_failure": None}
        if failure is None
        else {
            "platform_failing_since": func.coalesce(col(Store.platform_failing_since), runtime.now()),
            "platform_failure": failure[:500],
        }
    )
    try:
        with runtime.database.engine.begin() as connection:
            connection.execute(update(Store).where(col(Store.id) == store_id).values(**values))
    except SQLAlchemyError:
        log.warning("platform state not recorded", extra={"store_id": store_id})


def _timed(
    runtime: Runtime,
    platform: str,
    operation: str,
    call: Callable[[Connector, StoreAccess], T],
    connector: Connector,
    access: StoreAccess,
) -> T:
    with runtime.telemetry.api_call(platform, operation) as outcome:
        try:
            return call(connector, access)
        except PlatformUnauthorized:
            outcome["code"] = "unauthorized"
            raise
        except PlatformError as exc:
            outcome["code"] = "unavailable" if exc.retryable else "refused"
            raise
