"""The fake site's /wc/v3/orders endpoints, as WC_REST_Orders_Controller (v3, over v2 and the CRUD
controller) handles them; the order rules themselves are in ``woocommerce_site``."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

from babel.core import get_global
from babel.numbers import get_territory_currencies

from tests.fakes.woocommerce_render import order_json
from tests.fakes.woocommerce_rest import (
    BOOLEAN,
    COLLECTION_ARGS,
    ID_LIST,
    INTEGER,
    META,
    STRING,
    RestRequest,
    RestResponse,
    date_window,
    id_list,
    paged,
    require_id,
    sorted_items,
    to_int,
)
from tests.fakes.woocommerce_site import Site, order_key, update_meta
from tests.fakes.woocommerce_state import BILLING_FIELDS, ORDER_STATUSES, SHIPPING_FIELDS, LineItem, Order
from tests.fakes.woocommerce_wp import Arg, RestError, decimal, parse_list, to_boolean


def _currency_codes() -> list[str]:
    """array_keys( get_woocommerce_currencies() ), approximated: the ISO codes in use today (from
    CLDR, via babel) and the few others WooCommerce lists."""
    today = date(2026, 1, 1)
    codes = {"ANG", "BTC", "CUC", "GGP", "IMP", "IRT", "JEP", "PRB", "SLL", "VEF"}
    for territory in get_global("territory_currencies"):
        codes.update(get_territory_currencies(territory, today, tender=True))
    return sorted(codes)


CURRENCY_CODES = _currency_codes()
ORDER_COLLECTION_ARGS: dict[str, Arg] = {
    **COLLECTION_ARGS,
    "parent": ID_LIST,
    "parent_exclude": ID_LIST,
    "status": {"type": "array", "items": {"type": "string", "enum": ["any", "trash", *ORDER_STATUSES]}},
    "customer": INTEGER,
    "product": INTEGER,
    "dp": INTEGER,
    "order_item_display_meta": BOOLEAN,
    "include_meta": {"type": "array", "items": STRING, "validate": False},
    "exclude_meta": {"type": "array", "items": STRING, "validate": False},
    "created_via": {"type": "array", "items": STRING},
}
ADDRESS_ARG: Arg = {"type": "object", "properties": {key: STRING for key in SHIPPING_FIELDS}}
BILLING_ARG: Arg = {
    "type": "object",
    "properties": {
        **{key: STRING for key in BILLING_FIELDS},
        "email": {"type": ["string", "null"], "format": "email"},
    },
}
LINE_ITEM_ARG: Arg = {
    "type": "object",
    "properties": {
        "id": INTEGER,
        "name": {"type": "mixed"},
        "product_id": {"type": "mixed"},
        "variation_id": INTEGER,
        "quantity": INTEGER,
        "tax_class": STRING,
        "subtotal": STRING,
        "total": STRING,
        "meta_data": META,
        "sku": STRING,
        "price": {"type": "number"},
    },
}
COUPON_LINE_ARG: Arg = {
    "type": "object",
    "properties": {"id": INTEGER, "code": {"type": "mixed"}, "discount": STRING, "meta_data": META},
}
ORDER_ARGS: dict[str, Arg] = {
    "parent_id": INTEGER,
    "status": {"type": "string", "enum": list(ORDER_STATUSES)},
    "currency": {"type": "string", "enum": CURRENCY_CODES},
    "customer_id": INTEGER,
    "customer_note": STRING,
    "billing": BILLING_ARG,
    "shipping": ADDRESS_ARG,
    "payment_method": STRING,
    "payment_method_title": STRING,
    "transaction_id": STRING,
    "meta_data": META,
    "line_items": {"type": "array", "items": LINE_ITEM_ARG},
    "shipping_lines": {"type": "array", "items": {"type": "object"}},
    "fee_lines": {"type": "array", "items": {"type": "object"}},
    "coupon_lines": {"type": "array", "items": COUPON_LINE_ARG},
    "set_paid": BOOLEAN,
    "created_via": STRING,
    "manual_update": BOOLEAN,
}


def _order_json(site: Site, request: RestRequest, order: Order) -> dict[str, Any]:
    dp = request.params.get("dp")
    return order_json(
        site,
        order,
        dp=to_int(dp, 2) if dp not in (None, "") else 2,
        include_meta=[str(k) for k in parse_list(request.params.get("include_meta") or [])],
        exclude_meta=[str(k) for k in parse_list(request.params.get("exclude_meta") or [])],
    )


def list_orders(site: Site, request: RestRequest) -> RestResponse:
    params = request.params
    statuses = [str(s) for s in parse_list(params.get("status") or "any")]
    if "any" in statuses:
        orders = [o for o in site.orders.values() if o.status not in ("trash", "auto-draft")]
    else:
        orders = [o for o in site.orders.values() if o.status in statuses]
    include, exclude = id_list(params.get("include")), id_list(params.get("exclude"))
    if include:
        orders = [o for o in orders if o.id in include]
    orders = [o for o in orders if o.id not in exclude]
    if params.get("parent"):
        orders = [o for o in orders if o.parent_id in id_list(params["parent"])]
    if params.get("parent_exclude"):
        orders = [o for o in orders if o.parent_id not in id_list(params["parent_exclude"])]
    if params.get("customer") not in (None, ""):
        orders = [o for o in orders if o.customer_id == abs(to_int(params["customer"]))]
    if params.get("product"):
        product_id = abs(to_int(params["product"]))
        orders = [o for o in orders if any(item.product_id == product_id for item in o.line_items)]
    if params.get("created_via"):
        sources = [str(s) for s in parse_list(params["created_via"])]
        orders = [o for o in orders if o.created_via in sources]
    if params.get("search"):
        needle = str(params["search"]).lower()
        orders = [o for o in orders if needle in " ".join([*o.billing.values(), str(o.id)]).lower()]
    inside = date_window(site, request, lambda o: o.date_created, lambda o: o.date_modified)
    orders = [o for o in orders if inside(o)]
    orders = sorted_items(
        orders,
        request,
        {
            "date": lambda o: o.date_created,
            "modified": lambda o: o.date_modified,
            "id": lambda o: o.id,
            "title": lambda o: o.date_created,
            "slug": lambda o: o.id,
        },
        "date",
    )
    return paged(site, request, orders, lambda o: _order_json(site, request, o))


def get_order(site: Site, request: RestRequest) -> RestResponse:
    order = require_id(site.orders, request, "shop_order", 404)
    return RestResponse(200, _order_json(site, request, order))


def _set_order_props(site: Site, order: Order, params: dict[str, Any], *, creating: bool) -> None:
    """prepare_object_for_database: every writable prop given (status and coupons come later)."""
    for key in ("parent_id", "customer_id"):
        if params.get(key) is not None:
            setattr(order, key, to_int(params[key]))
    for key in ("currency", "customer_note", "payment_method", "payment_method_title", "transaction_id"):
        if params.get(key) is not None:
            setattr(order, key, str(params[key]))
    if creating and params.get("created_via"):
        order.created_via = str(params["created_via"])
    for kind, fields in (("billing", BILLING_FIELDS), ("shipping", SHIPPING_FIELDS)):
        if isinstance(params.get(kind), dict):
            address = getattr(order, kind)
            for name, value in params[kind].items():
                if name in fields:
                    address[name] = "" if value is None else str(value)
    if isinstance(params.get("line_items"), list):
        for posted in params["line_items"]:
            if isinstance(posted, dict):
                _set_line_item(site, order, posted)
    if isinstance(params.get("meta_data"), list):
        update_meta(site, order.meta, params["meta_data"])


def _set_line_item(site: Site, order: Order, posted: dict[str, Any]) -> None:
    """set_item / prepare_line_items, and removal when product_id is null or quantity is 0."""
    item_id = to_int(posted.get("id"))
    existing = next((item for item in order.line_items if item.id == item_id), None) if item_id else None
    if item_id and existing is None:
        raise RestError(
            "woocommerce_rest_invalid_item_id", "Order item ID provided is not associated with order.", 400
        )
    nulled = any(key in posted and posted[key] is None for key in ("product_id", "name"))  # item_is_null
    if nulled or posted.get("quantity") == 0:
        if existing is None:
            raise RestError(
                "woocommerce_rest_invalid_item_id",
                "Order item ID provided is not associated with order.",
                400,
            )
        order.line_items.remove(existing)
        return
    variation_id, product_id = to_int(posted.get("variation_id")), to_int(posted.get("product_id"))
    reference = variation_id or product_id
    if existing is None and not reference and not posted.get("sku"):
        raise RestError("woocommerce_rest_required_product_reference", "Product ID or SKU is required.", 400)
    product = site.product(reference) if reference else None
    quantity = to_int(posted.get("quantity"), 1) if posted.get("quantity") is not None else 1
    if existing is None:
        item = site.new_line_item(product, quantity)  # unknown product: an empty line, as WooCommerce makes
        order.line_items.append(item)
    else:
        item = existing
        if product is not None and product != item.product:
            item.product, item.name = product, product.name
            item.product_id, item.variation_id = (
                product.parent_id or product.id,
                product.id if product.parent_id else 0,
            )
    _maybe_set_item_props(item, posted)
    if isinstance(posted.get("meta_data"), list):
        update_meta(site, item.meta, posted["meta_data"])


def _maybe_set_item_props(item: LineItem, posted: dict[str, Any]) -> None:
    if posted.get("name") is not None:
        item.name = str(posted["name"])
    if posted.get("quantity") is not None:
        item.quantity = to_int(posted["quantity"])
    if posted.get("total") is not None:
        item.total = decimal(posted["total"])
    if posted.get("subtotal") is not None:
        item.subtotal = decimal(posted["subtotal"])


def _check_customer(site: Site, params: dict[str, Any]) -> None:
    customer_id = to_int(params.get("customer_id"))
    if customer_id and customer_id not in site.customers and customer_id != site.admin_user_id:
        raise RestError("woocommerce_rest_invalid_customer_id", "Customer ID is invalid.", 400)


def create_order(site: Site, request: RestRequest) -> RestResponse:
    params = request.params
    if params.get("id"):
        raise RestError("woocommerce_rest_shop_order_exists", "Cannot create existing shop_order.", 400)
    now = site.now()
    order = Order(
        id=site.next_post_id(),
        status="pending",
        currency=site.currency,
        order_key=order_key(),
        created_via="rest-api",
        date_created=now,
        date_modified=now,
    )
    _set_order_props(site, order, params, creating=True)
    _check_customer(site, params)
    site.orders[order.id] = order
    site.save_order(order, new=True)
    site.calculate_totals(order)
    site.save_order(order)
    try:
        if isinstance(params.get("coupon_lines"), list):
            site.replace_coupons(order, params["coupon_lines"])
    except RestError as error:
        # save_object: an order that was saved before the failure is kept as a checkout draft.
        order.status = "checkout-draft"
        site.save_order(order)
        error.data["new_draft_order_id"] = order.id
        raise
    if params.get("status"):
        site.set_status(order, str(params["status"]))
    if to_boolean(params.get("set_paid", False)):
        site.payment_complete(order, str(params.get("transaction_id") or ""))
    response = RestResponse(201, _order_json(site, request, order))
    response.headers.append(("Location", site.rest_url(f"/wc/v3/orders/{order.id}")))
    return response


def update_order(site: Site, request: RestRequest) -> RestResponse:
    params = request.params
    stored = require_id(site.orders, request, "shop_order", 400)
    # prepare_object_for_database works on a fresh copy: nothing sticks if it refuses the request.
    order = copy.deepcopy(stored)
    _set_order_props(site, order, params, creating=False)
    _check_customer(site, params)
    site.orders[order.id] = order
    if any(
        params.get(key) is not None
        for key in ("billing", "shipping", "line_items", "shipping_lines", "fee_lines", "coupon_lines")
    ):
        site.calculate_totals(order)
        site.save_order(order)
    if isinstance(params.get("coupon_lines"), list):
        site.replace_coupons(order, params["coupon_lines"])
    if params.get("status"):
        site.set_status(order, str(params["status"]))
    else:
        site.save_order(order)
    if to_boolean(params.get("set_paid", False)) and order.needs_payment:
        site.payment_complete(order, str(params.get("transaction_id") or ""))
    return RestResponse(200, _order_json(site, request, order))


def delete_order(site: Site, request: RestRequest) -> RestResponse:
    order = require_id(site.orders, request, "shop_order", 404)
    body = _order_json(site, request, order)
    if to_boolean(request.params.get("force", False)):
        del site.orders[order.id]  # permanent: no webhook (order.deleted listens to trashing only)
    elif order.status == "trash":
        raise RestError("woocommerce_rest_already_trashed", "The shop_order has already been deleted.", 410)
    else:
        site.trash(order)
    return RestResponse(200, body)
