"""Product images for cart lines, from a per-variant cache filled by one platform call per cart.

Shopify's checkout payloads carry no images. The header image of a WhatsApp reminder is the
first line's product photo, so lines are filled from ``VariantImage`` when a snapshot is
applied, and whatever the cache lacks is fetched after the commit (outside every lock) with
one batched call. A missing image never blocks a message.

That fetch runs while other workers write. The cache write takes SQLite's write lock up front
(it would otherwise fail at once, "database is locked", under a burst of writers), and a
transient failure is tried again within a short budget rather than costing the reminder its
photo: a PostgreSQL deadlock, another worker inserting the same cache row, or a platform answer
marked ``retryable`` (Shopify still throttling after the connector's own waits). The budget
stays short because a worker runs one job at a time: the jobs queued behind this delivery,
sends included, wait for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, select

from connectors.base import FetchesVariantImages, PlatformError
from sequences.models import CartLine, Store, VariantImage
from sequences.runtime import Runtime
from sequences.stores.access import call_platform

log = logging.getLogger("cartback.images")

T = TypeVar("T")

# Product photos rarely change; a variant with no photo is asked about again sooner.
IMAGE_TTL = timedelta(days=7)
NO_IMAGE_TTL = timedelta(days=1)
# Waits before each retry of a transient failure, in seconds, shared by the whole fetch: a
# PostgreSQL deadlock or a concurrent insert of the same cache row clears at once, and Shopify's
# bucket restores the few points this query costs within a second (50 points/s or more, by
# plan), so these ride out a burst. (SQLite's own busy timeout, 15 s, waits out its lock before
# any "locked" error, so on SQLite it is the BEGIN IMMEDIATE in _store that does the work.)
RETRY_WAITS_SECONDS = (0.25, 0.5, 1.0)
# No retry starts a wait that would end later than this after the fetch began, in seconds: the
# jobs queued behind this delivery (the cart's own sends among them) wait for the retries too,
# and a message without a photo beats a worker sitting on them.
RETRY_BUDGET_SECONDS = 2.0
# PostgreSQL's "try again" answers: serialization failure, deadlock, lock not available.
RETRY_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def cached_images(
    session: Session, runtime: Runtime, store_id: int, variant_ids: Iterable[str]
) -> dict[str, str | None]:
    """Fresh cache entries for these variants (a None value: the platform has no image)."""
    ids = list({v for v in variant_ids if v})
    if not ids:
        return {}
    now = runtime.now()
    found: dict[str, str | None] = {}
    for row in session.exec(
        select(VariantImage).where(
            VariantImage.store_id == store_id, col(VariantImage.platform_variant_id).in_(ids)
        )
    ).all():
        ttl = IMAGE_TTL if row.image_url else NO_IMAGE_TTL
        if row.fetched_at + ttl > now:
            found[row.platform_variant_id] = row.image_url
    return found


def fill_lines_from_cache(session: Session, runtime: Runtime, store_id: int, lines: list[CartLine]) -> bool:
    """Set images on lines from the cache; True when some variant still needs fetching."""
    wanted = [line for line in lines if not line.image_url and line.platform_variant_id]
    cache = cached_images(session, runtime, store_id, (line.platform_variant_id or "" for line in wanted))
    for line in wanted:
        line.image_url = cache.get(line.platform_variant_id or "")
    return any(line.platform_variant_id not in cache for line in wanted)


def fetch_missing_images(runtime: Runtime, store_id: int, cart_id: int) -> int:
    """One platform call for the cart's uncached variants; returns how many lines got an image.

    Each step (read, call, write) is tried again after a transient failure while the budget
    lasts; past it, or on any other platform error, the lines keep no image and the message
    goes without one.
    """
    retrying = _Retrying()
    try:
        wanted = retrying.run(lambda: _missing(runtime, store_id, cart_id))
        if wanted is None:
            return 0
        images = retrying.run(
            lambda: call_platform(
                runtime,
                store_id,
                lambda _, access: wanted.fetcher.fetch_variant_images(access, wanted.variant_ids),
                operation="variant_images",
            )
        )
        return retrying.run(lambda: _store(runtime, store_id, cart_id, wanted.variant_ids, images))
    except PlatformError as exc:
        log.warning("variant images not fetched", extra={"store_id": store_id, "reason": exc.reason})
        return 0
    except (OperationalError, IntegrityError) as exc:
        if not _transient(exc):
            raise
        log.warning("variant images not fetched", extra={"store_id": store_id, "reason": "database busy"})
        return 0


@dataclass(frozen=True)
class _Wanted:
    fetcher: FetchesVariantImages
    variant_ids: list[str]


def _missing(runtime: Runtime, store_id: int, cart_id: int) -> _Wanted | None:
    """The variants of the cart's imageless lines that the cache cannot supply, and who fetches them."""
    with runtime.database.session() as session:
        store = session.get(Store, store_id)
        fetcher = runtime.connectors.capable(store.platform if store else None, FetchesVariantImages)
        if fetcher is None:
            return None
        variant_ids = {
            v
            for v in session.exec(
                select(CartLine.platform_variant_id).where(
                    CartLine.cart_id == cart_id, col(CartLine.image_url).is_(None)
                )
            ).all()
            if v
        }
        missing = sorted(variant_ids - set(cached_images(session, runtime, store_id, variant_ids)))
    return _Wanted(fetcher, missing) if missing else None


