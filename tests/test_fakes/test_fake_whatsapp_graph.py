"""The WhatsApp Graph fake accepts what Meta accepts and refuses, with Meta's codes, what it refuses."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from werkzeug.wrappers import Request, Response

from tests.fakes import whatsapp_webhooks as webhooks
from tests.fakes.whatsapp_graph import API_VERSION, FakeGraphAPI, fake_from_args
from tests.support.http_server import ThreadedServer

WABA = "102290129340398"
PHONE = "106540352242922"
TOKEN = "EAAJ-cartback-test-token"
OTHER_WABA = "102290129340399"
OTHER_PHONE = "106540352242923"
OTHER_TOKEN = "EAAJ-other-store-token"
SHOPPER = "+919812345678"
SHOPPER_WA_ID = "919812345678"
LINK_BASE = "https://cartback.example/r/"
BODY = (
    "Hi {{1}}, you left {{2}} in your cart at Kurta Corner. Total: {{3}}. {{4}} "
    "Tap below to pick up where you left off."
)
BODY_EXAMPLE = [["Asha", "Blue kurta", "₹2,098.00", "Claim 10% off!"]]


def template_components(*, with_image: bool) -> list[dict[str, Any]]:
    header = [{"type": "HEADER", "format": "IMAGE", "example": {"header_handle": ["4::seeded"]}}]
    return [
        *(header if with_image else []),
        {"type": "BODY", "text": BODY, "example": {"body_text": BODY_EXAMPLE}},
        {"type": "FOOTER", "text": "Reply STOP to unsubscribe"},
        {
            "type": "BUTTONS",
            "buttons": [
                {
                    "type": "URL",
                    "text": "Complete my order",
                    "url": LINK_BASE + "{{1}}",
                    "example": [LINK_BASE + "x"],
                },
                {"type": "QUICK_REPLY", "text": "Stop promotions"},
            ],
        },
    ]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeGraphAPI]:
    with FakeGraphAPI() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeGraphAPI) -> FakeGraphAPI:
    """One store's WABA and number with both recovery templates approved, and a second store."""
    server.reset()
    server.add_account(WABA, PHONE, TOKEN)
    server.add_account(OTHER_WABA, OTHER_PHONE, OTHER_TOKEN, display_phone_number="+91 90000 00002")
    server.add_template(
        WABA, "cart_recovery_image_v1", "en", "MARKETING", template_components(with_image=True)
    )
    server.add_template(
        WABA, "cart_recovery_text_v1", "en", "MARKETING", template_components(with_image=False)
    )
    return server


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5, trust_env=False) as client:
        yield client


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def components(**changes: Any) -> list[dict[str, Any]]:
    """What cartback sends for the image template; ``changes`` replace components by key."""
    parts: dict[str, Any] = {
        "header": {
            "type": "header",
            "parameters": [{"type": "image", "image": {"link": "https://cdn.example/k.jpg"}}],
        },
        "body": {
            "type": "body",
            "parameters": [
                {"type": "text", "text": "Asha"},
                {"type": "text", "text": "Blue kurta and 1 more"},
                {
                    "type": "currency",
                    "currency": {"fallback_value": "₹2,098.00", "code": "INR", "amount_1000": 2098000},
                },
                {"type": "text", "text": "Claim 10% off!"},
            ],
        },
        "url": {
            "type": "button",
            "sub_type": "url",
            "index": "0",
            "parameters": [{"type": "text", "text": "tok123"}],
        },
        "stop": {
            "type": "button",
            "sub_type": "quick_reply",
            "index": "1",
            "parameters": [{"type": "payload", "payload": "STOP"}],
        },
    } | changes
    return [part for part in parts.values() if part is not None]


def send_payload(name: str = "cart_recovery_image_v1", parts: Any = None, **changes: Any) -> dict[str, Any]:
    template = {"name": name, "language": {"policy": "deterministic", "code": "en"}, "components": parts}
    payload = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": SHOPPER,
        "type": "template",
        "template": template if parts is not None else template | {"components": components()},
        "biz_opaque_callback_data": "42",
    }
    return payload | changes


def send(fake: FakeGraphAPI, http: httpx.Client, payload: Any, *, token: str = TOKEN) -> httpx.Response:
    return http.post(f"{fake.url}/{PHONE}/messages", json=payload, headers=bearer(token))


