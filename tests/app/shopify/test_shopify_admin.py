"""The embedded app home, tokens, and the Admin API calls cartback makes after install."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import text
from sqlmodel import select

from connectors.base import DiscountKind, DiscountRequest
from connectors.shopify.connector import discount_input
from sequences.models import Cart, CartStatus, ConsentEvent, Contact, Discount, OptOutSync, Store
from sequences.stores.discount_cleanup import delete_expired_discounts
from tests.support.shopify import MIN, OFFER_FIRST, SHOP, fixture

# -- app home and tokens ---------------------------------------------------------------------


def test_the_app_home_is_framed_only_by_the_shop_and_the_shopify_admin(shopify):
    with shopify.at(0 * MIN):
        response = shopify.open_app()
    csp = response.headers["Content-Security-Policy"]
    assert f"frame-ancestors https://{SHOP} https://admin.shopify.com" in csp
    page = response.get_data(as_text=True)
    assert "cartback · Bazaar" in page and "Recovered with cartback" in page
    assert f'name="shopify-api-key" content="{shopify.fake.client_id}"' in page


def test_install_exchanges_the_session_token_for_an_expiring_offline_token_kept_encrypted(shopify):
    shopify.install()
    [exchange] = shopify.fake.calls("urn:ietf:params:oauth:grant-type:token-exchange")
    assert exchange.body["requested_token_type"] == "urn:shopify:params:oauth:token-type:offline-access-token"
    assert str(exchange.body["expiring"]) == "1"
    store = shopify.store()
    assert store.access_token_expires_at is not None and store.refresh_token_ciphertext
    token = shopify.runtime.secrets.decrypt(store.access_token_ciphertext or "")
    with shopify.runtime.database.engine.connect() as connection:
        raw = " ".join(str(v) for v in connection.execute(text("SELECT * FROM store")).one())
    assert token.startswith("shpat_") and token not in raw


def test_a_request_without_a_session_token_goes_to_the_token_patch_page(shopify):
    response = shopify.client.get(f"/?shop={SHOP}&embedded=1")
    assert response.status_code == 302
    assert response.headers["Location"].split("?")[0].endswith("/auth/patch-id-token")
    patch = shopify.client.get(response.headers["Location"])
    assert patch.status_code == 200 and "app-bridge.js" in patch.get_data(as_text=True)
    assert "reload cartback from your Shopify admin" in patch.get_data(as_text=True)


def test_a_forged_session_token_is_refused_and_nothing_is_installed(shopify):
    token = shopify.fake.session_token(SHOP, secret="f" * 40)
    response = shopify.client.get(f"/?shop={SHOP}&embedded=1", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    with shopify.runtime.database.session() as session:
        assert session.exec(select(Store)).all() == []


def test_the_bare_address_shows_no_merchant_data(shopify):
    shopify.install()
    page = shopify.client.get("/").get_data(as_text=True)
    assert "Bazaar" not in page and "Shopify admin" in page


def test_an_expired_access_token_is_refreshed_after_a_401_and_the_call_succeeds(shopify):
    shopify.messaged()
    before = shopify.store().refresh_token_ciphertext
    shopify.fake.expire_access_tokens(SHOP)
    click = shopify.click()
    assert "discount" in parse_qs(urlsplit(click.headers["Location"]).query)
    assert len(shopify.fake.calls("refresh_token")) == 1
    assert shopify.store().refresh_token_ciphertext != before


def test_a_token_about_to_expire_is_refreshed_before_the_call(shopify):
    shopify.messaged()
    with shopify.runtime.database.session() as session:
        store = session.exec(select(Store)).one()
        store.access_token_expires_at = datetime(2026, 11, 28, 9, 20, 30, tzinfo=UTC)  # 30 s after the click
        session.commit()
    shopify.click()
    refreshes = shopify.fake.calls("refresh_token")
    assert len(refreshes) == 1
    assert shopify.fake.requests.index(refreshes[0]) < shopify.fake.requests.index(
        shopify.fake.calls("CartbackDiscountCreate")[0]
    )


# -- discounts -----------------------------------------------------------------------------


def test_a_throttled_call_waits_for_the_bucket_and_succeeds(shopify):
    shopify.messaged()
    shopify.fake.throttle_next(1)
    click = shopify.click()
    assert "discount" in parse_qs(urlsplit(click.headers["Location"]).query)
    assert len(shopify.fake.calls("CartbackDiscountCreate")) == 2


def test_user_errors_land_the_shopper_on_their_checkout_without_a_code_and_say_so(shopify):
    checkout = shopify.messaged()
    shopify.fake.fail_next(
        "CartbackDiscountCreate",
        [{"field": ["basicCodeDiscount", "endsAt"], "code": "INVALID", "message": "nope"}],
    )
    click = shopify.click()
    query = parse_qs(urlsplit(click.headers["Location"]).query)
    assert "discount" not in query and query["cartback_notice"] == ["offer_unavailable"]
    assert click.headers["Location"].startswith(checkout["abandoned_checkout_url"].split("?")[0])


def test_a_percentage_becomes_the_capped_fixed_amount_it_comes_to_on_this_cart():
    def ten_percent_up_to_200(subtotal: str) -> DiscountRequest:
        ends = datetime(2026, 12, 1, tzinfo=UTC)
        return DiscountRequest(
            "CB-1",
            DiscountKind.PERCENT,
            Decimal("10"),
            "INR",
            ends,
            max_amount=Decimal("200"),
            cart_subtotal=Decimal(subtotal),
        )

    capped, under = ten_percent_up_to_200("4796"), ten_percent_up_to_200("1500")
    assert discount_input(capped)["customerGets"]["value"] == {
        "discountAmount": {"amount": "200", "appliesOnEachItem": False}
    }
    assert discount_input(under)["customerGets"]["value"] == {
        "discountAmount": {"amount": "150.00", "appliesOnEachItem": False}
    }
    assert discount_input(under)["endsAt"] == "2026-12-01T00:00:00Z"


def test_a_cart_without_a_checkout_url_is_rebuilt_from_a_cart_permalink(shopify):
    shopify.install(OFFER_FIRST)
    checkout = shopify.checkout()
    with shopify.runtime.database.session() as session:
        row = session.exec(select(Cart)).one()
        row.checkout_url = None
        session.commit()
    shopify.run(15 * MIN)
    with shopify.at(20 * MIN):
        landing = shopify.client.get(urlsplit(shopify.link(shopify.outbox()[0])).path).headers["Location"]
    items = ",".join(f"{line['variant_id']}:{line['quantity']}" for line in checkout["line_items"])
    assert urlsplit(landing).path.endswith(f"/cart/{items}")
    with shopify.at(20 * MIN), shopify.storefront() as browser:
        assert browser.get(landing).json()["discount"]["applied"] is True


def test_purge_deletes_expired_unused_codes_and_keeps_redeemed_ones(shopify):
    shopify.messaged()
    shopify.click()
    with shopify.at(3 * 24 * 60 * MIN):
        report = delete_expired_discounts(shopify.runtime)
    assert report.deleted == 1
    [code] = shopify.fake.discounts[SHOP].values()
    assert code.deleted
    with shopify.runtime.database.session() as session:
        assert session.exec(select(Discount)).one().platform_deleted_at is not None
    with shopify.at(3 * 24 * 60 * MIN + MIN):
        assert delete_expired_discounts(shopify.runtime).deleted == 0  # done once


# -- opt-out sync and reconciliation ---------------------------------------------------------


def _known_customer(shopify) -> str:
    """Installed, and the checkout's customer exists in Shopify with the phone: its id."""
    customer_id = fixture("checkouts_create")["customer"]["id"]
    shopify.fake.add_customer(customer_id, phone="+919876543210")
    shopify.install()
    return str(customer_id)


