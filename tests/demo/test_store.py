"""The demo store: a simulated platform whose webhooks and Admin API cartback must accept."""

from __future__ import annotations

import html
import json
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from sqlmodel import func, select

from connectors.base import (
    CartLine,
    CartSnapshot,
    CheckoutRef,
    DiscountKind,
    DiscountRequest,
    OrderEvent,
)
from demo.store.checkouts import touch
from demo.store.models import DemoCheckout, DemoDiscount, DemoOrder
from demo.store.seed import seed_demo_store
from demo.store.webhooks import checkout_payload, deliver_webhook
from sequences.models import Store

KURTA, DUPATTA = 8001, 8002


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def store(runtime) -> Store:
    return seed_demo_store(runtime)


def bearer(runtime, store) -> dict[str, str]:
    return {"Authorization": f"Bearer {runtime.secrets.decrypt(store.access_token_ciphertext)}"}


def enqueued(runtime) -> list[tuple[str, dict[str, str], bytes]]:
    """The webhook deliveries waiting on the queue: (url, headers, raw body)."""
    return [(job.args[0], job.args[1], job.args[2].encode()) for job in runtime.queue.get_jobs()]


def verified_event(runtime, store, delivery):
    """What cartback's connector makes of one delivery (signature checked first)."""
    _url, headers, body = delivery
    connector = runtime.connectors["demo"]
    secret = runtime.secrets.decrypt(store.webhook_secret_ciphertext)
    assert connector.verify_webhook(body, headers, secret)
    identity = connector.webhook_identity(headers)
    return identity, connector.parse_webhook(identity, body, default_region="IN")


def shown(response) -> str:
    """The page as a shopper reads it (HTML entities decoded)."""
    return html.unescape(response.get_data(as_text=True))


def add_to_cart(client, variant_id: int, quantity: int = 1):
    return client.post(
        "/demo-store/cart/add", data={"variant_id": str(variant_id), "quantity": str(quantity)}
    )


def current_checkout(client, runtime) -> DemoCheckout:
    cookie = client.get_cookie("demo_checkout", path="/demo-store")
    assert cookie is not None
    with runtime.database.session() as session:
        return session.exec(select(DemoCheckout).where(DemoCheckout.token == cookie.value)).one()


def shopper_with_cart(client, runtime) -> DemoCheckout:
    """Kurta + Dupatta (₹2,198) with Asha's WhatsApp number and consent."""
    add_to_cart(client, KURTA)
    add_to_cart(client, DUPATTA)
    client.post(
        "/demo-store/cart/contact",
        data={
            "first_name": "Asha",
            "phone": "98765 43210",
            "email": "asha@example.com",
            "accepts_marketing": "on",
        },
    )
    return current_checkout(client, runtime)


def make_discount(runtime, code: str = "CB-HUNDRED", **fields) -> DemoDiscount:
    values = {
        "kind": "fixed",
        "value": Decimal("100"),
        "currency": "INR",
        "min_subtotal": Decimal("999"),
        "ends_at": datetime.now(UTC) + timedelta(hours=48),
        "usage_limit": 1,
        **fields,
    }
    discount = DemoDiscount(code=code, **values)
    with runtime.database.session() as session:
        session.add(discount)
    return discount


def discount_body(**changes):
    body = {
        "code": "CB-ABCD2345",
        "kind": "fixed",
        "value": "100",
        "currency": "INR",
        "min_subtotal": "999",
        "max_amount": None,
        "ends_at": (datetime.now(UTC) + timedelta(hours=48)).replace(microsecond=0).isoformat(),
        "usage_limit": 1,
    }
    body.update(changes)
    return body


# -- installing cartback on the demo store ------------------------------------------------


def test_seeding_twice_keeps_one_store_and_its_secrets(runtime):
    first = seed_demo_store(runtime)
    second = seed_demo_store(runtime)

    with runtime.database.session() as session:
        stores = session.exec(select(func.count()).select_from(Store)).one()
    assert stores == 1
    assert second.id == first.id
    assert second.access_token_ciphertext == first.access_token_ciphertext
    assert second.webhook_secret_ciphertext == first.webhook_secret_ciphertext


def test_seeded_secrets_are_stored_encrypted(runtime, store):
    token = runtime.secrets.decrypt(store.access_token_ciphertext)
    secret = runtime.secrets.decrypt(store.webhook_secret_ciphertext)

    assert token and secret
    assert token not in store.access_token_ciphertext
    assert secret not in store.webhook_secret_ciphertext