def error_of(answer: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = answer.json()["error"]
    return error


# --- tokens and permissions ------------------------------------------------------------------


def test_a_request_without_a_token_is_refused(fake: FakeGraphAPI, http: httpx.Client) -> None:
    answer = http.get(f"{fake.url}/{PHONE}")

    assert answer.status_code == 400
    assert error_of(answer)["code"] == 104


def test_an_unknown_or_revoked_token_is_401_with_code_190(fake: FakeGraphAPI, http: httpx.Client) -> None:
    unknown = http.get(f"{fake.url}/{PHONE}", headers=bearer("EAAJ-nobody"))
    fake.revoke_token(TOKEN)
    revoked = send(fake, http, send_payload())

    for answer in (unknown, revoked):
        assert answer.status_code == 401
        assert error_of(answer)["code"] == 190 and error_of(answer)["type"] == "OAuthException"
    assert fake.sent_messages == []


def test_the_access_token_query_parameter_works_too(fake: FakeGraphAPI, http: httpx.Client) -> None:
    answer = http.get(f"{fake.url}/{PHONE}", params={"access_token": TOKEN})

    assert answer.status_code == 200


def test_a_token_reaches_only_the_accounts_it_was_granted(fake: FakeGraphAPI, http: httpx.Client) -> None:
    for answer in (
        http.get(f"{fake.url}/{OTHER_PHONE}", headers=bearer()),
        send(fake, http, send_payload(), token=OTHER_TOKEN),
        http.get(f"{fake.url}/{OTHER_WABA}/message_templates", headers=bearer()),
    ):
        error = error_of(answer)
        assert answer.status_code == 400
        assert (error["code"], error["error_subcode"], error["type"]) == (100, 33, "GraphMethodException")


# --- sending ---------------------------------------------------------------------------------


def test_a_valid_image_template_send_is_accepted_and_recorded(fake: FakeGraphAPI, http: httpx.Client) -> None:
    answer = send(fake, http, send_payload())

    assert answer.status_code == 200
    body = answer.json()
    assert body["messaging_product"] == "whatsapp"
    assert body["contacts"] == [{"input": SHOPPER, "wa_id": SHOPPER_WA_ID}]
    [message] = body["messages"]
    assert message["id"].startswith("wamid.") and message["message_status"] == "accepted"
    [sent] = fake.sent_messages
    assert (sent.wamid, sent.wa_id, sent.template_name, sent.language) == (
        message["id"],
        SHOPPER_WA_ID,
        "cart_recovery_image_v1",
        "en",
    )
    assert sent.biz_opaque_callback_data == "42" and sent.category == "MARKETING"
    assert (
        sent.body.startswith("Hi Asha, you left Blue kurta and 1 more in your cart")
        and "₹2,098.00" in sent.body
    )
    assert sent.button_urls == {0: LINK_BASE + "tok123"} and sent.button_payloads == {1: "STOP"}
    assert sent.header_media == {"link": "https://cdn.example/k.jpg"}
    assert fake.requests[-1].json == send_payload()


def test_the_text_template_takes_integer_indexes_and_no_quick_reply_component(
    fake: FakeGraphAPI, http: httpx.Client
) -> None:
    parts = components(
        header=None,
        stop=None,
        url={"type": "button", "sub_type": "url", "index": 0, "parameters": [{"type": "text", "text": "t"}]},
    )

    answer = send(fake, http, send_payload("cart_recovery_text_v1", parts))

    assert answer.status_code == 200
    assert fake.sent_messages[0].button_urls == {0: LINK_BASE + "t"}


def test_a_text_reply_is_accepted_without_a_message_status(fake: FakeGraphAPI, http: httpx.Client) -> None:
    payload = {
        "messaging_product": "whatsapp",
        "to": SHOPPER,
        "type": "text",
        "text": {"body": "You're unsubscribed."},
    }

    answer = send(fake, http, payload)

    assert answer.status_code == 200
    assert answer.json()["messages"][0].keys() == {"id"}
    assert fake.sent_messages[0].body == "You're unsubscribed."


def body_with(*params: dict[str, Any]) -> dict[str, Any]:
    base = components()[1]["parameters"]
    return {"type": "body", "parameters": [*params, *base[len(params) :]]}


INVALID_SENDS: list[tuple[str, Callable[[], Any], int, int, str]] = [
    ("no messaging_product", lambda: send_payload(messaging_product=None), 100, 400, "messaging_product"),
    ("wrong product", lambda: send_payload(messaging_product="sms"), 100, 400, "messaging_product"),
    ("group recipient", lambda: send_payload(recipient_type="group"), 100, 400, "recipient_type"),
    ("letters in to", lambda: send_payload(to="+91 98765 ABCDE"), 100, 400, "to"),
    ("short to", lambda: send_payload(to="12345"), 100, 400, "to"),
    ("no type", lambda: send_payload(type=None), 100, 400, "type"),
    ("image message", lambda: send_payload(type="image"), 131051, 400, "not modelled"),
    ("opaque too long", lambda: send_payload(biz_opaque_callback_data="x" * 513), 100, 400, "512"),
    ("unknown template", lambda: send_payload("cart_recovery_v9"), 132001, 404, "does not exist in en"),
    (
        "wrong language",
        lambda: send_payload() | {"template": send_payload()["template"] | {"language": {"code": "hi"}}},
        132001,
        404,
        "does not exist in hi",
    ),
    (
        "no language code",
        lambda: send_payload() | {"template": send_payload()["template"] | {"language": {}}},
        100,
        400,
        "template['language']['code']",
    ),
    (
        "fallback policy",
        lambda: (
            send_payload()
            | {"template": send_payload()["template"] | {"language": {"policy": "fallback", "code": "en"}}}
        ),
        100,
        400,
        "DETERMINISTIC",
    ),
    (
        "three body params",
        lambda: send_payload(
            parts=components(body={"type": "body", "parameters": components()[1]["parameters"][:3]})
        ),
        132000,
        400,
        "body: number of localizable_params (3) does not match the expected number of params (4)",
    ),
    (
        "empty text",
        lambda: send_payload(parts=components(body=body_with({"type": "text", "text": ""}))),
        131008,
        400,
        "text",
    ),
    (
        "newline in text",
        lambda: send_payload(parts=components(body=body_with({"type": "text", "text": "Asha\nK"}))),
        132018,
        400,
        "new-line/tab",
    ),
    (
        "five spaces",
        lambda: send_payload(parts=components(body=body_with({"type": "text", "text": "Asha     K"}))),
        132018,
        400,
        "consecutive spaces",
    ),
    (
        "image in body",
        lambda: send_payload(
            parts=components(body=body_with({"type": "image", "image": {"link": "https://x.example/a.jpg"}}))
        ),
        132012,
        400,
        "expected TEXT",
    ),
    (
        "made-up currency",
        lambda: send_payload(
            parts=components(
                body=body_with(
                    components()[1]["parameters"][0],
                    components()[1]["parameters"][1],
                    {
                        "type": "currency",
                        "currency": {"fallback_value": "2,098", "code": "RUPEE", "amount_1000": 1},
                    },
                )
            )
        ),
        131009,
        400,
        "ISO 4217",
    ),
    (
        "currency without amount",
        lambda: send_payload(
            parts=components(
                body=body_with(
                    components()[1]["parameters"][0],
                    components()[1]["parameters"][1],
                    {"type": "currency", "currency": {"fallback_value": "₹2,098.00", "code": "INR"}},
                )
            )
        ),
        131008,
        400,
        "amount_1000",
    ),
    (
        "no header image",
        lambda: send_payload(parts=components(header=None)),
        132012,
        400,
        "header: Format mismatch, expected IMAGE, received UNKNOWN",
    ),
    (
        "header link without scheme",
        lambda: send_payload(
            parts=components(
                header={
                    "type": "header",
                    "parameters": [{"type": "image", "image": {"link": "cdn.example/k.jpg"}}],
                }
            )
        ),
        131009,
        400,
        "http(s)",
    ),
    (
        "header on a text template",
        lambda: send_payload("cart_recovery_text_v1", components()),
        132000,
        400,
        "header: number of localizable_params (1) does not match the expected number of params (0)",
    ),
    (
        "no url suffix",
        lambda: send_payload(parts=components(url=None)),
        131008,
        400,
        "Button at index 0 of type Url requires a parameter",
    ),
    (
        "empty url suffix",
        lambda: send_payload(
            parts=components(url=components()[2] | {"parameters": [{"type": "text", "text": ""}]})
        ),
        131008,
        400,
        "requires a parameter",
    ),
    (
        "quick reply at the url index",
        lambda: send_payload(parts=components(stop=components()[3] | {"index": "0"}, url=None)),
        132018,
        400,
        "Button at index 0 must be of type Url",
    ),
    (
        "index past the buttons",
        lambda: send_payload(parts=components(stop=components()[3] | {"index": "2"})),
        132018,
        400,
        "index 2 does not exist",
    ),
    (
        "index out of range",
        lambda: send_payload(parts=components(stop=components()[3] | {"index": "10"})),
        131009,
        400,
        "index",
    ),
    (
        "text as a quick-reply payload",
        lambda: send_payload(
            parts=components(stop=components()[3] | {"parameters": [{"type": "text", "text": "STOP"}]})
        ),
        132012,
        400,
        "expected PAYLOAD",
    ),
    (
        "footer component",
        lambda: send_payload(parts=[*components(), {"type": "footer"}]),
        131009,
        400,
        "footer",
    ),
]


@pytest.mark.parametrize(
    ("payload", "code", "status", "details"),
    [case[1:] for case in INVALID_SENDS],
    ids=[case[0] for case in INVALID_SENDS],
)
def test_an_invalid_send_is_refused_with_metas_code(
    fake: FakeGraphAPI, http: httpx.Client, payload: Callable[[], Any], code: int, status: int, details: str
) -> None:
    given = {key: value for key, value in payload().items() if value is not None}

    answer = send(fake, http, given)

    error = error_of(answer)
    assert (answer.status_code, error["code"]) == (status, code), error
    assert error["message"].startswith(f"(#{code}) ")
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert details in error["error_data"]["details"]
    assert error["fbtrace_id"]
    assert fake.sent_messages == []


def test_a_number_cannot_message_itself(fake: FakeGraphAPI, http: httpx.Client) -> None:
    answer = send(fake, http, send_payload(to="+91 98765 43210"))

    assert error_of(answer)["code"] == 131021


def test_a_non_json_body_is_refused(fake: FakeGraphAPI, http: httpx.Client) -> None:
    answer = http.post(f"{fake.url}/{PHONE}/messages", data={"to": SHOPPER}, headers=bearer())

    assert error_of(answer)["code"] == 100


@pytest.mark.parametrize(
    ("status", "code"), [("PAUSED", 132015), ("DISABLED", 132016), ("PENDING", 132001), ("REJECTED", 132001)]
)
def test_a_template_that_is_not_approved_cannot_be_sent(
    fake: FakeGraphAPI, http: httpx.Client, status: str, code: int
) -> None:
    fake.set_template_status(WABA, "cart_recovery_image_v1", "en", status)

    assert error_of(send(fake, http, send_payload()))["code"] == code


# --- injected failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        *[
            (130429, 400),
            (131056, 400),
            (131049, 400),
            (131050, 400),
            (131048, 400),
            (368, 403),
            (131031, 403),
        ],
        *[(190, 401), (131000, 500), (131016, 500), (132001, 404), (131047, 400), (131042, 400), (100, 400)],
    ],
)
def test_an_injected_failure_answers_with_the_documented_http_status(
    fake: FakeGraphAPI, http: httpx.Client, code: int, status: int
) -> None:
    fake.fail_next(code)

    failed = send(fake, http, send_payload())
    after = send(fake, http, send_payload())

    assert (failed.status_code, error_of(failed)["code"]) == (status, code)
    # An expired token is refused by Graph itself, without the Cloud API's error_data.
    assert ("error_data" in error_of(failed)) is (code != 190)
    assert after.status_code == 200 and len(fake.sent_messages) == 1