def _stop(shopify, moment: timedelta) -> None:
    outbox_id = shopify.outbox()[0].id
    with shopify.at(moment):
        shopify.client.post(f"/outbox/{outbox_id}/reply", data={"text": "STOP"})
    shopify.run(moment)


def test_a_stop_reply_unsubscribes_the_shopify_customer_from_whatsapp_marketing(shopify):
    customer_id = _known_customer(shopify)
    shopify.checkout()
    shopify.run(15 * MIN)
    _stop(shopify, 20 * MIN)
    assert shopify.fake.whatsapp_consent[(SHOP, f"gid://shopify/Customer/{customer_id}")] == "UNSUBSCRIBED"
    with shopify.runtime.database.session() as session:
        event = session.exec(select(ConsentEvent)).one()
    assert event.platform_sync == OptOutSync.DONE


def test_a_refused_sync_never_undoes_the_local_opt_out(shopify):
    _known_customer(shopify)
    checkout = shopify.checkout()
    shopify.run(15 * MIN)
    shopify.fake.fail_next(
        "CartbackWhatsAppOptOut", [{"field": ["input"], "code": "INVALID", "message": "no"}]
    )
    _stop(shopify, 20 * MIN)
    with shopify.runtime.database.session() as session:
        event = session.exec(select(ConsentEvent)).one()
        contact = session.exec(select(Contact)).one()
    assert event.platform_sync == OptOutSync.FAILED and "no" in (event.platform_sync_detail or "")
    assert contact.opted_out_at is not None
    assert shopify.cart(checkout["token"]).status == CartStatus.OPTED_OUT


def _recovered(shopify) -> str:
    checkout = shopify.messaged()
    order = fixture("orders_create") | {
        "checkout_token": checkout["token"],
        "created_at": "2026-11-28T09:30:00Z",
    }
    shopify.webhook(30 * MIN, "orders/create", order)
    assert shopify.cart(checkout["token"]).status == CartStatus.RECOVERED
    shopify.fake.add_order(int(order["id"]), total="4696.00")
    return str(checkout["token"])