def test_the_seeded_store_sends_at_any_hour_with_an_offer_on_the_first_message(runtime, store):
    settings = runtime.store_settings(store)

    assert (store.name, store.currency, store.default_region) == ("Demo Bazaar", "INR", "IN")
    assert store.api_base_url == f"{runtime.settings.app_url}/demo-store"
    assert settings.quiet_hours_enabled is False
    offer = settings.steps[0].offer
    assert offer is not None
    assert (offer.kind, offer.value, offer.min_subtotal, offer.valid_hours) == ("fixed", 100, 999, 48)


# -- storefront and webhooks --------------------------------------------------------------


def test_the_storefront_lists_products_under_a_simulation_banner(client, store):
    page = shown(client.get("/demo-store/"))

    assert "Simulation — cartback demo store, not a real shop" in page
    assert "Handloom Cotton Kurta" in page
    assert "₹1,499.00" in page


def test_product_pictures_are_svg_served_by_the_app(client, store):
    response = client.get("/demo-store/images/brass-diya-set.svg")

    assert response.status_code == 200
    assert response.mimetype == "image/svg+xml"
    assert shown(response).startswith("<svg")


def test_a_link_notice_is_explained_to_the_shopper(client, store):
    page = shown(client.get("/demo-store/?cartback_notice=link_expired"))

    assert "This offer link has expired — your items may still be in your cart." in page


def test_adding_to_cart_fires_a_signed_checkouts_create_that_cartback_accepts(client, runtime, store):
    response = add_to_cart(client, KURTA, 2)

    assert response.status_code == 303
    [delivery] = enqueued(runtime)
    assert delivery[0] == f"{runtime.settings.app_url}/webhooks/demo"
    identity, snapshot = verified_event(runtime, store, delivery)
    assert (identity.store_ref, identity.topic) == ("demo-bazaar", "checkouts/create")
    assert isinstance(snapshot, CartSnapshot)
    assert snapshot.cart_id == current_checkout(client, runtime).id
    assert (snapshot.currency, snapshot.subtotal) == ("INR", Decimal("2998.00"))
    [line] = snapshot.lines
    assert (line.title, line.quantity, line.unit_price) == ("Handloom Cotton Kurta", 2, Decimal("1499.00"))
    assert line.image_url == f"{runtime.settings.app_url}/demo-store/images/handloom-cotton-kurta.svg"
    assert (
        snapshot.checkout_url
        == f"{runtime.settings.app_url}/demo-store/checkout/{current_checkout(client, runtime).token}"
    )


def test_webhook_jobs_retry_like_a_platform_and_keep_the_body_out_of_their_description(
    client, runtime, store
):
    shopper_with_cart(client, runtime)

    job = runtime.queue.get_jobs()[-1]
    assert job.retries_left == 5
    assert job.result_ttl == 0
    assert "9876543210" not in job.description


def test_a_second_product_fires_checkouts_update_with_a_later_updated_at(client, runtime, store):
    add_to_cart(client, KURTA)
    add_to_cart(client, DUPATTA)

    (_, first), (second_identity, second) = (verified_event(runtime, store, d) for d in enqueued(runtime))
    assert second_identity.topic == "checkouts/update"
    assert second.updated_at > first.updated_at
    assert [line.title for line in second.lines] == ["Handloom Cotton Kurta", "Block-print Dupatta"]


def test_updated_at_increases_even_when_changes_share_a_clock_tick():
    checkout = DemoCheckout(lines=[{"variant_id": KURTA, "qty": 1}])
    moment = datetime.now(UTC)
    touch(checkout, moment)
    before = checkout.updated_at
    touch(checkout, moment)

    assert checkout.updated_at > before
    assert checkout_payload(checkout, "http://testserver")["updated_at"].endswith("Z")


def test_contact_details_are_saved_in_e164_and_announced_with_consent(client, runtime, store):
    checkout = shopper_with_cart(client, runtime)

    assert checkout.phone == "+919876543210"
    _identity, snapshot = verified_event(runtime, store, enqueued(runtime)[-1])
    assert snapshot.buyer.phone_e164 == "+919876543210"
    assert snapshot.buyer.first_name == "Asha"
    assert snapshot.buyer.marketing_consent is True


def test_an_invalid_phone_gets_400_with_the_reason_and_nothing_is_saved(client, runtime, store):
    add_to_cart(client, KURTA)
    jobs_before = runtime.queue.count

    response = client.post(
        "/demo-store/cart/contact", data={"first_name": "Asha", "phone": "12345", "accepts_marketing": "on"}
    )

    assert response.status_code == 400
    assert "doesn't look like a valid Indian mobile number" in shown(response)
    checkout = current_checkout(client, runtime)
    assert (checkout.phone, checkout.first_name, checkout.accepts_marketing) == (None, None, False)
    assert runtime.queue.count == jobs_before