def test_injected_failures_count_match_the_recipient_and_wait_for_a_valid_request(
    fake: FakeGraphAPI, http: httpx.Client
) -> None:
    fake.fail_next(131026, count=2, to=SHOPPER, details="Message Undeliverable.")

    invalid = send(fake, http, send_payload(parts=components(header=None)))
    other = send(fake, http, send_payload(to="+919811111111"))
    first, second, third = (send(fake, http, send_payload()) for _ in range(3))

    assert error_of(invalid)["code"] == 132012
    assert other.status_code == 200
    assert [error_of(first)["error_data"]["details"], error_of(second)["code"]] == [
        "Message Undeliverable.",
        131026,
    ]
    assert third.status_code == 200


def test_an_unknown_code_needs_an_http_status(fake: FakeGraphAPI) -> None:
    with pytest.raises(ValueError, match="http_status"):
        fake.fail_next(999999)


# --- nodes -----------------------------------------------------------------------------------


def test_the_phone_number_node_answers_its_default_fields_or_the_ones_asked(
    fake: FakeGraphAPI, http: httpx.Client
) -> None:
    default = http.get(f"{fake.url}/{PHONE}", headers=bearer()).json()
    fake.set_quality(PHONE, "YELLOW")
    asked = http.get(
        f"{fake.url}/{PHONE}",
        params={"fields": "display_phone_number,quality_rating,throughput"},
        headers=bearer(),
    ).json()
    unknown = http.get(f"{fake.url}/{PHONE}", params={"fields": "quality_score"}, headers=bearer())

    assert default == {
        "id": PHONE,
        "display_phone_number": "+91 98765 43210",
        "verified_name": "Kurta Corner",
        "quality_rating": "GREEN",
    }
    assert asked == {
        "id": PHONE,
        "display_phone_number": "+91 98765 43210",
        "quality_rating": "YELLOW",
        "throughput": {"level": "STANDARD"},
    }
    assert (
        error_of(unknown)["code"] == 100
        and "nonexisting field (quality_score)" in error_of(unknown)["message"]
    )


