"""What Meta bills a WhatsApp Business Account, and the ``pricing_analytics`` field that reports it.

For the fake Graph API (``whatsapp_graph``): a ledger of billed messages, filled by the fake when it
delivers a template message (and by tests for billing the app never saw), and the answer to
``GET /{waba-id}?fields=pricing_analytics.start(<unix>).end(<unix>).granularity(DAILY)...``.

Invariant: a message (wamid) is billed at most once, and every cost is kept as an exact ``Decimal``
in the WABA's currency; only the JSON answer turns sums into numbers, rounded to 4 places (Meta
sends floats such as ``4.6``).

Sources:

* ANALYTICS  https://developers.facebook.com/documentation/business-messaging/whatsapp/analytics
             "Pricing analytics" (April 2026 edition, read from a public copy of the page)
* REFERENCE  https://developers.facebook.com/docs/graph-api/reference/whats-app-business-account/pricing_analytics/
* GROUPS     https://developers.facebook.com/documentation/business-messaging/whatsapp/groups/pricing

Verified there: the request syntax (``.start().end().granularity().phone_numbers().country_codes()
.metric_types().pricing_types().pricing_categories().dimensions()``); start, end and granularity
required, the rest optional with an empty list meaning "all" (or, for dimensions, "no
breakdown"); the enums below; lists written bare (``dimensions(PRICING_CATEGORY,PRICING_TYPE)``,
ANALYTICS' own example) or as JSON arrays; the answer ``{"pricing_analytics": {"data":
[{"data_points": [...]}]}}`` whose points carry start, end, volume, cost and the keys of the
dimensions asked (``phone_number``, ``country``, ``tier``, ``pricing_type``, ``pricing_category``);
``tier`` is "0:MAX" for marketing and absent on free messages; phone numbers are digits; cost is in
the WABA's currency. Public code reports Meta's "(#100) The parameter start is required".

Assumed (not verified in docs): the wording of the other refusals; that buckets are aligned to UTC
(ANALYTICS' example points start at 07:00 UTC, i.e. midnight in California, so Meta's may not be);
that a point's start/end are its whole bucket, not clipped to the range asked; that a message
counts when start <= its delivery < end; the order of points (newest first, as in the example); an
empty answer as ``{"data": [{"data_points": []}]}``; "0:MAX" as the tier of utility and
authentication messages too (Meta's volume tiers are not modelled); enum values taken in any case.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

FIELD = "pricing_analytics"
GRANULARITIES = ("HALF_HOUR", "DAILY", "MONTHLY")  # ANALYTICS, REFERENCE
METRIC_TYPES = ("COST", "VOLUME")  # ANALYTICS, REFERENCE
# Dimension -> the data point's key for it (ANALYTICS' example response).
DIMENSION_KEYS = {
    "PHONE": "phone_number",
    "COUNTRY": "country",
    "TIER": "tier",
    "PRICING_TYPE": "pricing_type",
    "PRICING_CATEGORY": "pricing_category",
}
# ANALYTICS lists the first six; MARKETING_LITE is in its example response; GROUP_MARKETING and
# GROUP_UTILITY are in REFERENCE, whose list is cut off at "GROUP_SERV" (GROUP_SERVICE assumed).
PRICING_CATEGORIES = (
    "AUTHENTICATION",
    "AUTHENTICATION_INTERNATIONAL",
    "MARKETING",
    "SERVICE",
    "UTILITY",
    "REFERRAL_CONVERSION",
    "MARKETING_LITE",
    "GROUP_MARKETING",
    "GROUP_UTILITY",
    "GROUP_SERVICE",
)
PRICING_TYPES = ("REGULAR", "FREE_CUSTOMER_SERVICE", "FREE_ENTRY_POINT")  # ANALYTICS
REQUIRED = ("start", "end", "granularity")
LIST_MODIFIERS = (
    "phone_numbers",
    "country_codes",
    "metric_types",
    "pricing_categories",
    "pricing_types",
    "dimensions",
)
UNTIERED = "0:MAX"  # ANALYTICS: the tier of marketing messages, which have no volume tiers
COST_PLACES = Decimal("0.0001")  # the answer's cost is rounded to 4 decimal places

# This fake's own rate card (not Meta's figures): the cost of one delivered REGULAR message, in
# the WABA's currency (INR unless seeded otherwise). IN AUTHENTICATION_INTERNATIONAL is 2.30 as
# in ANALYTICS' example (2 messages, cost 4.6); free pricing types cost nothing.
RATES: dict[tuple[str, str], Decimal] = {
    ("IN", "MARKETING"): Decimal("0.86"),
    ("IN", "UTILITY"): Decimal("0.12"),
    ("IN", "AUTHENTICATION"): Decimal("0.12"),
    ("IN", "AUTHENTICATION_INTERNATIONAL"): Decimal("2.30"),
}
RATES_ELSEWHERE: dict[str, Decimal] = {  # any other country, same caveat
    "MARKETING": Decimal("2.00"),
    "MARKETING_LITE": Decimal("2.00"),
    "UTILITY": Decimal("0.50"),
    "AUTHENTICATION": Decimal("0.50"),
    "AUTHENTICATION_INTERNATIONAL": Decimal("2.30"),
}
# Recipient calling code -> the ISO 3166 country Meta prices it as; the fake's short list, with
# "OTHER" for the rest (1 covers all of the North American plan, priced here as US).
CALLING_CODES = {
    "1": "US",
    "27": "ZA",
    "44": "GB",
    "49": "DE",
    "52": "MX",
    "55": "BR",
    "61": "AU",
    "62": "ID",
    "65": "SG",
    "91": "IN",
    "92": "PK",
    "94": "LK",
    "234": "NG",
    "880": "BD",
    "966": "SA",
    "971": "AE",
    "977": "NP",
}
OTHER_COUNTRY = "OTHER"
# A delivered status bills the message; a read one implies delivery ("In order for a message
# status to be read, it must have been at least delivered", GROUPS), for when delivered is skipped.
BILLED_ON = frozenset({"delivered", "read"})


class AnalyticsRefusal(ValueError):
    """A fields value Graph refuses: its error ``code`` and ``message`` ("(#100) ...")."""

    def __init__(self, message: str, code: int = 100) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class BilledMessage:
    """``volume`` delivered messages Meta charged ``cost`` (their total) for."""

    waba_id: str
    phone_number: str  # the business number's digits, as data points carry it
    at: datetime  # when delivered, in UTC
    country: str  # the recipient's, e.g. "IN"
    pricing_category: str  # e.g. "MARKETING"
    pricing_type: str  # e.g. "REGULAR"
    volume: int
    cost: Decimal
    wamid: str | None = None  # None for billing added with ``bill``


def country_of(recipient_digits: str) -> str:
    """The country a recipient is priced as, from the longest known calling code it starts with."""
    for length in (3, 2, 1):
        country = CALLING_CODES.get(recipient_digits[:length])
        if country is not None:
            return country
    return OTHER_COUNTRY


def rate(country: str, category: str, pricing_type: str) -> Decimal:
    if pricing_type != "REGULAR":
        return Decimal(0)
    return RATES.get((country, category), RATES_ELSEWHERE.get(category, Decimal(0)))


# --- fields parsing ----------------------------------------------------------------------------


def _syntax_error(text: str) -> AnalyticsRefusal:
    # Graph answers malformed field expansions with code 2500 (not verified in docs).
    return AnalyticsRefusal(f'Syntax error "cannot parse fields" in: {text}', code=2500)


def split_top_level(text: str) -> list[str]:
    """``text`` split on the commas outside any (), [] or {}; parts stripped, empty ones dropped."""
    parts: list[str] = []
    depth, begun = 0, 0
    for position, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth < 0:
                raise _syntax_error(text)
        elif char == "," and depth == 0:
            parts.append(text[begun:position])
            begun = position + 1
    if depth != 0:
        raise _syntax_error(text)
    parts.append(text[begun:])
    return [part.strip() for part in parts if part.strip()]


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_field(text: str) -> tuple[str, dict[str, str]]:
    """``name.modifier(args).other(args)`` as the name and each modifier's raw argument text."""
    match = _NAME.match(text)
    if match is None:
        raise _syntax_error(text)
    name, rest = match.group(), text[match.end() :]
    modifiers: dict[str, str] = {}
    while rest:
        modifier = _NAME.match(rest, 1) if rest.startswith(".") else None
        if modifier is None or not rest[modifier.end() :].startswith("("):
            raise _syntax_error(text)
        opened = modifier.end()
        depth = 0
        for position in range(opened, len(rest)):
            depth += {"(": 1, ")": -1}.get(rest[position], 0)
            if depth == 0:
                break
        else:
            raise _syntax_error(text)
        key = modifier.group()
        if key in modifiers:
            raise AnalyticsRefusal(f"(#100) {name} takes {key} once")  # (not verified in docs)
        modifiers[key] = rest[opened + 1 : position]
        rest = rest[position + 1 :]
    return name, modifiers