# -- Admin API: discounts -----------------------------------------------------------------


def test_the_discounts_api_refuses_a_missing_or_wrong_token(client, store):
    missing = client.post("/demo-store/api/discounts", json=discount_body())
    wrong = client.post(
        "/demo-store/api/discounts", json=discount_body(), headers={"Authorization": "Bearer not-the-token"}
    )

    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert "bearer" in missing.json["error"]


def test_creating_a_discount_answers_201_with_its_id(client, runtime, store):
    response = client.post("/demo-store/api/discounts", json=discount_body(), headers=bearer(runtime, store))

    assert response.status_code == 201
    assert response.json["code"] == "CB-ABCD2345"
    with runtime.database.session() as session:
        saved = session.get(DemoDiscount, response.json["id"])
    assert (saved.kind, saved.value, saved.usage_limit) == ("fixed", Decimal("100"), 1)


def test_the_same_discount_twice_answers_200_with_the_same_id(client, runtime, store):
    body = discount_body()
    first = client.post("/demo-store/api/discounts", json=body, headers=bearer(runtime, store))
    again = client.post("/demo-store/api/discounts", json=body, headers=bearer(runtime, store))

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json["id"] == first.json["id"]


def test_the_same_code_with_other_terms_answers_409(client, runtime, store):
    client.post("/demo-store/api/discounts", json=discount_body(), headers=bearer(runtime, store))

    response = client.post(
        "/demo-store/api/discounts", json=discount_body(value="200"), headers=bearer(runtime, store)
    )

    assert response.status_code == 409
    assert "different terms" in response.json["error"]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"kind": "bogo"}, "kind"),
        ({"value": "a hundred"}, "value"),
        ({"value": 100.0}, "value"),
        ({"ends_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}, "ends_at"),
        ({"code": None}, "code"),
        ({"currency": "USD"}, "currency"),
    ],
)
def test_invalid_discount_input_answers_422_naming_the_field(client, runtime, store, changes, reason):
    response = client.post(
        "/demo-store/api/discounts", json=discount_body(**changes), headers=bearer(runtime, store)
    )

    assert response.status_code == 422
    assert reason in response.json["error"]


def test_a_body_that_is_not_json_answers_422_not_500(client, runtime, store):
    response = client.post(
        "/demo-store/api/discounts",
        data=b"{nope",
        content_type="application/json",
        headers=bearer(runtime, store),
    )

    assert response.status_code == 422
    assert "JSON object" in response.json["error"]


def test_the_connector_creates_discounts_through_the_api(runtime, store):
    connector = runtime.connectors["demo"]
    request = DiscountRequest(
        code="CB-CONNECT1",
        kind=DiscountKind.PERCENT,
        value=Decimal("10"),
        currency="INR",
        ends_at=datetime.now(UTC) + timedelta(hours=48),
        max_amount=Decimal("200"),
    )

    created = connector.create_discount(runtime.store_access(store), request)
    repeated = connector.create_discount(runtime.store_access(store), request)

    assert created.code == "CB-CONNECT1"
    assert repeated.platform_discount_id == created.platform_discount_id


def test_the_connector_reads_orders_back_for_reconciliation(runtime, store):
    from demo.store.models import DemoOrder

    with runtime.database.session() as session:
        order = DemoOrder(
            checkout_id="c1",
            checkout_token="t1",
            subtotal=Decimal("1299"),
            discount_amount=Decimal("100"),
            total=Decimal("1199.00"),
        )
        session.add(order)
        session.commit()
        session.refresh(order)
    connector = runtime.connectors["demo"]

    found, missing = connector.order_statuses(runtime.store_access(store), [str(order.id), "987654"])

    assert (found.found, found.financial_status, found.refunded, found.current_total) == (
        True,
        "paid",
        Decimal("0.00"),
        Decimal("1199.00"),
    )
    assert not found.awaiting_payment and found.cancelled_at is None
    assert (missing.order_id, missing.found) == ("987654", False)


@pytest.mark.parametrize("ids", [None, "1", [1], ["x"], ["1"] * 251])
def test_order_statuses_refuse_a_bad_id_list_with_422(client, runtime, store, ids):
    response = client.post(
        "/demo-store/api/orders/statuses", json={"ids": ids}, headers=bearer(runtime, store)
    )

    assert response.status_code == 422 and "ids must be" in response.json["error"]