def test_the_waba_node_and_its_phone_numbers_page_by_cursor(fake: FakeGraphAPI, http: httpx.Client) -> None:
    fake.add_account(WABA, "106540352242999", TOKEN, display_phone_number="+91 98765 00000")

    waba = http.get(f"{fake.url}/{WABA}", headers=bearer()).json()
    first = http.get(f"{fake.url}/{WABA}/phone_numbers", params={"limit": 1}, headers=bearer()).json()
    second = http.get(first["paging"]["next"], headers=bearer()).json()

    assert waba == {"id": WABA, "name": "Kurta Corner"}
    assert [node["id"] for node in first["data"] + second["data"]] == [PHONE, "106540352242999"]
    assert "next" not in second["paging"]


def test_subscribing_the_app_to_the_waba(fake: FakeGraphAPI, http: httpx.Client) -> None:
    before = http.get(f"{fake.url}/{WABA}/subscribed_apps", headers=bearer()).json()
    subscribed = http.post(f"{fake.url}/{WABA}/subscribed_apps", headers=bearer()).json()
    after = http.get(f"{fake.url}/{WABA}/subscribed_apps", headers=bearer()).json()

    assert before == {"data": []} and subscribed == {"success": True}
    assert after["data"][0]["whatsapp_business_api_data"]["id"] == fake.app_id
    assert fake.subscribed(WABA) and not fake.subscribed(OTHER_WABA)


def test_an_unknown_api_version_or_edge_is_refused(fake: FakeGraphAPI, http: httpx.Client) -> None:
    assert http.get(f"{fake.origin}/v19.0/{PHONE}", headers=bearer()).status_code == 404
    assert error_of(http.get(f"{fake.url}/{PHONE}/groups", headers=bearer()))["code"] == 100


# --- template creation -----------------------------------------------------------------------


def upload_image(fake: FakeGraphAPI, http: httpx.Client, data: bytes = b"\xff\xd8\xff fake jpeg") -> str:
    session = http.post(
        f"{fake.url}/{fake.app_id}/uploads",
        params={"file_name": "kurta.jpg", "file_length": len(data), "file_type": "image/jpeg"},
        headers=bearer(),
    ).json()["id"]
    answer = http.post(
        f"{fake.url}/{session}", content=data, headers={"Authorization": f"OAuth {TOKEN}", "file_offset": "0"}
    )
    assert answer.status_code == 200, answer.text
    handle: str = answer.json()["h"]
    return handle


def creation(name: str = "cart_recovery_image_v2", **changes: Any) -> dict[str, Any]:
    return {
        "name": name,
        "language": "en",
        "category": "MARKETING",
        "parameter_format": "positional",
        "components": template_components(with_image=True),
    } | changes


def create(fake: FakeGraphAPI, http: httpx.Client, payload: dict[str, Any]) -> httpx.Response:
    return http.post(f"{fake.url}/{WABA}/message_templates", json=payload, headers=bearer())


def test_a_template_is_created_from_an_uploaded_header_and_sent_once_approved(
    fake: FakeGraphAPI, http: httpx.Client
) -> None:
    handle = upload_image(fake, http)
    payload = creation()
    payload["components"][0]["example"]["header_handle"] = [handle]

    created = create(fake, http, payload)
    pending = send(fake, http, send_payload("cart_recovery_image_v2"))
    fake.set_template_status(WABA, "cart_recovery_image_v2", "en", "APPROVED")
    approved = send(fake, http, send_payload("cart_recovery_image_v2"))

    assert created.status_code == 200
    assert created.json() == {"id": created.json()["id"], "status": "PENDING", "category": "MARKETING"}
    assert error_of(pending)["code"] == 132001
    assert approved.status_code == 200


def test_listing_templates_filters_by_name_and_returns_the_fields_asked(
    fake: FakeGraphAPI, http: httpx.Client
) -> None:
    listed = http.get(
        f"{fake.url}/{WABA}/message_templates",
        params={"name": "cart_recovery_text_v1", "fields": "name,status,language,quality_score"},
        headers=bearer(),
    ).json()
    full = http.get(f"{fake.url}/{WABA}/message_templates", params={"limit": 1}, headers=bearer()).json()

    [node] = listed["data"]
    assert node.keys() == {"id", "name", "status", "language", "quality_score"}
    assert (node["name"], node["status"], node["quality_score"]["score"]) == (
        "cart_recovery_text_v1",
        "APPROVED",
        "UNKNOWN",
    )
    assert full["data"][0]["parameter_format"] == "POSITIONAL"
    assert [c["type"] for c in full["data"][0]["components"]] == ["HEADER", "BODY", "FOOTER", "BUTTONS"]
    assert "next" in full["paging"]


