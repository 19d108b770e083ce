"""Product images for cart lines, from a per-variant cache filled by one platform call per cart.

Shopify's checkout payloads carry no images. The header image of a WhatsApp reminder is the
first line's product photo, so lines are filled from ``VariantImage`` when a snapshot is
applied, and whatever the cache lacks is fetched after the commit (outside every lock) with
one batched call. A missing image never blocks a message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from connectors.base import FetchesVariantImages, PlatformError
from sequences.models import CartLine, Store, VariantImage
from sequences.platform_access import call_platform
from sequences.runtime import Runtime

log = logging.getLogger("cartback.images")

# Product photos rarely change; a variant with no photo is asked about again sooner.
IMAGE_TTL = timedelta(days=7)
NO_IMAGE_TTL = timedelta(days=1)


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
    """One platform call for the cart's uncached variants; returns how many lines got an image."""
    with runtime.database.session() as session:
        store = session.get(Store, store_id)
        fetcher = runtime.connectors.capable(store.platform if store else None, FetchesVariantImages)
        if fetcher is None:
            return 0
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
    if not missing:
        return 0

    try:
        images = call_platform(
            runtime, store_id, lambda _, access: fetcher.fetch_variant_images(access, missing)
        )
    except PlatformError as exc:
        log.warning("variant images not fetched", extra={"store_id": store_id, "reason": exc.reason})
        return 0
    now = runtime.now()
    filled = 0
    with runtime.database.session() as session:
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
        try:
            session.commit()
        except IntegrityError:
            # Another worker cached the same variant a moment ago: its row is as good as ours.
            session.rollback()
    return filled
