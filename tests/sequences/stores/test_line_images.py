"""Product images for a cart's lines survive what a burst throws at their fetch (sequences.stores.line_images).

The fetch runs after the delivery's commit, while other workers write: a write lock held by
another connection, or a platform answer worth retrying, must not cost the reminder its photo.
Shopify is the fake on 127.0.0.1 and SQLite the real file; the only hook times a rival writer
to start between the platform's answer and the cache write, where a burst hit it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from connectors.base import StoreAccess
from connectors.shopify.connector import THROTTLE_RETRIES
from sequences import db as db_module
from sequences.stores.line_images import RETRY_BUDGET_SECONDS
from tests.support.shopify import MIN, OFFER_FIRST, T0, fixture, iso

# How long the rival writer keeps SQLite's write lock: a burst's writer, slowed down so the
# fetch certainly meets it.
RIVAL_HOLDS_SECONDS = 0.3


@contextmanager
def rival_writer(database_url: str, hold_seconds: float) -> Iterator[Callable[[], float]]:
    """Yields ``start``: another connection takes SQLite's write lock (BEGIN IMMEDIATE and a
    write, as a worker applying a delivery does) and releases it ``hold_seconds`` later, from a
    thread. ``start`` returns once the lock is held, with the time it was taken."""
    path = make_url(database_url).database
    assert path
    threads: list[threading.Thread] = []

    def start() -> float:
        held = threading.Event()

        def hold() -> None:
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                connection.execute("BEGIN IMMEDIATE")
                connection.execute("UPDATE store SET name = name")
                held.set()
                time.sleep(hold_seconds)
                connection.execute("COMMIT")
            finally:
                connection.close()

        thread = threading.Thread(target=hold, name="rival-writer")
        thread.start()
        threads.append(thread)
        assert held.wait(5), "the rival writer never got the lock"
        return time.time()

    yield start
    for thread in threads:
        thread.join(10)


def writer_after_the_platform_answers(
    monkeypatch: pytest.MonkeyPatch, shopify: Any, start: Callable[[], float]
) -> list[float]:
    """The first image fetch returns the platform's real answer with a rival writer holding the
    lock: the moment the burst's "database is locked" happened. Returns (filled in then) when
    the rival took the lock."""
    connector = shopify.runtime.connectors["shopify"]
    real = connector.fetch_variant_images
    started: list[float] = []

    def fetch_then_rival(store: StoreAccess, variant_ids: Sequence[str]) -> dict[str, str | None]:
        images: dict[str, str | None] = real(store, variant_ids)
        if not started:
            started.append(start())
        return images

    monkeypatch.setattr(connector, "fetch_variant_images", fetch_then_rival)
    return started


def first_line_image(checkout: dict[str, Any]) -> str:
    return f"https://cdn.shopify.com/v/{checkout['line_items'][0]['variant_id']}.jpg"


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite gives up waiting for a lock after 50 ms (15 s in production), so a test can see
    what happens once the busy timeout has run out. Requested before ``shopify``: the engines
    read it when they are made."""
    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_MS", 50)


def test_a_writer_holding_the_lock_as_images_are_stored_costs_no_image(shopify, database_url, monkeypatch):
    # Given another worker holds SQLite's write lock when the platform's answer comes back
    shopify.install(OFFER_FIRST)
    with rival_writer(database_url, RIVAL_HOLDS_SECONDS) as start:
        writer_after_the_platform_answers(monkeypatch, shopify, start)
        # When the shopper's checkout is processed and they go quiet
        checkout = shopify.checkout()
    shopify.run(15 * MIN)
    # Then the reminder carries the product photo all the same
    [message] = shopify.outbox()
    assert message.image_url == first_line_image(checkout)
    assert len(shopify.fake.calls("CartbackVariantImages")) == 1  # stored, not fetched again


def test_a_lock_outlasting_the_busy_timeout_is_waited_out_and_the_image_kept(
    short_busy_timeout, shopify, database_url, monkeypatch
):
    # Given the rival writer holds the lock longer than SQLite waits for it
    shopify.install(OFFER_FIRST)
    with rival_writer(database_url, RIVAL_HOLDS_SECONDS) as start:
        writer_after_the_platform_answers(monkeypatch, shopify, start)
        checkout = shopify.checkout()
    shopify.run(15 * MIN)
    # Then the cache write is tried again after it and the reminder keeps its photo
    [message] = shopify.outbox()
    assert message.image_url == first_line_image(checkout)
    assert len(shopify.fake.calls("CartbackVariantImages")) == 1


