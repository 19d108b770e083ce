"""Driving cartback as a WooCommerce store would: signed deliveries, connected stores."""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path
from typing import Any

from connectors.woocommerce.connector import sign
from connectors.woocommerce.rest import join_key_pair
from sequences.merchant.store_settings import StoreSettings
from sequences.models import Store
from sequences.runtime import Runtime

SITE = "https://shop.example"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "woocommerce"
WEBHOOK_SECRET = "whsec-woocommerce-test"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def signed_headers(
    topic: str, body: bytes, secret: str = WEBHOOK_SECRET, *, source: str = SITE, webhook_id: str = "15"
) -> dict[str, str]:
    """The headers WooCommerce (or the companion plugin) sends with a delivery."""
    resource, _, event = topic.partition(".")
    return {
        "Content-Type": "application/json",
        "User-Agent": "WooCommerce/9.4.2 Hookshot (WordPress/6.7.1)",
        "X-WC-Webhook-Source": source.rstrip("/") + "/",
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Resource": resource,
        "X-WC-Webhook-Event": event,
        "X-WC-Webhook-Signature": sign(secret, body),
        "X-WC-Webhook-ID": webhook_id,
        "X-WC-Webhook-Delivery-ID": uuid.uuid4().hex,
    }


# CartFlows' abandonment webhook as its Zapier integration posts it (a form).
CARTFLOWS_FORM = {
    "first_name": "Priya",
    "last_name": "Sharma",
    "phone_number": "98765 43210",
    "email": "priya@example.com",
    "billing_address": "12 MG Road, KA, IN Bengaluru, 560001",
    "shipping_address": "",
    # As CartFlows sends it: esc_url() turned & into &#038;.
    "checkout_url": "https://shop.example/checkout/?wcf_ac_token=d2NmX3Nlc3Npb25faWQ9YWJjMTIzZGVm&#038;utm_source=zapier",
    "product_names": "Block-print kurta &amp; Cotton dupatta",
    "coupon_code": "",
    "order_status": "abandoned",
    "cart_total": "2098.00",
    "product_table": "<table><tr><td>Block-print kurta</td></tr></table>",
}


def encode(payload: Any) -> bytes:
    # WordPress's wp_json_encode: compact, unicode kept.
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def make_woocommerce_store(
    runtime: Runtime,
    site: str = SITE,
    *,
    secret: str = WEBHOOK_SECRET,
    settings: StoreSettings | None = None,
    consumer_key: str | None = None,
    consumer_secret: str | None = None,
) -> Store:
    """A connected WooCommerce store (keys and secret encrypted), quiet hours off."""
    key = consumer_key or "ck_" + secrets.token_hex(20)
    key_secret = consumer_secret or "cs_" + secrets.token_hex(20)
    store = Store(
        platform="woocommerce",
        platform_store_id=site,
        name="Bazaar",
        api_base_url=site,
        storefront_url=site,
        access_token_ciphertext=runtime.secrets.encrypt(join_key_pair(key, key_secret)),
        webhook_secret_ciphertext=runtime.secrets.encrypt(secret),
        settings=(settings or StoreSettings(quiet_hours_enabled=False)).to_stored(),
    )
    with runtime.database.session() as session:
        session.add(store)
    return store


class WooCommerceDriver:
    """A connected store's deliveries into the app (Flask's test client) on the journeys' clock."""

    def __init__(self, client: Any, runtime: Runtime, drain: Any, store: Store) -> None:
        self.client, self.runtime, self._drain, self.store = client, runtime, drain, store

    def at(self, moment: Any) -> Any:
        import time_machine

        from tests.support.journey import T0

        return time_machine.travel(T0 + moment if not hasattr(moment, "tzinfo") else moment, tick=False)

    def run(self, moment: Any) -> int:
        with self.at(moment):
            return int(self._drain())

    def post(self, topic: str, payload: Any, *, secret: str = WEBHOOK_SECRET, **header_overrides: str) -> Any:
        body = payload if isinstance(payload, bytes) else encode(payload)
        headers = signed_headers(topic, body, secret) | header_overrides
        return self.client.post("/webhooks/woocommerce", data=body, headers=headers)

    def deliver(self, moment: Any, topic: str, payload: Any, **options: Any) -> Any:
        with self.at(moment):
            response = self.post(topic, payload, **options)
            self._drain()
        return response