def _scalar(raw: str) -> str:
    return raw.strip().strip("\"'").strip()


def _items(raw: str) -> list[str]:
    """A list argument: ``[\"A\",\"B\"]``, ``['A']``, ``A,B`` or ``[]``; quotes are decoration."""
    inner = raw.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    return [item for item in (_scalar(part) for part in inner.split(",")) if item]


# --- the query ---------------------------------------------------------------------------------


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> str:
    # The wording of Meta's enum refusals elsewhere (messaging_product); not verified for these.
    if value.upper() not in allowed:
        raise AnalyticsRefusal(
            f'(#100) Param {name} must be one of {{{", ".join(allowed)}}} - got "{value}".'
        )
    return value.upper()


@dataclass(frozen=True)
class PricingQuery:
    start: int
    end: int
    granularity: str
    phone_numbers: frozenset[str]  # digits; empty for all
    country_codes: frozenset[str]
    metric_types: frozenset[str]
    pricing_categories: frozenset[str]
    pricing_types: frozenset[str]
    dimensions: frozenset[str]

    @classmethod
    def from_modifiers(cls, modifiers: Mapping[str, str]) -> PricingQuery:
        for key in modifiers:
            if key not in REQUIRED and key not in LIST_MODIFIERS:
                # (not verified in docs) what Graph says of a modifier the field does not take.
                raise AnalyticsRefusal(f"(#100) Unknown parameter {key} for field {FIELD}")
        for key in REQUIRED:
            if not _scalar(modifiers.get(key, "")):
                raise AnalyticsRefusal(f"(#100) The parameter {key} is required")  # public code
        bounds = {}
        for key in ("start", "end"):
            value = _scalar(modifiers[key])
            if not value.isdigit():
                raise AnalyticsRefusal(f'(#100) Param {key} must be a UNIX timestamp - got "{value}".')
            bounds[key] = int(value)
        if bounds["end"] <= bounds["start"]:
            raise AnalyticsRefusal("(#100) end must be after start")  # (not verified in docs)
        lists = {key: _items(modifiers.get(key, "")) for key in LIST_MODIFIERS}

        def enums(key: str, allowed: tuple[str, ...]) -> frozenset[str]:
            return frozenset(
                _one_of(f"{key}[{index}]", value, allowed) for index, value in enumerate(lists[key])
            )

        return cls(
            start=bounds["start"],
            end=bounds["end"],
            granularity=_one_of("granularity", _scalar(modifiers["granularity"]), GRANULARITIES),
            phone_numbers=frozenset(re.sub(r"\D", "", number) for number in lists["phone_numbers"]),
            country_codes=frozenset(code.upper() for code in lists["country_codes"]),
            metric_types=enums("metric_types", METRIC_TYPES) or frozenset(METRIC_TYPES),
            pricing_categories=enums("pricing_categories", PRICING_CATEGORIES),
            pricing_types=enums("pricing_types", PRICING_TYPES),
            dimensions=enums("dimensions", tuple(DIMENSION_KEYS)),
        )

    def selects(self, entry: BilledMessage) -> bool:
        return (
            self.start <= entry.at.timestamp() < self.end
            and (not self.phone_numbers or entry.phone_number in self.phone_numbers)
            and (not self.country_codes or entry.country in self.country_codes)
            and (not self.pricing_categories or entry.pricing_category in self.pricing_categories)
            and (not self.pricing_types or entry.pricing_type in self.pricing_types)
        )