def test_the_same_name_and_language_again_is_content_that_already_exists(
    fake: FakeGraphAPI, http: httpx.Client
) -> None:
    fake.auto_approve = True
    payload = creation("cart_recovery_text_v2", components=template_components(with_image=False))

    first = create(fake, http, payload)
    again = create(fake, http, payload)
    hindi = create(fake, http, payload | {"language": "hi"})

    assert first.json()["status"] == "APPROVED"
    assert (again.status_code, error_of(again)["code"], error_of(again)["error_subcode"]) == (
        400,
        100,
        2388024,
    )
    assert error_of(again)["error_user_title"] == "Content in This Language Already Exists"
    assert hindi.status_code == 200


def _with_body(text: str, examples: list[list[str]] | None = None) -> list[dict[str, Any]]:
    parts = template_components(with_image=False)
    parts[0] = {"type": "BODY", "text": text} | ({"example": {"body_text": examples}} if examples else {})
    return parts


def _with_buttons(*buttons: dict[str, Any]) -> list[dict[str, Any]]:
    parts = template_components(with_image=False)
    parts[-1] = {"type": "BUTTONS", "buttons": list(buttons)}
    return parts


QR = {"type": "QUICK_REPLY", "text": "Stop promotions"}
URL = {"type": "URL", "text": "Shop", "url": "https://cartback.example/shop"}
INVALID_TEMPLATES: list[tuple[str, dict[str, Any], int | None, str]] = [
    ("capital letters", {"name": "Cart_Recovery"}, None, "lowercase"),
    ("unsupported language", {"language": "xx_YY"}, None, "language"),
    ("unknown category", {"category": "PROMOTION"}, None, "category"),
    ("no body", {"components": [{"type": "FOOTER", "text": "Bye now"}]}, None, "BODY component is required"),
    ("two bodies", {"components": _with_body("Hello there, friend.") * 2}, None, "only one BODY"),
    ("body over 1024", {"components": _with_body("x" * 1025)}, 2388040, "1024"),
    (
        "leading parameter",
        {"components": _with_body("{{1}}, your cart waits.", [["Asha"]])},
        2388299,
        "start or end",
    ),
    (
        "trailing parameter",
        {"components": _with_body("Your cart waits, {{1}}", [["Asha"]])},
        2388299,
        "start or end",
    ),
    (
        "skipped parameter",
        {"components": _with_body("Hi {{1}}, see {{3}} now.", [["a", "b"]])},
        2388072,
        "sequential",
    ),
    ("named parameter", {"components": _with_body("Hi {{name}}, hello.", [["a"]])}, 2388072, "positional"),
    ("missing example", {"components": _with_body("Hi {{1}}, your cart waits.")}, None, "example.body_text"),
    (
        "short example",
        {"components": _with_body("Hi {{1}} and {{2}}, hello.", [["a"]])},
        None,
        "[[2 example values]]",
    ),
    (
        "footer parameter",
        {"components": [*_with_body("Hello there.")[:1], {"type": "FOOTER", "text": "Bye {{1}}"}]},
        2388073,
        "footer",
    ),
    ("unknown header handle", {}, None, "not a handle from the upload API"),
    (
        "gif header",
        {"components": [{"type": "HEADER", "format": "GIF"}, *_with_body("Hello there.")]},
        2388047,
        "GIF",
    ),
    (
        "url variable mid-way",
        {"components": _with_buttons({**URL, "url": "https://x.example/{{1}}/go", "example": ["a"]})},
        None,
        "at its end",
    ),
    (
        "url variable without example",
        {"components": _with_buttons({**URL, "url": "https://x.example/{{1}}"})},
        None,
        "example",
    ),
    ("three url buttons", {"components": _with_buttons(URL, URL, URL)}, None, "at most 2 URL"),
    ("split quick replies", {"components": _with_buttons(QR, URL, QR)}, None, "grouped"),
    ("label over 25", {"components": _with_buttons({**QR, "text": "x" * 26})}, 2388040, "25"),
    ("eleven buttons", {"components": _with_buttons(*[QR] * 11)}, None, "1 to 10"),
]


@pytest.mark.parametrize(
    ("changes", "subcode", "says"),
    [case[1:] for case in INVALID_TEMPLATES],
    ids=[case[0] for case in INVALID_TEMPLATES],
)
def test_an_invalid_template_is_refused_at_creation(
    fake: FakeGraphAPI, http: httpx.Client, changes: dict[str, Any], subcode: int | None, says: str
) -> None:
    answer = create(fake, http, creation(**changes))

    error = error_of(answer)
    assert (answer.status_code, error["code"], error.get("error_subcode")) == (400, 100, subcode), error
    assert says in error["error_user_msg"]
    assert "error_data" not in error


def test_the_upload_step_takes_oauth_the_offset_and_the_whole_file(
    fake: FakeGraphAPI, http: httpx.Client
) -> None:
    session = http.post(
        f"{fake.url}/{fake.app_id}/uploads",
        params={"file_length": 4, "file_type": "image/png"},
        headers=bearer(),
    ).json()["id"]

    with_bearer = http.post(f"{fake.url}/{session}", content=b"abcd", headers=bearer() | {"file_offset": "0"})
    no_offset = http.post(
        f"{fake.url}/{session}", content=b"abcd", headers={"Authorization": f"OAuth {TOKEN}"}
    )
    short = http.post(
        f"{fake.url}/{session}",
        content=b"ab",
        headers={"Authorization": f"OAuth {TOKEN}", "file_offset": "0"},
    )
    bad_type = http.post(
        f"{fake.url}/{fake.app_id}/uploads",
        params={"file_length": 4, "file_type": "image/gif"},
        headers=bearer(),
    )
    progress = http.get(f"{fake.url}/{session}", headers={"Authorization": f"OAuth {TOKEN}"}).json()

    assert session.startswith("upload:")
    assert with_bearer.status_code == 401
    assert [error_of(answer)["code"] for answer in (no_offset, short, bad_type)] == [100, 100, 100]
    assert progress == {"id": session, "file_offset": 0}


