"""The Graph fake bills delivered template messages and reports them as Meta's pricing_analytics."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.fakes.whatsapp_graph import FakeGraphAPI, SentMessage
from tests.fakes.whatsapp_pricing import split_top_level

WABA = "102290129340398"
PHONE = "106540352242922"  # "+91 98765 43210"
PHONE_DIGITS = "919876543210"
SECOND_PHONE = "106540352242930"
SECOND_DIGITS = "919000000009"
TOKEN = "EAAJ-cartback-test-token"
OTHER_WABA = "102290129340399"
OTHER_TOKEN = "EAAJ-other-store-token"
IN_SHOPPER = "+919812345678"
US_SHOPPER = "+14155550100"
# 2026-03-02 00:00 UTC and the days after it.
MARCH_2 = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())
DAY = 86_400
EVERYTHING = '.dimensions(["PRICING_CATEGORY","PRICING_TYPE","COUNTRY","PHONE"])'


@pytest.fixture(scope="module")
def server() -> Iterator[FakeGraphAPI]:
    with FakeGraphAPI() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeGraphAPI) -> FakeGraphAPI:
    """A store's WABA with two numbers, an approved marketing and utility template, and another store."""
    server.reset()
    server.add_account(WABA, PHONE, TOKEN)
    server.add_account(WABA, SECOND_PHONE, TOKEN, display_phone_number="+91 90000 00009")
    server.add_account(OTHER_WABA, "106540352242923", OTHER_TOKEN, display_phone_number="+91 90000 00002")
    body = [{"type": "BODY", "text": "Your cart at Kurta Corner is waiting."}]
    server.add_template(WABA, "cart_nudge_v1", "en", "MARKETING", body)
    server.add_template(WABA, "order_update_v1", "en", "UTILITY", body)
    return server


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5, trust_env=False) as client:
        yield client


