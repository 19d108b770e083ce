"""The merchant's pages (dashboard, settings) and the dashboard's JSON and CSV exports.

One set of pages serves both admins: inside Shopify (App Bridge session token; the app home
``/`` is the dashboard, and installs the app on first load through ``app.shopify.home``) and
standalone at ``/admin`` (sign-in link, session cookie). Pages are rendered on the server,
charts included (inline SVG), so they read without any script from a CDN; scripts only add
saving, previews and downloads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, g, jsonify, render_template, request
from markupsafe import Markup
from sqlmodel import col, select

from app.admin import charts
from app.admin.exports import carts_csv, messages_csv
from app.admin.session import MerchantSession, api_view, page_view
from app.current import get_runtime
from app.shopify.home import verified_store
from app.shopify.session_token import shopify_connector
from app.webhooks.cartflows import cartflows_url
from channels.whatsapp.templates import copy_for
from sequences.alerts.incidents import open_incidents
from sequences.experiments.results import ArmFunnel, latest_funnel
from sequences.merchant import dashboard, lists
from sequences.merchant.settings_changes import as_payload, history
from sequences.merchant.store_settings import COPY_LANGUAGES, MAX_COPY_CHARS, MAX_STEPS
from sequences.models import Contact, DataExport, Experiment, InboundMessage, Store
from sequences.money import format_money

bp = Blueprint("admin_pages", __name__)
# Query parameters of an embedded page load that the next page needs too (not id_token:
# it lives a minute; App Bridge's bounce fetches a fresh one).
SHOPIFY_NAV_PARAMS = ("shop", "host", "embedded")


def _nav_url(merchant: MerchantSession) -> Any:
    keep = {name: request.args[name] for name in SHOPIFY_NAV_PARAMS if name in request.args}

    def nav_url(path: str, **params: Any) -> str:
        query = {**(keep if merchant.via == "shopify" else {}), **{k: v for k, v in params.items() if v}}
        return path + ("?" + urlencode(query) if query else "")

    return nav_url


def render_admin(template: str, merchant: MerchantSession, page: str, **context: Any) -> Response:
    runtime = get_runtime()
    with runtime.database.session() as session:
        store = session.get(Store, merchant.store_id)
        assert store is not None
        session.expunge(store)
        # Every page shows what is wrong now (sequences.alerts).
        banners = open_incidents(session, merchant.store_id)
        for incident in banners:
            session.expunge(incident)
    api_key = ""
    if merchant.via == "shopify":
        connector = shopify_connector()
        api_key = connector.api_key if connector else ""
    body = render_template(
        template,
        store=store,
        page=page,
        mode=merchant.via,
        api_key=api_key,
        csrf_token=merchant.csrf_token,
        nav_url=_nav_url(merchant),
        money=lambda amount: format_money(amount, store.currency, store.locale),
        when=lambda moment: local_time(moment, ZoneInfo(store.timezone)),
        open_incidents=banners,
        **context,
    )
    response = Response(body, mimetype="text/html")
    # Inside Shopify: frame-ancestors and App Bridge preload headers, as shopifyapp built them;
    # standalone, no one may frame the page (clickjacking of the settings).
    response.headers.update(
        getattr(g, "shopify_headers", {}) or {"Content-Security-Policy": "frame-ancestors 'none'"}
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _period(store: Store) -> dashboard.Period:
    return dashboard.period_for(
        get_runtime().now(), store.timezone, request.args.get("from"), request.args.get("to")
    )


def _percent(value: Decimal | None) -> str:
    return "—" if value is None else f"{value}%"


def _charts(board: dashboard.Dashboard, store: Store) -> dict[str, Markup]:
    days = [day.day for day in board.daily]
    activity = charts.daily_chart(
        "daily-carts",
        days,
        [
            charts.Series("Abandoned carts", [day.abandoned for day in board.daily], "#8a8a8a"),
            charts.Series("Messages sent", [day.messages for day in board.daily], "#2c6ecb"),
            charts.Series("Recovered carts", [day.recovered for day in board.daily], "#29845a"),
        ],
        title="Carts and messages by day",
        description="Carts abandoned each day, the messages sent for them and the carts recovered.",
    )
    revenue = charts.daily_chart(
        "daily-revenue",
        days,
        # A refund larger than the recorded total would dip below zero: the chart shows 0 there.
        [
            charts.Series(
                "Recovered revenue", [max(day.revenue, Decimal(0)) for day in board.daily], "#29845a"
            )
        ],
        title="Recovered revenue by day",
        description="Revenue of recovered orders, after refunds, by the day the cart was abandoned.",
        value_format=lambda amount: format_money(Decimal(amount), store.currency, store.locale),
    )
    funnel = charts.funnel_chart(
        "funnel",
        [
            ("Sent", board.sent),
            ("Delivered", board.delivered),
            ("Read", board.read),
            ("Clicked", board.clicked),
            ("Recovered", board.recovered),
        ],
        title="From message to order",
        description="Messages sent, delivered, read and clicked, and the carts recovered.",
    )
    return {"activity": activity, "revenue": revenue, "funnel": funnel}


def _dashboard_context(merchant: MerchantSession) -> dict[str, Any]:
    runtime = get_runtime()
    with runtime.database.session() as session:
        store = session.get(Store, merchant.store_id)
        assert store is not None
        try:
            period = _period(store)
            problem = None
        except dashboard.PeriodError as exc:
            period, problem = dashboard.period_for(runtime.now(), store.timezone), str(exc)
        board = dashboard.build(session, store, period)
        replies = session.exec(
            select(InboundMessage, Contact.phone_e164)
            .join(Contact, col(Contact.id) == col(InboundMessage.contact_id))
            .where(InboundMessage.store_id == store.id, InboundMessage.intent == "other")
            .order_by(col(InboundMessage.id).desc())
            .limit(10)
        ).all()
        exports = session.exec(
            select(DataExport.id, DataExport.request_ref, DataExport.created_at)
            .where(DataExport.store_id == store.id)
            .order_by(col(DataExport.id).desc())
            .limit(10)
        ).all()
        arm_funnel = latest_funnel(session, merchant.store_id)
        return {
            "board": board,
            "arm_funnel": arm_funnel,
            "period_problem": problem,
            "charts": _charts(board, store),
            "percent": _percent,
            "sandbox": runtime.transport.name == "sandbox",
            "replies": [
                {"phone_end": phone[-4:], "text": inbound.text or f"({inbound.kind})", "at": inbound.sent_at}
                for inbound, phone in replies
            ],
            "exports": exports,
            "zone": ZoneInfo(store.timezone),
        }


@bp.get("/")
def app_home() -> Any:
    """Shopify's embedded app home: verified (installing on first load), then the dashboard."""
    connector = shopify_connector()
    if connector is None or ("shop" not in request.args and "Authorization" not in request.headers):
        # Not opened from a Shopify admin: nothing of any merchant's is shown here.
        return render_template("shopify/landing.html", shopify_configured=connector is not None)
    result, store_id, failure = verified_store(connector, check_token=True)
    if failure is not None:
        return failure
    assert store_id is not None
    # frame-ancestors and App Bridge preload headers, exactly as shopifyapp built them.
    g.shopify_headers = dict(result.response.headers)
    merchant = MerchantSession(store_id, f"Shopify user {result.user_id or 'unknown'}", "shopify")
    return shopify_app_home(merchant)


