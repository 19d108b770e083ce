"""Optional error tracking: with a DSN, the web app's and a job's unhandled errors reach Sentry
(caught here by a transport of the SDK's own kind, nothing leaves the machine), and no phone,
email or token is in what would be sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from flask import Blueprint
from rq import SimpleWorker

PHONE = "+919876543210"
NATIONAL = "98765 43210"
EMAIL = "priya.sharma@example.com"
TOKEN = "shpat_1234567890abcdef1234567890abcdef"
SECRETS = (PHONE, "9876543210", NATIONAL, EMAIL, TOKEN, "shpat_1234")


def capturing_transport() -> Any:
    """A Transport of the SDK's own kind that keeps each envelope, serialised as it would be
    sent, instead of sending it."""
    from sentry_sdk.transport import Transport

    class CapturingTransport(Transport):
        envelopes: ClassVar[list[bytes]] = []

        def capture_envelope(self, envelope: Any) -> None:
            CapturingTransport.envelopes.append(envelope.serialize())

        @classmethod
        def text(cls) -> str:
            return b"\n".join(cls.envelopes).decode("utf-8", "replace")

    return CapturingTransport


@pytest.fixture
def sentry(settings) -> Iterator[Any]:
    import sentry_sdk

    from app.error_tracking import init_error_tracking

    capture = capturing_transport()
    started = init_error_tracking(
        settings.with_overrides(sentry_dsn="https://public@o0.ingest.example.invalid/1"), transport=capture
    )
    assert started
    yield capture
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # no DSN: off again for the other tests


def test_no_dsn_no_tracking(settings):
    from app.error_tracking import init_error_tracking

    assert init_error_tracking(settings) is False


def test_a_web_error_is_reported_without_a_phone_email_or_token(sentry, runtime):
    import sentry_sdk

    from app import create_app

    app = create_app(runtime=runtime)
    app.testing = False  # let the error reach Flask's handler, as in production
    broken = Blueprint("broken", __name__)

    @broken.post("/broken")
    def fail() -> Any:
        shopper = {"phone": PHONE, "email": EMAIL, "note": f"call {NATIONAL}"}
        access_token = TOKEN
        raise RuntimeError(f"could not message {PHONE} ({EMAIL}) with token={access_token}: {shopper}")

    app.register_blueprint(broken)
    response = app.test_client().post(
        f"/broken?phone={PHONE}",
        json={"to": PHONE, "email": EMAIL},
        headers={"Authorization": f"Bearer {TOKEN}", "Cookie": f"session={TOKEN}", "X-Shopper": EMAIL},
    )
    sentry_sdk.flush()
    assert response.status_code == 500
    sent = sentry.text()
    assert "could not message" in sent and "RuntimeError" in sent
    for secret in SECRETS:
        assert secret not in sent, secret
    assert "[phone]" in sent and "[email]" in sent


def _failing_job(phone: str, email: str) -> None:
    raise ValueError(f"Meta refused {phone} / {email}")


def test_a_job_error_is_reported_without_its_arguments_in_clear(sentry, runtime):
    import sentry_sdk

    runtime.queue.enqueue(f"{__name__}._failing_job", PHONE, EMAIL, job_id="sentry-job")
    SimpleWorker([runtime.queue], connection=runtime.redis).work(burst=True)
    sentry_sdk.flush()
    sent = sentry.text()
    assert "Meta refused" in sent and "sentry-job" in sent
    for secret in SECRETS:
        assert secret not in sent, secret
    events = [
        json.loads(line) for line in sent.splitlines() if line.startswith("{") and '"exception"' in line
    ]
    assert events and all("user" not in event for event in events)
