"""A shopper's whole journey in a real headless Chromium against a real HTTP server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine

from app import create_app
from app.wiring import build_runtime
from demo.store.seed import seed_demo_store
from sequences.models import CartStatus
from tests.servers import free_port
from tests.support.browser import chromium_page
from tests.support.http_server import serving

pytestmark = pytest.mark.browser


@pytest.fixture
def live(settings, database, redis_conn, app_and_runtime) -> Iterator[tuple[str, Any]]:
    """The app on a real port; built after the in-process one so jobs run with this runtime."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    runtime = build_runtime(settings.with_overrides(app_url=base_url), database=database, redis=redis_conn)
    app = create_app(runtime=runtime)
    seed_demo_store(runtime)
    with serving(app, port=port):
        yield base_url, runtime
    runtime.http.close()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    with chromium_page(tmp_path) as page:
        yield page


def test_a_shopper_abandons_gets_the_message_clicks_and_buys_with_the_discount(live, page, drain):
    base_url, runtime = live
    # Given a shopper who fills a cart, leaves a WhatsApp number with consent, and goes quiet
    page.goto(f"{base_url}/demo-store/")
    assert "Simulation" in page.content()
    page.locator("form:has(button:text('Add to cart'))").nth(0).locator("button").click()
    page.goto(f"{base_url}/demo-store/")
    page.locator("form:has(button:text('Add to cart'))").nth(1).locator("button").click()
    page.fill("#first_name", "Asha")
    page.fill("#phone", "98765 43210")
    page.check("input[name=accepts_marketing]")
    page.click("button:text('Save details')")
    drain()

    # When 16 quiet minutes pass
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=16), tick=True):
        drain()
        # Then the outbox shows the WhatsApp message with its image, text and buttons
        page.goto(f"{base_url}/outbox")
        bubble = page.locator("article").first
        assert "Hi Asha, you left Handloom Cotton Kurta and 1 more" in bubble.inner_text()
        assert bubble.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")
        link = bubble.locator(".buttons a").first
        assert "Claim ₹100 off!" in bubble.inner_text()
        # Meta's template buttons carry fixed words; the offer is in the body
        assert link.inner_text().strip().startswith("↗ Complete my order")

        # And its button opens the shopper's checkout with the discount applied, no login
        page.goto(link.get_attribute("href"))
        assert "/demo-store/checkout/" in page.url
        checkout = page.content()
        assert "−₹100.00" in checkout or "-₹100.00" in checkout
        assert "₹2,098.00" in checkout

        # When the shopper places the order, the cart counts as recovered with its revenue
        page.click("button:text('Place order')")
        assert "₹2,098.00" in page.content()
        drain()
    with runtime.database.session() as session:
        from sqlmodel import select

        from sequences.models import Cart

        cart = session.exec(select(Cart)).one()
    assert cart.status == CartStatus.RECOVERED
    assert str(cart.order_total) in ("2098.00", "2098.0000", "2098")


def test_a_broken_link_shows_a_friendly_page_in_the_browser(live, page):
    base_url, _runtime = live
    response = page.goto(f"{base_url}/r/garbage-token")
    assert response is not None and response.status == 404
    assert page.locator("h1").inner_text() == "This link isn't valid"
