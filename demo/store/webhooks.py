"""Webhooks from the demo platform to cartback, shaped and signed like a real platform's.

Payload builders are plain functions (tests build and sign payloads without HTTP). ``emit``
enqueues the delivery on RQ, to be called only after the database commit; the job POSTs to
``{APP_URL}/webhooks/demo`` and raises on a non-2xx answer so RQ retries it, as platforms do.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from redis.exceptions import RedisError

from demo.connector import (
    HEADER_DELIVERY,
    HEADER_SIGNATURE,
    HEADER_STORE,
    HEADER_TOPIC,
    HEADER_TRIGGERED_AT,
    sign,
)
from demo.store.catalogue import CURRENCY
from demo.store.checkouts import lines_of, subtotal_of
from demo.store.models import DemoCheckout, DemoOrder
from sequences import queue
from sequences import runtime as runtime_module
from sequences.models import Store, StoreStatus
from sequences.runtime import Runtime

log = logging.getLogger("cartback.demo_store.webhooks")

# Seconds to wait for cartback to answer (Shopify allows 5 s).
DELIVERY_TIMEOUT_SECONDS = 5.0
# Like a platform: a few quick retries, then give up (rq's Retry intervals, seconds).
RETRY_INTERVALS_SECONDS = (1, 2, 5, 10, 30)


class WebhookDeliveryFailed(RuntimeError):
    """cartback did not accept a delivery; RQ retries the job."""


def iso_z(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a Z, e.g. 2026-03-01T10:15:00.123456Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _amount(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def checkout_url(app_url: str, token: str) -> str:
    return f"{app_url.rstrip('/')}/demo-store/checkout/{token}"


def checkout_payload(checkout: DemoCheckout, app_url: str) -> dict[str, Any]:
    """The checkouts/create and checkouts/update body (Shopify's checkout shape, trimmed)."""
    lines = lines_of(checkout)
    subtotal = subtotal_of(lines)
    return {
        "id": checkout.id,
        "token": checkout.token,
        "created_at": iso_z(checkout.created_at),
        "updated_at": iso_z(checkout.updated_at),
        "completed_at": iso_z(checkout.completed_at) if checkout.completed_at else None,
        "currency": CURRENCY,
        "subtotal_price": _amount(subtotal),
        "total_price": _amount(subtotal),
        "abandoned_checkout_url": checkout_url(app_url, checkout.token),
        "phone": checkout.phone,
        "email": checkout.email,
        "customer": {
            # Guest checkout: one customer per checkout, as a platform's guest records are.
            "id": "cus_" + checkout.id.removeprefix("chk_"),
            "first_name": checkout.first_name,
        },
        "buyer_accepts_marketing": bool(checkout.accepts_marketing),
        "line_items": [
            {
                "product_id": line.product.product_id,
                "variant_id": line.product.variant_id,
                "title": line.product.title,
                "variant_title": line.product.variant_title,
                "quantity": line.quantity,
                "price": _amount(line.product.price),
                "image_url": line.product.image_url(app_url),
            }
            for line in lines
        ],
    }


def order_payload(order: DemoOrder) -> dict[str, Any]:
    """The orders/create body: what demo.connector reads to point back at the checkout."""
    return {
        "id": order.id,
        "created_at": iso_z(order.created_at),
        "currency": order.currency,
        "subtotal_price": _amount(order.subtotal),
        "total_discounts": _amount(order.discount_amount),
        "total_price": _amount(order.total),
        "checkout_id": order.checkout_id,
        "checkout_token": order.checkout_token,
        "discount_codes": (
            [{"code": order.discount_code, "amount": _amount(order.discount_amount), "type": "fixed_amount"}]
            if order.discount_code
            else []
        ),
        "phone": order.phone,
    }


def webhook_url(app_url: str) -> str:
    return f"{app_url.rstrip('/')}/webhooks/demo"


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """Compact JSON, UTF-8: the exact bytes that are signed and sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    topic: str
    url: str
    headers: dict[str, str]
    body: bytes


def build_delivery(
    *, store_ref: str, topic: str, payload: Mapping[str, Any], secret: str, app_url: str, now: datetime
) -> Delivery:
    body = encode_body(payload)
    webhook_id = str(uuid.uuid4())
    headers = {
        "Content-Type": "application/json",
        HEADER_STORE: store_ref,
        HEADER_TOPIC: topic,
        HEADER_DELIVERY: webhook_id,
        HEADER_TRIGGERED_AT: iso_z(now),
        HEADER_SIGNATURE: sign(body, secret),
    }
    return Delivery(webhook_id, topic, webhook_url(app_url), headers, body)


def emit(runtime: Runtime, store: Store, topic: str, payload: Mapping[str, Any]) -> Delivery | None:
    """Sign and enqueue one delivery. Call after the commit that made the change.

    Returns None when nothing was sent: cartback is uninstalled from the store, the store has
    no webhook secret, or Redis is down (the platform loses that delivery, as a real one may).
    """
    if store.status != StoreStatus.ACTIVE or not store.webhook_secret_ciphertext:
        log.info("demo webhook not sent: store not connected", extra={"topic": topic})
        return None
    delivery = build_delivery(
        store_ref=store.platform_store_id,
        topic=topic,
        payload=payload,
        secret=runtime.secrets.decrypt(store.webhook_secret_ciphertext),
        app_url=runtime.settings.app_url,
        now=runtime.now(),
    )
    try:
        queue.enqueue(
            runtime.queue,
            queue.DELIVER_DEMO_WEBHOOK,
            delivery.url,
            delivery.headers,
            delivery.body.decode("utf-8"),
            # The default description repeats the arguments, and the body holds a phone.
            options=queue.JobOptions(
                f"demo-webhook-{delivery.webhook_id}",
                f"demo webhook {topic}",
                unique=False,
                failure_ttl=None,
                job_timeout=None,
                retry_intervals=RETRY_INTERVALS_SECONDS,
            ),
        )
    except RedisError as exc:
        log.warning("demo webhook not enqueued", extra={"topic": topic, "error": type(exc).__name__})
        return None
    return delivery


def _installed_http() -> httpx.Client | None:
    """The process's outbound client when a runtime is installed (tests route it in-process)."""
    try:
        return runtime_module.current().http
    except RuntimeError:
        return None


def deliver_webhook(
    url: str, headers: dict[str, str], body_text: str, *, client: httpx.Client | None = None
) -> int:
    """RQ job: POST one delivery; raise on anything but 2xx so RQ retries. Logs status only."""
    topic = headers.get(HEADER_TOPIC, "?")
    http = client or _installed_http()
    body = body_text.encode("utf-8")
    try:
        if http is None:
            response = httpx.post(url, content=body, headers=headers, timeout=DELIVERY_TIMEOUT_SECONDS)
        else:
            response = http.post(url, content=body, headers=headers, timeout=DELIVERY_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        log.warning("demo webhook not delivered", extra={"topic": topic, "error": type(exc).__name__})
        raise WebhookDeliveryFailed(f"{topic}: {url} unreachable ({type(exc).__name__})") from None
    if not 200 <= response.status_code < 300:
        log.warning("demo webhook refused", extra={"topic": topic, "status": response.status_code})
        raise WebhookDeliveryFailed(f"{topic}: {url} answered {response.status_code}")
    log.info("demo webhook delivered", extra={"topic": topic, "status": response.status_code})
    return response.status_code
