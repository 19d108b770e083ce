"""The demo platform's Admin API, as ``demo.connector.DemoConnector`` calls it.

JSON in and out, ``Authorization: Bearer <token>`` (the store's access token, compared in
constant time). Every error is JSON with a reason; bad input is a 4xx, never a 500.
"""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from flask import Blueprint, jsonify, request
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from werkzeug.exceptions import HTTPException

from connectors.base import DiscountKind, PayloadError, parse_timestamp
from demo.store.blueprint import get_runtime
from demo.store.catalogue import CURRENCY
from demo.store.models import DemoCheckout, DemoDiscount, DemoOrder
from demo.store.seed import find_demo_store
from demo.store.webhooks import checkout_url

api_bp = Blueprint("api", __name__, url_prefix="/api")
log = logging.getLogger("cartback.demo_store.api")

CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MAX_USAGE_LIMIT = 1_000_000
# Orders one status request may name (the connector asks in batches of 100).
MAX_ORDER_IDS = 250


class InvalidInput(ValueError):
    """The request body is not acceptable; the message says which field and why (422)."""


def _error(status: int, reason: str) -> Any:
    response = jsonify(error=reason)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="demo-store"'
    return response


@api_bp.before_request
def _authenticate() -> Any:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _error(401, "missing bearer token (Authorization: Bearer <access token>)")
    runtime = get_runtime()
    with runtime.database.session() as session:
        store = find_demo_store(session)
    if store is None or not store.access_token_ciphertext:
        return _error(401, "cartback is not installed on the demo store")
    expected = runtime.secrets.decrypt(store.access_token_ciphertext)
    if not hmac.compare_digest(expected.encode(), token.strip().encode()):
        return _error(401, "the bearer token is not valid for this store")
    return None


@api_bp.errorhandler(Exception)
def _unexpected(error: Exception) -> Any:
    if isinstance(error, HTTPException):
        return _error(error.code or 400, error.description or error.name)
    # A platform hiccup (database locked, a bug): retryable for the caller, traceback for us.
    log.exception("demo store API failed")
    return _error(503, "the demo store could not process the request; try again")


def _json_object() -> dict[str, Any]:
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body


# -- discounts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DiscountTerms:
    code: str
    kind: str
    value: Decimal
    currency: str
    ends_at: datetime
    min_subtotal: Decimal | None
    max_amount: Decimal | None
    usage_limit: int | None

    def matches(self, row: DemoDiscount) -> bool:
        return (
            row.kind == self.kind
            and row.value == self.value
            and row.currency == self.currency
            and row.ends_at == self.ends_at
            and row.min_subtotal == self.min_subtotal
            and row.max_amount == self.max_amount
            and row.usage_limit == self.usage_limit
        )


def _amount(body: dict[str, Any], name: str, *, required: bool) -> Decimal | None:
    raw = body.get(name)
    if raw is None:
        if required:
            raise InvalidInput(f"{name} is required")
        return None
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise InvalidInput(f'{name} must be a decimal string such as "100.00"')
    try:
        amount = Decimal(str(raw).strip())
    except InvalidOperation:
        raise InvalidInput(f"{name} is not a decimal number") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidInput(f"{name} must be a non-negative amount")
    return amount


def parse_discount_terms(body: dict[str, Any], now: datetime) -> DiscountTerms:
    code = body.get("code")
    if not isinstance(code, str) or not code.strip():
        raise InvalidInput("code is required")
    code = code.strip()
    if not CODE_PATTERN.match(code):
        raise InvalidInput("code must be 1-64 letters, digits, '-' or '_'")
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in {k.value for k in DiscountKind}:
        raise InvalidInput('kind must be "fixed" or "percent"')
    value = _amount(body, "value", required=True)
    assert value is not None
    if value <= 0:
        raise InvalidInput("value must be greater than zero")
    if kind == DiscountKind.PERCENT and value >= 100:
        raise InvalidInput("a percent value must be below 100")
    currency = body.get("currency")
    if currency != CURRENCY:
        raise InvalidInput(f"currency must be the store's currency, {CURRENCY}")
    try:
        ends_at = parse_timestamp(body.get("ends_at"), "ends_at")
    except PayloadError as exc:
        raise InvalidInput(str(exc)) from None
    if ends_at <= now:
        raise InvalidInput("ends_at is in the past")
    usage_limit = body.get("usage_limit")
    if usage_limit is not None and (
        isinstance(usage_limit, bool)
        or not isinstance(usage_limit, int)
        or not 1 <= usage_limit <= MAX_USAGE_LIMIT
    ):
        raise InvalidInput(f"usage_limit must be null or an integer 1-{MAX_USAGE_LIMIT}")
    max_amount = _amount(body, "max_amount", required=False)
    if max_amount is not None and max_amount == 0:
        raise InvalidInput("max_amount must be greater than zero")
    return DiscountTerms(
        code=code,
        kind=str(kind),
        value=value,
        currency=CURRENCY,
        ends_at=ends_at,
        min_subtotal=_amount(body, "min_subtotal", required=False),
        max_amount=max_amount,
        usage_limit=usage_limit,
    )


