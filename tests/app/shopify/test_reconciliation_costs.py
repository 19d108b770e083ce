"""A week of a Shopify store sending through the WhatsApp Cloud API (both fakes): the weekly
reconciliation confirms the revenue to the paisa and compares each day's messaging cost with
what Meta's pricing analytics say it billed, explaining the day that differs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import select

from sequences.engine.sweep import run_sweep
from sequences.models import Message, ReconciliationRun, RunStatus
from tests.app.shopify.test_reconciliation import DAY, _cancel_webhook, _dashboard, _recover, _refund_webhook
from tests.support.shopify import MIN, OFFER_FIRST, T0, ShopifyDriver


@pytest.fixture
def shopify_cloud(
    settings, database, redis_conn, fake_shopify, fake_graph
) -> Iterator[tuple[ShopifyDriver, Any]]:
    """The Shopify store of ``shopify``, its reminders sent through the fake Graph API."""
    from tests.conftest import _drain_queue, cloud_app

    shopify_settings = settings.with_overrides(
        shopify_api_key=fake_shopify.client_id,
        shopify_api_secret=fake_shopify.client_secret,
        shopify_admin_url_template=fake_shopify.admin_url_template(),
    )
    app, runtime, http = cloud_app(shopify_settings, database, redis_conn, fake_graph)
    fake_graph.auto_approve = True
    yield ShopifyDriver(app.test_client(), runtime, fake_shopify, lambda: _drain_queue(runtime)), fake_graph
    http.close()
    runtime.whatsapp_http.close()


def _connect_whatsapp(shopify: ShopifyDriver) -> None:
    from sequences.whatsapp.accounts import connect
    from sequences.whatsapp.template_push import push_templates
    from tests.support.whatsapp import ACCESS_TOKEN, PHONE_NUMBER_ID, WABA_ID

    store = shopify.install(OFFER_FIRST, moment=-60 * MIN)
    assert store.id is not None
    with shopify.at(-60 * MIN):
        connect(
            shopify.runtime,
            store.id,
            waba_id=WABA_ID,
            phone_number_id=PHONE_NUMBER_ID,
            access_token=ACCESS_TOKEN,
        )
        push_templates(shopify.runtime, store.id)


def _deliver_new(shopify: ShopifyDriver, graph: Any, at: timedelta, seen: set[str]) -> None:
    """Meta reports every template message sent since the last call delivered, at ``at``."""
    import json

    from tests.support.whatsapp import APP_SECRET, sign

    for sent in [m for m in graph.sent_messages if m.type == "template" and m.wamid not in seen]:
        seen.add(sent.wamid)
        with shopify.at(at):
            raw = json.dumps(graph.status_for(sent, "delivered")).encode()
            response = shopify.client.post(
                "/webhooks/whatsapp",
                data=raw,
                headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(raw, APP_SECRET)},
            )
            assert response.status_code == 200
            shopify.run(at)


def test_a_week_of_a_shopify_store_reconciles_revenue_and_meta_charges(shopify_cloud):
    shopify, graph = shopify_cloud
    from tests.support.whatsapp import WABA_ID

    _connect_whatsapp(shopify)
    seen: set[str] = set()
    orders: dict[str, str] = {}
    for n, (total, cod) in enumerate(
        [("4696.00", False), ("3297.00", False), ("2500.00", False), ("1800.00", True), ("999.00", True)],
        start=1,
    ):
        orders[str(n)] = _recover(shopify, n, total, at=(n - 1) * DAY, cod=cod)
        _deliver_new(shopify, graph, (n - 1) * DAY + 16 * MIN, seen)
    assert len(seen) == 5
    _refund_webhook(shopify, orders["2"], "1499.00", 4 * DAY + 60 * MIN)
    _cancel_webhook(shopify, orders["3"], 5 * DAY)
    _cancel_webhook(shopify, orders["4"], 6 * DAY, reason="DECLINED")
    # Meta billed one marketing message on 1 Dec that cartback never saw delivered (a status
    # webhook lost, say): that day's figures differ.
    graph.bill(WABA_ID, at=T0 + 3 * DAY + 5 * 60 * MIN)
    with shopify.runtime.database.session() as session:
        costs = [m.cost for m in session.exec(select(Message)).all()]
    assert costs == [Decimal("0.86")] * 5

    with shopify.at(7 * DAY):
        assert run_sweep(shopify.runtime).reconciliations_queued == 1
    shopify.run(7 * DAY)

    with shopify.runtime.database.session() as session:
        [run] = session.exec(select(ReconciliationRun)).all()
    assert run.status == RunStatus.DONE, run.problem
    hand_reconciled = Decimal("4696.00") + Decimal("3297.00") - Decimal("1499.00")
    assert Decimal(run.report["orders"]["confirmed_amount"]) == hand_reconciled == Decimal("6494.00")
    assert Decimal(_dashboard(shopify, 7 * DAY)["revenue"]["reconciled"]) == hand_reconciled

    messaging = run.report["messaging"]
    assert messaging["available"] and messaging["currency"] == "INR"
    assert [d["day"] for d in messaging["days"]] == [
        f"2026-{m:02d}-{d:02d}" for m, d in [(11, 28), (11, 29), (11, 30), (12, 1), (12, 2), (12, 3), (12, 4)]
    ]
    differing = [d for d in messaging["days"] if d["explanation"]]
    assert [d["day"] for d in differing] == ["2026-12-01"]
    [day] = differing
    assert (day["recorded_messages"], day["meta_messages"]) == (1, 2)
    assert (day["recorded_cost"], day["meta_cost"], day["difference"]) == ("0.8600", "1.72", "0.8600")
    assert "Meta billed 1 more message(s) than cartback saw delivered" in day["explanation"]
    # Five delivered and one more billed, at ₹0.86: ₹5.16, and 18 % GST on Meta's invoice.
    assert (messaging["recorded_cost"], messaging["meta_cost"]) == ("4.30", "5.16")
    assert (messaging["gst_percent"], messaging["gst"], messaging["meta_cost_with_gst"]) == (
        "18",
        "0.93",
        "6.09",
    )

    # The page shows the report: the differing day and its reason, the GST.
    from tests.support.admin import sign_in

    with shopify.at(7 * DAY):
        sign_in(shopify.client, shopify.runtime, shopify.store().id)
        page = shopify.client.get("/admin/reconciliation").get_data(as_text=True)
    assert "Meta billed 1 more message(s)" in page and "GST at 18 %" in page and "6.09" in page


def test_meta_refusing_the_analytics_leaves_the_revenue_reconciled_and_says_why(shopify_cloud):
    shopify, graph = shopify_cloud
    _connect_whatsapp(shopify)
    order_id = _recover(shopify, 1, "4696.00", at=0 * MIN)
    from tests.support.whatsapp import ACCESS_TOKEN

    graph.revoke_token(ACCESS_TOKEN)
    with shopify.at(DAY):
        assert run_sweep(shopify.runtime).reconciliations_queued == 1
    shopify.run(DAY)
    with shopify.runtime.database.session() as session:
        [run] = session.exec(select(ReconciliationRun)).all()
    assert run.status == RunStatus.DONE
    assert run.report["orders"]["confirmed_amount"] == "4696.00" and order_id
    assert not run.report["messaging"]["available"]
    assert "Meta refused the pricing analytics" in run.report["messaging"]["note"]