@bp.get("/admin")
@page_view
def dashboard_page(merchant: MerchantSession) -> Any:
    return shopify_app_home(merchant)


def shopify_app_home(merchant: MerchantSession) -> Response:
    """The dashboard; also the embedded app's home (``GET /`` from the Shopify admin)."""
    return render_admin("admin/dashboard.html", merchant, "dashboard", **_dashboard_context(merchant))


@bp.get("/admin/settings")
@page_view
def settings_page(merchant: MerchantSession) -> Any:
    runtime = get_runtime()
    with runtime.database.session() as session:
        store = session.get(Store, merchant.store_id)
        assert store is not None
        current = as_payload(store, runtime.store_settings(store))
        woocommerce = _woocommerce_setup(runtime.settings.app_url, store, runtime.secrets.decrypt)
    return render_admin(
        "admin/settings.html",
        merchant,
        "settings",
        current=current,
        max_steps=MAX_STEPS,
        languages=COPY_LANGUAGES,
        max_copy_chars=MAX_COPY_CHARS,
        default_lines={language: copy_for(language) for language in COPY_LANGUAGES},
        history=[entry.as_json() for entry in history(runtime, merchant.store_id, 20)],
        timezones=sorted(_common_zones() | {store.timezone}),
        woocommerce=woocommerce,
    )


