"""GET|POST /webhooks/whatsapp: Meta's verification handshake and signed deliveries.

POST order: raw bytes -> size limit -> constant-time ``X-Hub-Signature-256`` check with the
app secret -> parse every entry, change, status and message (a malformed delivery is refused
whole, nothing applied) -> apply each event idempotently -> 200. Opt-outs are applied inside
the request; confirmations and platform syncs are queued after the commits.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request

from app.current import get_runtime
from app.request_bodies import read_raw_body
from channels.whatsapp.webhook_events import parse_delivery
from connectors.base import PayloadError
from connectors.untrusted_json import load_untrusted_json
from sequences.engine.scheduling import enqueue_confirmation, enqueue_opt_out_syncs
from sequences.whatsapp.inbound import apply_events

bp = Blueprint("whatsapp_webhook", __name__)
log = logging.getLogger("cartback.whatsapp.webhook")

SIGNATURE_HEADER = "X-Hub-Signature-256"


def _answer(http_status: int, **body: Any) -> Any:
    return jsonify(body), http_status


@bp.get("/webhooks/whatsapp")
def verify_subscription() -> Any:
    """Meta's subscription check: echo hub.challenge only for our verify token."""
    expected = get_runtime().settings.whatsapp_verify_token
    mode = request.args.get("hub.mode", "")
    token = request.args.get("hub.verify_token", "")
    challenge = request.args.get("hub.challenge", "")
    if not expected or mode != "subscribe" or not hmac.compare_digest(token.encode(), expected.encode()):
        log.warning("whatsapp subscription check refused", extra={"mode": mode[:32]})
        return Response("verification refused", status=403, mimetype="text/plain")
    return Response(challenge, status=200, mimetype="text/plain")


def signature_matches(raw: bytes, header: str, app_secret: str) -> bool:
    if not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header[len("sha256=") :].strip().lower().encode(), expected.encode())


@bp.post("/webhooks/whatsapp")
def receive() -> Any:
    runtime = get_runtime()
    secret = runtime.settings.whatsapp_app_secret
    if not secret:
        # Not a bad delivery: our configuration. 503 makes Meta retry once it is fixed.
        log.error("whatsapp delivery refused: WHATSAPP_APP_SECRET is not set")
        return _answer(503, error="WhatsApp webhooks are not configured here (WHATSAPP_APP_SECRET)")
    limit = runtime.settings.max_webhook_bytes
    raw = read_raw_body(limit)
    if raw is None:
        return _answer(413, error=f"body larger than {limit} bytes")
    header = request.headers.get(SIGNATURE_HEADER, "")
    if not header:
        return _answer(401, error=f"{SIGNATURE_HEADER} header missing")
    if not signature_matches(raw, header, secret):
        log.warning("whatsapp signature rejected")
        return _answer(403, error="signature does not match the body")
    try:
        events = parse_delivery(load_untrusted_json(raw))
    except PayloadError as exc:
        return _answer(400, error=str(exc))
    applied = apply_events(runtime, events)
    for contact_id in sorted(applied.opted_out_contacts):
        enqueue_opt_out_syncs(runtime, contact_id=contact_id)
    for inbound_id in applied.confirmations:
        enqueue_confirmation(runtime, inbound_id)
    log.info("whatsapp delivery", extra={"events": len(events), "applied": applied.applied})
    return _answer(200, applied=applied.applied, ignored=applied.ignored)