# --- webhooks --------------------------------------------------------------------------------


def test_a_signed_webhook_carries_the_hmac_of_the_exact_body(fake: FakeGraphAPI) -> None:
    body, headers = fake.signed_webhook(
        webhooks.text_message(
            WABA, PHONE, "+91 98765 43210", SHOPPER_WA_ID, "wamid.in1", "बंद करो", 1795000000
        )
    )

    expected = "sha256=" + hmac.new(fake.app_secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Hub-Signature-256"] == expected == webhooks.sign(body, fake.app_secret)
    assert "बंद करो".encode() in body
    assert len(fake.app_secret) == 32


def test_status_for_fills_a_status_webhook_from_an_accepted_message(
    fake: FakeGraphAPI, http: httpx.Client
) -> None:
    send(fake, http, send_payload())
    [sent] = fake.sent_messages

    sent_status = fake.status_for(sent, "sent", timestamp=1795000000)
    read = fake.status_for(sent, "read", timestamp=1795000006)
    failed = fake.status_for(sent, "failed", timestamp=1795000001, errors=[webhooks.status_error(131049)])

    change = sent_status["entry"][0]["changes"][0]
    assert sent_status["object"] == "whatsapp_business_account" and sent_status["entry"][0]["id"] == WABA
    assert change["field"] == "messages"
    assert change["value"]["metadata"] == {"display_phone_number": "919876543210", "phone_number_id": PHONE}
    assert change["value"]["statuses"][0] == {
        "id": sent.wamid,
        "status": "sent",
        "timestamp": "1795000000",
        "recipient_id": SHOPPER_WA_ID,
        "biz_opaque_callback_data": "42",
        "pricing": {"billable": True, "pricing_model": "PMP", "type": "regular", "category": "marketing"},
    }
    assert "pricing" not in read["entry"][0]["changes"][0]["value"]["statuses"][0]
    [error] = failed["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"]
    assert error["code"] == 131049 and error["title"] == error["message"]


def test_status_builders_refuse_impossible_combinations() -> None:
    with pytest.raises(ValueError, match="failed"):
        webhooks.status(WABA, PHONE, "15550783881", "wamid.x", "failed", "1", timestamp=1)
    with pytest.raises(ValueError, match="status"):
        webhooks.status(WABA, PHONE, "15550783881", "wamid.x", "seen", "1", timestamp=1)


def test_a_quick_reply_tap_echoes_the_payload_the_send_set(fake: FakeGraphAPI, http: httpx.Client) -> None:
    send(fake, http, send_payload())
    [sent] = fake.sent_messages

    tap = fake.button_reply_for(sent, 1, timestamp=1795000100)

    value = tap["entry"][0]["changes"][0]["value"]
    [message] = value["messages"]
    assert message["type"] == "button" and message["button"] == {"payload": "STOP", "text": "Stop promotions"}
    assert message["context"] == {"from": "919876543210", "id": sent.wamid}
    assert value["contacts"] == [{"profile": {"name": "Asha"}, "wa_id": SHOPPER_WA_ID}]


def test_account_level_webhooks_and_an_envelope_of_several() -> None:
    prefs = webhooks.user_preferences(WABA, PHONE, "15550783881", "919876543210", "stop", 1795000200)
    approved = webhooks.template_status_update(
        WABA,
        "1597534862147852",
        "cart_recovery_image_v1",
        "en",
        "APPROVED",
        category="MARKETING",
        timestamp=1795000300,
    )
    quality = webhooks.template_quality_update(
        WABA, 1597534862147852, "cart_recovery_image_v1", "en", "GREEN", "YELLOW", timestamp=1
    )
    phone = webhooks.phone_number_quality_update(
        WABA, "+1 555-078-3881", "THROUGHPUT_UPGRADE", "TIER_UNLIMITED", timestamp=2
    )

    combined = webhooks.envelope(prefs, approved, quality, phone)

    preference = prefs["entry"][0]["changes"][0]["value"]["user_preferences"][0]
    assert preference == {
        "wa_id": "919876543210",
        "detail": "User requested to stop marketing messages",
        "category": "marketing_messages",
        "value": "stop",
        "timestamp": 1795000200,
    }
    assert approved["entry"][0]["time"] == 1795000300
    assert approved["entry"][0]["changes"][0]["value"]["message_template_id"] == 1597534862147852
    assert quality["entry"][0]["changes"][0]["field"] == "message_template_quality_update"
    assert phone["entry"][0]["changes"][0]["value"] == {
        "display_phone_number": "15550783881",
        "event": "THROUGHPUT_UPGRADE",
        "max_daily_conversations_per_business": "TIER_UNLIMITED",
    }
    assert [entry["changes"][0]["field"] for entry in combined["entry"]] == [
        "user_preferences",
        "message_template_status_update",
        "message_template_quality_update",
        "phone_number_quality_update",
    ]
    with pytest.raises(ValueError):
        webhooks.phone_number_quality_update(WABA, "15550783881", "FLAGGED", "TIER_2K")
    assert json.loads(webhooks.signed(combined, "s")[0]) == combined


# --- concurrency -----------------------------------------------------------------------------


def test_latency_is_per_request_and_does_not_serialize_requests(fake: FakeGraphAPI) -> None:
    fake.latency_seconds = 0.2
    clients = [httpx.Client(timeout=5, trust_env=False) for _ in range(12)]
    statuses: list[int] = []

    def call(client: httpx.Client) -> None:
        statuses.append(client.get(f"{fake.url}/{PHONE}", headers=bearer()).status_code)

    threads = [threading.Thread(target=call, args=(client,)) for client in clients]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    for client in clients:
        client.close()

    assert statuses == [200] * 12
    # Serialized, twelve requests would take 2.4 s.
    assert 0.2 <= elapsed < 1.0
    assert fake.url.endswith(f"/{API_VERSION}")


# --- webhook deliveries to the app ---------------------------------------------------------


class Receiver:
    """The app's webhook endpoint, played by a tiny server on 127.0.0.1 that records each POST
    (raw bytes and headers) and answers ``status``."""

    def __init__(self) -> None:
        self.posts: list[tuple[bytes, dict[str, str]]] = []
        self.status = 200
        self.server = ThreadedServer(self._wsgi, name="app-receiver").start()
        self.url = f"{self.server.origin}/webhooks/whatsapp"

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        self.posts.append((request.get_data(), dict(request.headers)))
        return Response("{}", status=self.status, mimetype="application/json")(environ, start_response)

    def verified(self, secret: str) -> list[dict[str, Any]]:
        """Every body received, after checking it was signed as Meta signs (what the app checks)."""
        bodies = []
        for raw, headers in self.posts:
            assert headers["Content-Type"] == "application/json"
            expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["X-Hub-Signature-256"], expected)
            bodies.append(json.loads(raw))
        return bodies


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    app = Receiver()
    yield app
    app.server.stop()


