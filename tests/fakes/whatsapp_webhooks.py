"""Meta's WhatsApp webhook bodies, built as Meta sends them, and their X-Hub-Signature-256.

Pure functions returning dicts; ``sign`` signs the exact bytes a test posts. Shapes follow Meta's
webhook reference pages (December 2025 - January 2026 editions), for Graph API v24.0 and later:

* STATUS    https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/status
* TEXT      .../webhooks/reference/messages/text
* BUTTON    .../webhooks/reference/messages/button  (a quick-reply tap on a template)
* PREFS     .../webhooks/reference/user_preferences
* TEMPLATE  .../webhooks/reference/message_template_status_update
* QUALITY   .../webhooks/reference/message_template_quality_update
* PHONE     .../webhooks/reference/phone_number_quality_update
* ENDPOINT  https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/create-webhook-endpoint
* ERRORS    https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes

Conventions kept from those pages: message and status ``timestamp`` values are strings of Unix
seconds, while ``user_preferences[].timestamp`` and ``entry[].time`` are integers; the business
number in ``metadata.display_phone_number`` and ``context.from`` is digits only (every example
shows "15550783881", while the phone-number node shows "+1 555-555-5555"), so builders strip the
formatting. Since v24.0 a status carries no ``conversation`` object unless it belongs to a free
entry point window, and ``pricing`` comes with ``sent`` and with one of ``delivered``/``read``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from typing import Any

OBJECT = "whatsapp_business_account"
STATUSES = frozenset({"sent", "delivered", "read", "failed", "played"})  # STATUS, <STATUS>
# STATUS, <PRICING_CATEGORY>; "authentication-international" is spelt with a hyphen there.
PRICING_CATEGORIES = frozenset(
    {"authentication", "authentication-international", "marketing", "marketing_lite", "referral_conversion"}
    | {"service", "utility"}
)
PRICING_TYPES = frozenset({"regular", "free_customer_service", "free_entry_point"})  # STATUS
PRICING_MODEL = "PMP"  # per-message pricing; "CBP" only on webhooks sent before 2025-07-01 (STATUS)
PREFERENCE_DETAILS = {  # PREFS, <PREFERENCE_DESCRIPTION>
    "stop": "User requested to stop marketing messages",
    "resume": "User requested to resume marketing messages",
}
TEMPLATE_EVENTS = frozenset(  # TEMPLATE, <EVENT>
    {"APPROVED", "ARCHIVED", "DELETED", "DISABLED", "FLAGGED", "IN_APPEAL", "LIMIT_EXCEEDED", "LOCKED"}
    | {"PAUSED", "PENDING", "REINSTATED", "PENDING_DELETION", "REJECTED"}
)
TEMPLATE_REASONS = frozenset(  # TEMPLATE, <REASON> (None for a template scheduled for deletion)
    {"ABUSIVE_CONTENT", "CATEGORY_NOT_AVAILABLE", "INCORRECT_CATEGORY", "INVALID_FORMAT", "NONE"}
    | {"PROMOTIONAL", "SCAM", "TAG_CONTENT_MISMATCH"}
)
TEMPLATE_CATEGORIES = frozenset({"MARKETING", "UTILITY", "AUTHENTICATION"})
QUALITY_SCORES = frozenset({"GREEN", "YELLOW", "RED", "UNKNOWN"})  # QUALITY
PHONE_EVENTS = frozenset({"ONBOARDING", "THROUGHPUT_UPGRADE"})  # PHONE, <EVENT>
# The 2024 - mid-2025 edition also listed these, with current_limit/old_limit (not in the edition
# read here; reported from older copies of the page).
LEGACY_PHONE_EVENTS = frozenset({"DOWNGRADE", "FLAGGED", "UNFLAGGED", "UPGRADE"})
PHONE_LIMITS = frozenset(  # PHONE, <MAX_DAILY_MESSAGES_LIMIT>
    {"TIER_50", "TIER_250", "TIER_2K", "TIER_10K", "TIER_100K", "TIER_NOT_SET", "TIER_UNLIMITED"}
)
ERROR_CODES_HREF = "/documentation/business-messaging/whatsapp/support/error-codes"  # STATUS example
# Titles of the errors a failed status most often carries (ERRORS; 131049 as in the STATUS example).
STATUS_ERROR_TITLES = {
    131026: "Message undeliverable",
    131047: "Re-engagement message",
    131049: "This message was not delivered to maintain healthy ecosystem engagement.",
    131050: "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages"
    " on WhatsApp from your business.",
    131053: "Media upload error",
    132012: "Parameter format does not match format in the created template",
    132018: "There was an issue with the parameters in your template.",
}


def _digits(phone: str) -> str:
    return re.sub(r"\D", "", phone)


def _messages_entry(
    waba_id: str, phone_number_id: str, display_phone_number: str, field: str, value: dict[str, Any]
) -> dict[str, Any]:
    metadata = {"display_phone_number": _digits(display_phone_number), "phone_number_id": phone_number_id}
    return {
        "object": OBJECT,
        "entry": [
            {
                "id": waba_id,
                "changes": [
                    {"value": {"messaging_product": "whatsapp", "metadata": metadata} | value, "field": field}
                ],
            }
        ],
    }


def _account_entry(waba_id: str, field: str, value: dict[str, Any], timestamp: int | None) -> dict[str, Any]:
    # Template and phone-number notifications carry an integer entry "time" and no metadata.
    when = int(time.time()) if timestamp is None else timestamp
    return {
        "entry": [{"id": waba_id, "time": when, "changes": [{"value": value, "field": field}]}],
        "object": OBJECT,
    }


def _contact(wa_id: str, profile_name: str | None) -> dict[str, Any]:
    return ({"profile": {"name": profile_name}} if profile_name else {}) | {"wa_id": wa_id}


def status_error(
    code: int, details: str | None = None, *, title: str | None = None, href: str | None = ERROR_CODES_HREF
) -> dict[str, Any]:
    """One ``statuses[].errors[]`` item: ``title`` and ``message`` are the same (STATUS). Pass
    ``href=None`` for the recorded payloads that carry none."""
    text = title or STATUS_ERROR_TITLES.get(code, f"Error {code}")
    error: dict[str, Any] = {
        "code": code,
        "title": text,
        "message": text,
        "error_data": {"details": details or text},
    }
    return error | ({"href": href} if href is not None else {})


def status(
    waba_id: str,
    phone_number_id: str,
    display_phone_number: str,
    wamid: str,
    status: str,
    recipient_id: str,
    *,
    timestamp: int,
    biz_opaque_callback_data: str | None = None,
    pricing_category: str = "marketing",
    billable: bool = True,
    pricing_type: str | None = None,
    pricing: bool | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``messages`` webhook with one status. ``pricing`` None means as Meta does: with ``sent``
    and ``delivered`` (the docs' pair is sent plus one of delivered/read), never with ``failed``.
    ``errors`` is required for ``failed`` and refused otherwise; see ``status_error``."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {sorted(STATUSES)}")
    if (status == "failed") != bool(errors):
        raise ValueError("a failed status carries errors, and only a failed one")
    if pricing_category not in PRICING_CATEGORIES:
        raise ValueError(f"pricing_category must be one of {sorted(PRICING_CATEGORIES)}")
    kind = pricing_type or ("regular" if billable else "free_customer_service")
    if kind not in PRICING_TYPES:
        raise ValueError(f"pricing_type must be one of {sorted(PRICING_TYPES)}")
    item: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(timestamp),
        "recipient_id": _digits(recipient_id),
    }
    if biz_opaque_callback_data is not None:
        item["biz_opaque_callback_data"] = biz_opaque_callback_data
    if pricing if pricing is not None else status in ("sent", "delivered"):
        item["pricing"] = {
            "billable": billable,
            "pricing_model": PRICING_MODEL,
            "type": kind,
            "category": pricing_category,
        }
    if errors:
        item["errors"] = errors
    return _messages_entry(waba_id, phone_number_id, display_phone_number, "messages", {"statuses": [item]})


def text_message(
    waba_id: str,
    phone_number_id: str,
    display_phone_number: str,
    from_wa_id: str,
    wamid: str,
    body: str,
    timestamp: int,
    profile_name: str = "Asha",
) -> dict[str, Any]:
    """A shopper's text message (TEXT)."""
    message = {
        "from": from_wa_id,
        "id": wamid,
        "timestamp": str(timestamp),
        "type": "text",
        "text": {"body": body},
    }
    value = {"contacts": [_contact(from_wa_id, profile_name)], "messages": [message]}
    return _messages_entry(waba_id, phone_number_id, display_phone_number, "messages", value)


