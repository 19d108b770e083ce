"""Reconciliation on Shopify: refunds, cancellations and COD returns, between runs (webhooks)
and in the weekly run, against the fake Shopify; the report, the dashboard, the page, the command."""

from __future__ import annotations

import copy
from datetime import timedelta
from decimal import Decimal
from typing import Any

from click.testing import CliRunner
from sqlmodel import select

from sequences.engine.sweep import run_sweep
from sequences.models import CartEvent, CartStatus, ReconciliationRun, RunStatus, RunTrigger
from sequences.reconciliation import runs
from tests.support.shopify import MIN, OFFER_FIRST, T0, fixture, iso

DAY = timedelta(days=1)


def _checkout(n: int) -> dict[str, Any]:
    """Shopper ``n``'s checkout: the fixture's, with a token, cart and phone of their own."""
    payload = copy.deepcopy(fixture("checkouts_create"))
    phone = f"+91987654{3200 + n}"
    payload.update(
        token=f"{n:02d}" + payload["token"][2:],
        cart_token=f"{n:02d}" + payload["cart_token"][2:],
        sms_marketing_phone=phone,
    )
    for address in ("shipping_address", "billing_address"):
        payload[address]["phone"] = phone
    payload["customer"] = payload["customer"] | {
        "id": 7000 + n,
        "phone": phone,
        "email": f"shopper{n}@example.com",
    }
    payload["email"] = f"shopper{n}@example.com"
    return payload


def _recover(shopify: Any, n: int, total: str, *, at: timedelta, cod: bool = False) -> str:
    """Shopper ``n`` abandons at ``at``, is messaged 15 minutes later and orders 30 minutes
    later for ``total``; the fake Shopify holds the order. Returns the order id."""
    changes = {k: v for k, v in _checkout(n).items() if k not in ("updated_at", "name")}
    checkout = shopify.checkout(at, **changes)
    shopify.run(at + 15 * MIN)
    order_id = str(6104829370000 + n)
    money = {
        "shop_money": {"amount": total, "currency_code": "INR"},
        "presentment_money": {"amount": total, "currency_code": "INR"},
    }
    order = fixture("orders_create") | {
        "id": int(order_id),
        "checkout_token": checkout["token"],
        "cart_token": checkout["cart_token"],
        "created_at": iso(T0 + at + 30 * MIN),
        "total_price": total,
        "total_price_set": money,
        "discount_codes": [],
        "phone": checkout["sms_marketing_phone"],
        "payment_gateway_names": ["Cash on Delivery (COD)"]
        if cod
        else ["Razorpay Secure (UPI, Cards, Wallets, NetBanking)"],
        "financial_status": "pending" if cod else "paid",
    }
    shopify.fake.add_order(int(order_id), total=total, cash_on_delivery=cod)
    response = shopify.webhook(at + 30 * MIN, "orders/create", order)
    assert response.status_code == 200
    assert shopify.cart(checkout["token"]).status == CartStatus.RECOVERED
    return order_id


def _refund_webhook(shopify: Any, order_id: str, amount: str, at: timedelta) -> Any:
    shopify.fake.refund_order(int(order_id), amount)
    refund = fixture("refunds_create") | {"order_id": int(order_id)}
    refund["transactions"] = [refund["transactions"][0] | {"amount": amount, "order_id": int(order_id)}]
    return shopify.webhook(at, "refunds/create", refund)


def _cancel_webhook(shopify: Any, order_id: str, at: timedelta, *, reason: str = "CUSTOMER") -> Any:
    with shopify.at(at):
        shopify.fake.cancel_order(int(order_id), reason=reason)
    body = fixture("orders_cancelled") | {"id": int(order_id), "cancel_reason": reason.lower()}
    return shopify.webhook(at, "orders/cancelled", body)