# -- Admin API: recovery URLs -------------------------------------------------------------


def test_a_recovery_url_opens_the_checkout_with_the_code(client, runtime, store):
    checkout = shopper_with_cart(client, runtime)
    make_discount(runtime, "CB-HUNDRED")

    response = client.post(
        f"/demo-store/api/checkouts/{checkout.id}/recovery_url",
        json={"discount_code": "CB-HUNDRED"},
        headers=bearer(runtime, store),
    )

    assert response.status_code == 200
    assert (
        response.json["url"]
        == f"{runtime.settings.app_url}/demo-store/checkout/{checkout.token}?discount=CB-HUNDRED"
    )


def test_a_recovery_url_without_a_code_has_no_discount_parameter(client, runtime, store):
    checkout = shopper_with_cart(client, runtime)

    response = client.post(
        f"/demo-store/api/checkouts/{checkout.id}/recovery_url",
        json={"discount_code": None},
        headers=bearer(runtime, store),
    )

    assert response.json["url"] == f"{runtime.settings.app_url}/demo-store/checkout/{checkout.token}"


def test_a_recovery_url_for_a_completed_checkout_answers_409(client, runtime, store):
    checkout = shopper_with_cart(client, runtime)
    client.post(f"/demo-store/checkout/{checkout.token}/order", data={"discount": ""})

    response = client.post(
        f"/demo-store/api/checkouts/{checkout.id}/recovery_url",
        json={"discount_code": None},
        headers=bearer(runtime, store),
    )

    assert response.status_code == 409
    assert "completed" in response.json["error"]


@pytest.mark.parametrize(
    ("checkout_id", "code", "status"), [("chk_unknown", None, 404), (None, "CB-NOSUCH", 422)]
)
def test_a_recovery_url_for_an_unknown_checkout_or_code_is_refused(
    client, runtime, store, checkout_id, code, status
):
    checkout = shopper_with_cart(client, runtime)

    response = client.post(
        f"/demo-store/api/checkouts/{checkout_id or checkout.id}/recovery_url",
        json={"discount_code": code},
        headers=bearer(runtime, store),
    )

    assert response.status_code == status
    assert response.json["error"]


def test_the_connector_falls_back_to_a_cart_permalink_the_store_opens(client, runtime, store):
    checkout = shopper_with_cart(client, runtime)
    client.post(f"/demo-store/checkout/{checkout.token}/order", data={"discount": ""})
    make_discount(runtime, "CB-HUNDRED")
    lines = [
        CartLine(
            title="Handloom Cotton Kurta", quantity=1, unit_price=Decimal("1499.00"), variant_id=str(KURTA)
        ),
        CartLine(
            title="Block-print Dupatta", quantity=1, unit_price=Decimal("699.00"), variant_id=str(DUPATTA)
        ),
    ]
    ref = CheckoutRef(cart_id=checkout.id, cart_token=checkout.token, checkout_url=None, lines=lines)

    url = runtime.connectors["demo"].rebuild_checkout(runtime.store_access(store), ref, "CB-HUNDRED").url
    page = shown(client.get(url.removeprefix(runtime.settings.app_url), follow_redirects=True))

    assert url == f"{runtime.settings.app_url}/demo-store/cart/8001:1,8002:1?discount=CB-HUNDRED"
    assert "Discount CB-HUNDRED" in page
    assert "₹2,098.00" in page


def test_a_cart_permalink_builds_a_new_checkout_with_the_code(client, runtime, store):
    make_discount(runtime, "CB-HUNDRED")

    response = client.get("/demo-store/cart/8001:1,8002:1?discount=CB-HUNDRED", follow_redirects=True)

    page = shown(response)
    assert response.status_code == 200
    assert "Discount CB-HUNDRED" in page
    assert "₹2,098.00" in page


# -- checkout and orders ------------------------------------------------------------------


def test_the_checkout_applies_a_valid_code_and_shows_the_discounted_total(client, runtime, store):
    checkout = shopper_with_cart(client, runtime)
    make_discount(runtime, "CB-HUNDRED")

    page = shown(client.get(f"/demo-store/checkout/{checkout.token}?discount=CB-HUNDRED"))

    assert "Discount CB-HUNDRED" in page
    assert "−₹100.00" in page
    assert "₹2,098.00" in page


def test_a_percent_code_is_capped_at_its_maximum(client, runtime, store):
    checkout = shopper_with_cart(client, runtime)
    make_discount(runtime, "CB-TENPC", kind="percent", value=Decimal("10"), max_amount=Decimal("150"))

    page = shown(client.get(f"/demo-store/checkout/{checkout.token}?discount=CB-TENPC"))

    assert "−₹150.00" in page
    assert "₹2,048.00" in page