def button_reply(
    waba_id: str,
    phone_number_id: str,
    display_phone_number: str,
    from_wa_id: str,
    wamid: str,
    payload: str,
    text: str,
    context_wamid: str,
    timestamp: int,
    profile_name: str = "Asha",
) -> dict[str, Any]:
    """A tap on a template's quick-reply button: type "button" with ``button.payload``/``text``
    and ``context`` naming the business number and the template message (BUTTON). ``payload`` is
    what the send's quick_reply parameter set, or the button label when the send set none."""
    message = {
        "context": {"from": _digits(display_phone_number), "id": context_wamid},
        "from": from_wa_id,
        "id": wamid,
        "timestamp": str(timestamp),
        "type": "button",
        "button": {"payload": payload, "text": text},
    }
    value = {"contacts": [_contact(from_wa_id, profile_name)], "messages": [message]}
    return _messages_entry(waba_id, phone_number_id, display_phone_number, "messages", value)


def user_preferences(
    waba_id: str,
    phone_number_id: str,
    display_phone_number: str,
    wa_id: str,
    value: str,
    timestamp: int,
    profile_name: str | None = None,
) -> dict[str, Any]:
    """A shopper stopping or resuming marketing messages from the number (PREFS)."""
    if value not in PREFERENCE_DETAILS:
        raise ValueError("value must be 'stop' or 'resume'")
    preference = {
        "wa_id": wa_id,
        "detail": PREFERENCE_DETAILS[value],
        "category": "marketing_messages",
        "value": value,
        "timestamp": timestamp,
    }
    change = {"contacts": [_contact(wa_id, profile_name)], "user_preferences": [preference]}
    return _messages_entry(waba_id, phone_number_id, display_phone_number, "user_preferences", change)


