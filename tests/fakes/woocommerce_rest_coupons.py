"""The fake site's /wc/v3/coupons endpoints, as WC_REST_Coupons_Controller (v3 over v2) handles them."""

from __future__ import annotations

from typing import Any

from tests.fakes.woocommerce_render import coupon_json
from tests.fakes.woocommerce_rest import (
    BOOLEAN,
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
)
from tests.fakes.woocommerce_site import Site, update_meta
from tests.fakes.woocommerce_state import COUPON_TYPES, Coupon
from tests.fakes.woocommerce_wp import EMAIL, Arg, RestError, decimal, parse_wc_date, to_boolean

COUPON_ARGS: dict[str, Arg] = {
    "code": STRING,
    "amount": STRING,
    "status": STRING,
    "discount_type": {"type": "string", "enum": list(COUPON_TYPES)},
    "description": STRING,
    "date_expires": {"type": "date-time"},  # not a JSON type, so WordPress checks nothing
    "date_expires_gmt": {"type": "date-time"},
    "individual_use": BOOLEAN,
    "product_ids": {"type": "array", "items": INTEGER},
    "excluded_product_ids": {"type": "array", "items": INTEGER},
    "usage_limit": INTEGER,
    "usage_limit_per_user": INTEGER,
    "limit_usage_to_x_items": INTEGER,
    "free_shipping": BOOLEAN,
    "product_categories": {"type": "array", "items": INTEGER},
    "excluded_product_categories": {"type": "array", "items": INTEGER},
    "exclude_sale_items": BOOLEAN,
    "minimum_amount": STRING,
    "maximum_amount": STRING,
    "email_restrictions": {"type": "array", "items": STRING},
    "meta_data": META,
}


def set_coupon_props(site: Site, coupon: Coupon, values: dict[str, Any]) -> None:
    """The v2 coupons controller's prepare_object_for_database, in schema property order."""
    for key in COUPON_WRITABLE:
        if key not in values or values[key] is None:
            continue
        value = values[key]
        if key == "code":
            code = str(value).strip().lower()
            clash = site.coupon_by_code(code)
            if clash is not None and clash.id != coupon.id:
                raise RestError(
                    "woocommerce_rest_coupon_code_already_exists", "The coupon code already exists", 400
                )
            coupon.code = code
        elif key == "amount":
            amount = decimal(value)
            if amount < 0 or (coupon.discount_type == "percent" and amount > 100):
                raise RestError("coupon_invalid_amount", "Invalid discount amount", 400)
            coupon.amount = amount
        elif key == "date_expires":
            coupon.date_expires = parse_wc_date(value, site.timezone)
        elif key == "email_restrictions":
            emails = [str(email).strip().lower() for email in value if str(email).strip()]
            if any(not EMAIL.match(email) for email in emails):
                raise RestError("coupon_invalid_email_address", "Invalid email address restriction", 400)
            coupon.email_restrictions = emails
        elif key in ("usage_limit", "usage_limit_per_user"):
            setattr(coupon, key, max(0, int(float(value))))
        elif key == "limit_usage_to_x_items":
            coupon.limit_usage_to_x_items = int(float(value)) or None
        elif key in ("individual_use", "free_shipping", "exclude_sale_items"):
            setattr(coupon, key, value in (True, "true", "1", 1))
        elif key in (
            "product_ids",
            "excluded_product_ids",
            "product_categories",
            "excluded_product_categories",
        ):
            setattr(coupon, key, [int(float(v)) for v in value])
        elif key == "meta_data":
            update_meta(site, coupon.meta, value)
        else:  # code-less string props: status, discount_type, description, minimum/maximum_amount
            setattr(coupon, key, str(value))


COUPON_WRITABLE = (
    "code",
    "amount",
    "status",
    "discount_type",
    "description",
    "date_expires",
    "individual_use",
    "product_ids",
    "excluded_product_ids",
    "usage_limit",
    "usage_limit_per_user",
    "limit_usage_to_x_items",
    "free_shipping",
    "product_categories",
    "excluded_product_categories",
    "exclude_sale_items",
    "minimum_amount",
    "maximum_amount",
    "email_restrictions",
    "meta_data",
)  # date_expires_gmt is in the schema but WC_Coupon has no setter for it: ignored on write


def list_coupons(site: Site, request: RestRequest) -> RestResponse:
    coupons = list(site.coupons.values())  # post_status 'all' matches every status, trash too
    if request.query.get("status"):
        coupons = [c for c in coupons if c.status == request.query["status"]]
    if request.params.get("code"):
        found = site.coupon_by_code(str(request.params["code"]))
        coupons = [c for c in coupons if found is not None and c.id == found.id]
    include, exclude = id_list(request.params.get("include")), id_list(request.params.get("exclude"))
    coupons = [c for c in coupons if (not include or c.id in include) and c.id not in exclude]
    inside = date_window(site, request, lambda c: c.date_created, lambda c: c.date_modified)
    coupons = [c for c in coupons if inside(c)]
    coupons = sorted_items(
        coupons,
        request,
        {
            "date": lambda c: c.date_created,
            "modified": lambda c: c.date_modified,
            "id": lambda c: c.id,
            "title": lambda c: c.code,
            "slug": lambda c: c.code,
        },
        "date",
    )
    return paged(site, request, coupons, lambda c: coupon_json(site, c))


def get_coupon(site: Site, request: RestRequest) -> RestResponse:
    return RestResponse(200, coupon_json(site, require_id(site.coupons, request, "shop_coupon", 404)))


def create_coupon(site: Site, request: RestRequest) -> RestResponse:
    params = request.params
    if params.get("id"):
        raise RestError("woocommerce_rest_shop_coupon_exists", "Cannot create existing shop_coupon.", 400)
    if not str(params.get("code") or "").strip():
        raise RestError("woocommerce_rest_empty_coupon_code", "The coupon code cannot be empty.", 400)
    now = site.now()
    coupon = Coupon(site.next_post_id(), "", now, now)
    set_coupon_props(site, coupon, params)
    site.coupons[coupon.id] = coupon
    site.fire("coupon.created", coupon.id)
    response = RestResponse(201, coupon_json(site, coupon))
    response.headers.append(("Location", site.rest_url(f"/wc/v3/coupons/{coupon.id}")))
    return response


def update_coupon(site: Site, request: RestRequest) -> RestResponse:
    coupon = require_id(site.coupons, request, "shop_coupon", 400)
    set_coupon_props(site, coupon, request.params)
    coupon.date_modified = site.now()
    site.fire("coupon.updated", coupon.id)
    return RestResponse(200, coupon_json(site, coupon))


def delete_coupon(site: Site, request: RestRequest) -> RestResponse:
    coupon = require_id(site.coupons, request, "shop_coupon", 404)
    body = coupon_json(site, coupon)
    if to_boolean(request.params.get("force", False)):
        del site.coupons[coupon.id]
    elif coupon.status == "trash":
        raise RestError("woocommerce_rest_already_trashed", "The shop_coupon has already been deleted.", 410)
    else:
        coupon.status = "trash"
        site.fire("coupon.deleted", coupon.id)
    return RestResponse(200, body)
