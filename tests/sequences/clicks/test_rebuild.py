"""The click's stages, called as a job or a view would (no Flask): what is answered under the
cart's lock, what the platform is asked, and what is written down after.

The web face of the same link is tested in tests/app/test_recovery_links.py.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlmodel import col, select

from demo.store.models import DemoDiscount
from sequences.clicks.discounts import decide_discount
from sequences.clicks.rebuild import ClickResult, Notice, handle_click
from sequences.merchant.store_settings import Offer, StepSetting, StoreSettings
from sequences.models import Cart, CartLine, CartStatus, Discount, LinkClick, Message
from tests.support.factories import make_store, order_payload
from tests.support.journey import Journey

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
# ₹100 off carts of ₹999 or more, for 48 hours from the first message (sent at 15 minutes).
OFFER = Offer(kind="fixed", value=Decimal("100"), min_subtotal=Decimal("999"))
OFFER_NOW = StoreSettings(quiet_hours_enabled=False, steps=[StepSetting(delay_minutes=15, offer=OFFER)])


@pytest.fixture
def journey(client, runtime, drain) -> Journey:
    """The default shopper's ₹2,198 cart, abandoned, its first message (with the offer) sent."""
    make_store(runtime, settings=OFFER_NOW)
    j = Journey(client, runtime, drain)
    j.checkout()
    j.run(15 * MIN)
    return j


def click(journey: Journey, moment: timedelta) -> ClickResult:
    with journey.at(moment):
        return handle_click(journey.runtime, journey.link_path().removeprefix("/r/"))


def ledger(journey: Journey) -> list[str]:
    with journey.runtime.database.session() as session:
        return [row.outcome for row in session.exec(select(LinkClick).order_by(col(LinkClick.id))).all()]


def discounts(journey: Journey) -> list[Discount]:
    with journey.runtime.database.session() as session:
        return list(session.exec(select(Discount)).all())


def codes_on_the_platform(journey: Journey) -> int:
    with journey.runtime.database.session() as session:
        return len(session.exec(select(DemoDiscount)).all())


def step_checkout_url(journey: Journey) -> str | None:
    return journey.steps()[0].checkout_url


# -- answered under the lock ---------------------------------------------------------------


def test_a_step_already_rebuilt_is_answered_from_its_cached_checkout_with_the_same_code(journey):
    first = click(journey, 20 * MIN)
    again = click(journey, 25 * MIN)
    assert again.outcome == "redirected (cached)"
    assert again.redirect_url == first.redirect_url == step_checkout_url(journey)
    assert again.discount_code == first.discount_code is not None
    assert codes_on_the_platform(journey) == 1
    assert ledger(journey) == ["redirected", "cached"]
    assert journey.events().count("checkout_rebuilt") == 1


def test_a_bought_cart_sends_the_shopper_to_the_store_and_makes_no_code(journey):
    journey.webhook(30 * MIN, "orders/create", order_payload(total="2198.00"))
    assert journey.cart().status in (CartStatus.RECOVERED, CartStatus.CONVERTED_UNASSISTED)
    result = click(journey, 40 * MIN)
    assert result == ClickResult(
        "http://localhost/demo-store/?cartback_notice=already_ordered",
        "already ordered",
        Notice.ALREADY_ORDERED,
    )
    assert discounts(journey) == [] and codes_on_the_platform(journey) == 0
    assert ledger(journey) == ["already_ordered"]
    assert "link_clicked" not in journey.events()


def test_a_link_past_the_stores_lifetime_still_counts_as_clicked_but_rebuilds_nothing(journey):
    result = click(journey, timedelta(days=8))
    assert result.outcome == "link expired" and result.notice == Notice.LINK_EXPIRED
    assert result.redirect_url == "http://localhost/demo-store/checkout/tok_1?cartback_notice=link_expired"
    assert journey.messages()[0].clicked_at is not None
    assert ledger(journey) == ["expired"]
    assert discounts(journey) == [] and step_checkout_url(journey) is None


# -- the discount decided under the lock ---------------------------------------------------


def test_a_cached_checkout_whose_code_ran_out_is_rebuilt_without_the_code(journey):
    first = click(journey, 20 * MIN)
    assert first.discount_code is not None
    result = click(journey, 15 * MIN + 49 * HOUR)
    assert result.outcome == "redirected" and result.notice == Notice.OFFER_EXPIRED
    assert result.discount_code is None
    assert result.redirect_url is not None and "discount=" not in result.redirect_url
    assert "discount=" not in (step_checkout_url(journey) or "discount=")
    assert codes_on_the_platform(journey) == 1
    assert ledger(journey) == ["redirected", "redirected"]


