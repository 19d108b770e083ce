"""The merchant's pages in real headless Chromium: standalone (sign-in link) and inside Shopify."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlmodel import select

from app import create_app
from app.admin.session import issue_login_link
from app.wiring import build_runtime
from sequences.models import SettingsChange, Store
from sequences.runtime import Runtime
from tests.servers import free_port
from tests.support.admin import PERIOD, seed_dashboard
from tests.support.browser import chromium_page, screenshot
from tests.support.factories import checkout_payload, make_store, send_webhook
from tests.support.http_server import serving

pytestmark = pytest.mark.browser
HOUR = timedelta(hours=1)
# App Bridge as the Shopify admin provides it, reduced to what cartback uses: session tokens
# minted for the test (the page asks for one per API call) and toasts.
FAKE_APP_BRIDGE = """
window.shopify = {
  idToken: async () => window.__cartbackIdToken,
  toast: {show: (text) => { document.body.dataset.toast = text; }},
};
"""


class Admin:
    def __init__(self, base_url: str, runtime: Runtime, app: Any, drain: Any) -> None:
        self.base_url, self.runtime, self.app, self.drain = base_url, runtime, app, drain

    def store(self, slug: str = "demo-bazaar") -> Store:
        with self.runtime.database.session() as session:
            return session.exec(select(Store).where(Store.platform_store_id == slug)).one()

    def sign_in(self, page: Any, slug: str = "demo-bazaar") -> None:
        link = issue_login_link(self.runtime, self.store(slug).id or 0, "test")
        page.goto(link)
        page.click("button:text('Sign in')")
        page.wait_for_url(f"{self.base_url}/admin")


@pytest.fixture
def admin(settings: Any, database: Any, redis_conn: Any, app_and_runtime: Any, drain: Any) -> Iterator[Admin]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    runtime = build_runtime(settings.with_overrides(app_url=base_url), database=database, redis=redis_conn)
    app = create_app(runtime=runtime)
    make_store(runtime)
    with serving(app, port=port):
        yield Admin(base_url, runtime, app, drain)
    runtime.http.close()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    with chromium_page(tmp_path, width=1280, height=900) as page:
        yield page


def _figure(page: Any, name: str) -> str:
    return str(page.locator(f"[data-figure='{name}'] strong").inner_text()).strip()


def test_the_dashboard_shows_the_exact_figures_of_the_seeded_data(admin: Admin, page: Any) -> None:
    seed_dashboard(admin.runtime, admin.store())
    admin.sign_in(page)

    page.goto(f"{admin.base_url}/admin?from={PERIOD['from']}&to={PERIOD['to']}")

    assert _figure(page, "abandoned") == "7"
    assert _figure(page, "reachable") == "6"
    assert _figure(page, "sent") == "5"
    assert (_figure(page, "delivered"), _figure(page, "read"), _figure(page, "clicked")) == (
        "100.0%",
        "60.0%",
        "40.0%",
    )
    assert _figure(page, "recovered") == "2" and _figure(page, "recovery-rate") == "33.3%"
    # Headline: what the store confirmed; the rest waits for reconciliation, shown apart.
    assert _figure(page, "revenue") == "₹2,499.00" and _figure(page, "pending-revenue") == "₹1,000.00"
    assert _figure(page, "discounts") == "₹100.00"
    assert _figure(page, "cost") == "₹4.30" and _figure(page, "roi") == "813.7×"
    assert _figure(page, "opt-outs") == "25.0%"
    rows = page.locator("#funnel-table tr").all_inner_texts()
    assert [row.split() for row in rows[1:]] == [
        ["1", "4", "4", "2", "1", "1"],
        ["2", "1", "1", "1", "1", "1"],
    ]
    assert "this number cannot receive WhatsApp messages" in page.locator("#failures").inner_text()
    assert page.locator("svg[role=img]").count() == 3
    screenshot(page, "dashboard")


def test_the_dashboard_reads_on_a_phone(admin: Admin, page: Any) -> None:
    seed_dashboard(admin.runtime, admin.store())
    admin.sign_in(page)
    page.set_viewport_size({"width": 390, "height": 844})

    page.goto(f"{admin.base_url}/admin?from={PERIOD['from']}&to={PERIOD['to']}")

    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert _figure(page, "revenue") == "₹2,499.00"
    screenshot(page, "dashboard-phone")


def test_the_csv_export_downloads_the_carts_of_the_period(admin: Admin, page: Any, tmp_path: Path) -> None:
    seed_dashboard(admin.runtime, admin.store())
    admin.sign_in(page)
    page.goto(f"{admin.base_url}/admin?from={PERIOD['from']}&to={PERIOD['to']}")

    with page.expect_download() as download_info:
        page.click("button[data-export=carts]")
    saved = tmp_path / "carts.csv"
    download_info.value.save_as(saved)

    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert sorted(row["checkout_id"] for row in rows) == [f"chk_seed_{n}" for n in range(1, 8)]
    assert {row["checkout_id"]: row["recovered_revenue"] for row in rows if row["recovered_revenue"]} == {
        "chk_seed_1": "2499.00",
        "chk_seed_2": "1000.00",
    }


def test_a_changed_offer_is_carried_by_the_next_message(admin: Admin, page: Any) -> None:
    client = admin.app.test_client()
    start = datetime.now(UTC)
    payload = checkout_payload(updated_at=start)
    # Images the live server serves, so the preview shows the product as the shopper would.
    for line, slug in zip(
        payload["line_items"], ("handloom-cotton-kurta", "block-print-dupatta"), strict=True
    ):
        line["image_url"] = f"{admin.base_url}/demo-store/images/{slug}.svg"
    with time_machine.travel(start, tick=False):
        send_webhook(client, "checkouts/update", payload)
        admin.drain()
    with time_machine.travel(start + timedelta(minutes=16), tick=False):
        admin.drain()
    with time_machine.travel(start + timedelta(minutes=20), tick=True):
        admin.sign_in(page)
        page.goto(f"{admin.base_url}/admin/settings")
        page.fill("[name='steps.1.offer.value']", "250")
        page.fill("[name='steps.1.copy_lines.en']", "Just for you: {offer}")
        page.select_option("#preview-step", "1")
        page.wait_for_function(
            "document.querySelector('#preview .wa-body')?.textContent.includes('Just for you: Claim ₹250 off')"
        )
        preview = page.locator("#preview").inner_text()
        page.click("#save")
        page.wait_for_function("document.getElementById('save-status').textContent.startsWith('Saved')")
        assert page.locator("#preview img").evaluate("img => img.complete && img.naturalWidth > 0")
        screenshot(page, "settings")
    with time_machine.travel(start + 4 * HOUR + timedelta(minutes=1), tick=False):
        admin.drain()

    with admin.runtime.database.session() as session:
        from sequences.models import SandboxOutboxMessage

        bodies = [m.body for m in session.exec(select(SandboxOutboxMessage)).all()]
    assert "Just for you: Claim ₹250 off" in preview and "₹2,198.00" in preview
    assert len(bodies) == 2 and "Just for you: Claim ₹250 off" in bodies[1]
    assert "Complete my order" in preview and "Stop promotions" in preview


def test_invalid_input_shows_the_error_next_to_the_field_and_saves_nothing(admin: Admin, page: Any) -> None:
    admin.sign_in(page)
    page.goto(f"{admin.base_url}/admin/settings")

    page.fill("[name='steps.0.delay_minutes']", "3")
    page.select_option("[name='steps.1.offer.kind']", "percent")
    page.fill("[name='steps.1.offer.value']", "15")
    page.fill("[name='steps.1.offer.max_amount']", "")
    page.click("#save")

    delay_error = page.locator("[data-error-for='steps.0.delay_minutes']")
    delay_error.wait_for()
    assert delay_error.inner_text() == "must be at least 5"
    assert "maximum" in page.locator("[data-error-for='steps.1.offer.max_amount']").inner_text()
    assert page.get_attribute("[name='steps.0.delay_minutes']", "aria-invalid") == "true"
    screenshot(page, "settings-invalid")
    with admin.runtime.database.session() as session:
        assert session.exec(select(SettingsChange)).all() == []
    assert admin.store().settings["steps"][1]["offer"]["kind"] == "fixed"


def test_a_test_message_is_sent_from_the_settings_page(admin: Admin, page: Any) -> None:
    admin.sign_in(page)
    page.goto(f"{admin.base_url}/admin/settings")

    page.fill("#test-phone", "98111 22334")
    page.click("#send-test")

    page.wait_for_function("document.getElementById('test-status').textContent.startsWith('Sent')")
    assert page.locator("#test-status").inner_text() == "Sent to …2334."


def test_carts_are_searched_by_the_phones_last_4_digits_and_opened(admin: Admin, page: Any) -> None:
    seed_dashboard(admin.runtime, admin.store())
    admin.sign_in(page)
    page.goto(f"{admin.base_url}/admin/carts")

    page.fill("#q", "0002")
    page.click("button:text('Search')")
    rows = page.locator("#carts tr").all_inner_texts()[1:]
    screenshot(page, "carts")
    page.click("a:text('chk_seed_2')")

    assert sorted(row.split()[0] for row in rows) == ["chk_seed_2", "chk_seed_7"]
    assert "Cart chk_seed_2" in page.locator("h1").inner_text()
    assert "Order o-1002" in page.content() and "₹299.00 refunded" in page.content()
    screenshot(page, "cart")
    page.click("a:text('…0002')")
    assert "Consent history" in page.content()
    screenshot(page, "contact")


def test_the_admin_without_signing_in_explains_and_shows_nothing(admin: Admin, page: Any) -> None:
    seed_dashboard(admin.runtime, admin.store())

    response = page.goto(f"{admin.base_url}/admin")

    assert response is not None and response.status == 401
    assert "Sign in to cartback" in page.content() and "₹" not in page.content()
    screenshot(page, "sign-in")


# -- inside the Shopify admin -------------------------------------------------------------------------


@pytest.fixture
def shopify_admin(
    settings: Any, database: Any, redis_conn: Any, fake_shopify: Any, app_and_runtime: Any
) -> Iterator[tuple[str, Runtime, Any]]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    runtime = build_runtime(
        settings.with_overrides(
            app_url=base_url,
            shopify_api_key=fake_shopify.client_id,
            shopify_api_secret=fake_shopify.client_secret,
            shopify_admin_url_template=fake_shopify.admin_url_template(),
        ),
        database=database,
        redis=redis_conn,
    )
    app = create_app(runtime=runtime)
    with serving(app, port=port):
        yield base_url, runtime, fake_shopify
    runtime.http.close()


def _embedded_url(base_url: str, fake: Any, path: str = "/") -> str:
    from tests.support.shopify import SHOP

    token = fake.session_token(SHOP)
    return f"{base_url}{path}?embedded=1&shop={SHOP}&host=YWRtaW4uc2hvcGlmeS5jb20vc3RvcmUvYmF6YWFy&id_token={token}"


def test_inside_shopify_the_pages_use_app_bridge_session_tokens(shopify_admin: Any, page: Any) -> None:
    from tests.support.shopify import SHOP

    base_url, runtime, fake = shopify_admin
    page.route(
        "https://cdn.shopify.com/shopifycloud/app-bridge.js",
        lambda route: route.fulfill(status=200, content_type="text/javascript", body=FAKE_APP_BRIDGE),
    )
    page.route(
        "https://cdn.shopify.com/shopifycloud/polaris.js",
        lambda route: route.fulfill(status=200, content_type="text/javascript", body=""),
    )
    page.add_init_script(f"window.__cartbackIdToken = {fake.session_token(SHOP, expires_in=3600)!r};")

    page.goto(_embedded_url(base_url, fake))
    assert "Recovered with cartback" in page.content()
    screenshot(page, "shopify-dashboard")
    page.goto(_embedded_url(base_url, fake, "/admin/settings"))
    page.fill("[name='inactivity_minutes']", "10")
    page.click("#save")
    page.wait_for_function("document.getElementById('save-status').textContent.startsWith('Saved')")

    with runtime.database.session() as session:
        store = session.exec(select(Store).where(Store.platform_store_id == SHOP)).one()
        (change,) = session.exec(select(SettingsChange)).all()
    assert store.settings["inactivity_minutes"] == 10
    assert change.actor.startswith("Shopify user")
    assert page.locator("#scripts-missing").is_hidden()


def test_inside_shopify_the_page_still_reads_when_the_cdn_cannot_load(shopify_admin: Any, page: Any) -> None:
    base_url, _runtime, fake = shopify_admin
    page.route("https://cdn.shopify.com/**", lambda route: route.abort())

    page.goto(_embedded_url(base_url, fake))

    assert "Recovered with cartback" in page.content()
    assert _figure(page, "abandoned") == "0"
    page.locator("#scripts-missing").wait_for()
    assert "did not load" in page.locator("#scripts-missing").inner_text()
    screenshot(page, "shopify-without-cdn")


def test_an_embedded_page_without_its_token_says_what_to_do_when_the_cdn_is_down(
    shopify_admin: Any, page: Any
) -> None:
    from tests.support.shopify import SHOP

    base_url, _runtime, _fake = shopify_admin
    page.route("https://cdn.shopify.com/**", lambda route: route.abort())

    page.goto(
        f"{base_url}/admin/settings?embedded=1&shop={SHOP}&host=YWRtaW4uc2hvcGlmeS5jb20vc3RvcmUvYmF6YWFy"
    )

    assert "/auth/patch-id-token" in page.url
    page.wait_for_function("getComputedStyle(document.querySelector('p.cartback-late')).opacity === '1'")
    assert "reload cartback from your Shopify admin" in page.locator("p.cartback-late").inner_text()


def test_the_sign_in_link_keeps_its_token_out_of_requests_and_the_address_bar(
    admin: Admin, page: Any
) -> None:
    link = issue_login_link(admin.runtime, admin.store().id or 0, "test")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    page.goto(link)
    page.click("button:text('Sign in')")
    page.wait_for_url(f"{admin.base_url}/admin")

    token = link.partition("#token=")[2]
    assert token and all(token not in url for url in requested)
    assert "Recovered with cartback" in page.content()


def test_the_sign_in_page_without_a_link_explains_how_to_get_one(admin: Admin, page: Any) -> None:
    page.goto(f"{admin.base_url}/admin/login")

    assert page.locator("#sign-in").is_hidden()
    assert "cartback admin-link STORE" in page.locator("#no-token").inner_text()


def test_pausing_from_the_settings_page_pauses_sending_and_a_later_save_keeps_it(
    admin: Admin, page: Any
) -> None:
    admin.sign_in(page)
    page.goto(f"{admin.base_url}/admin/settings")

    page.check("[name='sending_paused']")
    page.click("#save")
    page.wait_for_function("document.getElementById('save-status').textContent.startsWith('Saved')")
    page.fill("[name='attribution_days']", "5")
    page.click("#save")
    page.wait_for_function("document.getElementById('save-status').textContent.includes('1 change')")

    store = admin.store()
    assert (store.sending_paused, store.pause_source) == (True, "merchant")
    assert store.settings["attribution_days"] == 5


def test_the_experiments_page_plans_shows_ranges_and_starts_the_next_one(admin: Admin, page: Any) -> None:
    from tests.support.experiments import seed_experiment

    seed_experiment(admin.runtime, admin.store().id or 0)
    admin.sign_in(page)
    page.click("nav.tabs a:text('Experiments')")
    page.wait_for_url(f"{admin.base_url}/admin/experiments")

    assert page.locator("#arms tr[data-arm]").count() == 3
    assert page.locator("#lift-net-control").is_visible() and page.locator("#lift-rate-holdout").is_visible()
    # 15 % against 3 % over 600 and 150 carts: the true lift shows, in green.
    assert page.locator("#lift-rate-holdout [data-lift='₹100 off'] line").get_attribute("stroke") == "#29845a"
    # Each arm's shoppers over 90 days, and which discount pays, experiment by arm.
    assert page.locator("#customer-value tr[data-arm]").count() == 3
    assert page.locator("#calibration").is_visible()
    assert page.locator("#calibration-experiments tr").count() == 3
    page.fill("#baseline", "8")
    page.fill("#mde", "2")
    page.click("#plan")
    page.wait_for_function("document.getElementById('plan-result').textContent.includes('carts per arm')")
    screenshot(page, "experiments")

    page.click("#stop")
    page.wait_for_function("document.querySelector('#results h2').textContent.includes('stopped')")
    page.fill("#name", "A line of our own")
    page.fill("#challenger-line", "Your cart misses you: {offer}")
    page.click("#start")
    page.wait_for_function("document.querySelector('#results h2')?.textContent.includes('A line of our own')")
    assert page.locator("#arms tr[data-arm]").count() == 3
    assert "Holdout (no messages)" in page.locator("#arms").inner_text()


def test_a_bad_challenger_shows_its_error_beside_the_field(admin: Admin, page: Any) -> None:
    admin.sign_in(page)
    page.goto(f"{admin.base_url}/admin/experiments")
    page.fill("#name", "Too soon")
    page.fill("#challenger-delay", "2")
    page.click("#start")
    page.wait_for_function("document.getElementById('start-status').textContent !== 'Starting…'")
    assert page.locator("#experiment-list").count() == 0
    assert page.locator("#start-status").inner_text() or page.locator("[data-error-for] >> text=/./").count()
