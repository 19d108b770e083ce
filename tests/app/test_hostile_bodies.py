"""Every endpoint that reads a body from outside answers hostile bodies with a 4xx (or a 2xx
acknowledgement), never a 5xx, and logs no traceback.

Hypothesis, seeded (``derandomize``), posts signed and unsigned bodies through the Flask test
client: recorded payloads with fields turned into wrong types, huge numbers and strings, lone
surrogates and NUL; raw invalid UTF-8 spliced into the bytes; 20,000-deep nesting; random JSON
and random bytes; empty bodies; bodies at and just over ``max_webhook_bytes``. Signed bodies
are signed over the exact bytes posted, so they reach the parsers. Each test ends by checking
that the hostile kinds were really sent and that signed bodies got past the signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_from_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from connectors.woocommerce.cartflows import url_key
from sequences.config import Settings
from sequences.models import PlatformConnection, Store
from sequences.runtime import Runtime
from tests.support.admin import sign_in
from tests.support.factories import checkout_payload, make_store, order_payload
from tests.support.hostile import (
    HUGE_STRINGS,
    ODD_BYTES,
    ODD_STRINGS,
    WRONG_VALUES,
    Body,
    Probe,
    fuzz_settings,
    json_bodies,
    recorded,
    to_bytes,
    to_json,
)
from tests.support.whatsapp import ACCESS_TOKEN, APP_SECRET, PHONE_NUMBER_ID, VERIFY_TOKEN, WABA_ID
from tests.support.woocommerce import CARTFLOWS_FORM, SITE, WEBHOOK_SECRET, make_woocommerce_store

pytestmark = pytest.mark.slow

# Examples per test, each posting one request: about 90 s in all on 2 cores (the budget is
# 2 minutes). Hypothesis runs each distinct example once, so these are distinct requests.
EXAMPLES = {
    "shopify": 1_500,
    "woocommerce": 1_200,
    "cartflows": 800,
    "demo": 1_000,
    "whatsapp": 1_200,
    "woocommerce-callback": 800,
    "settings": 1_000,
    "whatsapp-put": 500,
    "demo-api": 800,
}

SHOPIFY_KEY = "hostile-bodies-client-id"
SHOPIFY_SECRET = "hostile-bodies-client-secret-0123456789"
SHOP = "bazaar.myshopify.com"
# Far in the future: a fuzzed app/uninstalled that parses is older than the install, so the
# store stays active and later bodies still go all the way to the database.
INSTALLED_AT = datetime(2100, 1, 1, tzinfo=UTC)

# Header values a platform might send, or an attacker: latin-1 only (WSGI carries headers as
# latin-1), no CR/LF (the test client refuses them).
HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
)

SHOPIFY_RECORDED = {
    "app_uninstalled": "app/uninstalled",
    "checkouts_create": "checkouts/create",
    "checkouts_delete": "checkouts/delete",
    "checkouts_update": "checkouts/update",
    "checkouts_update_50_lines": "checkouts/update",
    "checkouts_update_completed": "checkouts/update",
    "checkouts_update_no_phone": "checkouts/update",
    "checkouts_update_presentment_currency": "checkouts/update",
    "checkouts_update_us_test_number": "checkouts/update",
    "customers_data_request": "customers/data_request",
    "customers_redact": "customers/redact",
    "orders_create": "orders/create",
    "orders_paid": "orders/paid",
    "orders_updated": "orders/updated",
    "orders_cancelled": "orders/cancelled",
    "refunds_create": "refunds/create",
    "shop_redact": "shop/redact",
}
WOOCOMMERCE_RECORDED = {
    "order_pending_razorpay": "order.created",
    "order_processing_paid": "order.updated",
    "cart_updated_phone_only": "cart.updated",
}
WOOCOMMERCE_TOPICS = (
    "order.created",
    "order.updated",
    "order.deleted",
    "order.restored",
    "cart.updated",
    "cart.emptied",
    "cartflows.abandoned",
    "action.woocommerce_order_status_changed",
)
WHATSAPP_RECORDED = [
    path.stem
    for path in sorted((Path(__file__).resolve().parents[1] / "fixtures" / "whatsapp").glob("*.json"))
]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_overrides(
        shopify_api_key=SHOPIFY_KEY,
        shopify_api_secret=SHOPIFY_SECRET,
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token=VERIFY_TOKEN,
    )


@pytest.fixture(scope="module", autouse=True)
def _hypothesis_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis's caches (constants, Unicode tables) in a temporary directory, not in a
    ``.hypothesis/`` beside the code; ``database=None`` already keeps no examples."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture
def probe(app: Any, client: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> Probe:
    # As in production: an exception becomes a 500 and Flask's "Exception on ..." log with the
    # traceback, instead of being raised into the test (TESTING's default).
    app.config["PROPAGATE_EXCEPTIONS"] = False
    caplog.set_level(logging.DEBUG)
    return Probe(client, caplog, tmp_path)


def _limit(runtime: Runtime) -> int:
    return runtime.settings.max_webhook_bytes


def _b64_hmac(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


# Mostly signed, so that bodies reach the parsers; otherwise forged, missing or junk.
SIGNATURE_MODES = st.sampled_from(("signed",) * 6 + ("wrong", "missing", "junk"))
SOMETIMES_JUNK = st.integers(0, 9)


def _signature(mode: str, correct: str, data: st.DataObject) -> str | None:
    if mode == "signed":
        return correct
    if mode == "wrong":
        return correct[:-4] + ("AAAA" if not correct.endswith("AAAA") else "BBBB")
    if mode == "missing":
        return None
    return data.draw(HEADER_TEXT, label="junk signature")


def _usually(data: st.DataObject, value: str, label: str) -> str:
    """``value`` nine times in ten, else any header text."""
    return value if data.draw(SOMETIMES_JUNK) else data.draw(HEADER_TEXT, label=label)


def _topic(data: st.DataObject, body: Body, topics: list[str], others: st.SearchStrategy[str]) -> str:
    """The topic of the payload the body came from, three times in four (so that signed
    bodies reach that topic's parser); else any topic, or any text."""
    if body.source is not None and data.draw(st.integers(0, 3), label="own topic?"):
        return topics[body.source]
    return data.draw(others, label="topic")


def _headers(**values: str | None) -> dict[str, str]:
    return {name.replace("_", "-"): value for name, value in values.items() if value is not None}


# -- Shopify --------------------------------------------------------------------------------------

SHOPIFY_TOPICS = st.sampled_from(sorted(set(SHOPIFY_RECORDED.values())))
SHOPIFY_PATHS = st.sampled_from(("/webhooks/shopify", "/webhooks/shopify/compliance"))
TIMESTAMPS = st.sampled_from(("2026-11-28T09:00:00Z", "yesterday", "", "9999-99-99T99:99:99Z")) | HEADER_TEXT


def _install_shopify_shop(runtime: Runtime) -> None:
    with runtime.database.session() as session:
        session.add(
            Store(
                platform="shopify",
                platform_store_id=SHOP,
                name="Bazaar",
                api_base_url=f"https://{SHOP}",
                storefront_url=f"https://{SHOP}",
                access_token_ciphertext=runtime.secrets.encrypt("shpat_hostile"),
                installed_at=INSTALLED_AT,
            )
        )


def test_shopify_webhooks_answer_hostile_bodies_below_500(probe: Probe, runtime: Runtime) -> None:
    _install_shopify_shop(runtime)
    bodies = json_bodies([recorded("shopify", name) for name in SHOPIFY_RECORDED], _limit(runtime))

    @fuzz_settings(examples=EXAMPLES["shopify"])
    @given(st.data())
    def post(data: st.DataObject) -> None:
        body = data.draw(bodies, label="body")
        mode = data.draw(SIGNATURE_MODES, label="signature")
        headers = _headers(
            X_Shopify_Topic=_topic(data, body, list(SHOPIFY_RECORDED.values()), SHOPIFY_TOPICS | HEADER_TEXT),
            X_Shopify_Hmac_Sha256=_signature(mode, _b64_hmac(SHOPIFY_SECRET, body.data), data),
            X_Shopify_Shop_Domain=_usually(data, SHOP, "shop"),
            X_Shopify_Webhook_Id=_usually(data, str(uuid.uuid4()), "webhook id"),
            X_Shopify_Triggered_At=data.draw(TIMESTAMPS, label="triggered at"),
            X_Shopify_API_Version="2026-04",
        )
        path = data.draw(SHOPIFY_PATHS, label="path")
        probe.send("shopify", f"{mode}:{body.kind}", "POST", path, data=body.data, headers=headers)

    post()

    _check_exercised(probe, "shopify")
    # Past the signature to the parser: accepted (200) and field errors (422) both happen.
    assert probe.answered("shopify", 422) > 20 and probe.answered("shopify", 200) > 20, probe.report()


# -- WooCommerce -----------------------------------------------------------------------------------

WOOCOMMERCE_TOPIC_VALUES = st.sampled_from(WOOCOMMERCE_TOPICS) | HEADER_TEXT
# WooCommerce's unsigned creation ping, and things that look like it.
PINGS = st.sampled_from((b"webhook_id=15", b"webhook_id=", b"webhook_id=1\xff", b"webhook_id=15&x=1"))


def test_woocommerce_webhooks_answer_hostile_bodies_below_500(probe: Probe, runtime: Runtime) -> None:
    make_woocommerce_store(runtime)
    bodies = json_bodies([recorded("woocommerce", name) for name in WOOCOMMERCE_RECORDED], _limit(runtime))

    @fuzz_settings(examples=EXAMPLES["woocommerce"])
    @given(st.data())
    def post(data: st.DataObject) -> None:
        body = data.draw(bodies, label="body")
        if data.draw(st.integers(0, 19), label="ping?") == 0:
            body = Body("ping", data.draw(PINGS, label="ping"))
        mode = data.draw(SIGNATURE_MODES, label="signature")
        headers = _headers(
            X_WC_Webhook_Source=_usually(data, SITE + "/", "source"),
            X_WC_Webhook_Topic=_topic(
                data, body, list(WOOCOMMERCE_RECORDED.values()), WOOCOMMERCE_TOPIC_VALUES
            ),
            X_WC_Webhook_Signature=_signature(mode, _b64_hmac(WEBHOOK_SECRET, body.data), data),
            X_WC_Webhook_ID=_usually(data, "15", "webhook id"),
            X_WC_Webhook_Delivery_ID=_usually(data, uuid.uuid4().hex, "delivery id"),
        )
        kind = f"{mode}:{body.kind}"
        probe.send("woocommerce", kind, "POST", "/webhooks/woocommerce", data=body.data, headers=headers)

    post()

    _check_exercised(probe, "woocommerce")
    assert probe.answered("woocommerce", 200) > 20 and probe.answered("woocommerce", 422) > 5, probe.report()


CARTFLOWS_NAMES = st.sampled_from(sorted(CARTFLOWS_FORM)) | ODD_STRINGS
CARTFLOWS_VALUES = (
    ODD_STRINGS
    | HUGE_STRINGS
    | st.sampled_from(("abandoned", "completed", "ABANDONED", "", "1e400", "NaN", "-1", "9" * 5_000))
)
CARTFLOWS_KINDS = st.sampled_from(("form",) * 6 + ("bytes", "json", "many-fields", "oversize"))


@st.composite
def cartflows_forms(draw: st.DrawFn, limit: int) -> Body:
    """A CartFlows form gone wrong: odd values (percent-encoded from raw bytes, so lone
    surrogates arrive as ED A0 80), odd field names; or not a form at all."""
    kind = draw(CARTFLOWS_KINDS)
    if kind == "bytes":
        return Body("bytes", draw(st.binary(max_size=400)))
    if kind == "json":
        return Body("json", to_bytes(to_json(draw(WRONG_VALUES))))
    if kind == "many-fields":
        count = draw(st.integers(101, 5_000))
        return Body("many-fields", b"&".join(b"a%d=%d" % (i, i) for i in range(count)))
    if kind == "oversize":
        return Body("oversize", b"order_status=abandoned&note=" + b"x" * (limit + draw(st.integers(0, 99))))
    form: dict[str, str] = dict(CARTFLOWS_FORM)
    for _ in range(draw(st.integers(1, 4))):
        form[draw(CARTFLOWS_NAMES)] = draw(CARTFLOWS_VALUES)
    encoded = b"&".join(
        quote_from_bytes(to_bytes(name)).encode() + b"=" + quote_from_bytes(to_bytes(value)).encode()
        for name, value in form.items()
    )
    if draw(st.integers(0, 3)) == 0:
        position = draw(st.integers(0, len(encoded)))
        return Body(
            "form-spliced", encoded[:position] + draw(st.sampled_from(ODD_BYTES)) + encoded[position:]
        )
    return Body("form", encoded)


def test_the_cartflows_webhook_answers_hostile_forms_below_500(probe: Probe, runtime: Runtime) -> None:
    store = make_woocommerce_store(runtime)
    assert store.id is not None
    good = url_key(WEBHOOK_SECRET, store.id)
    # Wrong keys: another store's digest, a 30-digit id, a Unicode digit (²), odd text.
    keys = st.sampled_from(
        (good,) * 8 + (f"{store.id}-{'0' * 32}", "9" * 30 + "-x", "-", "%C2%B2-x", "1")
    ) | (HEADER_TEXT.map(lambda text: quote(text, safe="") or "x"))
    forms = cartflows_forms(_limit(runtime))

    @fuzz_settings(examples=EXAMPLES["cartflows"])
    @given(st.data())
    def post(data: st.DataObject) -> None:
        body = data.draw(forms, label="body")
        path = f"/webhooks/woocommerce/cartflows/{data.draw(keys, label='key')}"
        form = "application/x-www-form-urlencoded"
        probe.send("cartflows", body.kind, "POST", path, data=body.data, content_type=form)

    post()

    assert probe.count("cartflows", lambda kind: kind == "form-spliced") > 20, probe.report()
    assert probe.answered("cartflows", 200) > 20 and probe.answered("cartflows", 404) > 20, probe.report()


# -- the demo platform ---------------------------------------------------------------------------

DEMO_TOPICS = st.sampled_from(
    (
        "checkouts/create",
        "checkouts/update",
        "orders/create",
        "orders/paid",
        "checkouts/delete",
        "app/uninstalled",
    )
)


def test_the_demo_webhook_answers_hostile_bodies_below_500(probe: Probe, runtime: Runtime) -> None:
    store = make_store(runtime)
    with runtime.database.session() as session:
        session.merge(store).installed_at = INSTALLED_AT
    now = datetime.now(UTC)
    payloads = [
        checkout_payload(updated_at=now),
        checkout_payload(updated_at=now, completed=True, prices=("1.00",) * 30),
        order_payload(order_id="ord_1", created_at=now, codes=("CB-X",)),
        {"id": "chk_1", "token": "tok_1"},
    ]
    topics = ["checkouts/create", "checkouts/update", "orders/create", "checkouts/delete"]
    bodies = json_bodies(payloads, _limit(runtime))

    @fuzz_settings(examples=EXAMPLES["demo"])
    @given(st.data())
    def post(data: st.DataObject) -> None:
        body = data.draw(bodies, label="body")
        mode = data.draw(SIGNATURE_MODES, label="signature")
        headers = _headers(
            X_Demo_Shop=_usually(data, "demo-bazaar", "shop"),
            X_Demo_Topic=_topic(data, body, topics, DEMO_TOPICS | HEADER_TEXT),
            X_Demo_Webhook_Id=_usually(data, str(uuid.uuid4()), "delivery id"),
            X_Demo_Hmac_Sha256=_signature(mode, _b64_hmac("whsec-demo-bazaar", body.data), data),
            X_Demo_Triggered_At=data.draw(st.none() | TIMESTAMPS, label="triggered at"),
        )
        probe.send("demo", f"{mode}:{body.kind}", "POST", "/webhooks/demo", data=body.data, headers=headers)

    post()

    _check_exercised(probe, "demo")
    assert probe.answered("demo", 200) > 20 and probe.answered("demo", 422) > 20, probe.report()


# -- WhatsApp --------------------------------------------------------------------------------------


def _meta_signature(body: bytes) -> str:
    return "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()


QUERY_VALUES = (
    st.sampled_from(("subscribe", VERIFY_TOKEN, "1158201444", ""))
    | ODD_STRINGS.map(lambda text: quote_from_bytes(to_bytes(text)))
    | st.sampled_from(("%ff", "%ed%a0%80", "%00", "%", "%zz", "a%2", "x" * 10_000))
)
QUERY_JUNK = st.sampled_from(("hub.mode", "&", "=", "%ff=%ff", "a=b=c", "hub.challenge=%ED%A0%80"))


@st.composite
def subscription_queries(draw: st.DrawFn) -> str:
    """Meta's GET handshake with odd arguments, percent-encoded invalid UTF-8 included."""
    pairs = [
        f"{name}={draw(QUERY_VALUES)}"
        for name in ("hub.mode", "hub.verify_token", "hub.challenge")
        if draw(st.integers(0, 5))
    ]
    pairs += draw(st.lists(QUERY_JUNK, max_size=3))
    return "&".join(pairs)


def test_the_whatsapp_webhook_answers_hostile_bodies_below_500(probe: Probe, runtime: Runtime) -> None:
    bodies = json_bodies([recorded("whatsapp", name) for name in WHATSAPP_RECORDED], _limit(runtime))
    queries = subscription_queries()

    @fuzz_settings(examples=EXAMPLES["whatsapp"])
    @given(st.data())
    def post(data: st.DataObject) -> None:
        if data.draw(st.integers(0, 9), label="handshake?") == 0:
            query = data.draw(queries, label="query")
            probe.send(
                "whatsapp-get", "query", "GET", "/webhooks/whatsapp", query_string=query, content_type=None
            )
            return
        body = data.draw(bodies, label="body")
        mode = data.draw(SIGNATURE_MODES, label="signature")
        headers = _headers(**{"X-Hub-Signature-256": _signature(mode, _meta_signature(body.data), data)})
        kind = f"{mode}:{body.kind}"
        probe.send("whatsapp", kind, "POST", "/webhooks/whatsapp", data=body.data, headers=headers)

    post()
    # Meta's own handshake among the hostile ones, outright: drawn by chance it comes about once
    # in 3,000 queries, and the check that the endpoint still answers it must not rest on luck.
    challenge = "1158201444"
    valid = f"hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge={challenge}"
    probe.send("whatsapp-get", "query", "GET", "/webhooks/whatsapp", query_string=valid, content_type=None)

    _check_exercised(probe, "whatsapp")
    assert probe.answered("whatsapp", 200) > 20 and probe.answered("whatsapp", 400) > 20, probe.report()
    assert probe.count("whatsapp-get") > 50 and probe.answered("whatsapp-get", 200) > 0, probe.report()


# -- WooCommerce's key delivery ----------------------------------------------------------------------


def test_the_woocommerce_key_callback_answers_hostile_bodies_below_500(
    probe: Probe, runtime: Runtime
) -> None:
    now = datetime.now(UTC)
    connection_ids = [f"hostile-connection-{n}" for n in range(3)]
    with runtime.database.session() as session:
        for connection_id in connection_ids:
            session.add(
                PlatformConnection(
                    connection_sha256=hashlib.sha256(connection_id.encode()).hexdigest(),
                    browser_sha256=hashlib.sha256(b"browser").hexdigest(),
                    platform="woocommerce",
                    store_url=SITE,
                    created_at=now,
                    expires_at=now + timedelta(hours=1),
                )
            )
    keys = {
        "key_id": 7,
        "consumer_key": "ck_" + "0123456789" * 4,
        "consumer_secret": "cs_" + "abcdef0123" * 4,
        "key_permissions": "read_write",
    }
    # The endpoint's own limit (MAX_CALLBACK_BYTES): a key delivery is a few hundred bytes.
    bodies = json_bodies([keys | {"user_id": connection_id} for connection_id in connection_ids], 16_384)

    @fuzz_settings(examples=EXAMPLES["woocommerce-callback"])
    @given(st.data())
    def post(data: st.DataObject) -> None:
        body = data.draw(bodies, label="body")
        probe.send("woocommerce-callback", body.kind, "POST", "/woocommerce/callback", data=body.data)

    post()

    _check_exercised(probe, "woocommerce-callback", signed=False)
    assert probe.answered("woocommerce-callback", 200) > 0, probe.report()


# -- the merchant's settings APIs --------------------------------------------------------------------

CONTENT_TYPES = st.sampled_from(
    ("application/json",) * 8 + ("text/plain", "application/json; charset=latin-1")
)


def test_the_settings_api_answers_hostile_bodies_below_500(probe: Probe, runtime: Runtime) -> None:
    store = make_store(runtime)
    assert store.id is not None
    csrf = sign_in(probe.client, runtime, store.id)
    shown = probe.client.get("/api/settings")
    assert shown.status_code == 200
    saved = shown.get_json()["settings"]
    limit = _limit(runtime)
    endpoints = st.sampled_from(
        (
            ("settings-put", "PUT", "/api/settings", json_bodies([saved], limit)),
            (
                "settings-preview",
                "POST",
                "/api/settings/preview",
                json_bodies(
                    [
                        {"settings": saved, "step": 0, "language": "en"},
                        {"settings": saved, "step": 1, "language": "hi"},
                        {"settings": saved, "step": 2},
                    ],
                    limit,
                ),
            ),
        )
    )

    @fuzz_settings(examples=EXAMPLES["settings"])
    @given(st.data())
    def post(data: st.DataObject) -> None:
        endpoint, method, path, bodies = data.draw(endpoints, label="endpoint")
        body = data.draw(bodies, label="body")
        content_type = data.draw(CONTENT_TYPES, label="content type")
        headers = {"X-CSRF-Token": csrf}
        probe.send(
            endpoint, body.kind, method, path, data=body.data, headers=headers, content_type=content_type
        )

    post()

    for endpoint in ("settings-put", "settings-preview"):
        _check_exercised(probe, endpoint, signed=False)
        assert probe.answered(endpoint, 200) > 0 and probe.answered(endpoint, 422) > 10, probe.report()


@pytest.fixture
def graph_runtime(runtime: Runtime, fake_graph: Any) -> Runtime:
    """The runtime checking WhatsApp numbers against the fake Graph API on 127.0.0.1."""
    runtime.settings = runtime.settings.with_overrides(whatsapp_graph_url=fake_graph.url)
    return runtime


def test_the_whatsapp_settings_api_answers_hostile_bodies_below_500(
    probe: Probe, graph_runtime: Runtime
) -> None:
    runtime = graph_runtime
    store = make_store(runtime)
    assert store.id is not None
    csrf = sign_in(probe.client, runtime, store.id)
    number = {
        "waba_id": WABA_ID,
        "phone_number_id": PHONE_NUMBER_ID,
        "access_token": ACCESS_TOKEN,
        "default_language": "en",
    }
    bodies = json_bodies([number], _limit(runtime))

    @fuzz_settings(examples=EXAMPLES["whatsapp-put"])
    @given(st.data())
    def post(data: st.DataObject) -> None:
        body = data.draw(bodies, label="body")
        headers = {"X-CSRF-Token": csrf}
        probe.send("whatsapp-put", body.kind, "PUT", "/api/whatsapp", data=body.data, headers=headers)

    post()

    _check_exercised(probe, "whatsapp-put", signed=False, minimum=2)
    assert probe.answered("whatsapp-put", 200) > 0 and probe.answered("whatsapp-put", 422) > 20, (
        probe.report()
    )


# -- the demo store's Admin API ---------------------------------------------------------------------

CHECKOUT_IDS = st.sampled_from(("chk_1", "0", "%ff", "..", "x" * 300)) | HEADER_TEXT.map(
    lambda text: quote(text, safe="") or "x"
)


def test_the_demo_store_api_answers_hostile_bodies_below_500(probe: Probe, runtime: Runtime) -> None:
    store = make_store(runtime)
    token = runtime.secrets.decrypt(store.access_token_ciphertext or "")
    ends_at = (datetime.now(UTC) + timedelta(hours=48)).replace(microsecond=0).isoformat()
    fixed = {
        "code": "CB-ABCD2345",
        "kind": "fixed",
        "value": "100",
        "currency": "INR",
        "min_subtotal": "999",
        "max_amount": None,
        "ends_at": ends_at,
        "usage_limit": 1,
    }
    percent = fixed | {"code": "CB-PCT", "kind": "percent", "value": "10", "max_amount": "120"}
    limit = _limit(runtime)
    discounts = json_bodies([fixed, percent], limit)
    recovery = json_bodies([{"discount_code": "CB-ABCD2345"}, {"discount_code": None}], limit)

    @fuzz_settings(examples=EXAMPLES["demo-api"])
    @given(st.data())
    def post(data: st.DataObject) -> None:
        headers = {"Authorization": _usually(data, f"Bearer {token}", "authorization")}
        if data.draw(st.integers(0, 3), label="recovery url?") == 0:
            body = data.draw(recovery, label="body")
            path = f"/demo-store/api/checkouts/{data.draw(CHECKOUT_IDS, label='checkout')}/recovery_url"
            probe.send("demo-api-recovery-url", body.kind, "POST", path, data=body.data, headers=headers)
        else:
            body = data.draw(discounts, label="body")
            path = "/demo-store/api/discounts"
            probe.send("demo-api-discounts", body.kind, "POST", path, data=body.data, headers=headers)

    post()

    _check_exercised(probe, "demo-api-discounts", signed=False)
    created = probe.answered("demo-api-discounts", 201) + probe.answered("demo-api-discounts", 200)
    assert created > 0 and probe.answered("demo-api-discounts", 422) > 20, probe.report()
    assert probe.count("demo-api-recovery-url") > 100, probe.report()


# -- that the hostile kinds were really sent ---------------------------------------------------------


def _check_exercised(probe: Probe, endpoint: str, *, signed: bool = True, minimum: int = 5) -> None:
    """Each hostile kind reached the endpoint (signed, where it checks a signature): a fuzz
    test whose generator stopped making deep or surrogate bodies would pass for nothing."""
    prefix = "signed:" if signed else ""

    def kinds(test: Callable[[str], bool]) -> int:
        return probe.count(endpoint, lambda kind: kind.startswith(prefix) and test(kind.removeprefix(prefix)))

    wanted: dict[str, Callable[[str], bool]] = {
        "20,000+ deep": lambda kind: kind in ("deep-20000", "deep-100000"),
        "deep inside a payload": lambda kind: kind == "deep-in-payload" or "+deep" in kind,
        "lone surrogates": lambda kind: "+surrogate" in kind,
        "NUL": lambda kind: "+nul" in kind,
        "~200 kB strings": lambda kind: "+huge" in kind,
        "invalid UTF-8 spliced in": lambda kind: kind == "spliced",
        "random JSON": lambda kind: kind == "random-json",
        "random bytes": lambda kind: kind == "bytes",
        "empty": lambda kind: kind == "empty",
        "over the size limit": lambda kind: kind == "oversize",
        "at the size limit": lambda kind: kind == "at-limit",
    }
    counts = {name: kinds(test) for name, test in wanted.items()}
    assert all(n >= minimum for n in counts.values()), f"{endpoint}: too few of {counts}\n{probe.report()}"
    if signed:
        unsigned = probe.count(endpoint, lambda kind: not kind.startswith("signed:"))
        assert unsigned >= 50, f"{endpoint}: {unsigned} unsigned or forged bodies\n{probe.report()}"


# -- forms and query strings: sign-in, connect, return ---------------------------------------------

ORIGINS = ("http://[", "null", "https://evil.example", "http://localhost", "//", "http://[::1")
FORM_TEXT = ODD_STRINGS | HEADER_TEXT | st.sampled_from(("", *ORIGINS))


def test_sign_in_and_connect_pages_answer_hostile_forms_and_queries_below_500(
    probe: Probe, runtime: Runtime
) -> None:
    make_store(runtime)
    runtime.settings = runtime.settings.with_overrides(app_url="https://cartback.test")

    @fuzz_settings(examples=400)
    @given(st.data())
    def post(data: st.DataObject) -> None:
        target = data.draw(
            st.sampled_from(
                (
                    "POST /admin/login",
                    "POST /admin/logout",
                    "GET /woocommerce/connect",
                    "GET /woocommerce/return",
                )
            ),
            label="target",
        )
        method, path = target.split(" ")
        fields = {
            name: data.draw(FORM_TEXT, label=name)
            for name in ("token", "csrf_token", "store_url", "user_id", "success")
            if data.draw(st.booleans(), label=f"send {name}?")
        }
        headers = _headers(
            Origin=data.draw(st.none() | HEADER_TEXT | st.sampled_from(ORIGINS), label="origin")
        )
        # Surrogates go out as their raw bytes (%ED%A0%80): not UTF-8, as an attacker may send.
        encoded = "&".join(
            f"{name}={quote(value.encode('utf-8', 'surrogatepass'), safe='')}"
            for name, value in fields.items()
        )
        if method == "GET":
            probe.send(
                "forms", "query", method, path, query_string=encoded, headers=headers, content_type=None
            )
        else:
            probe.send(
                "forms",
                "form",
                method,
                path,
                data=to_bytes(encoded),
                headers=headers,
                content_type="application/x-www-form-urlencoded",
            )

    post()

    assert probe.count("forms") >= 400, probe.report()
