"""POST /webhooks/<platform>: verify, de-duplicate, store, answer fast.

Order, every time: raw bytes -> store lookup from the headers -> constant-time signature
check -> parse and validate -> insert under unique delivery keys -> commit -> 200. Nothing is
enqueued: workers drain pending deliveries in batches (``sequences.engine.intake``), so a
request costs one insert and touches no Redis. On SQLite the insert goes to this process's own
spool (``sequences.stores.spool``), which the workers move into the database, unique keys and
all: two processes inserting in turn into one SQLite file cost each insert a reload of the
pages it touches. The store comes from this process's cache
(``sequences.stores.store_cache``); a signature that fails against a cached secret is checked
again against the row read afresh before the 401.

Served by ``PlatformWebhooks``, a WSGI layer in front of Flask, not by a Flask view: a delivery
is the app's most frequent request (a sale day is thousands a minute), and Flask's request
context, routing and response objects were a third of its CPU time (bench/README.md (a)) for
nothing a delivery uses: no session, no template, no cookie. Every other path goes to Flask.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any, NamedTuple

from werkzeug.exceptions import ClientDisconnected

from app.request_bodies import read_body
from connectors.base import (
    AcknowledgesUnreadable,
    AnswersPings,
    AppUninstalled,
    Connector,
    HeaderMap,
    MalformedPayload,
    PayloadError,
    PrivacyRequest,
    WebhookIdentity,
    WebhookRejected,
)
from sequences.models import StoreStatus
from sequences.runtime import Runtime
from sequences.stores.deliveries import delivery_values, record_delivery, spool_delivery
from sequences.stores.installs import record_uninstall
from sequences.stores.store_cache import KnownStore, store_cache

log = logging.getLogger("cartback.webhooks")

PREFIX = "/webhooks/"
# Shopify's privacy topics, at the address `shopify.app.toml` gives for them: same checks.
COMPLIANCE_PATH = "/webhooks/shopify/compliance"
# /webhooks/<name> paths with Flask views of their own (app.webhooks.whatsapp).
FLASK_SERVED = frozenset({"whatsapp"})


class Answer(NamedTuple):
    status: int
    body: dict[str, Any]


def _answer(http_status: int, **body: Any) -> Answer:
    return Answer(http_status, body)


class PlatformWebhooks:
    """The WSGI app for ``POST /webhooks/<platform>``, in front of ``app`` (everything else).

    ``propagate``: let an unexpected exception through (Flask's testing mode does the same),
    instead of logging it and answering 500.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], runtime: Runtime, *, propagate: bool) -> None:
        self.app = app
        self.runtime = runtime
        self.propagate = propagate

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        platform = _platform_of(environ.get("PATH_INFO", ""))
        if platform is None:
            return self.app(environ, start_response)
        extra: list[tuple[str, str]] = []
        started = time.perf_counter()
        if environ.get("REQUEST_METHOD") != "POST":
            answer = _answer(405, error="webhooks are delivered with POST")
            extra.append(("Allow", "POST"))
        else:
            try:
                answer = ingest(
                    self.runtime, platform, _EnvironHeaders(environ), lambda limit: read_body(environ, limit)
                )
            except ClientDisconnected:
                answer = _answer(400, error="the body ended before its Content-Length")
            except Exception:
                if self.propagate:
                    raise
                log.exception("webhook not ingested", extra={"platform": platform})
                answer = _answer(500, error="internal error; the platform will retry this delivery")
        body = json.dumps(answer.body).encode()
        self.runtime.telemetry.webhook_ingest.labels(
            platform if platform in self.runtime.connectors.platforms() else "unknown", _outcome(answer)
        ).observe(time.perf_counter() - started)
        start_response(
            f"{answer.status} {HTTPStatus(answer.status).phrase}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *extra],
        )
        return [body]


def _outcome(answer: Answer) -> str:
    """accepted, duplicate, ignored, pong; rejected (4xx); error (5xx): a handful of label values."""
    if answer.status >= 500:
        return "error"
    if answer.status >= 400:
        return "rejected"
    return str(answer.body.get("status") or "accepted")


def _platform_of(path: str) -> str | None:
    """The platform a path delivers for; None for a path this layer does not serve."""
    if not path.startswith(PREFIX):
        return None
    if path == COMPLIANCE_PATH:
        return "shopify"
    name = path[len(PREFIX) :]
    return name if name and "/" not in name and name not in FLASK_SERVED else None


# The two headers WSGI keeps without the HTTP_ prefix.
_UNPREFIXED = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH"})