def bucket(at: datetime, granularity: str) -> tuple[int, int]:
    """The UTC period holding ``at``, as (start, end) Unix seconds."""
    at = at.astimezone(UTC)
    if granularity == "HALF_HOUR":
        start = at.replace(minute=at.minute - at.minute % 30, second=0, microsecond=0)
        end = start + timedelta(minutes=30)
    elif granularity == "DAILY":
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    else:
        start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
    return int(start.timestamp()), int(end.timestamp())


def _number(cost: Decimal) -> int | float:
    rounded = cost.quantize(COST_PLACES, rounding=ROUND_HALF_UP)
    return int(rounded) if rounded == rounded.to_integral_value() else float(rounded)


def _dimension_value(entry: BilledMessage, dimension: str) -> str | None:
    if dimension == "TIER":
        return UNTIERED if entry.pricing_type == "REGULAR" else None
    values = {
        "PHONE": entry.phone_number,
        "COUNTRY": entry.country,
        "PRICING_TYPE": entry.pricing_type,
        "PRICING_CATEGORY": entry.pricing_category,
    }
    return values[dimension]


def data_points(entries: list[BilledMessage], query: PricingQuery) -> list[dict[str, Any]]:
    """One point per (period, values of the dimensions asked), newest period first."""
    dimensions = [dimension for dimension in DIMENSION_KEYS if dimension in query.dimensions]
    sums: dict[tuple[tuple[int, int], tuple[str | None, ...]], tuple[int, Decimal]] = {}
    for entry in entries:
        if query.selects(entry):
            key = (bucket(entry.at, query.granularity), tuple(_dimension_value(entry, d) for d in dimensions))
            volume, cost = sums.get(key, (0, Decimal(0)))
            sums[key] = (volume + entry.volume, cost + entry.cost)
    points = []
    for (period, values), (volume, cost) in sorted(
        sums.items(), key=lambda item: (-item[0][0][0], [value or "" for value in item[0][1]])
    ):
        point: dict[str, Any] = {"start": period[0], "end": period[1]}
        for dimension, value in zip(dimensions, values, strict=True):
            if value is not None:
                point[DIMENSION_KEYS[dimension]] = value
        if "VOLUME" in query.metric_types:
            point["volume"] = volume
        if "COST" in query.metric_types:
            point["cost"] = _number(cost)
        points.append(point)
    return points


