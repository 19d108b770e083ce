"""Reading fields out of platform JSON bodies: one place for the checks every connector makes.

Each helper raises ``PayloadError`` naming the field, so a bad delivery gets a 4xx that says
what is wrong instead of a 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.base import InvalidPhone, MalformedPayload, PayloadError, normalise_phone
from connectors.untrusted_json import load_untrusted_json

# Shopify caps a checkout at 500 lines; more is not a cart from either platform.
MAX_LINES = 500
# A quantity above this is a typo or an attack, not a cart.
MAX_LINE_QUANTITY = 10_000


def load_json_object(raw_body: bytes) -> dict[str, Any]:
    payload = load_untrusted_json(raw_body)
    if not isinstance(payload, dict):
        raise MalformedPayload("body must be a JSON object")
    return payload


def require(payload: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = payload.get(name)
    if value is None or not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise PayloadError(f"{name} is required ({expected})")
    return value


def optional_str(payload: Mapping[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise PayloadError(f"{name} must be a string")
    return str(value)


def platform_id(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise PayloadError(f"{name} is required (string or integer id)")
    return str(value)


def optional_object(payload: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A nested object that may be absent or null (Shopify sends null for missing addresses)."""
    value = payload.get(name)
    # Shopify has been seen to send a missing address as [] instead of null.
    if value is None or value == []:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{name} must be an object")
    return value


def is_numeric_id(text: str) -> bool:
    """Only ASCII digits: ``"²".isdigit()`` is True, and ``int("²")`` raises."""
    return text.isascii() and text.isdigit()


def first_valid_phone(candidates: list[tuple[Any, str | None]], default_region: str) -> str | None:
    """The first candidate that is a valid number, read in its address's country.

    A test number or a typo further up the chain does not make the shopper unreachable when a
    later field holds a good number; none valid means unreachable, not a rejected delivery.
    """
    for raw, region in candidates:
        if not isinstance(raw, (str, int)) or isinstance(raw, bool) or not str(raw).strip():
            continue
        try:
            return normalise_phone(str(raw), region or default_region)
        except InvalidPhone:
            continue
    return None


def clean_text(value: Any) -> str | None:
    """A string field with its surrounding blanks dropped; None when absent or blank."""
    return value.strip() if isinstance(value, str) and value.strip() else None


def line_list(payload: Mapping[str, Any], name: str, limit: int = MAX_LINES) -> list[Any]:
    lines: list[Any] = require(payload, name, list)
    if len(lines) > limit:
        raise PayloadError(f"{name} has more than {limit} lines")
    return lines


def line_quantity(line: Mapping[str, Any], where: str) -> int:
    quantity = line.get("quantity")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_LINE_QUANTITY:
        raise PayloadError(f"{where}.quantity must be an integer 1-{MAX_LINE_QUANTITY}")
    return quantity
