"""Optional error tracking: with ``SENTRY_DSN`` set, the Sentry SDK reports the web app's and the
workers' unhandled errors (its Flask and RQ integrations), scrubbed first.

Nothing personal leaves: the SDK sends no default PII (no IP, no cookies, no user), its own
scrubber blanks credential-named fields (``authorization``, ``token``, ...) and ours, and every
string left in the event (messages, exception values, local variables, request data,
breadcrumbs) goes through the same redaction as the logs (``app.logs.redact_value``): phones, emails
and tokens become ``[phone]``, ``[email]``, ``[redacted]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from app.logs import redact_value
from sequences.config import Settings

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint

# Fields blanked whatever they hold, on top of the SDK's default denylist.
DENYLIST = [
    "phone",
    "phone_e164",
    "to_phone_e164",
    "mobile",
    "wa_id",
    "email",
    "billing",
    "access_token",
    "refresh_token",
    "access_token_ciphertext",
    "webhook_secret",
    "x_shopify_hmac_sha256",
    "x-shopify-hmac-sha256",
    "x_hub_signature_256",
    "x-hub-signature-256",
    "x_wc_webhook_signature",
    "x-wc-webhook-signature",
    "id_token",
]


def scrub_event(event: Event, hint: Hint) -> Event | None:
    cleaned = dict(redact_value(dict(event)))
    cleaned.pop("user", None)
    return cast("Event", cleaned)


def scrub_breadcrumb(crumb: Any, hint: Hint) -> Any:
    return redact_value(dict(crumb))


def init_error_tracking(settings: Settings, *, transport: Any = None) -> bool:
    """Start the SDK when a DSN is configured; True if it was started."""
    if not settings.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.flask import FlaskIntegration
    from sentry_sdk.integrations.rq import RqIntegration
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

    options: dict[str, Any] = {}
    if transport is not None:
        options["transport"] = transport
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.environment,
        # send_default_pii is left at its default (off: no IP, cookies or user); newer SDKs
        # deprecate naming it, in favour of data_collection, whose default derives from it.
        # Errors only: performance tracing would time every request for a service that has
        # Prometheus for that.
        traces_sample_rate=0.0,
        event_scrubber=EventScrubber(denylist=DEFAULT_DENYLIST + DENYLIST, recursive=True),
        before_send=scrub_event,
        before_breadcrumb=scrub_breadcrumb,
        integrations=[FlaskIntegration(), RqIntegration()],
        **options,
    )
    return True