def test_a_platform_answer_worth_retrying_is_retried_and_the_image_kept(shopify):
    # Given Shopify throttles the image call through all of the connector's own waits once
    shopify.install(OFFER_FIRST)
    shopify.fake.throttle_next(THROTTLE_RETRIES + 1)
    # When the checkout is processed and the shopper goes quiet
    checkout = shopify.checkout()
    shopify.run(15 * MIN)
    # Then the fetch was tried again and the reminder carries the photo
    [message] = shopify.outbox()
    assert message.image_url == first_line_image(checkout)
    assert len(shopify.fake.calls("CartbackVariantImages")) == THROTTLE_RETRIES + 2


def test_a_lock_that_outlasts_the_retries_costs_the_photo_not_the_delivery_nor_more_than_the_budget(
    short_busy_timeout, shopify, database_url, monkeypatch, caplog
):
    # Given a rival writer that keeps the lock well past every retry
    shopify.install(OFFER_FIRST)
    hold = RETRY_BUDGET_SECONDS + 2.0
    with rival_writer(database_url, hold) as start:
        rival_started = writer_after_the_platform_answers(monkeypatch, shopify, start)
        # When the checkout is processed
        checkout = shopify.checkout()
    [locked_at] = rival_started
    # Then the fetch gave up on the photo within its budget, long before the lock was free (the
    # jobs queued behind the delivery wait no longer than that)...
    [gave_up] = [r for r in caplog.records if r.name == "cartback.images" and r.levelname == "WARNING"]
    assert gave_up.getMessage() == "variant images not fetched"
    assert gave_up.created - locked_at < RETRY_BUDGET_SECONDS + 0.5 < hold
    # ...and the cart is tracked and messaged all the same, without a photo
    assert shopify.cart(checkout["token"]).line_count == len(checkout["line_items"])
    shopify.run(15 * MIN)
    [message] = shopify.outbox()
    assert message.image_url is None


def test_a_late_delivery_stores_the_photo_before_its_cart_can_be_claimed(shopify, monkeypatch):
    # Given a checkout delivered late: its cart is already due when it is processed
    from datetime import UTC, datetime

    from sqlmodel import col, func, select

    from sequences.models import Cart

    shopify.install(OFFER_FIRST)
    connector = shopify.runtime.connectors["shopify"]
    real = connector.fetch_variant_images
    due_while_fetching: list[int] = []

    def fetch_and_look(store: StoreAccess, variant_ids: Sequence[str]) -> dict[str, str | None]:
        with shopify.runtime.database.session() as session:
            due_while_fetching.append(
                session.exec(
                    select(func.count()).select_from(Cart).where(col(Cart.next_wake_at) <= datetime.now(UTC))
                ).one()
            )
        images: dict[str, str | None] = real(store, variant_ids)
        return images

    monkeypatch.setattr(connector, "fetch_variant_images", fetch_and_look)
    # When it arrives 20 minutes after the shopper went quiet (and is sent in the same drain)
    payload = fixture("checkouts_create")
    payload["updated_at"] = iso(T0 - 20 * MIN)
    payload["abandoned_checkout_url"] = shopify.fake.checkout_url(shopify.shop, payload["token"])
    for line in payload["line_items"]:
        shopify.fake.add_variant(
            int(line["variant_id"]), image_url=f"https://cdn.shopify.com/{line['variant_id']}.jpg"
        )
    assert shopify.webhook(0 * MIN, "checkouts/update", payload).status_code == 200
    # Then no cart was due (which another worker could claim at once) while the photo was fetched
    assert due_while_fetching == [0]
    # ...and the reminder, sent as soon as the photo was stored, carries it
    [message] = shopify.outbox()
    assert message.image_url


@pytest.mark.postgres(only=True)
def test_another_worker_caching_the_same_variant_meanwhile_costs_no_image(shopify, monkeypatch):
    # Given another worker inserts the same variant's cache row between our read and our write
    from datetime import UTC, datetime

    from sqlalchemy import event
    from sqlalchemy.orm import Session as OrmSession

    from sequences.models import Store, VariantImage

    store = shopify.install(OFFER_FIRST)
    rival_done: list[str] = []

    def rival_insert(session: OrmSession, _context: object, _instances: object) -> None:
        pending = [item for item in session.new if isinstance(item, VariantImage)]
        if rival_done or not pending:
            return
        rival_done.append(pending[0].platform_variant_id)
        with shopify.runtime.database.session() as other:
            other.add(
                VariantImage(
                    store_id=pending[0].store_id,
                    platform_variant_id=pending[0].platform_variant_id,
                    image_url=pending[0].image_url,
                    fetched_at=datetime.now(UTC),
                )
            )
            other.commit()

    event.listen(OrmSession, "before_flush", rival_insert)
    try:
        # When the shopper's checkout is processed and they go quiet
        checkout = shopify.checkout()
    finally:
        event.remove(OrmSession, "before_flush", rival_insert)
    shopify.run(15 * MIN)
    # Then the rival's row was met, and the reminder carries the photo all the same
    assert rival_done and isinstance(store, Store)
    [message] = shopify.outbox()
    assert message.image_url == first_line_image(checkout)