def _existing(terms: DiscountTerms) -> Any:
    runtime = get_runtime()
    with runtime.database.session() as session:
        row = session.exec(select(DemoDiscount).where(DemoDiscount.code == terms.code)).first()
    if row is None:
        return None
    if terms.matches(row):
        # The same request again (a retry after a lost answer): same discount, no new one.
        return jsonify(id=row.id, code=row.code), 200
    return _error(409, f"the code {terms.code} already exists with different terms")


@api_bp.post("/discounts")
def create_discount() -> Any:
    runtime = get_runtime()
    try:
        terms = parse_discount_terms(_json_object(), runtime.now())
    except InvalidInput as exc:
        return _error(422, str(exc))
    answer = _existing(terms)
    if answer is not None:
        return answer
    row = DemoDiscount(
        code=terms.code,
        kind=terms.kind,
        value=terms.value,
        currency=terms.currency,
        ends_at=terms.ends_at,
        min_subtotal=terms.min_subtotal,
        max_amount=terms.max_amount,
        usage_limit=terms.usage_limit,
    )
    try:
        with runtime.database.session() as session:
            session.add(row)
    except IntegrityError:
        # Created concurrently by another request: answer as for a repeat.
        return _existing(terms) or _error(409, f"the code {terms.code} already exists")
    log.info("demo discount created", extra={"discount_id": row.id})
    return jsonify(id=row.id, code=row.code), 201


# -- recovery URLs ------------------------------------------------------------------------


@api_bp.post("/checkouts/<checkout_id>/recovery_url")
def recovery_url(checkout_id: str) -> Any:
    runtime = get_runtime()
    try:
        body = _json_object()
    except InvalidInput as exc:
        return _error(422, str(exc))
    code = body.get("discount_code")
    if code is not None and (not isinstance(code, str) or not code.strip()):
        return _error(422, "discount_code must be a string or null")
    with runtime.database.session() as session:
        checkout = session.get(DemoCheckout, checkout_id)
        if checkout is None:
            return _error(404, f"no checkout with id {checkout_id}")
        if checkout.completed_at is not None:
            return _error(409, "this checkout is already completed (an order was placed)")
        if code is not None:
            code = code.strip()
            if session.exec(select(DemoDiscount.id).where(DemoDiscount.code == code)).first() is None:
                return _error(422, f"unknown discount code {code}")
        url = checkout_url(runtime.settings.app_url, checkout.token)
    if code is not None:
        url = f"{url}?discount={quote(code, safe='')}"
    return jsonify(url=url), 200


# -- orders -------------------------------------------------------------------------------


@api_bp.post("/orders/statuses")
def order_statuses() -> Any:
    """What the store says of these orders now: demo orders are paid at once, never refunded
    or cancelled (the demo has no admin to do either)."""
    try:
        body = _json_object()
    except InvalidInput as exc:
        return _error(422, str(exc))
    ids = body.get("ids")
    if (
        not isinstance(ids, list)
        or len(ids) > MAX_ORDER_IDS
        or not all(isinstance(i, str) and i.isdigit() and len(i) <= 18 for i in ids)
    ):
        return _error(422, f"ids must be a list of at most {MAX_ORDER_IDS} order ids (digits, as strings)")
    with get_runtime().database.session() as session:
        found = {
            str(order.id): order
            for order in session.exec(
                select(DemoOrder).where(col(DemoOrder.id).in_([int(i) for i in ids]))
            ).all()
        }
    return jsonify(
        orders=[
            {
                "id": i,
                "found": True,
                "status": "paid",
                "total": str(found[i].total),
                "refunded": "0.00",
                "currency": found[i].currency,
            }
            if i in found
            else {"id": i, "found": False}
            for i in ids
        ]
    )