def test_a_first_click_writes_the_steps_code_lasting_the_offers_hours_from_the_message(journey, runtime):
    message = journey.messages()[0]
    assert message.sent_at is not None
    with runtime.database.session() as session:
        cart = session.exec(select(Cart)).one()
        decided = decide_discount(
            session,
            existing=None,
            offer=OFFER,
            store_id=cart.store_id,
            cart=cart,
            step_number=1,
            sent_at=message.sent_at,
            now=message.sent_at + HOUR,
            time_scale=1,
        )
    assert decided.discount is not None and not decided.offer_expired
    [row] = discounts(journey)
    assert row.code == decided.discount.code and row.code.startswith("CB-")
    assert row.ends_at == message.sent_at + 48 * HOUR and row.platform_discount_id is None


@pytest.mark.parametrize(
    ("existing_ends_after", "clicked_after", "kept", "offer_expired"),
    [
        pytest.param(None, 48 * HOUR, False, True, id="offer-hours-ran-out-before-any-code"),
        pytest.param(48 * HOUR, HOUR, True, False, id="an-earlier-clicks-code-still-runs"),
        pytest.param(48 * HOUR, 48 * HOUR, False, True, id="an-earlier-clicks-code-ran-out"),
    ],
)
def test_the_offer_runs_for_its_hours_from_the_message(
    journey, runtime, existing_ends_after, clicked_after, kept, offer_expired
):
    sent_at = journey.messages()[0].sent_at
    assert sent_at is not None
    with runtime.database.session() as session:
        cart = session.exec(select(Cart)).one()
        existing = None
        if existing_ends_after is not None:
            existing = Discount(
                store_id=cart.store_id,
                cart_id=cart.id,
                step_number=1,
                code="CB-EARLIER1",
                kind="fixed",
                value=Decimal("100"),
                currency="INR",
                ends_at=sent_at + existing_ends_after,
            )
        decided = decide_discount(
            session,
            existing=existing,
            offer=OFFER,
            store_id=cart.store_id,
            cart=cart,
            step_number=1,
            sent_at=sent_at,
            now=sent_at + clicked_after,
            time_scale=1,
        )
    assert (decided.discount is existing is not None) == kept
    assert decided.offer_expired == offer_expired
    assert discounts(journey) == []


def test_a_cart_below_the_offers_minimum_gets_no_code_and_no_note(journey, runtime):
    sent_at = journey.messages()[0].sent_at
    assert sent_at is not None
    for_bigger_carts = OFFER.model_copy(update={"min_subtotal": Decimal("2199")})
    with runtime.database.session() as session:
        cart = session.exec(select(Cart)).one()
        decided = decide_discount(
            session,
            existing=None,
            offer=for_bigger_carts,
            store_id=cart.store_id,
            cart=cart,
            step_number=1,
            sent_at=sent_at,
            now=sent_at + HOUR,
            time_scale=1,
        )
    assert decided.discount is None and not decided.offer_expired
    assert discounts(journey) == []


# -- the platform, outside the lock, and what is written down after -------------------------


def test_a_code_made_before_the_rebuild_failed_is_kept_and_never_made_twice(journey, runtime):
    # Given a cart the platform can neither find nor rebuild from its lines.
    with runtime.database.session() as session:
        for line in session.exec(select(CartLine)).all():
            session.delete(line)
    failed = click(journey, 20 * MIN)
    assert failed == ClickResult(
        "http://localhost/demo-store/checkout/tok_1?cartback_notice=offer_unavailable",
        "fallback",
        Notice.OFFER_UNAVAILABLE,
    )
    [row] = discounts(journey)
    assert row.platform_discount_id is not None
    assert step_checkout_url(journey) is None  # nothing cached: the next click tries again
    click(journey, 25 * MIN)
    assert codes_on_the_platform(journey) == 1
    assert ledger(journey) == ["fallback", "fallback"]
    assert "checkout_rebuilt" not in journey.events()


def test_the_click_is_counted_once_however_often_the_link_is_tapped(journey):
    click(journey, 20 * MIN)
    first_clicked_at = journey.messages()[0].clicked_at
    click(journey, 30 * MIN)
    with journey.runtime.database.session() as session:
        assert session.exec(select(Message)).one().clicked_at == first_clicked_at