def test_an_expired_code_is_refused_with_a_note_and_the_full_total(client, runtime, store):
    checkout = shopper_with_cart(client, runtime)
    make_discount(runtime, "CB-OLD", ends_at=datetime.now(UTC) - timedelta(minutes=1))

    page = shown(client.get(f"/demo-store/checkout/{checkout.token}?discount=CB-OLD"))

    assert "has expired" in page
    assert "Discount CB-OLD" not in page
    assert "Place order · ₹2,198.00" in page


def test_a_code_below_its_minimum_subtotal_is_refused(client, runtime, store):
    add_to_cart(client, DUPATTA)
    checkout = current_checkout(client, runtime)
    make_discount(runtime, "CB-HUNDRED")

    page = shown(client.get(f"/demo-store/checkout/{checkout.token}?discount=CB-HUNDRED"))

    assert "applies to orders of ₹999.00 or more" in page
    assert "Place order · ₹699.00" in page


def test_placing_an_order_fires_orders_create_with_the_code_and_checkout(client, runtime, store):
    checkout = shopper_with_cart(client, runtime)
    make_discount(runtime, "CB-HUNDRED")
    runtime.queue.empty()

    response = client.post(f"/demo-store/checkout/{checkout.token}/order", data={"discount": "CB-HUNDRED"})

    assert response.status_code == 303
    order_delivery, checkout_delivery = enqueued(runtime)
    identity, order = verified_event(runtime, store, order_delivery)
    assert identity.topic == "orders/create"
    assert isinstance(order, OrderEvent)
    assert order.discount_codes == ("CB-HUNDRED",)
    assert (order.cart_id, order.cart_token) == (checkout.id, checkout.token)
    assert (order.total, order.phone_e164) == (Decimal("2098.00"), "+919876543210")
    identity, completed = verified_event(runtime, store, checkout_delivery)
    assert (identity.topic, completed.completed) == ("checkouts/update", True)


def test_the_thank_you_page_shows_the_total_and_the_discount(client, runtime, store):
    checkout = shopper_with_cart(client, runtime)
    make_discount(runtime, "CB-HUNDRED")

    page = shown(
        client.post(
            f"/demo-store/checkout/{checkout.token}/order",
            data={"discount": "CB-HUNDRED"},
            follow_redirects=True,
        )
    )

    assert "Thank you for your order" in page
    assert "Discount CB-HUNDRED" in page
    assert "₹2,098.00" in page


def test_a_single_use_code_works_for_one_order_only(client, runtime, store):
    make_discount(runtime, "CB-HUNDRED")
    first = shopper_with_cart(client, runtime)
    client.post(f"/demo-store/checkout/{first.token}/order", data={"discount": "CB-HUNDRED"})
    second = shopper_with_cart(client, runtime)

    response = client.post(f"/demo-store/checkout/{second.token}/order", data={"discount": "CB-HUNDRED"})

    assert response.status_code == 409
    assert "already been used" in shown(response)
    with runtime.database.session() as session:
        assert session.exec(select(func.count()).select_from(DemoOrder)).one() == 1


def test_a_placed_checkout_says_so_when_opened_again(client, runtime, store):
    checkout = shopper_with_cart(client, runtime)
    client.post(f"/demo-store/checkout/{checkout.token}/order", data={"discount": ""})

    page = shown(client.get(f"/demo-store/checkout/{checkout.token}"))

    assert "This order was already placed" in page


# -- delivery job -------------------------------------------------------------------------


def test_a_refused_delivery_raises_so_rq_retries_and_logs_no_body(caplog):
    refusing = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(503)))
    body = json.dumps({"phone": "+919876543210"})

    with caplog.at_level(logging.DEBUG), pytest.raises(RuntimeError, match="503"):
        deliver_webhook(
            "http://testserver/webhooks/demo", {"X-Demo-Topic": "checkouts/update"}, body, client=refusing
        )

    assert "9876543210" not in caplog.text
    refusing.close()


def test_a_delivery_posts_the_exact_signed_bytes():
    seen: list[bytes] = []

    def accept(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(200, json={"status": "accepted"})

    body = '{"id":"chk_1","note":"₹"}'
    with httpx.Client(transport=httpx.MockTransport(accept)) as http:
        status = deliver_webhook(
            "http://testserver/webhooks/demo", {"X-Demo-Topic": "checkouts/update"}, body, client=http
        )

    assert status == 200
    assert seen == [body.encode("utf-8")]