def _woocommerce_setup(app_url: str, store: Store, decrypt: Callable[[str], str]) -> dict[str, Any] | None:
    """What a WooCommerce merchant pastes into the companion plugin and CartFlows."""
    if store.platform != "woocommerce" or not store.webhook_secret_ciphertext or store.id is None:
        return None
    secret = decrypt(store.webhook_secret_ciphertext)
    return {
        "endpoint": f"{app_url}/webhooks/woocommerce",
        "secret": secret,
        "cartflows_url": cartflows_url(app_url, secret, store.id),
        "synced_at": store.orders_synced_at.isoformat() if store.orders_synced_at else None,
    }


def _common_zones() -> set[str]:
    return {
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Asia/Dhaka",
        "Asia/Colombo",
        "Asia/Dubai",
        "Asia/Singapore",
        "Europe/London",
        "America/New_York",
        "UTC",
    }


@bp.get("/api/dashboard")
@api_view
def dashboard_json(merchant: MerchantSession) -> Any:
    with get_runtime().database.session() as session:
        store = session.get(Store, merchant.store_id)
        assert store is not None
        try:
            period = _period(store)
        except dashboard.PeriodError as exc:
            return jsonify(error=str(exc)), 400
        board = dashboard.as_json(dashboard.build(session, store, period))
        return jsonify(
            board | {"experiment_funnel": _arm_funnel_json(latest_funnel(session, merchant.store_id))}
        )


def _arm_funnel_json(found: tuple[Experiment, list[ArmFunnel]] | None) -> dict[str, Any] | None:
    """The newest experiment's funnel per arm, over the experiment's life (not the period)."""
    if found is None:
        return None
    experiment, arms = found
    return {
        "experiment_id": experiment.id,
        "name": experiment.name,
        "status": experiment.status,
        "since": experiment.started_at.isoformat(),
        "arms": [asdict(arm) for arm in arms],
    }


