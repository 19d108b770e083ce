"""Helpers for WhatsApp tests: Meta's recorded deliveries with our ids, signed like Meta signs."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "whatsapp"
APP_SECRET = "meta-app-secret-for-tests-0123456789"
VERIFY_TOKEN = "verify-me-please"
# The ids the recorded fixtures use (tests/fixtures/whatsapp/README.md).
WABA_ID = "102290129340398"
PHONE_NUMBER_ID = "106540352242922"
DISPLAY_NUMBER = "919000000001"
OTHER_PHONE_NUMBER_ID = "106540352242923"
SHOPPER_WA_ID = "919876543210"
FIXTURE_WAMID = "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQUJDREVGMDEyMzQ1Njc4OUEA"
FIXTURE_OPAQUE = "42"
ACCESS_TOKEN = "EAAG-system-user-token-for-tests-0123456789"


def _replace(value: Any, mapping: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {key: _replace(item, mapping) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace(item, mapping) for item in value]
    if isinstance(value, str) and value in mapping:
        return mapping[value]
    return value


def fixture(name: str, **replacements: Any) -> dict[str, Any]:
    """A recorded delivery with exact string values swapped, e.g. fixture(..., **{FIXTURE_WAMID: wamid})."""
    body = json.loads((FIXTURES / f"{name}.json").read_text())
    return _replace(body, replacements)  # type: ignore[no-any-return]


def sign(raw: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def post_delivery(
    client: FlaskClient, body: dict[str, Any] | bytes, *, secret: str = APP_SECRET
) -> TestResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(
        "/webhooks/whatsapp",
        data=raw,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(raw, secret)},
    )


def stamped(body: dict[str, Any], epoch: int) -> dict[str, Any]:
    """The delivery as if it happened at ``epoch``: every timestamp and entry time moved there."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                key: (type(item)(epoch) if key in ("timestamp", "time") else walk(item))
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    return walk(body)  # type: ignore[no-any-return]
