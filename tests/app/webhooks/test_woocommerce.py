"""POST /webhooks/woocommerce: WooCommerce's order webhooks and the companion plugin's captures."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlmodel import func, select

from sequences.models import Cart, CartStatus, StoreStatus, WebhookDelivery
from tests.support.factories import collect_spooled, replay_answer
from tests.support.woocommerce import (
    CARTFLOWS_FORM,
    SITE,
    WooCommerceDriver,
    encode,
    fixture,
    make_woocommerce_store,
)

MIN = timedelta(minutes=1)


@pytest.fixture
def woo(client, runtime, drain):
    return WooCommerceDriver(client, runtime, drain, make_woocommerce_store(runtime))


def deliveries(woo) -> int:
    """Deliveries stored, spooled ones included (a worker's drain moves those in first)."""
    collect_spooled(woo.runtime)
    with woo.runtime.database.session() as session:
        return session.exec(select(func.count()).select_from(WebhookDelivery)).one()


def cart(woo, cart_id: str = "order-727") -> Cart:
    with woo.runtime.database.session() as session:
        return session.exec(select(Cart).where(Cart.platform_cart_id == cart_id)).one()


def test_the_creation_ping_is_answered_and_nothing_is_stored(woo):
    response = woo.client.post(
        "/webhooks/woocommerce",
        data=b"webhook_id=15",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200 and response.get_json()["status"] == "pong"
    assert deliveries(woo) == 0


def test_a_wrong_signature_is_401_and_stores_nothing(woo):
    response = woo.post("order.created", fixture("order_pending_razorpay"), secret="not-the-secret")
    assert response.status_code == 401 and "signature" in response.get_json()["error"]
    assert deliveries(woo) == 0


def test_a_delivery_without_its_headers_is_400_with_the_reason(woo):
    response = woo.client.post("/webhooks/woocommerce", data=encode({"id": 1}), headers={})
    assert response.status_code == 400 and "X-WC-Webhook-Source" in response.get_json()["error"]


def test_a_delivery_for_a_store_that_is_not_connected_is_acknowledged_and_dropped(woo):
    response = woo.post(
        "order.created", fixture("order_pending_razorpay"), **{"X-WC-Webhook-Source": "https://gone.example/"}
    )
    assert response.status_code == 200 and response.get_json()["status"] == "ignored"
    assert deliveries(woo) == 0


def test_a_signed_capture_that_is_not_json_is_400(woo):
    response = woo.post("cart.updated", b"{not json")
    assert response.status_code == 400 and "JSON" in response.get_json()["error"]
    # The same from WooCommerce itself is acknowledged (see below): nothing is stored either way.
    assert woo.post("order.created", b"{not json").get_json()["status"] == "ignored"
    assert deliveries(woo) == 0


def test_a_signed_order_that_cannot_be_read_is_acknowledged_so_the_webhook_stays_on(woo):
    # WooCommerce disables a webhook after a few refusals: one odd order must not stop them all.
    response = woo.post("order.created", fixture("order_pending_razorpay") | {"total": 2098.0})
    assert response.status_code == 200 and "total" in response.get_json()["reason"]
    assert deliveries(woo) == 0


def _order_with(**fields: str) -> bytes:
    """The recorded order with fields replaced, escaped as PHP's json_encode writes them."""
    return json.dumps(fixture("order_pending_razorpay") | fields).encode()


@pytest.mark.parametrize(
    "body",
    [
        # A lone surrogate escaped in the order's id, status or date (the delivery key's parts),
        _order_with(id="\ud800"),
        _order_with(status="\udc00"),
        _order_with(date_modified_gmt="\ud800"),
        # and raw surrogate bytes, which json.loads would accept and a UTF-8 decode refuses.
        _order_with(customer_note="SURROGATE").replace(b"SURROGATE", b"\xed\xa0\x80"),
    ],
    ids=["id", "status", "date_modified_gmt", "raw bytes"],
)
def test_a_signed_order_with_surrogates_is_acknowledged_and_stores_nothing(woo, body):
    response = woo.post("order.created", body)

    assert response.status_code == 200 and response.get_json()["status"] == "ignored"
    assert deliveries(woo) == 0


def test_a_signed_capture_with_a_lone_surrogate_is_400_and_stores_nothing(woo):
    # Escaped as PHP's json_encode would write it (the plugin signs what it sends).
    body = json.dumps(fixture("cart_updated_phone_only") | {"cart_id": "\ud800"}).encode()
    response = woo.post("cart.updated", body)

    assert response.status_code == 400 and "surrogate" in response.get_json()["error"]
    assert deliveries(woo) == 0


def test_a_malformed_plugin_capture_is_422_naming_the_field(woo):
    response = woo.post("cart.updated", fixture("cart_updated_phone_only") | {"currency": 5})
    assert response.status_code == 422 and "currency" in response.get_json()["error"]


def test_an_oversized_body_is_413(woo):
    response = woo.post("order.created", b"x" * (woo.runtime.settings.max_webhook_bytes + 1))
    assert response.status_code == 413


def test_the_same_order_state_twice_is_one_delivery_whatever_the_delivery_id(woo):
    order = fixture("order_pending_razorpay")
    first = woo.post("order.created", order)
    # order.updated fired by the same save, or the same webhook retried: another Delivery-ID.
    again = woo.post("order.updated", order)
    assert first.get_json()["status"] == "accepted"
    assert again.get_json()["status"] == replay_answer(woo.runtime)
    assert deliveries(woo) == 1


def test_two_orders_in_the_same_second_share_a_delivery_id_and_are_both_kept(woo):
    # WooCommerce's Delivery-ID hashes the webhook id and the second: it repeats.
    shared = {"X-WC-Webhook-Delivery-ID": "d41d8cd98f00b204e9800998ecf8427e"}
    first = woo.post("order.created", fixture("order_pending_razorpay"), **shared)
    second = woo.post("order.created", fixture("order_pending_razorpay") | {"id": 728}, **shared)
    assert (first.get_json()["status"], second.get_json()["status"]) == ("accepted", "accepted")


def test_a_dropped_razorpay_payment_is_messaged_and_recovered_by_its_payment(woo):
    order = fixture("order_pending_razorpay")
    assert woo.deliver(0 * MIN, "order.created", order).status_code == 200
    assert cart(woo).status == CartStatus.ACTIVE

    woo.run(16 * MIN)
    held = cart(woo)
    assert held.status == CartStatus.RECOVERING and held.checkout_url == order["payment_url"]

    paid = fixture("order_processing_paid") | {"coupon_lines": []}
    assert woo.deliver(30 * MIN, "order.updated", paid).status_code == 200
    recovered = cart(woo)
    assert recovered.status == CartStatus.RECOVERED
    assert recovered.order_total == Decimal("1998.00") and recovered.order_platform_id == "727"


def test_a_new_paid_order_instead_of_the_pending_one_stops_the_reminder(woo):
    woo.deliver(0 * MIN, "order.created", fixture("order_pending_razorpay"))
    # Back at checkout five minutes later, the shopper paid by UPI in a new order.
    repaid = fixture("order_processing_paid") | {
        "id": 731,
        "coupon_lines": [],
        "date_created_gmt": "2026-11-28T09:05:00",
        "date_paid_gmt": "2026-11-28T09:05:30",
    }
    woo.deliver(5 * MIN, "order.created", repaid)
    woo.run(20 * MIN)
    held = cart(woo)
    assert held.status == CartStatus.CONVERTED_UNASSISTED and held.first_message_at is None


def test_a_phone_only_capture_from_the_plugin_is_messaged(woo):
    capture = fixture("cart_updated_phone_only")
    assert woo.deliver(0 * MIN, "cart.updated", capture).get_json()["status"] == "accepted"
    woo.run(16 * MIN)
    held = cart(woo, capture["cart_id"])
    assert held.status == CartStatus.RECOVERING
    assert held.buyer_details and held.buyer_details["phone"] == "98765 43210"


def test_the_plugins_cart_and_its_pending_order_are_one_cart(woo):
    capture = fixture("cart_updated_phone_only")
    woo.deliver(0 * MIN, "cart.updated", capture)
    order = fixture("order_pending_razorpay")
    order["meta_data"].append({"id": 9, "key": "cartback_cart_id", "value": capture["cart_id"]})
    woo.deliver(1 * MIN, "order.created", order)
    with woo.runtime.database.session() as session:
        carts = session.exec(select(Cart)).all()
    assert [(c.platform_cart_id, c.platform_cart_token) for c in carts] == [(capture["cart_id"], "order-727")]


def test_an_emptied_cart_stops_its_sequence(woo):
    capture = fixture("cart_updated_phone_only")
    woo.deliver(0 * MIN, "cart.updated", capture)
    emptied = {"cart_id": capture["cart_id"], "updated_at_gmt": "2026-11-28T09:05:00", "currency": "INR"}
    woo.deliver(5 * MIN, "cart.emptied", emptied)
    woo.run(20 * MIN)
    held = cart(woo, capture["cart_id"])
    assert held.first_message_at is None and held.line_count == 0


def test_deliveries_for_an_uninstalled_store_are_acknowledged_and_dropped(woo):
    with woo.runtime.database.session() as session:
        store = session.get(type(woo.store), woo.store.id)
        store.status = StoreStatus.UNINSTALLED
        session.commit()
    response = woo.post("order.created", fixture("order_pending_razorpay"))
    assert response.status_code == 200 and response.get_json()["status"] == "ignored"
    assert SITE  # the store is still known by its address; it just is not active


# -- CartFlows' abandonment webhook ---------------------------------------------------------


def cartflows_path(woo) -> str:
    from connectors.woocommerce.cartflows import url_key
    from tests.support.woocommerce import WEBHOOK_SECRET

    return f"/webhooks/woocommerce/cartflows/{url_key(WEBHOOK_SECRET, woo.store.id)}"


def post_form(woo, path: str, form: dict) -> object:
    from urllib.parse import urlencode

    return woo.client.post(
        path, data=urlencode(form), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )


def test_a_cartflows_abandonment_becomes_a_cart_with_its_restore_link(woo):
    with woo.at(0 * MIN):
        response = post_form(woo, cartflows_path(woo), CARTFLOWS_FORM)
        woo.run(0 * MIN)
    assert response.status_code == 200 and response.get_json()["status"] == "accepted"
    held = cart(woo, "cartflows-abc123def")
    assert held.total == Decimal("2098.00") and held.currency == "INR"
    assert (
        held.checkout_url
        == "https://shop.example/checkout/?wcf_ac_token=d2NmX3Nlc3Npb25faWQ9YWJjMTIzZGVm&utm_source=zapier"
    )
    # CartFlows asks no WhatsApp opt-in: under the default consent policy nobody is messaged.
    woo.run(20 * MIN)
    assert cart(woo, "cartflows-abc123def").first_message_at is None


def test_a_cartflows_key_for_another_store_or_made_up_is_404(woo):
    other = make_woocommerce_store(woo.runtime, "https://other.example", secret="other-secret")
    from connectors.woocommerce.cartflows import url_key

    forged = f"/webhooks/woocommerce/cartflows/{url_key('guess', other.id)}"
    wrong_store = f"/webhooks/woocommerce/cartflows/{other.id}-{cartflows_path(woo).rsplit('-', 1)[1]}"
    for path in (forged, wrong_store, "/webhooks/woocommerce/cartflows/nothing"):
        assert post_form(woo, path, CARTFLOWS_FORM).status_code == 404
    assert deliveries(woo) == 0


def test_cartflows_sending_the_same_abandonment_twice_is_one_delivery(woo):
    first = post_form(woo, cartflows_path(woo), CARTFLOWS_FORM)
    again = post_form(woo, cartflows_path(woo), CARTFLOWS_FORM)
    assert (first.get_json()["status"], again.get_json()["status"]) == (
        "accepted",
        replay_answer(woo.runtime),
    )


def test_a_cartflows_key_with_an_absurd_store_number_is_404_not_an_error(woo):
    path = "/webhooks/woocommerce/cartflows/" + "9" * 30 + "-x"
    assert post_form(woo, path, CARTFLOWS_FORM).status_code == 404


def test_a_cartflows_form_without_a_status_is_422(woo):
    form = {k: v for k, v in CARTFLOWS_FORM.items() if k != "order_status"}
    response = post_form(woo, cartflows_path(woo), form)
    assert response.status_code == 422 and "order_status" in response.get_json()["error"]


def test_the_settings_page_gives_a_woocommerce_merchant_the_plugin_and_cartflows_setup(woo):
    from tests.support.admin import sign_in
    from tests.support.woocommerce import WEBHOOK_SECRET

    sign_in(woo.client, woo.runtime, woo.store.id)
    page = woo.client.get("/admin/settings").get_data(as_text=True)
    assert f'value="{WEBHOOK_SECRET}"' in page
    assert 'value="http://localhost/webhooks/woocommerce"' in page
    assert f'value="http://localhost{cartflows_path(woo)}"' in page


def test_the_settings_page_of_another_platform_shows_no_woocommerce_card(client, runtime):
    from tests.support.admin import sign_in
    from tests.support.factories import make_store

    store = make_store(runtime)
    sign_in(client, runtime, store.id)
    assert 'id="woocommerce"' not in client.get("/admin/settings").get_data(as_text=True)


def test_a_cartflows_cart_is_rebuilt_as_its_restore_link_with_the_code_for_the_plugin():
    from connectors.base import CartLine, CheckoutRef, StoreAccess
    from connectors.woocommerce.checkout import checkout_link

    store = StoreAccess(SITE, SITE, "ck_x:cs_y", SITE)
    restore = "https://shop.example/checkout/?wcf_ac_token=abc"
    cart = CheckoutRef("cartflows-abc", None, restore, [CartLine("Kurta & dupatta", 1, Decimal("2098.00"))])
    assert checkout_link(store, cart, "CB-K7MQ3XZ9") == restore + "&cartback_coupon=CB-K7MQ3XZ9"
    assert checkout_link(store, cart, None) == restore


def test_buying_closes_the_shoppers_other_open_carts(woo):
    first = fixture("cart_updated_phone_only")
    later = first | {"cart_id": "d4c2a1b0e5f64a7b8c9d0e1f2a3b4c5d", "updated_at_gmt": "2026-11-28T09:05:00"}
    woo.deliver(0 * MIN, "cart.updated", first)
    woo.deliver(5 * MIN, "cart.updated", later)
    paid = fixture("order_processing_paid") | {
        "coupon_lines": [],
        "date_paid_gmt": "2026-11-28T09:08:00",
        "meta_data": [{"id": 9, "key": "cartback_cart_id", "value": later["cart_id"]}],
    }
    woo.deliver(8 * MIN, "order.updated", paid)
    woo.run(20 * MIN)
    assert cart(woo, later["cart_id"]).status == CartStatus.CONVERTED_UNASSISTED
    older = cart(woo, first["cart_id"])
    assert older.status == CartStatus.EXPIRED and older.first_message_at is None


def test_a_later_update_of_a_recorded_order_stays_with_its_cart(woo):
    woo.deliver(0 * MIN, "order.created", fixture("order_pending_razorpay"))
    woo.run(16 * MIN)
    # Paid through a new order matched by phone, then that order is completed.
    repaid = fixture("order_processing_paid") | {
        "id": 731,
        "coupon_lines": [],
        "date_paid_gmt": "2026-11-28T09:20:00",
    }
    woo.deliver(20 * MIN, "order.created", repaid)
    woo.deliver(
        30 * MIN,
        "order.updated",
        repaid | {"status": "completed", "date_modified_gmt": "2026-11-28T09:30:00"},
    )
    with woo.runtime.database.session() as session:
        holders = session.exec(select(Cart).where(Cart.order_platform_id == "731")).all()
    assert [c.platform_cart_id for c in holders] == ["order-727"]


def test_erasing_a_shopper_empties_the_payloads_of_their_orders_and_captures(woo):
    from sequences.models import WebhookDelivery
    from sequences.privacy.erasure import erase_contact

    # A phone-only order (no email, no plugin id): nothing in it a text search would find.
    order = fixture("order_pending_razorpay")
    order["billing"] = order["billing"] | {"email": ""}
    woo.deliver(0 * MIN, "order.created", order)
    woo.deliver(MIN, "cart.updated", fixture("cart_updated_phone_only"))
    report = erase_contact(woo.runtime, woo.store.id, "+919876543210")
    with woo.runtime.database.session() as session:
        payloads = session.exec(select(WebhookDelivery.payload)).all()
        held = session.exec(select(Cart)).all()
    assert report.deliveries == 2 and payloads == ["", ""]
    assert all(not c.buyer_details and not c.checkout_url for c in held)
