"""The Shopify side end to end, against a fake Shopify that checks what the real one requires."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

from sqlmodel import select

from sequences.merchant.store_settings import Offer, StepSetting, StoreSettings
from sequences.models import (
    CartLine,
    CartStatus,
    Discount,
    RecoveryStep,
    StepStatus,
    Store,
    StoreStatus,
    VariantImage,
)
from tests.support.shopify import MIN, OFFER_FIRST, fixture


def test_a_shop_installs_gets_a_message_clicks_a_rebuilt_checkout_and_is_recovered(shopify):
    store = shopify.install(OFFER_FIRST)
    assert store.status == StoreStatus.ACTIVE and store.name == "Bazaar" and store.currency == "INR"

    checkout = shopify.checkout(timedelta(0))
    cart = shopify.cart(checkout["token"])
    assert cart.status == CartStatus.ACTIVE
    with shopify.runtime.database.session() as session:
        lines = session.exec(select(CartLine).where(CartLine.cart_id == cart.id)).all()
        cached = session.exec(select(VariantImage)).all()
    assert all(line.image_url and line.image_url.startswith("https://cdn.shopify.com/") for line in lines)
    assert len(shopify.fake.calls("CartbackVariantImages")) == 1  # one batched call for the cart
    assert {row.platform_variant_id for row in cached} == {
        str(line["variant_id"]) for line in checkout["line_items"]
    }

    shopify.run(15 * MIN)
    [message] = shopify.outbox()
    assert message.image_url == lines[0].image_url
    assert "₹100" in message.body
    assert shopify.fake.calls("CartbackDiscountCreate") == []  # no code until someone clicks

    with shopify.at(20 * MIN):
        click = shopify.client.get(urlsplit(shopify.link(message)).path)
    assert click.status_code == 303
    landing = click.headers["Location"]
    code = parse_qs(urlsplit(landing).query)["discount"][0]
    assert landing.startswith(checkout["abandoned_checkout_url"].split("?")[0])  # the shopper's own checkout
    [created] = shopify.fake.calls("CartbackDiscountCreate")
    sent = created.variables["basicCodeDiscount"]
    assert sent["code"] == code and sent["usageLimit"] == 1
    assert sent["customerGets"]["value"] == {"discountAmount": {"amount": "100", "appliesOnEachItem": False}}
    assert sent["minimumRequirement"] == {"subtotal": {"greaterThanOrEqualToSubtotal": "999"}}
    with shopify.at(20 * MIN), shopify.storefront() as browser:
        page = browser.get(landing).json()
    assert page["discount"] == {"code": code, "applied": True, "reason": None}

    order = fixture("orders_create") | {
        "checkout_token": checkout["token"],
        "discount_codes": [{"code": code, "amount": "100.00", "type": "fixed_amount"}],
        "created_at": "2026-11-28T09:30:00Z",
    }
    assert shopify.webhook(30 * MIN, "orders/create", order).status_code == 200
    recovered = shopify.cart(checkout["token"])
    assert recovered.status == CartStatus.RECOVERED
    assert recovered.order_total == Decimal("4696.00") and recovered.order_currency == "INR"
    with shopify.runtime.database.session() as session:
        assert session.exec(select(Discount).where(Discount.code == code)).one().redeemed_at is not None
    with shopify.at(40 * MIN):
        page = shopify.open_app().get_data(as_text=True)
    assert "₹4,696.00" in page  # the merchant sees the recovered revenue


def test_a_second_click_reuses_the_code_instead_of_making_another(shopify):
    shopify.messaged()
    path = urlsplit(shopify.link(shopify.outbox()[0])).path
    with shopify.at(20 * MIN):
        first = shopify.client.get(path).headers["Location"]
        second = shopify.client.get(path).headers["Location"]
    assert first == second
    assert len(shopify.fake.calls("CartbackDiscountCreate")) == 1


def test_uninstall_stops_pending_steps_at_once(shopify):
    shopify.install()
    checkout = shopify.checkout()
    with shopify.at(MIN):
        response = shopify.post("app/uninstalled", fixture("app_uninstalled"))
    assert response.status_code == 200
    # Before any job runs, the store is already stopped: the send guard reads this.
    assert shopify.store().status == StoreStatus.UNINSTALLED
    shopify.run(15 * MIN)
    shopify.run(5 * 60 * MIN)
    assert shopify.outbox() == []
    cart = shopify.cart(checkout["token"])
    assert cart.status == CartStatus.EXPIRED
    with shopify.runtime.database.session() as session:
        steps = session.exec(select(RecoveryStep).where(RecoveryStep.cart_id == cart.id)).all()
        store = session.exec(select(Store)).one()
    assert all(step.status != StepStatus.SCHEDULED for step in steps)
    assert store.access_token_ciphertext is None and store.refresh_token_ciphertext is None


def test_reinstalling_while_the_uninstall_is_still_queued_leaves_the_new_install_alone(shopify):
    shopify.install()
    with shopify.at(MIN):
        response = shopify.post("app/uninstalled", fixture("app_uninstalled"))
    assert response.get_json()["status"] == "accepted"  # queued, not yet processed
    shopify.fake.revoke_all(shopify.shop)
    with shopify.at(2 * MIN):
        assert shopify.open_app().status_code == 200  # the merchant installs again
    shopify.run(3 * MIN)  # only now does the worker reach the old uninstall
    store = shopify.store()
    assert store.status == StoreStatus.ACTIVE and store.access_token_ciphertext
    checkout = shopify.checkout(4 * MIN)
    shopify.run(20 * MIN)
    assert len(shopify.outbox()) == 1 and shopify.cart(checkout["token"]).status == CartStatus.RECOVERING


def test_shop_redact_for_a_shop_that_installed_again_deletes_nothing(shopify):
    shopify.install()
    shopify.checkout()
    shopify.webhook(MIN, "app/uninstalled", fixture("app_uninstalled"))
    with shopify.at(2 * MIN):
        shopify.open_app()
    shopify.webhook(3 * MIN, "shop/redact", fixture("shop_redact"), path="/webhooks/shopify/compliance")
    assert shopify.store().status == StoreStatus.ACTIVE
    assert shopify.cart(fixture("checkouts_create")["token"]) is not None


def _withdraw_consent(shopify, moment: timedelta) -> None:
    """The shopper unticks the box and unsubscribes from SMS: a checkout update at ``moment``."""
    withdrawn = fixture("checkouts_update")["customer"] | {"sms_marketing_consent": {"state": "unsubscribed"}}
    shopify.checkout(moment, name="checkouts_update", buyer_accepts_sms_marketing=False, customer=withdrawn)


def test_an_older_delivery_arriving_late_cannot_turn_consent_back_on(shopify):
    shopify.install()
    _withdraw_consent(shopify, 2 * MIN)
    shopify.checkout(0 * MIN, name="checkouts_create")  # the older one, consent ticked, arrives last
    shopify.run(30 * MIN)
    assert shopify.outbox() == []


def test_nothing_personal_or_secret_is_logged_along_the_way(shopify, caplog):
    caplog.set_level("DEBUG")
    checkout = shopify.messaged()
    shopify.fake.expire_access_tokens(shopify.shop)
    shopify.click()
    shopify.webhook(
        21 * MIN, "customers/redact", fixture("customers_redact"), path="/webhooks/shopify/compliance"
    )
    secrets_held = [*shopify.fake._access, *shopify.fake._refresh, shopify.fake.client_secret]
    personal = ["9876543210", checkout["email"], checkout["customer"]["last_name"]]
    for record in caplog.records:
        text = record.getMessage() + " " + " ".join(str(v) for v in record.__dict__.values())
        for value in [*personal, *secrets_held]:
            assert value not in text, f"{record.name}: {record.getMessage()}"


def test_a_shopper_paying_in_another_currency_gets_no_offer_meant_in_rupees(shopify):
    shopify.install(OFFER_FIRST)
    checkout = shopify.checkout(name="checkouts_update_presentment_currency")
    shopify.run(15 * MIN)
    [message] = shopify.outbox()
    assert "₹" not in message.body and "claim" not in message.body.lower()
    click = shopify.click()
    assert "discount" not in parse_qs(urlsplit(click.headers["Location"]).query)
    assert shopify.fake.calls("CartbackDiscountCreate") == []
    order = fixture("orders_create") | {
        "checkout_token": checkout["token"],
        "created_at": "2026-11-28T09:30:00Z",
        "presentment_currency": "USD",
        "total_price_set": {
            "shop_money": {"amount": "4696.00", "currency_code": "INR"},
            "presentment_money": {"amount": "56.35", "currency_code": "USD"},
        },
    }
    shopify.webhook(30 * MIN, "orders/create", order)
    cart = shopify.cart(checkout["token"])
    assert (cart.order_total, cart.order_currency) == (Decimal("56.35"), "USD")
    assert cart.order_total_store == Decimal("4696.00")  # revenue is counted in the shop's rupees


def test_a_late_retry_of_an_uninstall_we_never_received_spares_the_reinstall(shopify):
    shopify.install()
    with shopify.at(MIN):  # Shopify's first attempt never reached us
        body, headers = shopify.fake.signed_webhook(
            shopify.shop, "app/uninstalled", fixture("app_uninstalled")
        )
    shopify.fake.revoke_all(shopify.shop)
    with shopify.at(5 * MIN):
        assert shopify.open_app().status_code == 200  # reinstalled; our old token was refused
    with shopify.at(60 * MIN):
        assert shopify.client.post("/webhooks/shopify", data=body, headers=headers).status_code == 200
    shopify.run(60 * MIN)
    assert shopify.store().status == StoreStatus.ACTIVE


def test_shop_redact_after_an_uninstall_we_never_heard_of_still_deletes_the_shop(shopify):
    shopify.install()
    shopify.checkout()
    response = shopify.webhook(
        50 * 60 * MIN, "shop/redact", fixture("shop_redact"), path="/webhooks/shopify/compliance"
    )
    assert response.status_code == 200
    with shopify.runtime.database.session() as session:
        assert session.exec(select(Store)).all() == []


def test_a_cart_that_switches_currency_after_the_message_gets_no_code_in_the_wrong_money(shopify):
    any_cart = StoreSettings(
        quiet_hours_enabled=False,
        steps=[StepSetting(delay_minutes=15, offer=Offer(kind="fixed", value=Decimal("100")))],
    )
    checkout = shopify.messaged(any_cart)
    switched = fixture("checkouts_update_presentment_currency") | {"token": checkout["token"]}
    shopify.checkout(
        16 * MIN,
        name="checkouts_update_presentment_currency",
        token=checkout["token"],
        **{k: switched[k] for k in ("presentment_currency", "subtotal_price", "total_price", "line_items")},
    )
    click = shopify.click(17 * MIN)
    assert "discount" not in parse_qs(urlsplit(click.headers["Location"]).query)
    assert shopify.fake.calls("CartbackDiscountCreate") == []


def test_an_older_checkout_of_the_same_shopper_cannot_overrule_a_newer_consent(shopify):
    shopify.install()
    _withdraw_consent(shopify, 2 * MIN)
    # Another checkout of the same phone, stamped earlier, with the box ticked, arrives late.
    shopify.checkout(0 * MIN, name="checkouts_create", token="0ld" + "0" * 29)
    shopify.run(30 * MIN)
    assert shopify.outbox() == []