def template_status_update(
    waba_id: str,
    template_id: str | int,
    name: str,
    language: str,
    event: str,
    reason: str | None = "NONE",
    *,
    category: str | None = None,
    timestamp: int | None = None,
    rejection_info: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A template's status change (TEMPLATE); ``message_template_id`` is an integer there."""
    if event not in TEMPLATE_EVENTS:
        raise ValueError(f"event must be one of {sorted(TEMPLATE_EVENTS)}")
    if reason is not None and reason not in TEMPLATE_REASONS:
        raise ValueError(f"reason must be None or one of {sorted(TEMPLATE_REASONS)}")
    value: dict[str, Any] = {
        "event": event,
        "message_template_id": int(template_id),
        "message_template_name": name,
        "message_template_language": language,
        "reason": reason,
    }
    if category is not None:
        if category not in TEMPLATE_CATEGORIES:
            raise ValueError(f"category must be one of {sorted(TEMPLATE_CATEGORIES)}")
        value["message_template_category"] = category
    if rejection_info is not None:  # only with reason INVALID_FORMAT: {"reason", "recommendation"}
        value["rejection_info"] = rejection_info
    return _account_entry(waba_id, "message_template_status_update", value, timestamp)


def template_quality_update(
    waba_id: str,
    template_id: str | int,
    name: str,
    language: str,
    previous_quality_score: str,
    new_quality_score: str,
    *,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """A template's quality score change (QUALITY). The page's syntax and example put
    "message_template_status_update" in ``field``; the subscribed field is
    "message_template_quality_update" and that is used here (not verified in docs)."""
    if {previous_quality_score, new_quality_score} - QUALITY_SCORES:
        raise ValueError(f"quality scores are {sorted(QUALITY_SCORES)}")
    value = {
        "previous_quality_score": previous_quality_score,
        "new_quality_score": new_quality_score,
        "message_template_id": int(template_id),
        "message_template_name": name,
        "message_template_language": language,
    }
    return _account_entry(waba_id, "message_template_quality_update", value, timestamp)


def phone_number_quality_update(
    waba_id: str,
    display_phone_number: str,
    event: str,
    current_limit: str,
    *,
    old_limit: str | None = None,
    legacy_limit_fields: bool = False,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """A throughput or messaging-limit change (PHONE). ``current_limit``/``old_limit`` "will be
    removed in February 2026" in favour of ``max_daily_conversations_per_business``, so the limit
    goes there; ``legacy_limit_fields`` adds the old fields as well, and allows the events of the
    older edition (FLAGGED, UNFLAGGED, UPGRADE, DOWNGRADE)."""
    events = PHONE_EVENTS | (LEGACY_PHONE_EVENTS if legacy_limit_fields else frozenset())
    if event not in events:
        raise ValueError(f"event must be one of {sorted(events)}")
    if current_limit not in PHONE_LIMITS or (old_limit is not None and old_limit not in PHONE_LIMITS):
        raise ValueError(f"limits are {sorted(PHONE_LIMITS)}")
    value: dict[str, Any] = {
        "display_phone_number": _digits(display_phone_number),
        "event": event,
        "max_daily_conversations_per_business": current_limit,
    }
    if legacy_limit_fields:
        value["current_limit"] = current_limit
        if old_limit is not None:
            value["old_limit"] = old_limit
    return _account_entry(waba_id, "phone_number_quality_update", value, timestamp)


def envelope(*bodies: dict[str, Any]) -> dict[str, Any]:
    """One delivery holding every entry of the given bodies (or bare entries), in order: Meta
    batches up to 1000 updates per POST, though batching is not guaranteed (ENDPOINT)."""
    entries: list[dict[str, Any]] = []
    for body in bodies:
        entries.extend(body.get("entry", [body]))
    return {"object": OBJECT, "entry": entries}


def sign(body: bytes, app_secret: str) -> str:
    """The X-Hub-Signature-256 value: "sha256=" + HMAC-SHA256 hex of the raw body, keyed with the
    app secret (ENDPOINT, "POST requests")."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signed(body: dict[str, Any], app_secret: str) -> tuple[bytes, dict[str, str]]:
    """The bytes and headers Meta would POST for ``body``."""
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return raw, {"Content-Type": "application/json", "X-Hub-Signature-256": sign(raw, app_secret)}