@pytest.fixture
def app_endpoint(receiver: Receiver, fake: FakeGraphAPI) -> Receiver:
    receiver.posts.clear()
    receiver.status = 200
    fake.webhook_url = receiver.url
    return receiver


def auto_deliver(fake: FakeGraphAPI, statuses: tuple[str, ...], delay: float) -> None:
    fake.auto_statuses = statuses
    fake.status_delay_seconds = delay


def statuses_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    statuses: list[dict[str, Any]] = body["entry"][0]["changes"][0]["value"]["statuses"]
    return statuses


TEXT_REPLY = {"messaging_product": "whatsapp", "to": SHOPPER, "type": "text", "text": {"body": "Done."}}


def test_accepted_sends_are_followed_by_signed_status_webhooks(
    fake: FakeGraphAPI, http: httpx.Client, app_endpoint: Receiver
) -> None:
    auto_deliver(fake, ("sent", "delivered", "read"), 0.02)
    before = int(time.time())

    assert send(fake, http, send_payload()).status_code == 200
    assert send(fake, http, TEXT_REPLY).status_code == 200
    deliveries = fake.wait_for_deliveries(6, timeout=3)
    template, text = fake.sent_messages

    bodies = app_endpoint.verified(fake.app_secret)
    assert [delivery.url for delivery in deliveries] == [app_endpoint.url] * 6
    assert [delivery.status_code for delivery in deliveries] == [200] * 6
    assert all(delivery.ok and delivery.error is None for delivery in deliveries)
    assert [delivery.body for delivery in deliveries] == bodies
    for sent in (template, text):
        mine = [statuses_of(body)[0] for body in bodies if statuses_of(body)[0]["id"] == sent.wamid]
        assert [item["status"] for item in mine] == ["sent", "delivered", "read"]
        for item in mine:
            # The body status_for builds, stamped when it was delivered.
            assert before <= int(item["timestamp"]) <= time.time()
            expected = fake.status_for(sent, item["status"], timestamp=int(item["timestamp"]))
            assert statuses_of(expected) == [item]
    first = bodies[0]
    assert first["object"] == "whatsapp_business_account" and first["entry"][0]["id"] == WABA
    assert first["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] == PHONE
    template_sent = next(
        statuses_of(body)[0] for body in bodies if statuses_of(body)[0]["id"] == template.wamid
    )
    text_sent = next(statuses_of(body)[0] for body in bodies if statuses_of(body)[0]["id"] == text.wamid)
    assert template_sent["pricing"]["category"] == "marketing"
    assert template_sent["biz_opaque_callback_data"] == "42"
    assert text_sent["pricing"] == {
        "billable": False,
        "pricing_model": "PMP",
        "type": "free_customer_service",
        "category": "service",
    }


def test_statuses_come_after_the_answer_and_never_hold_up_sending(
    fake: FakeGraphAPI, http: httpx.Client, app_endpoint: Receiver
) -> None:
    auto_deliver(fake, ("sent", "delivered"), 0.3)
    fake.latency_seconds = 0.1
    codes: list[int] = []

    def call() -> None:  # one client, ten connections from its pool
        codes.append(send(fake, http, send_payload()).status_code)

    threads = [threading.Thread(target=call) for _ in range(10)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    delivered_while_sending = len(fake.webhook_deliveries)
    deliveries = fake.wait_for_deliveries(20, timeout=3)

    assert codes == [200] * 10
    assert elapsed < 0.3  # ten sends at 100 ms each, concurrently; serialized they take 1 s
    assert delivered_while_sending == 0  # the first status is due status_delay_seconds after a send
    assert len(deliveries) == 20 and all(delivery.ok for delivery in deliveries)
    kinds = [statuses_of(delivery.body)[0]["status"] for delivery in deliveries]
    assert kinds == ["sent"] * 10 + ["delivered"] * 10  # spaced by the delay, so every sent comes first


def test_deliver_signs_any_body_and_answers_the_apps_status(
    fake: FakeGraphAPI, http: httpx.Client, app_endpoint: Receiver
) -> None:
    send(fake, http, send_payload())
    [sent] = fake.sent_messages
    tap = fake.button_reply_for(sent, 1)

    accepted = fake.deliver(tap)
    app_endpoint.status = 403
    refused = fake.deliver(tap)

    assert (accepted, refused) == (200, 403)
    assert app_endpoint.verified(fake.app_secret) == [tap, tap]
    assert [delivery.status_code for delivery in fake.webhook_deliveries] == [200, 403]
    assert not fake.webhook_deliveries[1].ok


def test_an_unreachable_app_is_recorded_and_deliver_raises(fake: FakeGraphAPI) -> None:
    with pytest.raises(RuntimeError, match="webhook_url"):
        fake.deliver({"object": "whatsapp_business_account", "entry": []})
    with socket.socket() as placeholder:  # a port nobody listens on
        placeholder.bind(("127.0.0.1", 0))
        fake.webhook_url = f"http://127.0.0.1:{placeholder.getsockname()[1]}/webhooks/whatsapp"

        with pytest.raises(httpx.ConnectError):
            fake.deliver({"object": "whatsapp_business_account", "entry": []})

    [delivery] = fake.webhook_deliveries
    assert delivery.status_code is None and delivery.error and delivery.error.startswith("ConnectError")


def test_a_failed_auto_status_carries_an_error_and_unknown_statuses_are_refused(
    fake: FakeGraphAPI, http: httpx.Client, app_endpoint: Receiver
) -> None:
    fake.auto_statuses = ["failed"]  # any iterable; kept as a tuple
    fake.status_delay_seconds = 0

    send(fake, http, send_payload())
    [delivery] = fake.wait_for_deliveries(1, timeout=3)

    [item] = statuses_of(delivery.body)
    assert item["status"] == "failed" and item["errors"][0]["code"] == 131026
    assert fake.auto_statuses == ("failed",)
    with pytest.raises(ValueError, match="seen"):
        fake.auto_statuses = ("sent", "seen")
    with pytest.raises(TimeoutError, match="1 of 2"):
        fake.wait_for_deliveries(2, timeout=0.05)


def test_no_webhook_url_no_deliveries_and_reset_switches_them_off(
    fake: FakeGraphAPI, http: httpx.Client, app_endpoint: Receiver
) -> None:
    auto_deliver(fake, ("sent",), 0.1)
    send(fake, http, send_payload())
    fake.reset()  # drops the status not yet due, and forgets webhook_url and auto_statuses
    fake.add_account(WABA, PHONE, TOKEN)
    fake.add_template(WABA, "cart_recovery_image_v1", "en", "MARKETING", template_components(with_image=True))

    send(fake, http, send_payload())
    time.sleep(0.2)

    assert fake.webhook_url is None and fake.auto_statuses == ()
    assert fake.webhook_deliveries == [] and app_endpoint.posts == []


def test_stopping_the_fake_stops_its_courier_and_drops_what_is_not_due(receiver: Receiver) -> None:
    receiver.posts.clear()
    receiver.status = 200
    fake = FakeGraphAPI().start()
    fake.add_account(WABA, PHONE, TOKEN)
    fake.add_template(WABA, "cart_recovery_text_v1", "en", "MARKETING", template_components(with_image=False))
    fake.webhook_url, fake.auto_statuses, fake.status_delay_seconds = receiver.url, ("sent",), 5.0
    courier = fake._courier
    assert courier is not None and courier.is_alive()
    with httpx.Client(timeout=5, trust_env=False) as client:
        payload = send_payload(
            "cart_recovery_text_v1",
            [part for part in components() if part["type"] != "header"],
        )
        assert send(fake, client, payload).status_code == 200, send(fake, client, payload).text

    started = time.monotonic()
    fake.stop()

    assert time.monotonic() - started < 1
    assert not courier.is_alive()
    assert fake.webhook_deliveries == [] and receiver.posts == []


# --- serve mode --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serve_arguments(port: int, webhook_url: str) -> list[str]:
    return [
        *("--port", str(port), "--app-secret", "S3cret", "--webhook-url", webhook_url),
        *("--waba-id", WABA, "--phone-number-id", PHONE, "--access-token", TOKEN),
        *("--display-phone-number", "+91 90000 00001", "--latency-ms", "0", "--statuses", "sent,read"),
        *("--status-delay-ms", "20"),
    ]


def test_serve_mode_seeds_the_account_approves_pushed_templates_and_calls_the_app_back(
    receiver: Receiver, http: httpx.Client
) -> None:
    receiver.posts.clear()
    receiver.status = 200
    port = free_port()
    fake = fake_from_args(serve_arguments(port, receiver.url))

    with fake:
        phone = http.get(f"{fake.url}/{PHONE}", headers=bearer())
        handle = upload_image(fake, http)
        payload = creation("cart_recovery_image_v1")
        payload["components"][0]["example"]["header_handle"] = [handle]
        created = create(fake, http, payload)
        sent = send(fake, http, send_payload())
        deliveries = fake.wait_for_deliveries(2, timeout=3)

    assert fake.url == f"http://127.0.0.1:{port}/{API_VERSION}"
    assert fake._server is None  # stopped with the with block
    assert phone.json()["display_phone_number"] == "+91 90000 00001"
    assert created.json()["status"] == "APPROVED"
    assert sent.status_code == 200, sent.text
    assert [statuses_of(delivery.body)[0]["status"] for delivery in deliveries] == ["sent", "read"]
    assert len(receiver.verified("S3cret")) == 2


def test_serve_mode_refuses_an_unknown_status() -> None:
    with pytest.raises(SystemExit):
        fake_from_args(["--app-secret", "S", "--access-token", "T", "--statuses", "sent,seen"])


def test_the_command_prints_its_url_and_stops_on_sigterm(receiver: Receiver) -> None:
    port = free_port()
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "tests.fakes.whatsapp_graph", *serve_arguments(port, receiver.url)]
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            phone = httpx.get(
                f"http://127.0.0.1:{port}/{API_VERSION}/{PHONE}", headers=bearer(), trust_env=False
            )
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=5)
        finally:
            if process.poll() is None:
                process.kill()

    assert line == f"fake Graph API on http://127.0.0.1:{port}/{API_VERSION}"
    assert phone.json()["id"] == PHONE
    assert code == 0