def _store(
    runtime: Runtime, store_id: int, cart_id: int, missing: list[str], images: dict[str, str | None]
) -> int:
    """Cache the answer and fill the cart's lines; returns how many lines got an image."""
    now = runtime.now()
    filled = 0
    # Reads, then writes: on SQLite the write lock is taken up front (BEGIN IMMEDIATE), waiting
    # its turn. A plain transaction that has read fails at once, "database is locked", when its
    # first write finds another writer there.
    with runtime.database.locked_session() as session:
        for variant_id in missing:
            url = images.get(variant_id)
            row = session.exec(
                select(VariantImage).where(
                    VariantImage.store_id == store_id, VariantImage.platform_variant_id == variant_id
                )
            ).first()
            if row is None:
                session.add(
                    VariantImage(
                        store_id=store_id, platform_variant_id=variant_id, image_url=url, fetched_at=now
                    )
                )
            else:
                row.image_url, row.fetched_at = url, now
            if url:
                filled += int(
                    session.exec(
                        update(CartLine)
                        .where(
                            col(CartLine.cart_id) == cart_id,
                            col(CartLine.platform_variant_id) == variant_id,
                            col(CartLine.image_url).is_(None),
                        )
                        .values(image_url=url)
                    ).rowcount
                    or 0
                )
        # An IntegrityError here (or at an autoflush above): another worker cached the same
        # variant a moment ago. It is transient: the retry finds that row and updates it.
        session.commit()
    return filled


def _transient(exc: Exception) -> bool:
    if isinstance(exc, PlatformError):
        return exc.retryable
    if isinstance(exc, IntegrityError):
        return True  # a concurrent insert of the same cache row (see _store)
    if isinstance(exc, OperationalError):
        # SQLite: "database is locked" (or "database table is locked") once its busy timeout ran out.
        return "is locked" in str(exc.orig) or getattr(exc.orig, "sqlstate", None) in RETRY_SQLSTATES
    return False


class _Retrying:
    """Runs the steps of one fetch, each again after a transient failure, within one budget."""

    def __init__(self) -> None:
        self._deadline = time.monotonic() + RETRY_BUDGET_SECONDS
        self._waits = iter(RETRY_WAITS_SECONDS)

    def run(self, step: Callable[[], T]) -> T:
        while True:
            try:
                return step()
            except (OperationalError, IntegrityError, PlatformError) as exc:
                wait = next(self._waits, None) if _transient(exc) else None
                if wait is None or time.monotonic() + wait > self._deadline:
                    raise
                log.info("variant images: transient failure, trying again", extra={"wait_seconds": wait})
                time.sleep(wait)
