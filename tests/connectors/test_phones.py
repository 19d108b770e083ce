"""connectors.base.normalise_phone: E.164 out, InvalidPhone for what is not a number."""

from __future__ import annotations

import random

import phonenumbers
import pytest

from connectors.base import InvalidPhone, normalise_phone


def _by_phonenumbers(raw: str, region: str) -> str | None:
    """What phonenumbers alone makes of it: the reference the short cut must equal."""
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _ours(raw: str, region: str) -> str | None:
    try:
        return normalise_phone(raw, region)
    except InvalidPhone:
        return None


@pytest.mark.parametrize("region", ["IN", "US", "AE"])
def test_indian_mobiles_in_e164_read_as_phonenumbers_reads_them(region):
    # Every first four digits after +91 (valid and invalid ranges alike), a few numbers each.
    picker = random.Random(20261206)
    numbers = [f"+91{head:04d}{picker.randrange(10**6):06d}" for head in range(6000, 10000) for _ in range(3)]
    assert [_ours(raw, region) for raw in numbers] == [_by_phonenumbers(raw, region) for raw in numbers]


@pytest.mark.parametrize(
    "raw",
    [
        "+919876543210",
        "+91 98765 43210",
        "+91-98765-43210",
        "098765 43210",
        "98765 43210",
        "+9109876543210",
        "+91987654321",
        "+919876543210 ",
        "+91٩٨٧٦٥٤٣٢١٠",
        "+15417543010",
        "+971501234567",
        "12",
        "not a phone",
    ],
)
def test_other_spellings_read_as_phonenumbers_reads_them(raw):
    assert _ours(raw, "IN") == _by_phonenumbers(raw, "IN")