def _export(merchant: MerchantSession, kind: str) -> Any:
    with get_runtime().database.session() as session:
        store = session.get(Store, merchant.store_id)
        assert store is not None
        session.expunge(store)
    try:
        period = _period(store)
    except dashboard.PeriodError as exc:
        return jsonify(error=str(exc)), 400
    rows = (
        carts_csv(get_runtime(), store, period)
        if kind == "carts"
        else messages_csv(get_runtime(), store, period)
    )
    name = f"cartback-{kind}-{period.first_day.isoformat()}-to-{period.last_day.isoformat()}.csv"
    response = Response(rows, mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/api/data-exports/<int(max=2147483647):export_id>")
@api_view
def data_export(merchant: MerchantSession, export_id: int) -> Any:
    """A privacy export, for the merchant's own shop only."""
    store_id = merchant.store_id
    with get_runtime().database.session() as session:
        export = session.exec(
            select(DataExport).where(DataExport.id == export_id, DataExport.store_id == store_id)
        ).first()
        if export is None:
            return jsonify(error="no such export for this shop"), 404
        return jsonify(id=export.id, created_at=export.created_at.isoformat(), content=export.content)


@bp.get("/api/exports/carts.csv")
@api_view
def export_carts(merchant: MerchantSession) -> Any:
    return _export(merchant, "carts")


@bp.get("/api/exports/messages.csv")
@api_view
def export_messages(merchant: MerchantSession) -> Any:
    return _export(merchant, "messages")


def local_time(moment: datetime | None, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%d %b %Y, %H:%M") if moment else ""


@bp.get("/admin/carts")
@page_view
def carts_page(merchant: MerchantSession) -> Any:
    query = request.args.get("q", "")
    with get_runtime().database.session() as session:
        rows, next_cursor = lists.search_carts(session, merchant.store_id, query, request.args.get("before"))
    return render_admin(
        "admin/carts.html", merchant, "carts", rows=rows, query=query, next_cursor=next_cursor
    )


@bp.get("/admin/carts/<int(max=2147483647):cart_id>")
@page_view
def cart_page(merchant: MerchantSession, cart_id: int) -> Any:
    with get_runtime().database.session() as session:
        detail = lists.cart_detail(session, merchant.store_id, cart_id)
        if detail is None:
            return render_admin("admin/not_found.html", merchant, "carts", what="cart"), 404
        return render_admin("admin/cart.html", merchant, "carts", plain=dashboard.in_plain_words, **detail)


@bp.get("/admin/contacts/<int(max=2147483647):contact_id>")
@page_view
def contact_page(merchant: MerchantSession, contact_id: int) -> Any:
    with get_runtime().database.session() as session:
        detail = lists.contact_detail(session, merchant.store_id, contact_id)
        if detail is None:
            return render_admin("admin/not_found.html", merchant, "carts", what="contact"), 404
        return render_admin(
            "admin/contact.html", merchant, "carts", evidence=lists.consent_evidence, **detail
        )


def _cart_json(row: lists.CartRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "checkout_id": row.checkout_id,
        "status": row.status,
        "last_activity_at": row.last_activity_at.isoformat(),
        "abandoned_at": row.abandoned_at.isoformat() if row.abandoned_at else None,
        "phone_end": row.phone_end,
        "contact_id": row.contact_id,
        "total": str(row.total),
        "currency": row.currency,
        "order_id": row.order_id,
    }


@bp.get("/api/carts")
@api_view
def carts_json(merchant: MerchantSession) -> Any:
    with get_runtime().database.session() as session:
        rows, next_cursor = lists.search_carts(
            session, merchant.store_id, request.args.get("q"), request.args.get("before")
        )
    return jsonify(carts=[_cart_json(row) for row in rows], next=next_cursor)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


@bp.get("/api/carts/<int(max=2147483647):cart_id>")
@api_view
def cart_json(merchant: MerchantSession, cart_id: int) -> Any:
    with get_runtime().database.session() as session:
        detail = lists.cart_detail(session, merchant.store_id, cart_id)
        if detail is None:
            return jsonify(error="no such cart in this store"), 404
        cart = detail["cart"]
        return jsonify(
            id=cart.id,
            checkout_id=cart.platform_cart_id,
            status=cart.status,
            status_reason=cart.status_reason,
            phone_end=detail["phone_end"],
            contact_id=detail["contact_id"],
            total=str(cart.total),
            currency=cart.currency,
            order={
                "id": cart.order_platform_id,
                "total": str(cart.order_total_store),
                "at": _iso(cart.ordered_at),
            }
            if cart.order_platform_id
            else None,
            lines=[
                {"title": line.title, "quantity": line.quantity, "unit_price": str(line.unit_price)}
                for line in detail["lines"]
            ],
            steps=[
                {
                    "step": s.step_number,
                    "status": s.status,
                    "reason": s.reason,
                    "due_at": _iso(s.due_at),
                    "sent_at": _iso(s.sent_at),
                }
                for s in detail["steps"]
            ],
            messages=[
                {
                    "step": m.step_number,
                    "status": m.status,
                    "sent_at": _iso(m.sent_at),
                    "delivered_at": _iso(m.delivered_at),
                    "read_at": _iso(m.read_at),
                    "clicked_at": _iso(m.clicked_at),
                    "failure": dashboard.in_plain_words(m.error_code, m.error_detail)
                    if m.status == "failed"
                    else None,
                }
                for m in detail["messages"]
            ],
            timeline=[
                {"at": e.created_at.isoformat(), "kind": e.kind, "detail": e.detail} for e in detail["events"]
            ],
        )


@bp.get("/api/contacts/<int(max=2147483647):contact_id>")
@api_view
def contact_json(merchant: MerchantSession, contact_id: int) -> Any:
    with get_runtime().database.session() as session:
        detail = lists.contact_detail(session, merchant.store_id, contact_id)
        if detail is None:
            return jsonify(error="no such contact in this store"), 404
        contact = detail["contact"]
        return jsonify(
            id=contact.id,
            phone_end=detail["phone_end"],
            marketing_consent=contact.marketing_consent,
            opted_out_at=_iso(contact.opted_out_at),
            consent_history=[
                {
                    "at": e.created_at.isoformat(),
                    "kind": e.kind,
                    "source": e.source,
                    "evidence": lists.consent_evidence(e),
                    "platform_sync": e.platform_sync,
                }
                for e in detail["consent_events"]
            ],
            carts=[_cart_json(row) for row in detail["carts"]],
        )
