"""The demo storefront: products, a cart with a contact form, a checkout that takes codes.

A simulation, labelled as such on every page. The shopper's checkout is found by the
``demo_checkout`` cookie (its token); every change to a checkout is committed first and then
announced to cartback with a signed webhook, as a real platform does.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from flask import Response, abort, make_response, redirect, render_template, request, url_for
from sqlmodel import Session, select
from werkzeug.wrappers import Response as BaseResponse

from connectors.base import InvalidPhone, normalise_phone
from demo.store.blueprint import bp, get_runtime
from demo.store.catalogue import BY_SLUG, CURRENCY, PRODUCTS, product_for_variant, render_svg
from demo.store.checkouts import (
    AppliedDiscount,
    Line,
    add_line,
    apply_discount,
    lines_of,
    money,
    parse_items,
    subtotal_of,
    touch,
)
from demo.store.models import DemoCheckout, DemoDiscount, DemoOrder
from demo.store.seed import find_demo_store
from demo.store.webhooks import checkout_payload, emit, order_payload
from sequences.models import Store

log = logging.getLogger("cartback.demo_store")

COOKIE = "demo_checkout"
# A cart cookie lives a month, like a platform's cart cookie (seconds).
COOKIE_MAX_AGE = 30 * 24 * 3600
# Most of one product a single "Add to cart" adds.
MAX_ADD_QUANTITY = 10
PHONE_REGION = "IN"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_NAME_LENGTH = 100
MAX_EMAIL_LENGTH = 254

# What cartback's notices mean, in a shopper's words (cartback adds ?cartback_notice=...).
NOTICES = {
    "link_expired": "This offer link has expired — your items may still be in your cart.",
    "link_invalid": "That link didn't work (it may have been copied incompletely). Your items may still be in your cart.",
    "already_ordered": "Good news: this order has already been placed. There's nothing more to do.",
    "offer_expired": "This offer has expired, but your items are still here if you'd like them.",
    "offer_unavailable": "We couldn't apply the offer just now — your items are still here for you.",
}


def _notice() -> str | None:
    return NOTICES.get(request.args.get("cartback_notice", ""))


def _cookie_checkout(session: Session) -> DemoCheckout | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    checkout = session.exec(select(DemoCheckout).where(DemoCheckout.token == token)).first()
    return checkout if checkout is not None and checkout.completed_at is None else None


def _with_cookie(response: BaseResponse, token: str) -> BaseResponse:
    response.set_cookie(
        COOKIE, token, max_age=COOKIE_MAX_AGE, path="/demo-store", httponly=True, samesite="Lax"
    )
    return response


def _announce(store: Store | None, topic: str, payload: dict[str, Any]) -> None:
    if store is None:
        log.warning("demo store change not announced: cartback is not installed (run the seed)")
        return
    emit(get_runtime(), store, topic, payload)


def _error_page(status: int, title: str, message: str) -> Response:
    response = make_response(render_template("demo_store/error.html", title=title, message=message))
    response.status_code = status
    return response


@bp.context_processor
def _page_context() -> dict[str, Any]:
    count = 0
    with get_runtime().database.session() as session:
        checkout = _cookie_checkout(session)
        if checkout is not None:
            count = sum(line.quantity for line in lines_of(checkout))
    return {"money": money, "cart_count": count}


# -- catalogue ------------------------------------------------------------------------------


@bp.get("/")
def index() -> Any:
    return render_template("demo_store/index.html", products=PRODUCTS, notice=_notice())


@bp.get("/images/<slug>.svg")
def image(slug: str) -> Any:
    product = BY_SLUG.get(slug)
    if product is None:
        abort(404)
    response = Response(render_svg(product), mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response


# -- cart -----------------------------------------------------------------------------------


def _int_field(name: str, default: int | None = None) -> int | None:
    raw = request.form.get(name, "").strip()
    if not raw:
        return default
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 12 else None


@bp.post("/cart/add")
def add_to_cart() -> Any:
    variant_id = _int_field("variant_id")
    quantity = _int_field("quantity", 1)
    if variant_id is None or product_for_variant(variant_id) is None:
        return _error_page(400, "That product isn't available", "Please pick a product from the store.")
    if quantity is None or not 1 <= quantity <= MAX_ADD_QUANTITY:
        return _error_page(400, "Please choose a quantity", f"You can add 1 to {MAX_ADD_QUANTITY} at a time.")
    runtime = get_runtime()
    # Read then write: BEGIN IMMEDIATE, or SQLite refuses the upgrade to a writer ("database is
    # locked") while the worker writes, which it does all the time with the cloud transport.
    with runtime.database.locked_session() as session:
        store = find_demo_store(session)
        checkout = _cookie_checkout(session)
        created = checkout is None
        if checkout is None:
            checkout = DemoCheckout()
            session.add(checkout)
        add_line(checkout, variant_id, quantity)
        touch(checkout, runtime.now())
        session.flush()
        payload = checkout_payload(checkout, runtime.settings.app_url)
        token = checkout.token
    _announce(store, "checkouts/create" if created else "checkouts/update", payload)
    return _with_cookie(redirect(url_for(".cart"), code=303), token)


def _render_cart(
    checkout: DemoCheckout | None,
    *,
    form: dict[str, Any] | None = None,
    errors: list[str] | None = None,
    saved: bool = False,
    status: int = 200,
) -> Response:
    lines: list[Line] = lines_of(checkout) if checkout else []
    if form is None:
        form = {
            "first_name": (checkout.first_name if checkout else None) or "",
            "phone": (checkout.phone if checkout else None) or "",
            "email": (checkout.email if checkout else None) or "",
            "accepts_marketing": bool(checkout and checkout.accepts_marketing),
        }
    response = make_response(
        render_template(
            "demo_store/cart.html",
            checkout=checkout,
            lines=lines,
            subtotal=subtotal_of(lines),
            form=form,
            errors=errors or [],
            saved=saved,
        )
    )
    response.status_code = status
    return response


@bp.get("/cart")
def cart() -> Any:
    with get_runtime().database.session() as session:
        checkout = _cookie_checkout(session)
    return _render_cart(checkout, saved=request.args.get("saved") == "1")


@bp.post("/cart/contact")
def save_contact() -> Any:
    runtime = get_runtime()
    first_name = request.form.get("first_name", "").strip()[:MAX_NAME_LENGTH]
    raw_phone = request.form.get("phone", "").strip()
    email = request.form.get("email", "").strip()
    accepts = request.form.get("accepts_marketing", "") in {"on", "1", "true", "yes"}
    form = {"first_name": first_name, "phone": raw_phone, "email": email, "accepts_marketing": accepts}

    with runtime.database.locked_session() as session:
        store = find_demo_store(session)
        checkout = _cookie_checkout(session)
        if checkout is None or not lines_of(checkout):
            return _render_cart(None, errors=["Your cart is empty: add a product first."], status=400)
        errors: list[str] = []
        phone: str | None = None
        if not raw_phone:
            errors.append("Please enter your mobile number so we can reach you on WhatsApp.")
        else:
            try:
                phone = normalise_phone(raw_phone, PHONE_REGION)
            except InvalidPhone:
                errors.append(
                    "That doesn't look like a valid Indian mobile number. "
                    "Enter 10 digits, e.g. 98765 43210 (or with +91)."
                )
        if email and (len(email) > MAX_EMAIL_LENGTH or not EMAIL.match(email)):
            errors.append("That email address doesn't look right (e.g. asha@example.com); or leave it empty.")
        if errors:
            # Nothing is saved and nothing is announced: the form comes back as typed.
            return _render_cart(checkout, form=form, errors=errors, status=400)
        checkout.first_name = first_name or None
        checkout.phone = phone
        checkout.email = email or None
        checkout.accepts_marketing = accepts
        touch(checkout, runtime.now())
        session.flush()
        payload = checkout_payload(checkout, runtime.settings.app_url)
    _announce(store, "checkouts/update", payload)
    return redirect(url_for(".cart", saved="1"), code=303)


@bp.get("/cart/<path:items>")
def cart_permalink(items: str) -> Any:
    """``/cart/8001:2,8002:1?discount=CODE``: a new checkout with these lines (platform permalink)."""
    lines = parse_items(items)
    if lines is None:
        return _error_page(
            404,
            "This cart link isn't valid",
            "Some of its products aren't available. Browse the store instead.",
        )
    runtime = get_runtime()
    with runtime.database.locked_session() as session:
        store = find_demo_store(session)
        checkout = DemoCheckout(lines=lines)
        touch(checkout, runtime.now())
        session.add(checkout)
        session.flush()
        payload = checkout_payload(checkout, runtime.settings.app_url)
        token = checkout.token
    _announce(store, "checkouts/create", payload)
    args: dict[str, Any] = {
        key: value for key, value in request.args.items() if key in {"discount", "cartback_notice"}
    }
    return _with_cookie(redirect(url_for(".checkout", token=token, **args), code=303), token)


# -- checkout and orders --------------------------------------------------------------------


def _find_discount(session: Session, code: str) -> DemoDiscount | None:
    return session.exec(select(DemoDiscount).where(DemoDiscount.code == code)).first()


def _render_checkout(
    checkout: DemoCheckout, applied: AppliedDiscount | None, *, status: int = 200
) -> Response:
    lines = lines_of(checkout)
    subtotal = subtotal_of(lines)
    discount = applied.amount if applied and applied.amount is not None else Decimal("0.00")
    response = make_response(
        render_template(
            "demo_store/checkout.html",
            checkout=checkout,
            lines=lines,
            subtotal=subtotal,
            applied=applied,
            total=subtotal - discount,
            notice=_notice(),
        )
    )
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    if checkout.completed_at is None:
        # Opening a checkout link (e.g. from WhatsApp) makes it this browser's cart.
        _with_cookie(response, checkout.token)
    return response


def _checkout_by_token(session: Session, token: str, *, lock: bool = False) -> DemoCheckout | None:
    statement = select(DemoCheckout).where(DemoCheckout.token == token)
    return session.exec(statement.with_for_update() if lock else statement).first()


def _applied(session: Session, checkout: DemoCheckout, code: str, now: datetime) -> AppliedDiscount | None:
    if not code:
        return None
    subtotal = subtotal_of(lines_of(checkout))
    return apply_discount(_find_discount(session, code), code, subtotal, CURRENCY, now)


@bp.get("/checkout/<token>")
def checkout(token: str) -> Any:
    runtime = get_runtime()
    code = request.args.get("discount", "").strip()[:64]
    with runtime.database.session() as session:
        found = _checkout_by_token(session, token)
        if found is None:
            return _error_page(
                404,
                "We couldn't find this checkout",
                "It may have been replaced by a newer cart. Browse the store to start again.",
            )
        applied = None if found.completed_at else _applied(session, found, code, runtime.now())
    return _render_checkout(found, applied)


@bp.post("/checkout/<token>/order")
def place_order(token: str) -> Any:
    runtime = get_runtime()
    code = request.form.get("discount", "").strip()[:64]
    now = runtime.now()
    with runtime.database.locked_session() as session:
        store = find_demo_store(session)
        found = _checkout_by_token(session, token, lock=True)
        if found is None:
            return _error_page(404, "We couldn't find this checkout", "Browse the store to start again.")
        if found.completed_at is not None:
            # A second click on "Place order": the order exists, show it.
            if found.order_id is not None:
                return redirect(url_for(".order", order_id=found.order_id), code=303)
            return _error_page(409, "This order was already placed", "Browse the store to keep shopping.")
        lines = lines_of(found)
        if not lines:
            return _error_page(400, "Your cart is empty", "Add a product before placing an order.")
        subtotal = subtotal_of(lines)
        discount_amount = Decimal("0.00")
        if code:
            row = session.exec(
                select(DemoDiscount).where(DemoDiscount.code == code).with_for_update()
            ).first()
            applied = apply_discount(row, code, subtotal, CURRENCY, now)
            if applied.amount is None or row is None:
                # The code stopped being valid since the page was shown: show the new total.
                return _render_checkout(found, applied, status=409)
            row.times_used += 1
            discount_amount = applied.amount
        order = DemoOrder(
            checkout_id=found.id,
            checkout_token=found.token,
            currency=CURRENCY,
            subtotal=subtotal,
            discount_code=code or None,
            discount_amount=discount_amount,
            total=subtotal - discount_amount,
            phone=found.phone,
            lines=[
                {
                    "slug": line.product.slug,
                    "title": line.product.title,
                    "variant_title": line.product.variant_title,
                    "quantity": line.quantity,
                    "price": str(line.product.price),
                }
                for line in lines
            ],
            created_at=now,
        )
        session.add(order)
        session.flush()
        assert order.id is not None
        found.completed_at = now
        found.order_id = order.id
        touch(found, now)
        session.flush()
        order_body, checkout_body = order_payload(order), checkout_payload(found, runtime.settings.app_url)
        order_id = order.id
    log.info("demo order placed", extra={"order_id": order_id, "discounted": bool(code)})
    _announce(store, "orders/create", order_body)
    _announce(store, "checkouts/update", checkout_body)
    response = redirect(url_for(".order", order_id=order_id), code=303)
    response.delete_cookie(COOKIE, path="/demo-store")
    return response


@bp.get("/orders/<int(max=2147483647):order_id>")
def order(order_id: int) -> Any:
    with get_runtime().database.session() as session:
        found = session.get(DemoOrder, order_id)
    if found is None:
        return _error_page(404, "We couldn't find this order", "Browse the store to keep shopping.")
    lines = [
        {
            **line,
            "price": Decimal(line["price"]),
            "image": BY_SLUG[line["slug"]].image_path() if line["slug"] in BY_SLUG else None,
        }
        for line in found.lines
    ]
    return render_template("demo_store/order.html", order=found, lines=lines)