def answer_fields(
    fields: str,
    node: Mapping[str, Any],
    allowed: frozenset[str],
    node_type: str,
    analytics: Callable[[PricingQuery], list[dict[str, Any]]],
) -> dict[str, Any]:
    """The node's answer to a ``fields`` value holding ``pricing_analytics``: ``id`` first, then
    each field asked, the analytics from ``analytics(query)``."""
    answer: dict[str, Any] = {"id": node["id"]}
    for text in split_top_level(fields):
        name, modifiers = parse_field(text)
        if name == FIELD:
            answer[FIELD] = {"data": [{"data_points": analytics(PricingQuery.from_modifiers(modifiers))}]}
        elif name not in allowed:
            # The fake's wording for an unknown field, as in whatsapp_graph (not verified in docs).
            raise AnalyticsRefusal(
                f"(#100) Tried accessing nonexisting field ({name}) on node type ({node_type})"
            )
        elif modifiers:
            raise AnalyticsRefusal(f"(#100) cartback fake: field {name} takes no parameters")
        else:
            answer[name] = node[name]
    return answer


# --- the ledger --------------------------------------------------------------------------------


class BillingLedger:
    """Billed messages per WABA, each wamid once; safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[BilledMessage] = []
        self._wamids: set[str] = set()

    def record_delivery(
        self,
        *,
        wamid: str,
        waba_id: str,
        phone_number: str,
        recipient: str,
        status: str,
        timestamp: int,
        category: str,
        pricing_type: str | None,
        billable: bool,
    ) -> BilledMessage | None:
        """Bill a status webhook's message, at its pricing (``category`` and ``pricing_type`` as
        the webhook spells them: "marketing", "regular"), when it is the first delivered (or read)
        status of a billable message; the entry, or None."""
        kind = (pricing_type or ("regular" if billable else "free_customer_service")).upper()
        if status not in BILLED_ON or not billable or kind != "REGULAR":
            return None
        country = country_of(recipient)
        entry = BilledMessage(
            waba_id=waba_id,
            phone_number=phone_number,
            at=datetime.fromtimestamp(timestamp, UTC),
            country=country,
            # The webhook's "authentication-international" is AUTHENTICATION_INTERNATIONAL here.
            pricing_category=category.upper().replace("-", "_"),
            pricing_type=kind,
            volume=1,
            cost=rate(country, category.upper().replace("-", "_"), kind),
            wamid=wamid,
        )
        with self._lock:
            if wamid in self._wamids:
                return None
            self._wamids.add(wamid)
            self._entries.append(entry)
        return entry

    def bill(
        self,
        waba_id: str,
        phone_number: str,
        *,
        at: datetime,
        country: str,
        category: str,
        pricing_type: str,
        volume: int,
        cost: Decimal | None,
    ) -> BilledMessage:
        if at.tzinfo is None:
            raise ValueError("at must be timezone-aware (Meta's analytics are in UTC)")
        if category not in PRICING_CATEGORIES or pricing_type not in PRICING_TYPES:
            raise ValueError(f"category in {PRICING_CATEGORIES}, pricing_type in {PRICING_TYPES}")
        if volume < 1 or (cost is not None and cost < 0):
            raise ValueError("volume must be at least 1 and cost not negative")
        entry = BilledMessage(
            waba_id=waba_id,
            phone_number=phone_number,
            at=at.astimezone(UTC),
            country=country.upper(),
            pricing_category=category,
            pricing_type=pricing_type,
            volume=volume,
            cost=rate(country.upper(), category, pricing_type) * volume if cost is None else Decimal(cost),
        )
        with self._lock:
            self._entries.append(entry)
        return entry

    def entries(self, waba_id: str) -> list[BilledMessage]:
        with self._lock:
            return [entry for entry in self._entries if entry.waba_id == waba_id]

    def data_points(self, waba_id: str, query: PricingQuery) -> list[dict[str, Any]]:
        return data_points(self.entries(waba_id), query)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._wamids.clear()