def _dashboard(shopify: Any, at: timedelta) -> dict[str, Any]:
    from tests.support.admin import sign_in

    with shopify.at(at):
        sign_in(shopify.client, shopify.runtime, shopify.store().id)
        answer = shopify.client.get("/api/dashboard", query_string={"from": "2026-11-28", "to": "2026-12-05"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()


def test_a_refund_webhook_reads_the_order_again_and_records_what_shopify_says(shopify):
    shopify.install(OFFER_FIRST)
    order_id = _recover(shopify, 1, "3297.00", at=0 * MIN)
    cart_token = _checkout(1)["token"]
    assert shopify.cart(cart_token).order_verified_at is None  # not confirmed yet: pending

    response = _refund_webhook(shopify, order_id, "1499.00", 2 * DAY)
    assert response.status_code == 200
    cart = shopify.cart(cart_token)
    assert cart.order_refunded == Decimal("1499.00") and cart.order_verified_at is not None
    assert cart.order_financial_status == "partially_refunded"
    reads = len(shopify.fake.calls("CartbackOrderStatuses"))
    with shopify.runtime.database.session() as session:
        [event] = session.exec(select(CartEvent).where(CartEvent.kind == "order_reconciled")).all()
    assert event.detail["change"] == "partly_refunded" and "₹1,499.00" in event.detail["explanation"]

    # Shopify sends the same refund again (a retry, a duplicate): nothing changes, nothing is
    # read again.
    body = fixture("refunds_create") | {"order_id": int(order_id)}
    body["transactions"] = [body["transactions"][0] | {"amount": "1499.00", "order_id": int(order_id)}]
    with shopify.at(2 * DAY):
        first = shopify.post("refunds/create", body, webhook_id="refund-1")
        again = shopify.post("refunds/create", body, webhook_id="refund-1")
        shopify.run(2 * DAY)
    assert first.status_code == again.status_code == 200
    assert shopify.cart(cart_token).order_refunded == Decimal("1499.00")
    assert len(shopify.fake.calls("CartbackOrderStatuses")) == reads

    # An order nobody recovered: acknowledged, never read.
    other = fixture("refunds_create") | {"order_id": 999}
    assert shopify.webhook(2 * DAY, "refunds/create", other).status_code == 200
    assert len(shopify.fake.calls("CartbackOrderStatuses")) == reads


def test_a_cod_parcel_returned_to_origin_takes_its_revenue_back(shopify):
    shopify.install(OFFER_FIRST)
    order_id = _recover(shopify, 2, "1800.00", at=0 * MIN, cod=True)
    _cancel_webhook(shopify, order_id, 3 * DAY, reason="DECLINED")
    cart = shopify.cart(_checkout(2)["token"])
    assert cart.order_cancelled_at is not None and cart.order_verified_at is not None
    assert cart.order_financial_status == "voided"
    revenue = _dashboard(shopify, 3 * DAY)["revenue"]
    assert (revenue["reconciled"], revenue["pending_reconciliation"]) == ("0.00", "0.00")


def test_a_week_of_orders_reconciles_to_the_paisa(shopify):
    """Recovered orders over a week: one paid, one partly refunded, one cancelled, a COD parcel
    returned, a COD order still in transit. The weekly run's report and the dashboard's
    reconciled revenue equal the figure worked out by hand."""
    shopify.install(OFFER_FIRST)
    paid = _recover(shopify, 1, "4696.00", at=0 * MIN)
    refunded = _recover(shopify, 2, "3297.00", at=1 * DAY)
    cancelled = _recover(shopify, 3, "2500.00", at=2 * DAY)
    returned = _recover(shopify, 4, "1800.00", at=3 * DAY, cod=True)
    in_transit = _recover(shopify, 5, "999.00", at=4 * DAY, cod=True)
    _refund_webhook(shopify, refunded, "1499.00", 4 * DAY + 60 * MIN)
    _cancel_webhook(shopify, cancelled, 5 * DAY)
    _cancel_webhook(shopify, returned, 6 * DAY, reason="DECLINED")
    shopify.fake.refund_order(int(paid), "0.00")  # nothing changed for the paid one

    # Before the weekly run, the paid order was never confirmed: pending, apart.
    revenue = _dashboard(shopify, 6 * DAY + 60 * MIN)["revenue"]
    assert revenue["reconciled"] == "1798.00"  # the refunded one, read again after its webhook
    assert revenue["pending_reconciliation"] == "5695.00"  # 4696 + 999

    # The weekly sweep: a run for the store, its job read every recovered order again.
    with shopify.at(7 * DAY):
        assert run_sweep(shopify.runtime).reconciliations_queued == 1
    shopify.run(7 * DAY)
    with shopify.runtime.database.session() as session:
        [run] = session.exec(select(ReconciliationRun)).all()
    assert run.status == RunStatus.DONE and run.trigger == RunTrigger.SCHEDULE
    assert (run.orders_done, run.orders_total) == (5, 5)
    orders = run.report["orders"]
    hand_reconciled = Decimal("4696.00") + (Decimal("3297.00") - Decimal("1499.00"))
    assert Decimal(orders["confirmed_amount"]) == hand_reconciled == Decimal("6494.00")
    assert (orders["checked"], orders["confirmed"], orders["pending"]) == (5, 4, 1)
    assert (orders["pending_amount"], orders["placed_amount"]) == ("999.00", "13292.00")
    kinds = {d["order_id"]: (d["kind"], d["amount"]) for d in run.report["differences"]}
    assert kinds == {
        refunded: ("partly_refunded", "-1499.00"),
        cancelled: ("cancelled", "-2500.00"),
        returned: ("cod_returned", "-1800.00"),
        in_transit: ("awaiting_payment", None),
    }
    explained = {d["order_id"]: d["explanation"] for d in run.report["differences"]}
    assert "returned to origin" in explained[returned] and "customer" in explained[cancelled]
    assert "cash on delivery not collected" in explained[in_transit]

    revenue = _dashboard(shopify, 7 * DAY)["revenue"]
    assert Decimal(revenue["reconciled"]) == hand_reconciled
    assert revenue["pending_reconciliation"] == "999.00"

    # The courier collects the COD order; the next week's run confirms it.
    shopify.fake.collect_payment(int(in_transit))
    with shopify.at(14 * DAY):
        assert run_sweep(shopify.runtime).reconciliations_queued == 1
        assert run_sweep(shopify.runtime).reconciliations_queued == 0  # once a week, not once a minute
    shopify.run(14 * DAY)
    revenue = _dashboard(shopify, 14 * DAY)["revenue"]
    assert Decimal(revenue["reconciled"]) == hand_reconciled + Decimal("999.00")
    assert revenue["pending_reconciliation"] == "0.00"


def test_a_run_the_platform_refuses_fails_with_the_reason_and_changes_nothing(shopify):
    shopify.install(OFFER_FIRST)
    order_id = _recover(shopify, 1, "4696.00", at=0 * MIN)
    shopify.fake.refund_order(int(order_id), "100.00")
    shopify.fake.fail_next(
        "CartbackOrderStatuses",
        [{"message": "Internal error", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}],
    )
    with shopify.at(DAY):
        run = runs.open_run(shopify.runtime, shopify.store().id, RunTrigger.COMMAND, enqueue=False)
        assert run.id is not None
        done = runs.execute(shopify.runtime, run.id)
    assert done is not None and done.status == RunStatus.FAILED
    assert "could not read orders" in (done.problem or "")
    assert shopify.cart(_checkout(1)["token"]).order_refunded is None
    # The failed run is over: the next one may start.
    with shopify.at(DAY + MIN):
        again = runs.open_run(shopify.runtime, shopify.store().id, RunTrigger.MERCHANT, enqueue=False)
    assert again.id != run.id


def test_one_open_run_per_store_and_a_dead_worker_does_not_block_the_next(shopify):
    store = shopify.install(OFFER_FIRST)
    with shopify.at(0 * MIN):
        first = runs.open_run(shopify.runtime, store.id, RunTrigger.SCHEDULE, enqueue=False)
        second = runs.open_run(shopify.runtime, store.id, RunTrigger.MERCHANT, enqueue=False)
    assert first.id == second.id
    with shopify.runtime.database.engine.begin() as connection:
        from sqlalchemy import update

        connection.execute(
            update(ReconciliationRun)
            .where(ReconciliationRun.id == first.id)
            .values(status=RunStatus.RUNNING, started_at=T0)
        )
    with shopify.at(3 * 60 * MIN):
        run_sweep(shopify.runtime)
    with shopify.runtime.database.session() as session:
        stale = session.get(ReconciliationRun, first.id)
    assert stale is not None and stale.status == RunStatus.FAILED and "worker" in (stale.problem or "")


def test_the_reconcile_command_reports_progress_and_each_difference(shopify, monkeypatch):
    shopify.install(OFFER_FIRST)
    order_id = _recover(shopify, 1, "4696.00", at=0 * MIN)
    shopify.fake.refund_order(int(order_id), "696.00")
    from app.cli import main as cli

    monkeypatch.setattr("app.wiring.build_runtime", lambda settings: shopify.runtime)
    monkeypatch.setattr(cli, "_settings", lambda: shopify.runtime.settings)
    with shopify.at(DAY):
        result = CliRunner().invoke(cli.main, ["reconcile", "--platform", "shopify"])
    assert result.exit_code == 0, result.output
    assert "1 of 1 recovered orders read again" in result.output
    assert "1 recovered orders re-read: 1 confirmed for ₹4,000.00" in result.output
    assert f"order {order_id} (-₹696.00): partly refunded" in result.output
    assert "messaging cost not compared: the sandbox transport" in result.output
    unknown = CliRunner().invoke(cli.main, ["reconcile", "--platform", "magento"])
    assert unknown.exit_code != 0 and "not configured" in unknown.output
    nobody = CliRunner().invoke(cli.main, ["reconcile", "--store", "nobody.myshopify.com"])
    assert nobody.exit_code != 0 and "no active store matches" in nobody.output


def test_the_page_runs_a_reconciliation_and_shows_its_report(shopify):
    from tests.support.admin import sign_in

    shopify.install(OFFER_FIRST)
    order_id = _recover(shopify, 1, "4696.00", at=0 * MIN)
    with shopify.at(DAY):
        shopify.fake.cancel_order(int(order_id))
    with shopify.at(DAY):
        csrf = sign_in(shopify.client, shopify.runtime, shopify.store().id)
        started = shopify.client.post("/api/reconciliation/runs", headers={"X-CSRF-Token": csrf})
        assert started.status_code == 202
        run_id = started.get_json()["id"]
        assert shopify.client.get(f"/api/reconciliation/runs/{run_id}").get_json()["status"] == "queued"
        shopify.run(DAY)
        detail = shopify.client.get(f"/api/reconciliation/runs/{run_id}").get_json()
        page = shopify.client.get("/admin/reconciliation").get_data(as_text=True)
        elsewhere = shopify.client.get(f"/api/reconciliation/runs/{run_id + 1000}")
    assert elsewhere.status_code == 404
    assert detail["status"] == "done" and detail["progress"] == {"orders_done": 1, "orders_total": 1}
    assert detail["report"]["differences"][0]["kind"] == "cancelled"
    assert "order cancelled" in page and order_id in page and "Reconcile now" in page