def test_two_processes_needing_a_refresh_at_once_refresh_only_once(shopify):
    import threading

    from sequences.stores.access import fresh_access

    store = shopify.install()
    with shopify.runtime.database.session() as session:
        row = session.get(Store, store.id)
        row.access_token_expires_at = datetime.now(UTC) + timedelta(seconds=30)
        session.commit()
    tokens: list[str] = []
    barrier = threading.Barrier(3)

    def worker() -> None:
        barrier.wait()
        tokens.append(fresh_access(shopify.runtime, store.id).access_token)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(shopify.fake.calls("refresh_token")) == 1
    assert len(set(tokens)) == 1 and len(tokens) == 3


def test_an_opt_out_sync_whose_retries_ran_out_is_retried_by_the_sweep(shopify):
    from sequences.engine.sweep import run_sweep

    _known_customer(shopify)
    shopify.checkout()
    shopify.run(15 * MIN)
    # Shopify throttles every attempt RQ makes (each attempt waits for the bucket 3 times).
    shopify.fake.throttle_next(4 * 4)
    _stop(shopify, 20 * MIN)
    for minute in (21, 22, 23):
        shopify.run(minute * MIN)
    with shopify.runtime.database.session() as session:
        assert session.exec(select(ConsentEvent)).one().platform_sync == OptOutSync.PENDING
    with shopify.at(25 * MIN):  # failed moments ago: the sweep leaves it to back off
        assert run_sweep(shopify.runtime).opt_out_syncs_queued == 0
    with shopify.at(35 * MIN):
        assert run_sweep(shopify.runtime).opt_out_syncs_queued == 1
        assert run_sweep(shopify.runtime).opt_out_syncs_queued == 0  # queued once, not twice
    shopify.run(35 * MIN)
    with shopify.runtime.database.session() as session:
        assert session.exec(select(ConsentEvent)).one().platform_sync == OptOutSync.DONE


def test_opening_the_app_after_a_lost_uninstall_webhook_gets_a_new_token(shopify):
    shopify.install()
    before = shopify.store().access_token_ciphertext
    shopify.fake.revoke_all(SHOP)  # uninstalled and reinstalled; we never heard of it
    with shopify.at(MIN):
        assert shopify.open_app().status_code == 200
    assert len(shopify.fake.calls("urn:ietf:params:oauth:grant-type:token-exchange")) == 2
    assert shopify.store().access_token_ciphertext != before


def test_several_calls_hitting_a_401_together_refresh_once(shopify):
    import threading

    from sequences.stores.access import call_platform

    store = shopify.install()
    shopify.fake.expire_access_tokens(SHOP)
    barrier = threading.Barrier(3)
    names: list[str] = []

    def worker() -> None:
        barrier.wait()
        names.append(
            call_platform(
                shopify.runtime, store.id, lambda c, a: c.store_details(a), operation="store_details"
            ).name
        )

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert names == ["Bazaar"] * 3
    assert len(shopify.fake.calls("refresh_token")) == 1


def test_the_sweep_renews_a_quiet_shops_token_before_its_refresh_token_lapses(shopify):
    from sequences.engine.sweep import run_sweep

    store = shopify.install()
    with shopify.at(0 * MIN):
        assert run_sweep(shopify.runtime).tokens_renewed == 0  # 90 days left: nothing to do
    with shopify.runtime.database.session() as session:
        row = session.get(Store, store.id)
        row.refresh_token_expires_at = datetime(2026, 12, 2, tzinfo=UTC)  # 4 days after T0
        session.commit()
    with shopify.at(MIN):
        assert run_sweep(shopify.runtime).tokens_renewed == 1
    assert len(shopify.fake.calls("refresh_token")) == 1
    assert shopify.store().refresh_token_expires_at > datetime(2027, 1, 1, tzinfo=UTC)


def test_the_app_home_shows_the_number_template_trouble_and_shoppers_who_replied(shopify):
    from sequences.models import InboundMessage, TemplateStatus
    from sequences.whatsapp.accounts import connect
    from sequences.whatsapp.health import set_template_status

    store = shopify.install()
    assert store.id is not None
    connect(shopify.runtime, store.id, waba_id="1022", phone_number_id="1065", access_token="EAAG" + "x" * 30)
    now = datetime.now(UTC)
    with shopify.runtime.database.locked_session() as session:
        set_template_status(
            session,
            store.id,
            "cart_recovery_image_v1",
            "en",
            TemplateStatus.PAUSED,
            reason="low quality",
            at=now,
        )
        contact = Contact(store_id=store.id, phone_e164="+919876543210", marketing_consent=True)
        session.add(contact)
        session.flush()
        session.add(
            InboundMessage(
                store_id=store.id,
                contact_id=contact.id,
                provider_event_id="h:1",
                kind="text",
                intent="other",
                text="Is COD available?",
                sent_at=now,
            )
        )
    page = shopify.open_app().get_data(as_text=True)
    assert '<span class="pill warn">paused</span> low quality (steps using it wait)' in page
    assert "…3210" in page and "Is COD available?" in page
    assert "9876543210" not in page
