"""Meta's webhook deliveries parsed into typed events, all of them, before anything is applied.

One POST can carry many entries (WABAs), each with many changes, each with many statuses and
messages: every one becomes an event here. A shape Meta does not send (an entry that is not an
object, a status without an id) fails the whole delivery with ``PayloadError`` before a single
write, so a bad delivery never half-applies. Fields Meta adds later are ignored; a change
``field`` we do not handle is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from connectors.base import MalformedPayload, PayloadError

OBJECT = "whatsapp_business_account"
# A reply longer than WhatsApp allows is cut to this when kept (characters).
MAX_TEXT = 4096
# Longest Meta id we store (wamids are ~60 characters; the column holds 255).
MAX_ID = 255


@dataclass(frozen=True)
class StatusEvent:
    phone_number_id: str
    wamid: str
    status: str  # sent | delivered | read | failed (others are kept and ignored)
    at: datetime
    recipient_id: str | None  # the shopper's number (digits), empty for username-only users
    biz_opaque_callback_data: str | None
    pricing_category: str | None
    billable: bool | None
    # (code, what Meta said) for a failed status.
    errors: tuple[tuple[int | None, str], ...]


@dataclass(frozen=True)
class InboundEvent:
    phone_number_id: str
    wamid: str
    from_wa_id: str | None  # digits with country code; empty for username-only users
    at: datetime
    kind: str  # text | button | interactive | image | ...
    text: str | None  # what the shopper wrote, or the tapped button's words
    payload: str | None  # a quick-reply button's payload
    context_wamid: str | None  # our message this answers


@dataclass(frozen=True)
class PreferenceEvent:
    phone_number_id: str
    wa_id: str
    value: str  # stop | resume
    category: str
    at: datetime


@dataclass(frozen=True)
class TemplateEvent:
    waba_id: str
    at: datetime
    template_id: str | None
    name: str
    language: str
    event: str | None  # message_template_status_update
    reason: str | None
    quality: str | None  # message_template_quality_update


@dataclass(frozen=True)
class PhoneQualityEvent:
    waba_id: str
    at: datetime
    display_phone_number: str
    event: str


Event = StatusEvent | InboundEvent | PreferenceEvent | TemplateEvent | PhoneQualityEvent
# Messages that are not the shopper talking to us.
NOT_REPLIES = frozenset({"reaction", "system", "unsupported", "request_welcome", "ephemeral"})


def parse_delivery(body: Any) -> list[Event]:
    """The events of one delivery, from its JSON (read from the raw bytes by
    ``connectors.untrusted_json`` at the door); a ``PayloadError`` names what is wrong."""
    if not isinstance(body, dict):
        raise MalformedPayload("the body is not a JSON object")
    if body.get("object") != OBJECT:
        return []
    entries = _list(body, "entry", "the delivery")
    events: list[Event] = []
    for index, entry in enumerate(entries):
        where = f"entry[{index}]"
        entry = _object(entry, where)
        waba_id = _text(entry, "id", where)
        at = _time(entry.get("time"), f"{where}.time") if entry.get("time") is not None else datetime.now(UTC)
        for number, change in enumerate(_list(entry, "changes", where)):
            change_where = f"{where}.changes[{number}]"
            change = _object(change, change_where)
            field = _text(change, "field", change_where)
            value = _object(change.get("value"), f"{change_where}.value")
            events.extend(_parse_change(field, value, waba_id, at, change_where))
    return events


def _parse_change(field: str, value: dict[str, Any], waba_id: str, at: datetime, where: str) -> list[Event]:
    if field == "messages":
        metadata = _object(value.get("metadata"), f"{where}.value.metadata")
        phone_number_id = _text(metadata, "phone_number_id", f"{where}.value.metadata")
        statuses = [
            _status(phone_number_id, item, f"{where}.statuses[{i}]")
            for i, item in enumerate(_list(value, "statuses", where, required=False))
        ]
        messages = [
            _message(phone_number_id, item, f"{where}.messages[{i}]")
            for i, item in enumerate(_list(value, "messages", where, required=False))
        ]
        return [*statuses, *(message for message in messages if message is not None)]
    if field == "user_preferences":
        metadata = _object(value.get("metadata"), f"{where}.value.metadata")
        phone_number_id = _text(metadata, "phone_number_id", f"{where}.value.metadata")
        preferences = [
            _preference(phone_number_id, item, f"{where}.user_preferences[{i}]")
            for i, item in enumerate(_list(value, "user_preferences", where))
        ]
        return [preference for preference in preferences if preference is not None]
    if field in ("message_template_status_update", "message_template_quality_update"):
        template_id = value.get("message_template_id")
        return [
            TemplateEvent(
                waba_id=waba_id,
                at=at,
                template_id=str(template_id) if template_id is not None else None,
                name=_text(value, "message_template_name", where),
                language=_text(value, "message_template_language", where),
                event=_optional_text(value, "event") if field == "message_template_status_update" else None,
                reason=_optional_text(value, "reason"),
                quality=_optional_text(value, "new_quality_score"),
            )
        ]
    if field == "phone_number_quality_update":
        return [
            PhoneQualityEvent(
                waba_id=waba_id,
                at=at,
                display_phone_number=_text(value, "display_phone_number", where),
                event=_text(value, "event", where),
            )
        ]
    return []


def _status(phone_number_id: str, item: Any, where: str) -> StatusEvent:
    item = _object(item, where)
    pricing = _maybe_object(item.get("pricing"))
    errors: list[tuple[int | None, str]] = []
    raw_errors = item.get("errors")
    if raw_errors is not None and not isinstance(raw_errors, list):
        raise PayloadError(f"{where}.errors must be a list")
    for error in raw_errors or []:
        if isinstance(error, dict):
            code = error.get("code")
            data = _maybe_object(error.get("error_data"))
            detail = data.get("details") or error.get("message") or error.get("title") or ""
            errors.append((code if isinstance(code, int) else None, str(detail)[:500]))
    opaque = item.get("biz_opaque_callback_data")
    billable = pricing.get("billable")
    category = pricing.get("category")
    return StatusEvent(
        phone_number_id=phone_number_id,
        wamid=_identifier(item, "id", where),
        status=_text(item, "status", where).lower()[:16],
        at=_time(item.get("timestamp"), f"{where}.timestamp"),
        recipient_id=_wa_id(item.get("recipient_id")),
        biz_opaque_callback_data=str(opaque) if opaque not in (None, "") else None,
        pricing_category=str(category) if isinstance(category, str) else None,
        billable=billable if isinstance(billable, bool) else None,
        errors=tuple(errors),
    )


def _message(phone_number_id: str, item: Any, where: str) -> InboundEvent | None:
    item = _object(item, where)
    kind = _text(item, "type", where)
    if kind in NOT_REPLIES:
        return None
    text: str | None = None
    payload: str | None = None
    if kind == "text":
        text = _optional_text(_object(item.get("text"), f"{where}.text"), "body")
    elif kind == "button":
        button = _object(item.get("button"), f"{where}.button")
        text, payload = _optional_text(button, "text"), _optional_text(button, "payload")
    elif kind == "interactive":
        interactive = _maybe_object(item.get("interactive"))
        reply = _maybe_object(interactive.get("button_reply") or interactive.get("list_reply"))
        text, payload = _optional_text(reply, "title"), _optional_text(reply, "id")
    context = _maybe_object(item.get("context"))
    return InboundEvent(
        phone_number_id=phone_number_id,
        wamid=_identifier(item, "id", where),
        from_wa_id=_wa_id(item.get("from")),
        at=_time(item.get("timestamp"), f"{where}.timestamp"),
        kind=kind[:32],
        text=text[:MAX_TEXT] if text else None,
        payload=payload,
        context_wamid=_optional_text(context, "id"),
    )


def _preference(phone_number_id: str, item: Any, where: str) -> PreferenceEvent | None:
    item = _object(item, where)
    wa_id = _wa_id(item.get("wa_id"))
    if wa_id is None:
        return None  # a username-only user or an odd id: nothing to match, the rest still applies
    return PreferenceEvent(
        phone_number_id=phone_number_id,
        wa_id=wa_id,
        value=_text(item, "value", where).lower(),
        category=_optional_text(item, "category") or "",
        at=_time(item.get("timestamp"), f"{where}.timestamp"),
    )


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"{where} must be an object")
    return value


def _maybe_object(value: Any) -> dict[str, Any]:
    """Optional parts (pricing, context): absent or odd ones read as empty."""
    return value if isinstance(value, dict) else {}


def _list(container: dict[str, Any], key: str, where: str, *, required: bool = True) -> list[Any]:
    value = container.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise PayloadError(f"{where}.{key} must be a list")
    return value


def _text(container: dict[str, Any], key: str, where: str) -> str:
    value = container.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise PayloadError(f"{where}.{key} is missing")
    return value


def _identifier(container: dict[str, Any], key: str, where: str) -> str:
    """Meta's ids (wamids) as stored: bounded, so no id can overflow a column."""
    value = _text(container, key, where)
    if len(value) > MAX_ID:
        raise PayloadError(f"{where}.{key} is longer than {MAX_ID} characters")
    return value


def _wa_id(value: Any) -> str | None:
    """A WhatsApp user's number (digits with the country code, at most 15: E.164), else None."""
    return (
        value
        if isinstance(value, str) and value.isascii() and value.isdigit() and 7 <= len(value) <= 15
        else None
    )


def _optional_text(container: dict[str, Any], key: str) -> str | None:
    value = container.get(key)
    return value if isinstance(value, str) and value else None


def _time(value: Any, where: str) -> datetime:
    """Meta's unix seconds (a string on messages and statuses, a number elsewhere)."""
    try:
        seconds = int(value)
        return datetime.fromtimestamp(seconds, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise PayloadError(f"{where} is not a unix timestamp") from None
