"""Driving cartback as Shopify would: a fake Shopify on 127.0.0.1, the app wired to it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import time_machine
from flask.testing import FlaskClient
from sqlmodel import col, select
from werkzeug.test import TestResponse

from connectors.shopify.routing import ShopifyRoutingTransport
from sequences.merchant.store_settings import Offer, StepSetting, StoreSettings
from sequences.models import Cart, SandboxOutboxMessage, Store
from sequences.runtime import Runtime
from tests.fakes.shopify import FakeShopify

SHOP = "bazaar.myshopify.com"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "shopify"
# A Saturday 14:30 IST, far from quiet hours.
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
# The first message already carries "₹100 off" (carts of ₹999 or more), so a click makes a code.
OFFER_FIRST = StoreSettings(
    quiet_hours_enabled=False,
    steps=[
        StepSetting(
            delay_minutes=15, offer=Offer(kind="fixed", value=Decimal("100"), min_subtotal=Decimal("999"))
        ),
        StepSetting(delay_minutes=240),
    ],
)


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class ShopifyDriver:
    """A merchant's shop on the fake Shopify, its webhooks, and the app's clock."""

    def __init__(
        self,
        client: FlaskClient,
        runtime: Runtime,
        fake: FakeShopify,
        drain: Callable[[], int],
        shop: str = SHOP,
    ) -> None:
        self.client, self.runtime, self.fake, self._drain, self.shop = client, runtime, fake, drain, shop

    def at(self, moment: datetime | timedelta) -> time_machine.travel:
        return time_machine.travel(T0 + moment if isinstance(moment, timedelta) else moment, tick=False)

    def run(self, moment: datetime | timedelta) -> int:
        with self.at(moment):
            return self._drain()

    # -- the merchant ---------------------------------------------------------------------

    def open_app(self, *, shop: str | None = None, **headers: str) -> TestResponse:
        """The merchant opens cartback in the Shopify admin (a document request with id_token)."""
        shop = shop or self.shop
        token = self.fake.session_token(shop)
        return self.client.get(
            f"/?embedded=1&shop={shop}&host=YWRtaW4uc2hvcGlmeS5jb20vc3RvcmUvYmF6YWFy&id_token={token}",
            headers=headers,
        )

    def install(self, settings: StoreSettings | None = None, moment: timedelta = timedelta(0)) -> Store:
        with self.at(moment):
            response = self.open_app()
        assert response.status_code == 200, response.get_data(as_text=True)
        with self.runtime.database.session() as session:
            store = session.exec(select(Store).where(Store.platform_store_id == self.shop)).one()
            store.settings = (settings or StoreSettings(quiet_hours_enabled=False)).to_stored()
            session.commit()
            session.refresh(store)
            return store

    def store(self) -> Store:
        with self.runtime.database.session() as session:
            return session.exec(select(Store).where(Store.platform_store_id == self.shop)).one()

    # -- webhooks -------------------------------------------------------------------------

    def post(
        self,
        topic: str,
        payload: dict[str, Any],
        *,
        path: str = "/webhooks/shopify",
        shop: str | None = None,
        **options: Any,
    ) -> TestResponse:
        body, headers = self.fake.signed_webhook(shop or self.shop, topic, payload, **options)
        return self.client.post(path, data=body, headers=headers)

    def webhook(
        self, moment: datetime | timedelta, topic: str, payload: dict[str, Any], **options: Any
    ) -> TestResponse:
        with self.at(moment):
            response = self.post(topic, payload, **options)
            self._drain()
        return response

    def checkout(
        self, moment: timedelta = timedelta(0), name: str = "checkouts_create", **changes: Any
    ) -> dict[str, Any]:
        """A checkout update as Shopify sends it, stamped at ``moment``, its URL on the fake."""
        payload = fixture(name) | changes
        payload["updated_at"] = iso(T0 + moment)
        payload["abandoned_checkout_url"] = self.fake.checkout_url(self.shop, payload["token"])
        for line in payload["line_items"]:
            if line.get("variant_id") and int(line["variant_id"]) not in self.fake.variants:
                self.fake.add_variant(
                    int(line["variant_id"]), image_url=f"https://cdn.shopify.com/v/{line['variant_id']}.jpg"
                )
        response = self.webhook(moment, "checkouts/update", payload)
        assert response.status_code == 200, response.get_data(as_text=True)
        return payload

    def messaged(self, settings: StoreSettings = OFFER_FIRST) -> dict[str, Any]:
        """Installed, one checkout abandoned, its first message sent: the checkout payload."""
        self.install(settings)
        checkout = self.checkout()
        self.run(15 * MIN)
        return checkout

    def click(self, moment: timedelta = 20 * MIN, index: int = 0) -> TestResponse:
        """The shopper taps the link in their ``index``-th message at ``moment``."""
        with self.at(moment):
            return self.client.get(urlsplit(self.link(self.outbox()[index])).path)

    # -- what people see ------------------------------------------------------------------

    def outbox(self) -> list[SandboxOutboxMessage]:
        with self.runtime.database.session() as session:
            return list(
                session.exec(select(SandboxOutboxMessage).order_by(col(SandboxOutboxMessage.id))).all()
            )

    def cart(self, token: str) -> Cart:
        with self.runtime.database.session() as session:
            return session.exec(select(Cart).where(Cart.platform_cart_id == token)).one()

    def link(self, message: SandboxOutboxMessage) -> str:
        url = next(b["url"] for b in message.buttons if isinstance(b, dict) and b.get("url"))
        return str(url)

    def storefront(self) -> httpx.Client:
        """A shopper's browser: *.myshopify.com routed to the fake like the app's own calls."""
        return httpx.Client(transport=ShopifyRoutingTransport(self.fake.admin_url_template()))
