"""A store arriving and leaving: its row's one get-or-create, an install's token, an uninstall.

Why this module exists: a store arrives two ways, by Shopify's token exchange on the app home
and by a WooCommerce connection whose keys were proven on the store (``connections``), and it
leaves by an uninstall webhook. The views used to write these rows themselves, with the
get-or-create written once per platform; here it is written once, for any caller (a view, a
job, a CLI command).

Invariants: one row per (platform, platform_store_id) (the table's unique constraint). Two
requests installing the same store at once can both look, both find nothing and both insert;
the second insert fails on the constraint, and its whole unit of work is tried again, which
then finds the first one's row (``retry_on_store_race``). An uninstall older than the latest
install changes nothing: a reinstall can overtake a late uninstall webhook.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from connectors.base import IssuedToken
from sequences.models import Store, StoreStatus
from sequences.runtime import Runtime
from sequences.stores.access import store_token_update
from sequences.stores.deliveries import insert_delivery
from sequences.stores.store_cache import store_cache

T = TypeVar("T")

# Tries of a unit of work that may create a store row: the second finds the row that the
# racing request created (the constraint only fails when that row exists).
STORE_RACE_ATTEMPTS = 2


@dataclass(frozen=True)
class TokenInstall:
    """A platform that issued us an access token for a store (Shopify's token exchange)."""

    platform: str
    platform_store_id: str
    api_base_url: str
    issued: IssuedToken


def installed_store(session: Session, platform: str, platform_store_id: str, now: datetime) -> Store:
    """The store's row, created if new, marked installed at ``now`` (a reinstall reactivates it).

    A new row is added to ``session``, not flushed: a racing request's row makes the flush or
    the commit raise ``IntegrityError``; run the unit of work with ``retry_on_store_race``.
    """
    store = session.exec(
        select(Store).where(Store.platform == platform, Store.platform_store_id == platform_store_id)
    ).first()
    if store is None:
        store = Store(platform=platform, platform_store_id=platform_store_id, name=platform_store_id)
        session.add(store)
    # The platform only lets us in while the app is installed, so this is the install (or a
    # reinstall whose uninstall webhook may not have reached us yet: a late one must not stop
    # it, and is judged against this time).
    store.status, store.installed_at = StoreStatus.ACTIVE, now
    return store


def retry_on_store_race(
    unit_of_work: Callable[[], AbstractContextManager[Session]], work: Callable[[Session], T]
) -> T | None:
    """``work`` in one unit of work, committed; tried once more when it lost the race to
    create a store row. None when every attempt lost."""
    for _attempt in range(STORE_RACE_ATTEMPTS):
        try:
            with unit_of_work() as session:
                return work(session)
        except IntegrityError:
            # Another request (two app pages loaded at once, two connections for one site)
            # created the row meanwhile: the next attempt finds it.
            continue
    return None


def record_token_install(runtime: Runtime, install: TokenInstall) -> int:
    """Create or reactivate the store's row with the newly issued token; its id."""

    def write(session: Session) -> int:
        store = installed_store(session, install.platform, install.platform_store_id, runtime.now())
        store.api_base_url = install.api_base_url
        store_token_update(runtime, store, install.issued)
        session.flush()
        assert store.id is not None
        return store.id

    store_id = retry_on_store_race(runtime.database.session, write)
    if store_id is None:
        raise RuntimeError(f"could not record the install of {install.platform_store_id}")
    return store_id


def record_uninstall(
    runtime: Runtime, delivery: dict[str, Any], *, store_id: int, occurred_at: datetime
) -> int | None:
    """Store an uninstall delivery (``deliveries.delivery_values``) and stop the store, in one
    transaction; the delivery's id, or None when it was already received (nothing written).

    Stops everything at once: every send re-checks the store's status under its lock, so
    nothing leaves after this commit. Processing the delivery does the rest. This process's
    ingest forgets the store at once (other processes within ``store_cache.TTL_SECONDS``).
    """
    try:
        with runtime.database.engine.begin() as connection:
            delivery_id = insert_delivery(connection, delivery)
            connection.execute(
                update(Store)
                .where(
                    col(Store.id) == store_id,
                    or_(col(Store.installed_at).is_(None), col(Store.installed_at) <= occurred_at),
                )
                .values(status=StoreStatus.UNINSTALLED, updated_at=runtime.now())
            )
    except IntegrityError:
        return None
    store_cache(runtime).forget(store_id)
    return delivery_id
