"""Factories for stores and demo-platform payloads (shaped as demo/connector.py documents)."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from demo.connector import sign
from sequences.merchant.store_settings import StoreSettings
from sequences.models import Store
from sequences.runtime import Runtime
from sequences.stores.spool import collect, spool_directory

PHONE = "+919876543210"
_ids = itertools.count(1)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def make_store(
    runtime: Runtime,
    slug: str = "demo-bazaar",
    *,
    secret: str | None = None,
    settings: StoreSettings | None = None,
    timezone: str = "Asia/Kolkata",
) -> Store:
    """A demo-platform store with encrypted secrets; quiet hours off unless settings say so."""
    settings = settings or StoreSettings(quiet_hours_enabled=False)
    store = Store(
        platform="demo",
        platform_store_id=slug,
        name=f"Store {slug}",
        timezone=timezone,
        api_base_url=f"{runtime.settings.app_url}/demo-store",
        storefront_url=f"{runtime.settings.app_url}/demo-store/",
        access_token_ciphertext=runtime.secrets.encrypt(f"token-{slug}"),
        webhook_secret_ciphertext=runtime.secrets.encrypt(secret or f"whsec-{slug}"),
        settings=settings.to_stored(),
    )
    with runtime.database.session() as session:
        session.add(store)
    return store


def checkout_payload(
    *,
    checkout_id: str = "chk_1",
    token: str = "tok_1",
    updated_at: datetime | None = None,
    phone: str | None = PHONE,
    consent: bool = True,
    prices: Sequence[str] = ("1499.00", "699.00"),
    first_name: str = "Asha",
    completed: bool = False,
) -> dict[str, Any]:
    updated_at = updated_at or datetime.now(UTC)
    lines = [
        {
            "product_id": f"p{index}",
            "variant_id": f"v{index}",
            "title": ["Handloom Cotton Kurta", "Block-print Dupatta", "Brass Diya Set"][index % 3],
            "variant_title": "M",
            "quantity": 1,
            "price": price,
            "image_url": f"http://localhost/demo-store/images/p{index}.svg",
        }
        for index, price in enumerate(prices)
    ]
    subtotal = sum((Decimal(price) for price in prices), Decimal("0"))
    return {
        "id": checkout_id,
        "token": token,
        "updated_at": iso(updated_at),
        "currency": "INR",
        "subtotal_price": str(subtotal),
        "total_price": str(subtotal),
        "abandoned_checkout_url": f"http://localhost/demo-store/checkout/{token}",
        "completed_at": iso(updated_at) if completed else None,
        "phone": phone,
        "email": "asha@example.in",
        "customer": {"id": "cust_1", "first_name": first_name},
        "buyer_accepts_marketing": consent,
        "line_items": lines,
    }


def order_payload(
    *,
    order_id: str | None = None,
    checkout_id: str | None = "chk_1",
    token: str | None = "tok_1",
    codes: Sequence[str] = (),
    total: str = "2198.00",
    created_at: datetime | None = None,
    phone: str | None = None,
) -> dict[str, Any]:
    return {
        "id": order_id or f"ord_{next(_ids)}",
        # None: stamped with the (possibly frozen) clock when sent, see send_webhook.
        "created_at": iso(created_at) if created_at else None,
        "currency": "INR",
        "total_price": total,
        "checkout_id": checkout_id,
        "checkout_token": token,
        "discount_codes": [{"code": code} for code in codes],
        "phone": phone,
    }


def send_webhook(
    client: FlaskClient,
    topic: str,
    payload: dict[str, Any] | bytes,
    *,
    store: str = "demo-bazaar",
    secret: str | None = None,
    delivery_id: str | None = None,
) -> TestResponse:
    if isinstance(payload, dict) and "created_at" in payload and payload["created_at"] is None:
        payload = {**payload, "created_at": iso(datetime.now(UTC))}
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return client.post(
        "/webhooks/demo",
        data=body,
        content_type="application/json",
        headers={
            "X-Demo-Shop": store,
            "X-Demo-Topic": topic,
            "X-Demo-Webhook-Id": delivery_id or str(uuid.uuid4()),
            "X-Demo-Hmac-Sha256": sign(body, secret or f"whsec-{store}"),
        },
    )


def collect_spooled(runtime: Runtime) -> int:
    """Move what this process's ingest spooled (SQLite) into ``webhook_delivery``, as a worker's
    drain does before it claims; how many rows were new."""
    return collect(runtime.database, limit=1_000_000).inserted


def replay_answer(runtime: Runtime) -> str:
    """The status a delivery received before is answered with: where ingest spools (SQLite) it
    answers before the unique keys are checked, and a worker's drain drops the copy; on
    PostgreSQL the insert itself finds it."""
    return "accepted" if spool_directory(runtime.database) is not None else "duplicate"


def minutes(value: float) -> timedelta:
    return timedelta(minutes=value)
