"""GET /r/<token>: click recorded, discount made once, checkout rebuilt, never an error page."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlmodel import select

from sequences.clicks.links import LinkSigner
from sequences.merchant.store_settings import Offer, StepSetting, StoreSettings
from sequences.models import Discount, LinkClick
from tests.support.factories import make_store
from tests.support.journey import Journey

MIN = timedelta(minutes=1)
OFFER_NOW = StoreSettings(
    quiet_hours_enabled=False,
    steps=[StepSetting(delay_minutes=15, offer=Offer(kind="fixed", value="100", min_subtotal="999"))],
)


def platform_checkout(runtime) -> None:
    """The checkout as the demo platform holds it (what the webhook payload described)."""
    from demo.store.models import DemoCheckout

    with runtime.database.session() as session:
        session.add(
            DemoCheckout(
                id="chk_1",
                token="tok_1",
                lines=[{"variant_id": 8001, "qty": 1}, {"variant_id": 8002, "qty": 1}],
                first_name="Asha",
                phone="+919876543210",
                accepts_marketing=True,
            )
        )


@pytest.fixture
def journey(client, runtime, drain) -> Journey:
    make_store(runtime, settings=OFFER_NOW)
    platform_checkout(runtime)
    j = Journey(client, runtime, drain)
    j.checkout()
    j.run(15 * MIN)
    return j


def clicks(runtime) -> list[LinkClick]:
    with runtime.database.session() as session:
        return list(session.exec(select(LinkClick)).all())


def test_a_click_lands_on_the_shoppers_own_checkout_with_the_discount_applied(journey, client, runtime):
    with journey.at(20 * MIN):
        response = client.get(journey.link_path())
    assert response.status_code == 303
    location = urlsplit(response.headers["Location"])
    assert location.path == "/demo-store/checkout/tok_1"
    code = parse_qs(location.query)["discount"][0]
    with runtime.database.session() as session:
        discount = session.exec(select(Discount)).one()
    assert discount.code == code and discount.platform_discount_id
    assert discount.ends_at == journey.messages()[0].sent_at + timedelta(hours=48)
    assert [click.outcome for click in clicks(runtime)] == ["redirected"]
    assert "checkout_rebuilt" in journey.events()


def test_the_rebuilt_checkout_shows_the_discounted_total(journey, client):
    with journey.at(20 * MIN):
        landing = client.get(journey.link_path(), follow_redirects=True)
    page = landing.get_data(as_text=True)
    assert landing.status_code == 200
    assert "₹2,098.00" in page


def test_a_second_click_reuses_the_same_code(journey, client, runtime):
    with journey.at(20 * MIN):
        first = client.get(journey.link_path()).headers["Location"]
        second = client.get(journey.link_path()).headers["Location"]
    assert first == second
    with runtime.database.session() as session:
        assert len(session.exec(select(Discount)).all()) == 1
    assert [click.outcome for click in clicks(runtime)] == ["redirected", "cached"]


def test_no_discount_is_created_until_someone_clicks(journey, runtime):
    with runtime.database.session() as session:
        assert session.exec(select(Discount)).all() == []


def test_a_tampered_token_shows_a_friendly_page_not_an_error(journey, client):
    path = journey.link_path()
    response = client.get(path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB"), follow_redirects=False)
    assert response.status_code in (303, 404)
    if response.status_code == 303:
        assert "cartback_notice=link_invalid" in response.headers["Location"]
    else:
        assert "isn't valid" in response.get_data(as_text=True)


def test_garbage_instead_of_a_token_shows_a_friendly_page(client, journey):
    response = client.get("/r/not-a-token-at-all")
    assert response.status_code == 404
    assert "This link isn't valid" in response.get_data(as_text=True)


def test_an_expired_link_lands_on_the_shoppers_cart_with_a_note(journey, client):
    with journey.at(timedelta(days=8)):
        response = client.get(journey.link_path())
    assert response.status_code == 303
    assert (
        response.headers["Location"]
        == "http://localhost/demo-store/checkout/tok_1?cartback_notice=link_expired"
    )


def test_a_link_past_its_signed_lifetime_also_lands_on_the_cart(journey, client):
    with journey.at(timedelta(days=31)):
        response = client.get(journey.link_path())
    assert (
        response.headers["Location"]
        == "http://localhost/demo-store/checkout/tok_1?cartback_notice=link_expired"
    )


def test_a_checkout_the_platform_no_longer_has_is_rebuilt_from_a_cart_permalink(journey, client, runtime):
    from demo.store.models import DemoCheckout

    with runtime.database.session() as session:
        session.delete(session.get(DemoCheckout, "chk_1"))
    with journey.at(20 * MIN):
        location = urlsplit(client.get(journey.link_path()).headers["Location"])
    assert location.path == "/demo-store/cart/v0:1,v1:1"
    assert parse_qs(location.query)["discount"][0].startswith("CB-")


def test_a_click_after_the_offer_expired_opens_the_checkout_without_a_discount(journey, client, runtime):
    with journey.at(timedelta(days=3)):
        response = client.get(journey.link_path())
    location = response.headers["Location"]
    assert "discount=" not in location
    assert "cartback_notice=offer_expired" in location


def test_links_signed_before_a_secret_rotation_still_work(journey, client, runtime):
    token = journey.link_path().removeprefix("/r/")
    runtime.links = LinkSigner(["test-secret-key", "a-brand-new-key"])
    with journey.at(20 * MIN):
        response = client.get(f"/r/{token}")
    assert urlsplit(response.headers["Location"]).path == "/demo-store/checkout/tok_1"


def test_a_link_signed_with_an_unknown_key_is_refused(journey, client, runtime):
    token = journey.link_path().removeprefix("/r/")
    runtime.links = LinkSigner(["a-brand-new-key"])
    response = client.get(f"/r/{token}")
    assert (
        "cartback_notice=link_invalid" in response.headers.get("Location", "") or response.status_code == 404
    )


def test_the_token_carries_no_personal_data(journey):
    import base64

    token = journey.link_path().removeprefix("/r/")
    payload = token.split(".")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    assert decoded.startswith("[") and "98765" not in decoded and "@" not in decoded


def test_a_click_after_the_order_lands_on_the_store_not_a_second_checkout(journey, client):
    from tests.support.factories import order_payload

    journey.webhook(30 * MIN, "orders/create", order_payload(total="2098.00"))
    with journey.at(40 * MIN):
        response = client.get(journey.link_path())
    assert "cartback_notice=already_ordered" in response.headers["Location"]


def test_an_order_using_our_code_credits_the_messaged_cart_even_from_a_rebuilt_checkout(
    journey, client, runtime
):
    from sequences.models import CartStatus
    from tests.support.factories import order_payload

    with journey.at(20 * MIN):
        location = client.get(journey.link_path()).headers["Location"]
    code = parse_qs(urlsplit(location).query)["discount"][0]
    # The platform rebuilt the cart as a new checkout (permalink), which it reports first.
    journey.checkout(21 * MIN, checkout_id="chk_new", token="tok_new", phone=None)
    journey.webhook(
        22 * MIN,
        "orders/create",
        order_payload(checkout_id="chk_new", token="tok_new", codes=[code], total="2098.00"),
    )
    assert journey.cart("chk_1").status == CartStatus.RECOVERED
    assert journey.cart("chk_new").status == CartStatus.ACTIVE
