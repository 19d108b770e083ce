"""A shopper's journey through the web process exactly as the Procfile starts it, then a read of
everything it logged: no recovery-link token, App Bridge id_token, CartFlows key, phone or
email in clear, in the access log or the app's own lines.

The journey: the merchant opens cartback in the Shopify admin (id_token in the query), a
checkout webhook names the shopper (phone, email), the worker sends the reminder, the shopper
opens the link (``/r/<token>``) and a tampered copy of it, a CartFlows capture arrives with the
shopper's contact under its keyed URL, and the shopper replies STOP on WhatsApp.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlmodel import select

from app.webhooks.cartflows import cartflows_url
from app.wiring import build_runtime
from sequences import runtime as runtime_module
from sequences.merchant.store_settings import StoreSettings
from sequences.models import Message, SandboxOutboxMessage, Store
from tests.conftest import TEST_ENCRYPTION_KEY, _drain_queue
from tests.servers import free_port
from tests.support.shopify import SHOP
from tests.support.shopify import fixture as shopify_fixture
from tests.support.whatsapp import APP_SECRET, sign
from tests.support.whatsapp import fixture as whatsapp_fixture
from tests.support.woocommerce import WEBHOOK_SECRET, make_woocommerce_store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PHONE_E164 = "+919876543210"
PHONE_FORMS = (PHONE_E164, "919876543210", "9876543210", "98765 43210")
EMAIL = "priya.sharma@example.com"
CARTFLOWS_EMAIL = "meera.iyer@example.in"


def procfile_web_command() -> str:
    """The Procfile's web line, bound to loopback (tests reach nothing else)."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == "web":
            return command.strip().replace("0.0.0.0", "127.0.0.1")
    raise AssertionError("Procfile has no web process")


@pytest.fixture
def web(settings, database, redis_conn, fake_shopify, tmp_path) -> Iterator[tuple[str, Path, Any]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web_settings = settings.with_overrides(
        app_url=base,
        shopify_api_key=fake_shopify.client_id,
        shopify_api_secret=fake_shopify.client_secret,
        shopify_admin_url_template=fake_shopify.admin_url_template(),
        whatsapp_app_secret=APP_SECRET,
    )
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "CARTBACK_ENV": "development",
        "CARTBACK_INSTANCE_PATH": str(tmp_path),
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "SECRET_KEY": settings.secret_key,
        "ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "APP_URL": base,
        "SHOPIFY_API_KEY": fake_shopify.client_id,
        "SHOPIFY_API_SECRET": fake_shopify.client_secret,
        "SHOPIFY_ADMIN_URL_TEMPLATE": fake_shopify.admin_url_template(),
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "WHATSAPP_TRANSPORT": "sandbox",
    }
    log_path = tmp_path / "web.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            ["bash", "-c", procfile_web_command()],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the web process did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        runtime = build_runtime(web_settings, database=database, redis=redis_conn)
        runtime_module.install(runtime)  # the jobs drained in this process use it
        yield base, log_path, runtime
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_journey_leaves_no_token_phone_or_email_in_the_web_logs(web, fake_shopify, caplog):
    base, log_path, runtime = web
    secrets: dict[str, str] = {}
    with httpx.Client(base_url=base, timeout=20, follow_redirects=False) as browser:
        # The merchant opens cartback in the Shopify admin: the install.
        id_token = fake_shopify.session_token(SHOP)
        secrets["id_token"] = id_token
        opened = browser.get(
            "/", params={"embedded": "1", "shop": SHOP, "host": "YWRtaW4", "id_token": id_token}
        )
        assert opened.status_code == 200, opened.text
        with runtime.database.session() as session:
            store = session.exec(select(Store).where(Store.platform_store_id == SHOP)).one()
            store.settings = StoreSettings(quiet_hours_enabled=False).to_stored()
            session.add(store)
            session.commit()

        # A checkout left 20 minutes ago names the shopper; the reminder is due at once.
        checkout = shopify_fixture("checkouts_create")
        quiet_since = datetime.now(UTC) - timedelta(minutes=20)
        checkout["updated_at"] = quiet_since.isoformat()
        checkout["created_at"] = quiet_since.isoformat()
        checkout["abandoned_checkout_url"] = fake_shopify.checkout_url(SHOP, checkout["token"])
        for line in checkout["line_items"]:
            if line.get("variant_id") and int(line["variant_id"]) not in fake_shopify.variants:
                fake_shopify.add_variant(int(line["variant_id"]), image_url="https://cdn.shopify.com/v/1.jpg")
        body, headers = fake_shopify.signed_webhook(SHOP, "checkouts/update", checkout)
        assert browser.post("/webhooks/shopify", content=body, headers=headers).status_code == 200
        _drain_queue(runtime)
        with runtime.database.session() as session:
            outbox = session.exec(select(SandboxOutboxMessage)).one()
            message = session.exec(select(Message)).one()
        link = next(button["url"] for button in outbox.buttons if button.get("url"))
        token = urlsplit(link).path.removeprefix("/r/")
        secrets["link token"] = token

        # The shopper opens the link, and someone tries a tampered copy of it.
        assert browser.get(f"/r/{token}").status_code in (302, 303)
        assert browser.get(f"/r/{token[:-3]}xyz").status_code < 500

        # A CartFlows capture under the store's keyed URL, with the shopper's contact.
        woo = make_woocommerce_store(runtime)
        assert woo.id is not None
        cartflows_address = cartflows_url(base, WEBHOOK_SECRET, woo.id)
        secrets["cartflows key"] = cartflows_address.rsplit("/", 1)[1]
        captured = browser.post(
            urlsplit(cartflows_address).path,
            data={
                "order_status": "abandoned",
                "email": CARTFLOWS_EMAIL,
                "phone_number": PHONE_E164,
                "first_name": "Meera",
                "checkout_id": "77",
                "session_id": "cf-session-1",
                "cart_total": "1499.00",
                "product_names": "Kurta",
                "checkout_url": "https://bazaar.example/checkout/?wcf_ac_token=abc",
            },
        )
        assert captured.status_code < 500, captured.text

        # A WhatsApp delivery from the shopper's number (a STOP reply).
        stop = whatsapp_fixture("message_text_stop")
        raw = json.dumps(stop).encode()
        replied = browser.post(
            "/webhooks/whatsapp",
            content=raw,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(raw)},
        )
        assert replied.status_code == 200, replied.text

    assert message.id is not None
    logged = log_path.read_text() + "\n" + caplog.text
    # The requests were logged (the check below could not pass on an empty log), redacted.
    access = [json.loads(line) for line in log_path.read_text().splitlines() if '"gunicorn.access"' in line]
    paths = [entry["path"] for entry in access]
    assert "/r/[redacted]" in paths
    assert any("id_token=[redacted]" in path for path in paths)
    assert "/webhooks/woocommerce/cartflows/[redacted]" in paths
    for name, value in secrets.items():
        assert value not in logged, f"the {name} is in the logs"
    for form in (*PHONE_FORMS, EMAIL, CARTFLOWS_EMAIL):
        assert not re.search(rf"(?<!\d){re.escape(form)}(?!\d)", logged), f"{form} is in the logs"