def send(
    fake: FakeGraphAPI,
    http: httpx.Client,
    to: str = IN_SHOPPER,
    *,
    template: str = "cart_nudge_v1",
    phone: str = PHONE,
) -> SentMessage:
    payload = {
        "messaging_product": "whatsapp",
        "to": to,
        "type": "template",
        "template": {"name": template, "language": {"code": "en"}},
    }
    answer = http.post(
        f"{fake.url}/{phone}/messages", json=payload, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.status_code == 200, answer.text
    return fake.sent_messages[-1]


def deliver(fake: FakeGraphAPI, sent: SentMessage, at: int) -> None:
    fake.status_for(sent, "delivered", timestamp=at)


def analytics(
    fake: FakeGraphAPI,
    http: httpx.Client,
    filters: str = "",
    *,
    start: int = MARCH_2,
    end: int = MARCH_2 + 3 * DAY,
    granularity: str = "DAILY",
    fields: str = "{field}",
    token: str = TOKEN,
) -> httpx.Response:
    field = f"pricing_analytics.start({start}).end({end}).granularity({granularity}){filters}"
    return http.get(
        f"{fake.url}/{WABA}",
        params={"fields": fields.format(field=field)},
        headers={"Authorization": f"Bearer {token}"},
    )


def points(answer: httpx.Response) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    [block] = answer.json()["pricing_analytics"]["data"]
    found: list[dict[str, Any]] = block["data_points"]
    return found


def by_start(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(found, key=lambda point: (point["start"], sorted(point.items())))


def error_of(answer: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = answer.json()["error"]
    return error


# --- billing from deliveries -------------------------------------------------------------------


def test_delivered_marketing_messages_are_summed_per_day_and_dimension(
    fake: FakeGraphAPI, http: httpx.Client
) -> None:
    for at in (MARCH_2 + 600, MARCH_2 + 5_000):
        deliver(fake, send(fake, http), at)
    deliver(fake, send(fake, http), MARCH_2 + DAY + 60)
    deliver(fake, send(fake, http, US_SHOPPER), MARCH_2 + DAY + 120)
    send(fake, http)  # accepted, never delivered: not billed

    answer = analytics(fake, http, EVERYTHING)

    assert answer.json()["id"] == WABA
    regular_in = {
        "phone_number": PHONE_DIGITS,
        "country": "IN",
        "pricing_type": "REGULAR",
        "pricing_category": "MARKETING",
    }
    assert by_start(points(answer)) == [
        {"start": MARCH_2, "end": MARCH_2 + DAY, **regular_in, "volume": 2, "cost": 1.72},
        {"start": MARCH_2 + DAY, "end": MARCH_2 + 2 * DAY, **regular_in, "volume": 1, "cost": 0.86},
        {
            "start": MARCH_2 + DAY,
            "end": MARCH_2 + 2 * DAY,
            **regular_in,
            "country": "US",
            "volume": 1,
            "cost": 2,
        },
    ]


def test_without_dimensions_a_day_is_one_point_and_metric_types_choose_the_numbers(
    fake: FakeGraphAPI, http: httpx.Client
) -> None:
    deliver(fake, send(fake, http), MARCH_2 + 10)
    deliver(fake, send(fake, http, US_SHOPPER), MARCH_2 + 20)

    totals = points(analytics(fake, http))
    volumes = points(analytics(fake, http, '.metric_types(["VOLUME"])'))
    costs = points(analytics(fake, http, ".metric_types(COST)"))

    assert totals == [{"start": MARCH_2, "end": MARCH_2 + DAY, "volume": 2, "cost": 2.86}]
    assert volumes == [{"start": MARCH_2, "end": MARCH_2 + DAY, "volume": 2}]
    assert costs == [{"start": MARCH_2, "end": MARCH_2 + DAY, "cost": 2.86}]


def test_a_message_delivered_twice_or_also_read_is_billed_once(
    fake: FakeGraphAPI, http: httpx.Client
) -> None:
    sent = send(fake, http)

    deliver(fake, sent, MARCH_2 + 10)
    deliver(fake, sent, MARCH_2 + 20)
    fake.status_for(sent, "read", timestamp=MARCH_2 + 30)

    [billed] = fake.billed(WABA)
    assert (billed.wamid, billed.volume, billed.cost) == (sent.wamid, 1, Decimal("0.86"))
    assert billed.at == datetime.fromtimestamp(MARCH_2 + 10, UTC)
    assert points(analytics(fake, http))[0]["volume"] == 1


def test_only_billable_template_deliveries_are_billed(fake: FakeGraphAPI, http: httpx.Client) -> None:
    sent = send(fake, http)
    fake.status_for(sent, "sent", timestamp=MARCH_2)
    reply = http.post(
        f"{fake.url}/{PHONE}/messages",
        json={"messaging_product": "whatsapp", "to": IN_SHOPPER, "type": "text", "text": {"body": "Done."}},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert reply.status_code == 200
    deliver(fake, fake.sent_messages[-1], MARCH_2 + 5)  # a free customer-service reply
    free = send(fake, http)
    fake.status_for(free, "delivered", timestamp=MARCH_2 + 6, billable=False, pricing_type="free_entry_point")

    assert fake.billed(WABA) == []
    assert points(analytics(fake, http)) == []


def test_the_category_comes_from_the_template_and_the_webhook_pricing_agrees(
    fake: FakeGraphAPI, http: httpx.Client
) -> None:
    sent = send(fake, http, template="order_update_v1")

    body = fake.status_for(sent, "delivered", timestamp=MARCH_2 + 10)

    pricing = body["entry"][0]["changes"][0]["value"]["statuses"][0]["pricing"]
    assert pricing == {"billable": True, "pricing_model": "PMP", "type": "regular", "category": "utility"}
    [billed] = fake.billed(WABA)
    assert (billed.pricing_category, billed.pricing_type, billed.cost) == (
        "UTILITY",
        "REGULAR",
        Decimal("0.12"),
    )


def test_a_delivery_the_app_never_heard_of_is_billed_all_the_same(
    fake: FakeGraphAPI, http: httpx.Client
) -> None:
    fake.webhook_url = "http://127.0.0.1:9/webhooks/whatsapp"  # nothing listens there
    fake.auto_statuses = ("sent", "delivered", "read")
    fake.status_delay_seconds = 0.01

    sent = send(fake, http)
    deliveries = fake.wait_for_deliveries(3, timeout=5)

    assert not any(delivery.ok for delivery in deliveries)
    [billed] = fake.billed(WABA)
    assert billed.wamid == sent.wamid and billed.country == "IN"


# --- filters and periods -----------------------------------------------------------------------


def test_filters_by_phone_number_country_and_pricing_category(fake: FakeGraphAPI, http: httpx.Client) -> None:
    deliver(fake, send(fake, http), MARCH_2 + 10)
    deliver(fake, send(fake, http, US_SHOPPER), MARCH_2 + 20)
    deliver(fake, send(fake, http, phone=SECOND_PHONE), MARCH_2 + 30)
    deliver(fake, send(fake, http, template="order_update_v1"), MARCH_2 + 40)

    second = points(analytics(fake, http, f'.phone_numbers(["{SECOND_DIGITS}"]).dimensions(["PHONE"])'))
    india = points(analytics(fake, http, '.country_codes(["IN"]).dimensions(COUNTRY)'))
    marketing = points(
        analytics(fake, http, '.pricing_categories(["MARKETING"]).dimensions(PRICING_CATEGORY)')
    )
    regular = points(analytics(fake, http, ".pricing_types([REGULAR])"))

    day = {"start": MARCH_2, "end": MARCH_2 + DAY}
    assert second == [{**day, "phone_number": SECOND_DIGITS, "volume": 1, "cost": 0.86}]
    assert india == [{**day, "country": "IN", "volume": 3, "cost": 1.84}]
    assert marketing == [{**day, "pricing_category": "MARKETING", "volume": 3, "cost": 3.72}]
    assert regular == [{**day, "volume": 4, "cost": 3.84}]


@pytest.mark.parametrize(
    ("granularity", "expected"),
    [
        (
            "HALF_HOUR",
            [
                ("2026-01-31T23:30", "2026-02-01T00:00", 1),
                ("2026-02-01T00:00", "2026-02-01T00:30", 1),
                ("2026-02-01T00:30", "2026-02-01T01:00", 2),
            ],
        ),
        (
            "DAILY",
            [("2026-01-31T00:00", "2026-02-01T00:00", 1), ("2026-02-01T00:00", "2026-02-02T00:00", 3)],
        ),
        (
            "MONTHLY",
            [("2026-01-01T00:00", "2026-02-01T00:00", 1), ("2026-02-01T00:00", "2026-03-01T00:00", 3)],
        ),
    ],
)
def test_messages_fall_into_utc_half_hours_days_or_months(
    fake: FakeGraphAPI, http: httpx.Client, granularity: str, expected: list[tuple[str, str, int]]
) -> None:
    for hour, minute in ((23, 45), (24, 10), (24, 40), (24, 59)):
        at = datetime(2026, 1, 31, tzinfo=UTC).timestamp() + hour * 3600 + minute * 60
        fake.bill(WABA, at=datetime.fromtimestamp(at, UTC))

    found = points(
        analytics(
            fake,
            http,
            start=int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()),
            end=int(datetime(2026, 3, 1, tzinfo=UTC).timestamp()),
            granularity=granularity,
        )
    )

    def stamp(text: str) -> int:
        return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())

    assert [(point["start"], point["end"], point["volume"]) for point in by_start(found)] == [
        (stamp(start), stamp(end), volume) for start, end, volume in expected
    ]


def test_only_messages_between_start_and_end_count(fake: FakeGraphAPI, http: httpx.Client) -> None:
    for at in (MARCH_2 - 1, MARCH_2, MARCH_2 + DAY - 1, MARCH_2 + DAY):
        fake.bill(WABA, at=datetime.fromtimestamp(at, UTC))

    found = points(analytics(fake, http, start=MARCH_2, end=MARCH_2 + DAY))

    assert [point["volume"] for point in found] == [2]


def test_list_arguments_may_be_bare_quoted_or_bracketed(fake: FakeGraphAPI, http: httpx.Client) -> None:
    deliver(fake, send(fake, http), MARCH_2 + 10)

    answers = [
        points(analytics(fake, http, filters))
        for filters in (
            ".dimensions(PRICING_CATEGORY,PHONE)",
            '.dimensions(["PRICING_CATEGORY","PHONE"])',
            ".dimensions(['pricing_category', 'phone'])",
            ".dimensions([PRICING_CATEGORY,PHONE]).phone_numbers([]).country_codes([])",
        )
    ]

    expected = {"pricing_category": "MARKETING", "phone_number": PHONE_DIGITS, "volume": 1, "cost": 0.86}
    for found in answers:
        assert found == [{"start": MARCH_2, "end": MARCH_2 + DAY, **expected}]


def test_the_tier_dimension_says_0_max_for_billed_messages_only(
    fake: FakeGraphAPI, http: httpx.Client
) -> None:
    deliver(fake, send(fake, http), MARCH_2 + 10)
    fake.bill(
        WABA,
        at=datetime.fromtimestamp(MARCH_2 + 20, UTC),
        category="SERVICE",
        pricing_type="FREE_CUSTOMER_SERVICE",
    )

    found = points(analytics(fake, http, ".dimensions(TIER,PRICING_TYPE)"))

    assert sorted(found, key=lambda point: point["pricing_type"]) == [
        {
            "start": MARCH_2,
            "end": MARCH_2 + DAY,
            "pricing_type": "FREE_CUSTOMER_SERVICE",
            "volume": 1,
            "cost": 0,
        },
        {
            "start": MARCH_2,
            "end": MARCH_2 + DAY,
            "tier": "0:MAX",
            "pricing_type": "REGULAR",
            "volume": 1,
            "cost": 0.86,
        },
    ]


# --- other fields, refusals, tokens ------------------------------------------------------------


def test_currency_and_other_fields_come_alongside(fake: FakeGraphAPI, http: httpx.Client) -> None:
    fake.add_account("102290129340500", "106540352242950", "EAAJ-usd-token", currency="USD")
    deliver(fake, send(fake, http), MARCH_2 + 10)

    both = analytics(fake, http, fields="currency,name,{field}").json()
    alone = http.get(
        f"{fake.url}/102290129340500",
        params={"fields": "currency"},
        headers={"Authorization": "Bearer EAAJ-usd-token"},
    ).json()

    assert list(both) == ["id", "currency", "name", "pricing_analytics"]
    assert (both["currency"], both["name"]) == ("INR", "Kurta Corner")
    assert both["pricing_analytics"]["data"][0]["data_points"][0]["cost"] == 0.86
    assert alone == {"id": "102290129340500", "currency": "USD"}


@pytest.mark.parametrize(
    ("field", "mentions"),
    [
        ("pricing_analytics.end({end}).granularity(DAILY)", "parameter start is required"),
        ("pricing_analytics.start({start}).granularity(DAILY)", "parameter end is required"),
        ("pricing_analytics.start({start}).end({end})", "parameter granularity is required"),
        ("pricing_analytics", "parameter start is required"),
        ("pricing_analytics.start({start}).end({end}).granularity(DAY)", "granularity must be one of"),
        (
            "pricing_analytics.start({start}).end({end}).granularity(DAILY).dimensions([CURRENCY])",
            "dimensions[0]",
        ),
        (
            "pricing_analytics.start({start}).end({end}).granularity(DAILY).metric_types([COST,SENT])",
            "metric_types[1]",
        ),
        (
            "pricing_analytics.start({start}).end({end}).granularity(DAILY).pricing_types([FREE])",
            "pricing_types[0]",
        ),
        (
            "pricing_analytics.start({start}).end({end}).granularity(DAILY).pricing_categories([PROMO])",
            "pricing_categories",
        ),
        (
            "pricing_analytics.start(yesterday).end({end}).granularity(DAILY)",
            "start must be a UNIX timestamp",
        ),
        ("pricing_analytics.start({end}).end({start}).granularity(DAILY)", "end must be after start"),
        (
            "pricing_analytics.start({start}).end({end}).granularity(DAILY).limit(5)",
            "Unknown parameter limit",
        ),
        (
            "currency,conversation_analytics,pricing_analytics.start({start}).end({end}).granularity(DAILY)",
            "nonexisting field (conversation_analytics)",
        ),
    ],
)
def test_a_missing_or_bad_modifier_is_error_100(
    fake: FakeGraphAPI, http: httpx.Client, field: str, mentions: str
) -> None:
    answer = http.get(
        f"{fake.url}/{WABA}",
        params={"fields": field.format(start=MARCH_2, end=MARCH_2 + DAY)},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )

    assert answer.status_code == 400
    error = error_of(answer)
    assert (error["code"], error["type"]) == (100, "OAuthException")
    assert error["message"].startswith("(#100)") and mentions in error["message"]
    assert "error_data" not in error


def test_unbalanced_brackets_are_a_syntax_error(fake: FakeGraphAPI, http: httpx.Client) -> None:
    answer = analytics(fake, http, '.dimensions(["PHONE"]')

    assert answer.status_code == 400 and error_of(answer)["code"] == 2500


def test_an_unknown_token_gets_the_usual_auth_error_and_another_stores_waba_is_unseen(
    fake: FakeGraphAPI, http: httpx.Client
) -> None:
    unknown = analytics(fake, http, token="EAAJ-nobody")
    other = analytics(fake, http, token=OTHER_TOKEN)

    assert unknown.status_code == 401
    assert (error_of(unknown)["code"], error_of(unknown)["type"]) == (190, "OAuthException")
    assert other.status_code == 400
    assert (error_of(other)["code"], error_of(other)["error_subcode"]) == (100, 33)


# --- the bill helper ---------------------------------------------------------------------------


def test_bill_adds_what_meta_charged_at_the_rate_card_or_a_given_cost(
    fake: FakeGraphAPI, http: httpx.Client
) -> None:
    at = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    fake.bill(WABA, at=at, volume=3)
    fake.bill(WABA, at=at, phone_number_id=SECOND_PHONE, country="AE", cost=Decimal("1.23456"))
    fake.bill(OTHER_WABA, at=at)

    first, second = fake.billed(WABA)
    found = by_start(points(analytics(fake, http, ".dimensions(PHONE,COUNTRY)")))

    assert (first.phone_number, first.country, first.volume, first.cost) == (
        PHONE_DIGITS,
        "IN",
        3,
        Decimal("2.58"),
    )
    assert (second.phone_number, second.country, second.cost) == (SECOND_DIGITS, "AE", Decimal("1.23456"))
    assert first.wamid is None and first.pricing_category == "MARKETING" and first.pricing_type == "REGULAR"
    assert sorted(
        (point["phone_number"], point["country"], point["volume"], point["cost"]) for point in found
    ) == [
        (SECOND_DIGITS, "AE", 1, 1.2346),
        (PHONE_DIGITS, "IN", 3, 2.58),
    ]
    assert [entry.waba_id for entry in fake.billed(OTHER_WABA)] == [OTHER_WABA]


def test_costs_are_summed_exactly(fake: FakeGraphAPI, http: httpx.Client) -> None:
    for _ in range(3):
        fake.bill(WABA, at=datetime(2026, 3, 2, 9, tzinfo=UTC), cost=Decimal("0.1"))

    [point] = points(analytics(fake, http))

    assert point["cost"] == 0.3  # 0.1 + 0.1 + 0.1 as floats would be 0.30000000000000004
    assert sum(entry.cost for entry in fake.billed(WABA)) == Decimal("0.3")


def test_bill_refuses_what_meta_could_not_have_charged(fake: FakeGraphAPI) -> None:
    at = datetime(2026, 3, 2, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        fake.bill(WABA, at=datetime(2026, 3, 2))  # naive: the point of the check
    with pytest.raises(ValueError, match="not a number of WABA"):
        fake.bill(WABA, at=at, phone_number_id="106540352242923")
    with pytest.raises(ValueError, match="category"):
        fake.bill(WABA, at=at, category="PROMOTIONAL")
    with pytest.raises(ValueError, match="volume"):
        fake.bill(WABA, at=at, volume=0)
    with pytest.raises(KeyError):
        fake.bill("999", at=at)
    assert fake.billed(WABA) == []


def test_reset_forgets_what_was_billed(fake: FakeGraphAPI, http: httpx.Client) -> None:
    sent = send(fake, http)
    deliver(fake, sent, MARCH_2)
    fake.bill(WABA, at=datetime(2026, 3, 2, tzinfo=UTC))

    fake.reset()
    fake.add_account(WABA, PHONE, TOKEN)

    assert fake.billed(WABA) == []
    assert points(analytics(fake, http)) == []


# --- the parser --------------------------------------------------------------------------------


def test_fields_split_on_commas_outside_brackets_and_parentheses() -> None:
    fields = 'currency, pricing_analytics.start(1).end(2).dimensions(["A","B"]).country_codes(IN,US),name,'

    assert split_top_level(fields) == [
        "currency",
        'pricing_analytics.start(1).end(2).dimensions(["A","B"]).country_codes(IN,US)',
        "name",
    ]
