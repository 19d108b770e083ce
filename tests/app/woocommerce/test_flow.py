"""The WooCommerce side end to end, against the fake WooCommerce (tests/fakes/woocommerce.py):
connect, a dropped Razorpay payment reminded, its payment page rebuilt with a fresh coupon, the
payment recovering the cart; the same for a phone-only cart the companion plugin captured; and
the sync that catches what WooCommerce's webhooks missed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import time_machine
from sqlmodel import select

from app import create_app
from app.wiring import build_runtime
from sequences.models import Cart, CartStatus, Discount, SandboxOutboxMessage, Store
from sequences.runtime import Runtime
from tests.conftest import _drain_queue
from tests.fakes.woocommerce import FakeWooCommerce
from tests.support.factories import collect_spooled, replay_answer
from tests.support.journey import T0
from tests.support.shopify import OFFER_FIRST
from tests.support.woocommerce import fixture

APP = "https://cartback.test"
MIN = timedelta(minutes=1)
BILLING = {
    "first_name": "Priya",
    "last_name": "Sharma",
    "address_1": "12 MG Road",
    "city": "Bengaluru",
    "state": "KA",
    "postcode": "560001",
    "country": "IN",
    "email": "priya@example.com",
    "phone": "98765 43210",
}
OPTED_IN = [{"key": "cartback_whatsapp_optin", "value": "yes"}]


class Live:
    """The app (Flask's test client) and the fake store, wired both ways."""

    def __init__(self, fake: FakeWooCommerce, runtime: Runtime, app: Any) -> None:
        self.fake, self.runtime, self.app = fake, runtime, app
        self.client = app.test_client()
        # The merchant's browser on cartback's https address (its Secure cookies come back).
        self.client.environ_base["wsgi.url_scheme"] = "https"

    def at(self, moment: timedelta) -> Any:
        return time_machine.travel(T0 + moment, tick=False)

    def run(self, moment: timedelta) -> None:
        with self.at(moment):
            _drain_queue(self.runtime)

    def deliver(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """The fake's outbound calls (pings, deliveries, the key callback) reach the app."""
        assert url.startswith(APP + "/"), url
        # A client per call: the fake calls from its own threads.
        response = self.app.test_client().post(url.removeprefix(APP), data=body, headers=headers)
        return int(response.status_code)

    def connect(self) -> Store:
        location = self.client.get("/woocommerce/connect", query_string={"store_url": self.fake.url}).headers[
            "Location"
        ]
        approval = self.fake.approve(location)
        assert approval.callback_status == 200 and approval.redirect_url, approval.error
        page = self.client.get(approval.redirect_url.removeprefix(APP))
        assert page.status_code == 200, page.get_data(as_text=True)
        assert "Order webhooks are registered" in page.get_data(as_text=True)
        store = self.store()
        with self.runtime.database.session() as session:
            row = session.get(Store, store.id)
            assert row is not None
            row.settings = OFFER_FIRST.to_stored()
            session.commit()
        # The merchant installs the companion plugin with the store's secret.
        self.fake.plugin_secret = self.secret()
        return store

    def drop_payment(
        self, moment: timedelta = timedelta(0), items: list[tuple[int, int, int]] | None = None
    ) -> dict[str, Any]:
        """A shopper who ticked the opt-in leaves a Razorpay payment unpaid; the app hears of it."""
        with self.at(moment):
            order = self.fake.place_order(
                billing=BILLING, line_items=items or [(93, 94, 2), (22, 0, 1)], meta_data=OPTED_IN
            )
            _drain_queue(self.runtime)
        return order

    def store(self) -> Store:
        with self.runtime.database.session() as session:
            return session.exec(select(Store).where(Store.platform == "woocommerce")).one()

    def secret(self) -> str:
        return self.runtime.secrets.decrypt(self.store().webhook_secret_ciphertext or "")

    def cart(self, **where: Any) -> Cart:
        with self.runtime.database.session() as session:
            query = select(Cart)
            for name, value in where.items():
                query = query.where(getattr(Cart, name) == value)
            return session.exec(query).one()

    def outbox(self) -> list[SandboxOutboxMessage]:
        with self.runtime.database.session() as session:
            return list(session.exec(select(SandboxOutboxMessage)).all())

    def click(self, message: SandboxOutboxMessage, moment: timedelta) -> str:
        with self.at(moment):
            response = self.client.get(message.buttons[0]["url"].removeprefix(self.runtime.settings.app_url))
        assert response.status_code == 303, response.get_data(as_text=True)
        return str(response.headers["Location"])

    def storefront(self, url: str) -> dict[str, Any]:
        with httpx.Client(verify=self.fake.ssl_context()) as browser:
            page: dict[str, Any] = browser.get(url).json()
        return page


@pytest.fixture
def live(settings, database, redis_conn, monkeypatch) -> Iterator[Live]:
    with FakeWooCommerce() as fake:
        fake.add_product(
            93,
            "Block-print kurta",
            "999.00",
            image="https://shop.example/wp-content/uploads/kurta.jpg",
            variations={94: ("M", "899.00")},
        )
        fake.add_product(22, "Cotton dupatta", "300.00")
        # The woocommerce client (requests) trusts the fake's CA, as a real store's public one.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake.ca_bundle_path)
        runtime = build_runtime(settings.with_overrides(app_url=APP), database=database, redis=redis_conn)
        live = Live(fake, runtime, create_app(runtime=runtime))
        fake.deliver = live.deliver
        yield live
        runtime.http.close()
        runtime.whatsapp_http.close()


def test_a_store_connects_and_a_dropped_razorpay_payment_is_won_back_with_a_fresh_coupon(live):
    with live.at(-MIN):
        store = live.connect()
    assert (store.name, store.currency, store.timezone, store.default_region) == (
        "Bazaar",
        "INR",
        "Asia/Kolkata",
        "IN",
    )
    hooks = list(live.fake.site.webhooks.values())
    assert sorted(h.topic for h in hooks) == [
        "order.created",
        "order.deleted",
        "order.restored",
        "order.updated",
    ]
    assert {h.delivery_url for h in hooks} == {f"{APP}/webhooks/woocommerce"} and all(
        h.status == "active" for h in hooks
    )
    assert live.fake.pings and all(ping.status == 200 for ping in live.fake.pings)

    order = live.drop_payment()
    cart = live.cart(platform_cart_token=f"order-{order['id']}")
    assert cart.status == CartStatus.ACTIVE and cart.total == Decimal("2098.00")

    live.run(16 * MIN)
    [message] = live.outbox()
    assert message.to_phone == "+919876543210" and "₹100" in message.body
    assert live.fake.calls("POST", "/wp-json/wc/v3/coupons") == []  # no coupon until someone clicks

    landing = live.click(message, 20 * MIN)
    assert landing.startswith(order["payment_url"]) and "cartback_pay=" in landing
    with live.runtime.database.session() as session:
        code = session.exec(select(Discount)).one().code
    coupon = live.fake.coupon(code)
    assert coupon is not None
    assert (coupon["discount_type"], coupon["amount"], coupon["usage_limit"]) == ("fixed_cart", "100.00", 1)
    assert coupon["email_restrictions"] == ["priya@example.com"] and coupon["date_expires_gmt"]
    with live.at(20 * MIN):
        page = live.storefront(landing)
    assert page["coupons"] == [code.lower()] and page["needs_payment"]
    # The companion plugin recognises the link: no "confirm your email" before paying.
    assert page["email_verification_required"] is False and not page["error"]
    assert live.click(message, 21 * MIN) == landing  # a second tap, the same page, no second coupon
    assert len(live.fake.calls("POST", "/wp-json/wc/v3/coupons")) == 1

    with live.at(30 * MIN):
        paid = live.fake.pay(order["id"])
        _drain_queue(live.runtime)
    recovered = live.cart(platform_cart_token=f"order-{order['id']}")
    assert recovered.status == CartStatus.RECOVERED
    assert recovered.order_total == Decimal(paid["total"]) == Decimal("1998.00")
    assert recovered.recovered_step == 1 and recovered.discount_given == Decimal("100")


def test_a_phone_only_cart_the_plugin_captured_is_won_back_the_same_way(live):
    with live.at(-MIN):
        live.connect()
    capture = fixture("cart_updated_phone_only") | {"updated_at_gmt": "2026-11-28T09:00:00.250000"}
    body, headers = live.fake.signed_delivery("cart.updated", capture, live.secret(), webhook_id=0)
    with live.at(0 * MIN):
        assert live.client.post("/webhooks/woocommerce", data=body, headers=headers).status_code == 200
        _drain_queue(live.runtime)

    live.run(16 * MIN)
    [message] = live.outbox()
    assert message.to_phone == "+919876543210"

    landing = live.click(message, 20 * MIN)
    # No order existed: one was made from the cart, its lines and the shopper's details.
    [created] = live.fake.calls("POST", "/wp-json/wc/v3/orders")
    assert created.body["created_via"] == "cartback" and created.body["billing"]["phone"] == "98765 43210"
    order_id = int(urlsplit(landing).path.rstrip("/").split("/")[-1])
    order = live.fake.order(order_id)
    assert [(line["product_id"], line["variation_id"], line["quantity"]) for line in order["line_items"]] == [
        (93, 94, 2),
        (22, 0, 1),
    ]
    assert {"key": "cartback_cart_id", "value": capture["cart_id"]} in [
        {"key": m["key"], "value": m["value"]} for m in order["meta_data"]
    ]
    with live.at(20 * MIN):
        page = live.storefront(landing)
    assert len(page["coupons"]) == 1 and page["email_verification_required"] is False
    held = live.cart(platform_cart_id=capture["cart_id"])
    assert held.platform_cart_token == f"order-{order_id}"  # later steps pay this order, not a new one

    with live.at(30 * MIN):
        paid = live.fake.pay(order_id)
        _drain_queue(live.runtime)
    recovered = live.cart(platform_cart_id=capture["cart_id"])
    assert recovered.status == CartStatus.RECOVERED and recovered.order_total == Decimal(paid["total"])


def test_an_order_cancelled_before_the_click_falls_back_to_a_checkout_link(live):
    with live.at(-MIN):
        live.connect()
    order = live.drop_payment()
    live.run(16 * MIN)
    with live.at(70 * MIN):
        # WooCommerce cancels unpaid orders when their held stock times out (60 minutes).
        live.fake.set_status(order["id"], "cancelled")
        _drain_queue(live.runtime)
    landing = live.click(live.outbox()[0], 75 * MIN)
    query = parse_qs(urlsplit(landing).query)
    assert urlsplit(landing).path == "/checkout-link/" and query["products"] == ["94:2,22:1"]
    with live.at(75 * MIN):
        page = live.storefront(landing)
    assert page["coupon_applied"] and page["coupon"] == query["coupon"][0].lower(), page


def test_the_sync_catches_a_missed_delivery_and_switches_a_disabled_webhook_back_on(live):
    from sequences.stores.sync import sync_platform

    with live.at(-MIN):
        live.connect()
    live.fake.drop_deliveries = True  # the store's deliveries never arrive
    with live.at(0 * MIN):
        order = live.fake.place_order(billing=BILLING, line_items=[(93, 94, 2)], meta_data=OPTED_IN)
    for hook in live.fake.site.webhooks.values():
        hook.status = "disabled"
    live.fake.drop_deliveries = False

    with live.at(10 * MIN):
        report = sync_platform(live.runtime, "woocommerce")
        _drain_queue(live.runtime)
    assert (report.orders_new, report.webhooks_reactivated) == (1, 4)
    assert all(hook.status == "active" for hook in live.fake.site.webhooks.values())
    [listed] = live.fake.calls("GET", "/wp-json/wc/v3/orders")
    assert listed.query["dates_are_gmt"] == "true" and listed.query["per_page"] == "100"
    assert live.cart(platform_cart_token=f"order-{order['id']}").status == CartStatus.ACTIVE

    # The same change read again (an overlapping poll) or delivered late changes nothing.
    with live.runtime.database.session() as session:
        row = session.exec(select(Store)).one()
        row.orders_synced_at = T0 - MIN
        session.commit()
    with live.at(11 * MIN):
        again = sync_platform(live.runtime, "woocommerce")
    assert (again.orders_read, again.orders_new) == (1, 0)
    body, headers = live.fake.signed_delivery("order.updated", live.fake.order(order["id"]), live.secret())
    late = live.client.post("/webhooks/woocommerce", data=body, headers=headers)
    assert late.status_code == 200 and late.get_json()["status"] == replay_answer(live.runtime)
    assert collect_spooled(live.runtime) == 0  # the sync's row holds it already: dropped


def test_a_host_that_strips_the_authorization_header_gets_the_keys_in_the_query(live):
    live.fake.strip_authorization = True
    with live.at(-MIN):
        live.connect()
    assert {request.auth for request in live.fake.requests if request.path.startswith("/wp-json/wc/")} == {
        None,
        "query",
    }


def test_recovered_revenue_is_checked_against_refunds_and_unused_coupons_are_purged(live):
    from sequences.reconciliation.orders import Difference, recheck_store
    from sequences.stores.discount_cleanup import delete_expired_discounts

    test_a_store_connects_and_a_dropped_razorpay_payment_is_won_back_with_a_fresh_coupon(live)
    order_id = int(live.cart(status=CartStatus.RECOVERED).order_platform_id or 0)
    with live.at(2 * 60 * MIN):
        live.fake.refund(order_id, "500.00")
        _drain_queue(live.runtime)
        # The order.updated body carries the refund: recorded at once, confirmed (paid, less it).
        cart = live.cart(status=CartStatus.RECOVERED)
        assert cart.order_refunded == Decimal("500.00") and cart.order_verified_at is not None
        report = recheck_store(live.runtime, live.store().id)
    assert report.count(Difference.PARTLY_REFUNDED) == 1
    assert live.cart(status=CartStatus.RECOVERED).order_refunded == Decimal("500.00")

    # A redeemed code stays (the order refers to it); nothing else expired: nothing is deleted.
    with live.at(5 * 24 * 60 * MIN):
        assert delete_expired_discounts(live.runtime).deleted == 0


def test_a_recovered_order_the_merchant_cancels_takes_its_revenue_back_at_once(live):
    test_a_store_connects_and_a_dropped_razorpay_payment_is_won_back_with_a_fresh_coupon(live)
    order_id = int(live.cart(status=CartStatus.RECOVERED).order_platform_id or 0)
    with live.at(3 * 60 * MIN):
        live.fake.set_status(order_id, "cancelled")
        _drain_queue(live.runtime)
    cart = live.cart(status=CartStatus.RECOVERED)
    assert cart.order_cancelled_at is not None and cart.order_financial_status == "cancelled"
    assert cart.order_verified_at is not None  # settled at nothing: reconciled, not pending


def test_nothing_personal_or_secret_is_logged_along_the_way(live, caplog):
    from app.logs import RedactingFilter

    caplog.set_level("DEBUG")
    live.fake.strip_authorization = True  # the keys travel in query strings too
    test_a_store_connects_and_a_dropped_razorpay_payment_is_won_back_with_a_fresh_coupon(live)
    key, secret = live.runtime.secrets.decrypt(live.store().access_token_ciphertext or "").split(":")
    held = [key, secret, live.secret(), "9876543210", "98765 43210", "priya@example.com", "Sharma"]
    scrub = RedactingFilter()
    for record in caplog.records:
        raw = record.getMessage() + " " + " ".join(str(v) for v in record.__dict__.values())
        if record.name.startswith("cartback"):
            # Our own lines carry ids, never people or secrets.
            assert not [value for value in held if value in raw], f"{record.name}: {record.getMessage()}"
        scrub.filter(record)
        # As the log handler writes it ("message" is pytest's own copy, formatted before).
        shown = (
            record.getMessage() + " " + " ".join(str(v) for k, v in record.__dict__.items() if k != "message")
        )
        assert not [value for value in held if value in shown], f"{record.name}: {record.getMessage()}"


def test_an_expired_unused_coupon_is_deleted_from_the_store_by_purge(live):
    from sequences.stores.discount_cleanup import delete_expired_discounts

    with live.at(-MIN):
        live.connect()
    live.drop_payment(items=[(93, 94, 2)])
    live.run(16 * MIN)
    live.click(live.outbox()[0], 20 * MIN)
    with live.runtime.database.session() as session:
        code = session.exec(select(Discount)).one().code
    assert live.fake.coupon(code) is not None

    with live.at(3 * 24 * 60 * MIN):  # the offer's 48 hours are over, nobody used the code
        report = delete_expired_discounts(live.runtime)
    assert report.deleted == 1 and live.fake.coupon(code) is None
    [deleted] = live.fake.calls("DELETE", "/wp-json/wc/v3/coupons/")
    assert deleted.query["force"] == "true"


def test_a_second_steps_coupon_replaces_the_firsts_on_the_order(live):
    with live.at(-MIN):
        live.connect()
    both_offers = OFFER_FIRST.model_copy(
        update={
            "steps": [OFFER_FIRST.steps[0], OFFER_FIRST.steps[0].model_copy(update={"delay_minutes": 240})]
        }
    )
    with live.runtime.database.session() as session:
        row = session.exec(select(Store)).one()
        row.settings = both_offers.to_stored()
        session.commit()
    order = live.drop_payment()
    live.run(16 * MIN)
    live.click(live.outbox()[0], 20 * MIN)
    live.run(4 * 60 * MIN + MIN)
    second = live.outbox()[1]
    live.click(second, 4 * 60 * MIN + 5 * MIN)
    codes = [line["code"] for line in live.fake.order(order["id"])["coupon_lines"]]
    with live.runtime.database.session() as session:
        latest = session.exec(select(Discount).where(Discount.step_number == 2)).one().code
    # The offers do not add up: the order carries the latest step's code only.
    assert codes == [latest.lower()]
    assert Decimal(live.fake.order(order["id"])["total"]) == Decimal("1998.00")


def test_a_click_after_the_payment_went_through_lands_on_the_store_not_a_new_checkout(live):
    with live.at(-MIN):
        live.connect()
    order = live.drop_payment()
    live.run(16 * MIN)
    live.fake.drop_deliveries = True  # the payment's webhook has not arrived yet
    with live.at(18 * MIN):
        live.fake.pay(order["id"])
    landing = live.click(live.outbox()[0], 20 * MIN)
    assert landing.startswith(live.fake.url) and "cartback_notice=already_ordered" in landing
    assert "checkout-link" not in landing and live.fake.calls("PUT", "/wp-json/wc/v3/orders") == []


def test_a_store_typed_without_its_own_address_is_named_as_its_webhooks_name_it(live):
    typed = live.fake.url.replace("127.0.0.1", "localhost")  # WordPress's home is 127.0.0.1
    with live.at(-MIN):
        location = live.client.get("/woocommerce/connect", query_string={"store_url": typed}).headers[
            "Location"
        ]
        approval = live.fake.approve(location)
        assert live.client.get(approval.redirect_url.removeprefix(APP)).status_code == 200
    assert live.store().platform_store_id == live.fake.url
    order = live.drop_payment(items=[(93, 94, 2)])
    assert live.cart(platform_cart_token=f"order-{order['id']}").status == CartStatus.ACTIVE


def test_reconnecting_keeps_the_stores_secret_and_a_webhook_the_merchant_paused(live):
    from sequences.stores.sync import sync_platform

    with live.at(-MIN):
        live.connect()
    secret = live.secret()
    hooks = list(live.fake.site.webhooks.values())
    hooks[0].status = "paused"
    with live.at(0 * MIN):
        live.connect()
    assert live.secret() == secret and len(live.fake.site.webhooks) == 4
    with live.at(10 * MIN):
        report = sync_platform(live.runtime, "woocommerce")
    assert report.webhooks_reactivated == 0 and hooks[0].status == "paused"


def test_the_periodic_sync_runs_one_job_per_store(live):
    from sequences.jobs import sync_platform_job

    with live.at(-MIN):
        live.connect()
    with live.at(10 * MIN):
        assert sync_platform_job("woocommerce") == "1 woocommerce store syncs queued"
        queued = [job.id for job in live.runtime.queue.get_jobs() if job.id.startswith("sync-")]
        assert queued == [f"sync-store-{live.store().id}"]
        _drain_queue(live.runtime)
    assert live.store().orders_synced_at is not None
