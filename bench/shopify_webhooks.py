"""(e) Platform webhooks: what a Shopify or WooCommerce delivery costs compared with a
demo-platform one.

All are measured in this process, on the same SQLite database and Redis, in the same run: the
demo platform's delivery (a hand-rolled HMAC check and parser) is the baseline; the Shopify
delivery goes through ``shopifyapp``'s verification and the Shopify parser, the WooCommerce one
through its per-store signature, order parser and content key. Figures are CPU time per
delivery (``time.process_time``), steadier than wall time on a shared machine.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app import create_app
from app.wiring import build_runtime
from bench.environment import STORE_SECRET, STORE_SLUG, BenchEnv, make_store
from bench.ingest import generate_deliveries
from bench.report import Section, say
from connectors.base import HeaderMap, WebhookIdentity
from connectors.shopify import ShopifyConnector
from connectors.untrusted_json import checked_json_text
from connectors.woocommerce import WooCommerceConnector
from connectors.woocommerce.connector import sign as woo_sign
from demo.connector import DemoConnector
from sequences.config import Settings
from sequences.models import Store

ABOUT = """
CPU time per delivery, in the bench process, demo platform (baseline) against Shopify and
WooCommerce, in the same run. *verify + parse*: the connector alone (signature check over the raw body, JSON to
`CartSnapshot`), for a 2-line checkout and for Shopify's 50-line fixture. *body checks*: the
UTF-8, depth, number and surrogate checks every body passes first, beside `json.loads` of it. *ingest*: the whole
`POST /webhooks/<platform>` through Flask's test client (no network): signature, store lookup,
validation and the SQLite insert (no RQ job: workers drain deliveries). Shopify's body is the recorded-style fixture
`tests/fixtures/shopify/checkouts_create.json` (~5 KB; the demo body is ~0.9 KB); WooCommerce's
is a pending Razorpay order, `tests/fixtures/woocommerce/order_pending_razorpay.json` (~3.5 KB).
"""

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "shopify"
WOO_FIXTURES = FIXTURES.parent / "woocommerce"
WOO_SITE = "https://bench-bazaar.example"
WOO_SECRET = "bench-woocommerce-webhook-secret"
SHOP = "bench-bazaar.myshopify.com"
# A client secret as long as Shopify's (pyjwt wants ≥ 32 bytes for HS256 anyway).
CLIENT_SECRET = "bench-client-secret-0123456789abcdef"


@dataclass(frozen=True)
class ShopifyConfig:
    parse_rounds: int = 2_000
    ingest_rounds: int = 1_000


def quick() -> ShopifyConfig:
    return ShopifyConfig(parse_rounds=200, ingest_rounds=100)


def _fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def _cpu_us(rounds: int, work: Callable[[int], None]) -> float:
    work(-1)  # warm caches and lazy imports outside the measurement
    started = time.process_time()
    for i in range(rounds):
        work(i)
    return (time.process_time() - started) / rounds * 1_000_000


def _shopify_body(template: dict[str, Any], i: int) -> bytes:
    payload = deepcopy(template)
    payload["token"] = f"{i:032x}"
    payload["updated_at"] = (datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=i)).isoformat()
    return json.dumps(payload, ensure_ascii=False).encode()


def _shopify_headers(body: bytes, i: int) -> dict[str, str]:
    digest = hmac.new(CLIENT_SECRET.encode(), body, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "checkouts/update",
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-Webhook-Id": f"bench-{i}",
        "X-Shopify-Event-Id": f"bench-event-{i}",
    }


def _woo_body(template: dict[str, Any], i: int) -> bytes:
    payload = deepcopy(template)
    payload["id"] = 100_000 + i
    payload["date_modified_gmt"] = (datetime(2026, 11, 1) + timedelta(seconds=i)).strftime(
        "%Y-%m-%dT%H:%M:%S"
    )
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _woo_headers(body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-WC-Webhook-Source": WOO_SITE + "/",
        "X-WC-Webhook-Topic": "order.updated",
        "X-WC-Webhook-Signature": woo_sign(WOO_SECRET, body),
        "X-WC-Webhook-ID": "7",
        # WooCommerce's repeats within a second; the content key tells deliveries apart.
        "X-WC-Webhook-Delivery-ID": "d41d8cd98f00b204e9800998ecf8427e",
    }


def run(env: BenchEnv, config: ShopifyConfig | None = None) -> Section:
    config = config or ShopifyConfig()
    section = Section("shopify", "(e) Platform webhooks", ABOUT)
    say(f"(e) Platform webhooks: {config.parse_rounds:,} parses, {config.ingest_rounds:,} ingests each")
    with env.scenario("shopify") as scenario:
        settings = Settings.from_env(
            scenario.environ | {"SHOPIFY_API_KEY": "bench-client-id", "SHOPIFY_API_SECRET": CLIENT_SECRET}
        )
        runtime = build_runtime(settings)
        try:
            _measure(env, runtime, config, section, scenario.path)
        finally:
            runtime.database.dispose()
            runtime.redis.close()
            runtime.http.close()
    return section


def _measure(env: BenchEnv, runtime: Any, config: ShopifyConfig, section: Section, path: Path) -> None:
    shopify = runtime.connectors["shopify"]
    demo = runtime.connectors["demo"]
    assert isinstance(shopify, ShopifyConnector) and isinstance(demo, DemoConnector)

    # -- the connectors alone ----------------------------------------------------------------
    lines = path / "demo.tsv"
    generate_deliveries(lines, config.parse_rounds + 1, STORE_SECRET)
    demo_rows = [line.rstrip("\n").split("\t", 2) for line in lines.open()]
    demo_identity = WebhookIdentity(STORE_SLUG, "checkouts/update", "x")
    shop_identity = WebhookIdentity(SHOP, "checkouts/update", "x")

    def demo_parse(i: int) -> None:
        _, signature, body = demo_rows[i]
        raw = body.encode()
        assert demo.verify_webhook(raw, HeaderMap({"X-Demo-Hmac-Sha256": signature}), STORE_SECRET)
        demo.parse_webhook(demo_identity, raw, default_region="IN")

    results: dict[str, float] = {"demo": _cpu_us(config.parse_rounds, demo_parse)}
    for name in ("checkouts_create", "checkouts_update_50_lines"):
        template = _fixture(name)
        bodies = [_shopify_body(template, i) for i in range(config.parse_rounds + 1)]
        headers = [HeaderMap(_shopify_headers(body, i)) for i, body in enumerate(bodies)]

        def shopify_parse(i: int, bodies: list[bytes] = bodies, headers: list[HeaderMap] = headers) -> None:
            assert shopify.verify_webhook(bodies[i], headers[i], "")
            shopify.parse_webhook(shop_identity, bodies[i], default_region="IN")

        results[name] = _cpu_us(config.parse_rounds, shopify_parse)
    base = results["demo"]
    section.add("verify + parse: demo, 2 lines (baseline)", f"{base:.0f} µs")
    section.add(
        "verify + parse: Shopify, 2 lines",
        f"{results['checkouts_create']:.0f} µs",
        f"{results['checkouts_create'] / base:.1f}× the demo",
    )
    section.add(
        "verify + parse: Shopify, 50 lines",
        f"{results['checkouts_update_50_lines']:.0f} µs",
        f"{results['checkouts_update_50_lines'] / base:.1f}× the demo",
    )
    woo = runtime.connectors["woocommerce"]
    assert isinstance(woo, WooCommerceConnector)
    woo_template = json.loads((WOO_FIXTURES / "order_pending_razorpay.json").read_text())
    woo_bodies = [_woo_body(woo_template, i) for i in range(config.parse_rounds + 1)]
    woo_headers = [HeaderMap(_woo_headers(body)) for body in woo_bodies]
    woo_identity = WebhookIdentity(WOO_SITE, "order.updated", "x")

    def woo_parse(i: int) -> None:
        assert woo.verify_webhook(woo_bodies[i], woo_headers[i], WOO_SECRET)
        event = woo.parse_webhook(woo_identity, woo_bodies[i], default_region="IN")
        woo.delivery_key(woo_identity, woo_bodies[i], event)  # as the ingest does: the parsed body

    woo_us = _cpu_us(config.parse_rounds, woo_parse)
    section.add(
        "verify + parse + key: WooCommerce order, 2 lines",
        f"{woo_us:.0f} µs",
        f"{woo_us / base:.1f}× the demo",
    )

    # The hostile-body checks every body passes before any parser (connectors.untrusted_json),
    # against json.loads of the same bytes: what the guard adds to each delivery.
    largest = _shopify_body(_fixture("checkouts_update_50_lines"), 0)
    loads_us = _cpu_us(config.parse_rounds, lambda _i: json.loads(largest))
    checks_us = _cpu_us(config.parse_rounds, lambda _i: checked_json_text(largest))
    section.add(
        f"body checks: Shopify, 50 lines ({len(largest) // 1024} KB)",
        f"{checks_us:.0f} µs",
        f"{checks_us / loads_us:.2f}× json.loads of it",
    )

    # -- the whole ingest, through Flask ------------------------------------------------------
    make_store(runtime)
    with runtime.database.session() as session:
        session.add(
            Store(
                platform="shopify",
                platform_store_id=SHOP,
                name="Bench Bazaar",
                installed_at=datetime.now(UTC),
            )
        )
        session.add(
            Store(
                platform="woocommerce",
                platform_store_id=WOO_SITE,
                name="Bench Bazaar",
                webhook_secret_ciphertext=runtime.secrets.encrypt(WOO_SECRET),
                installed_at=datetime.now(UTC),
            )
        )
    client = create_app(runtime=runtime).test_client()
    template = _fixture("checkouts_create")
    shop_bodies = [_shopify_body(template, 10_000_000 + i) for i in range(config.ingest_rounds + 1)]

    def demo_ingest(i: int) -> None:
        delivery_id, signature, body = demo_rows[i + 1 if i >= 0 else 0]
        response = client.post(
            "/webhooks/demo",
            data=body.encode(),
            content_type="application/json",
            headers={
                "X-Demo-Shop": STORE_SLUG,
                "X-Demo-Topic": "checkouts/update",
                "X-Demo-Webhook-Id": f"{delivery_id}-{i}",
                "X-Demo-Hmac-Sha256": signature,
            },
        )
        assert response.status_code == 200, response.get_data(as_text=True)

    def shopify_ingest(i: int) -> None:
        body = shop_bodies[i + 1 if i >= 0 else 0]
        response = client.post("/webhooks/shopify", data=body, headers=_shopify_headers(body, i))
        assert response.status_code == 200, response.get_data(as_text=True)

    woo_ingest_bodies = [_woo_body(woo_template, 10_000_000 + i) for i in range(config.ingest_rounds + 1)]

    def woo_ingest(i: int) -> None:
        body = woo_ingest_bodies[i + 1 if i >= 0 else 0]
        response = client.post("/webhooks/woocommerce", data=body, headers=_woo_headers(body))
        assert response.get_json()["status"] == "accepted", response.get_data(as_text=True)

    env.flush_redis()
    rounds = min(config.ingest_rounds, config.parse_rounds)
    demo_us = _cpu_us(rounds, demo_ingest)
    env.flush_redis()
    shopify_us = _cpu_us(rounds, shopify_ingest)
    section.add("ingest: demo (baseline)", f"{demo_us / 1000:.2f} ms")
    section.add(
        "**ingest: Shopify**", f"**{shopify_us / 1000:.2f} ms**", f"{shopify_us / demo_us:.2f}× the demo"
    )
    env.flush_redis()
    woo_ingest_us = _cpu_us(rounds, woo_ingest)
    section.add(
        "**ingest: WooCommerce**",
        f"**{woo_ingest_us / 1000:.2f} ms**",
        f"{woo_ingest_us / demo_us:.2f}× the demo",
    )
    section.note(
        "shopifyapp's verification copies and redacts the request for its log on every call; the "
        "fixture body is ~5× the demo's, so JSON parsing and hashing cost more in proportion."
    )