class _EnvironHeaders(HeaderMap):
    """The request's headers, read from the WSGI environ when asked, as werkzeug names them
    (HTTP_X_SHOPIFY_TOPIC is X-Shopify-Topic): a connector asks for three or four."""

    def __init__(self, environ: dict[str, Any]) -> None:
        # No copy into HeaderMap's own dict: every method reads the environ.
        self._environ = environ

    def __getitem__(self, name: str) -> str:
        key = name.upper().replace("-", "_")
        value: str = self._environ[key if key in _UNPREFIXED else "HTTP_" + key]
        return value

    def __iter__(self) -> Iterator[str]:
        for key in self._environ:
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").lower()
            elif key in _UNPREFIXED and self._environ[key]:
                yield key.replace("_", "-").lower()

    def __len__(self) -> int:
        return sum(1 for _ in self)


def ingest(
    runtime: Runtime, platform: str, headers: HeaderMap, read_body: Callable[[int], bytes | None]
) -> Answer:
    connector = runtime.connectors.get(platform)
    if connector is None:
        known = ", ".join(runtime.connectors.platforms())
        return _answer(404, error=f"unknown or unconfigured platform {platform!r}; configured: {known}")

    limit = runtime.settings.max_webhook_bytes
    raw = read_body(limit)
    if raw is None:
        return _answer(413, error=f"body larger than {limit} bytes")

    pings = runtime.connectors.capable(platform, AnswersPings)
    if pings is not None and pings.is_ping(raw, headers):
        # The platform checks a new webhook's URL with an unsigned ping: answer, store nothing.
        return _answer(200, status="pong")
    app_signed = connector.signs_with_app_secret
    if app_signed and not connector.verify_webhook(raw, headers, ""):
        # Checked before anything else: a forged delivery learns nothing, not even whether
        # the shop is installed (Shopify's app review expects 401 here).
        log.warning("webhook signature rejected", extra={"platform": platform})
        return _answer(401, error="signature does not match the body")
    if not raw:
        return _answer(400, error="empty body")
    try:
        identity = connector.webhook_identity(headers)
    except WebhookRejected as rejected:
        return _answer(rejected.status, error=rejected.reason)

    cache = store_cache(runtime)
    store, cached = cache.lookup(runtime, platform, identity.store_ref)
    if not app_signed and store is not None and not _signed_by(connector, raw, headers, store):
        # The secret may have been replaced since it was cached: judge by the row, once.
        if cached:
            store = cache.reload(runtime, platform, identity.store_ref)
        if store is not None and (not cached or not _signed_by(connector, raw, headers, store)):
            log.warning(
                "webhook signature rejected", extra={"platform": platform, "store_id": store.store_id}
            )
            return _answer(401, error="signature does not match the body")
    if store is None:
        # Nobody to act for; a 2xx stops the platform retrying for hours. Nothing is stored.
        return _answer(200, status="ignored", reason="store is not installed")
    store_id, status, region = store.store_id, store.status, store.default_region

    return accept(runtime, connector, store_id, status, region, identity, raw)


def _signed_by(connector: Connector, raw: bytes, headers: HeaderMap, store: KnownStore) -> bool:
    return bool(store.secret) and connector.verify_webhook(raw, headers, store.secret)


def accept(
    runtime: Runtime,
    connector: Connector,
    store_id: int,
    status: str,
    region: str,
    identity: WebhookIdentity,
    raw: bytes,
) -> Answer:
    """A delivery whose sender is proven: parse, store once, answer (workers drain it)."""
    platform = connector.platform
    try:
        event = connector.parse_webhook(identity, raw, default_region=region)
        # Also for a topic the connector ignores without parsing: the row keeps the body as text.
        values = delivery_values(
            runtime, connector, store_id=store_id, identity=identity, raw_body=raw, event=event
        )
    except PayloadError as exc:
        lenient = runtime.connectors.capable(platform, AcknowledgesUnreadable)
        if lenient is not None and lenient.acknowledges_unreadable(identity):
            # Authentic but unreadable, from a platform that stops delivering after a few
            # refusals: acknowledged, dropped and logged, so one odd order stops nothing else.
            log.warning("signed delivery not readable", extra={"platform": platform, "reason": str(exc)})
            return _answer(200, status="ignored", reason=str(exc))
        return _answer(400 if isinstance(exc, MalformedPayload) else 422, error=str(exc))
    # Privacy requests outlive the install (shop/redact arrives 48 h after an uninstall).
    if status != StoreStatus.ACTIVE and not isinstance(event, PrivacyRequest):
        return _answer(200, status="ignored", reason="store uninstalled cartback")

    if isinstance(event, AppUninstalled):
        # The store stops with the delivery's commit; processing the delivery does the rest.
        delivery_id = record_uninstall(runtime, values, store_id=store_id, occurred_at=event.occurred_at)
    elif spool_delivery(runtime, values):
        return _answer(200, status="accepted")
    else:
        delivery_id = record_delivery(runtime, values)
    if delivery_id is None:
        return _answer(200, status="duplicate", reason="this delivery was already received")
    return _answer(200, status="accepted", delivery=delivery_id)
