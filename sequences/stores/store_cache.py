"""What webhook ingest needs to know about a store, kept per process: id, status, default
region and decrypted webhook secret, by (platform, the platform's store ref).

Why: ingest is the hottest path in the app, and the store's row (one SELECT and a Fernet
decrypt per delivery) was a sixth of its cost, for a row that changes a few times in a
store's life.

Invariants:
- Only installed (ACTIVE) stores are cached. A store not found, or uninstalled, is read from
  the database on every delivery, so an install (or a reinstall) is seen by the very next
  delivery in every process, never after a wait.
- An uninstall recorded in this process drops the entry at once (``installs.record_uninstall``).
  Another process notices within ``TTL_SECONDS``; a delivery it accepts meanwhile is stored
  and then changes nothing, since ``tracking.process_delivery`` ignores every event of a store
  that is no longer active, except privacy requests (which outlive the install anyway).
- A signature that does not match the cached secret is checked once more against the row
  read afresh (``StoreCache.reload``) before the sender is refused: a rotated secret is
  accepted by its first delivery, and the old one stops working as soon as the row is read.
- One cache per ``Database`` (not per runtime): the web app and the runtimes a test builds
  over the same database share it, and a fresh database never sees another's entries.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from sqlmodel import col, select

from sequences.db import Database
from sequences.models import Store, StoreStatus
from sequences.runtime import Runtime

# How long an entry is trusted, in seconds, before the row is read again. It bounds what
# another process's change takes to reach this one: an uninstall (deliveries accepted
# meanwhile change nothing, see above), a new default region (only ingest's validation uses
# it; processing reads the row), and a secret replaced without a delivery signed by the new
# one (the old secret keeps verifying until then). 30 s costs one SELECT per store per
# process every 30 s, nothing next to hundreds of deliveries a second.
TTL_SECONDS = 30.0


@dataclass(frozen=True)
class KnownStore:
    """A store as ingest sees it; ``secret`` is "" when the store has none (app-signed platforms)."""

    store_id: int
    status: str
    default_region: str
    secret: str

    @property
    def active(self) -> bool:
        return self.status == StoreStatus.ACTIVE


@dataclass(frozen=True)
class _Entry:
    store: KnownStore
    loaded_at: float


class StoreCache:
    """The per-process map; safe to share between threads (a race at worst reads a row twice)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}

    def lookup(self, runtime: Runtime, platform: str, store_ref: str) -> tuple[KnownStore | None, bool]:
        """The store and whether it came from the cache (False: read from the database now).
        None when no such store exists."""
        entry = self._entries.get((platform, store_ref))
        if entry is not None and self._clock() - entry.loaded_at < TTL_SECONDS:
            return entry.store, True
        return self.reload(runtime, platform, store_ref), False

    def reload(self, runtime: Runtime, platform: str, store_ref: str) -> KnownStore | None:
        """The store read afresh from the database, cached if it is installed."""
        key = (platform, store_ref)
        with runtime.database.engine.connect() as connection:
            row = connection.execute(
                select(
                    col(Store.id),
                    col(Store.status),
                    col(Store.default_region),
                    col(Store.webhook_secret_ciphertext),
                ).where(col(Store.platform) == platform, col(Store.platform_store_id) == store_ref)
            ).first()
        if row is None:
            self._entries.pop(key, None)
            return None
        store_id, status, region, ciphertext = row
        assert store_id is not None
        known = KnownStore(
            store_id=store_id,
            status=status,
            default_region=region,
            secret=runtime.secrets.decrypt(ciphertext) if ciphertext else "",
        )
        if known.active:
            self._entries[key] = _Entry(known, self._clock())
        else:
            self._entries.pop(key, None)
        return known

    def forget(self, store_id: int) -> None:
        """Drop the store's entry (it was uninstalled, or its secret replaced, here)."""
        for key, entry in list(self._entries.items()):
            if entry.store.store_id == store_id:
                self._entries.pop(key, None)


_caches: weakref.WeakKeyDictionary[Database, StoreCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def store_cache(runtime: Runtime) -> StoreCache:
    """This process's cache for the runtime's database."""
    cache = _caches.get(runtime.database)
    if cache is None:
        with _caches_lock:
            cache = _caches.setdefault(runtime.database, StoreCache())
    return cache
