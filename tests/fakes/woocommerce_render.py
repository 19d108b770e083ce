"""The fake WooCommerce site's objects as the REST API shows them.

Orders as ``WC_REST_Orders_V2_Controller::get_formatted_item_data`` plus the v3 additions
(``currency_symbol``), coupons as the v2 coupons controller, webhooks as the v2 webhooks
controller (no ``secret``, no ``api_version``: neither is ever returned), settings as
``WC_REST_Setting_Options_Controller``, and the WordPress REST index (``GET /wp-json/``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.fakes.woocommerce_site import Site
from tests.fakes.woocommerce_state import BILLING_FIELDS, SHIPPING_FIELDS, Coupon, LineItem, Order, Webhook
from tests.fakes.woocommerce_wp import format_decimal, links, php_number, rest_date


def _meta_with_display(meta: list[Any]) -> list[dict[str, Any]]:
    return [
        {"id": m.id, "key": m.key, "value": m.value, "display_key": m.key, "display_value": m.value}
        for m in meta
    ]


def _line_item(item: LineItem, dp: int) -> dict[str, Any]:
    product = item.product
    if item.quantity and item.total % item.quantity == 0 and item.total == item.total.to_integral_value():
        price: int | float = php_number(item.total / item.quantity)
    elif item.quantity:
        price = float(item.total) / item.quantity  # PHP float division, unrounded
    else:
        price = 0
    return {
        "id": item.id,
        "name": item.name,
        "product_id": item.product_id,
        "variation_id": item.variation_id,
        "quantity": item.quantity,
        "tax_class": "",
        "subtotal": format_decimal(item.subtotal, dp),
        "subtotal_tax": format_decimal(Decimal(0), dp),
        "total": format_decimal(item.total, dp),
        "total_tax": format_decimal(Decimal(0), dp),
        "taxes": [],
        "meta_data": _meta_with_display(item.meta),
        "sku": product.sku if product else None,
        "price": price,
        "image": {"id": product.image_id if product else 0, "src": product.image_src if product else ""},
        "parent_name": product.parent_name if product and product.parent_id else None,
    }


def order_json(
    site: Site,
    order: Order,
    *,
    dp: int = 2,
    include_meta: list[str] | None = None,
    exclude_meta: list[str] | None = None,
) -> dict[str, Any]:
    """GET /wc/v3/orders/{id}, which is also the order.created/updated/restored webhook payload."""
    tz = site.timezone
    meta = [m for m in order.meta if not include_meta or m.key in include_meta]
    meta = [m for m in meta if not exclude_meta or m.key not in exclude_meta]
    links_extra: dict[str, str] = {}
    if order.customer_id:
        links_extra["customer"] = site.rest_url(f"/wc/v3/customers/{order.customer_id}")
    if order.parent_id:
        links_extra["up"] = site.rest_url(f"/wc/v3/orders/{order.parent_id}")
    zero = format_decimal(Decimal(0), dp)
    return {
        "id": order.id,
        "parent_id": order.parent_id,
        "status": order.status,
        "currency": order.currency,
        "version": order.version,
        "prices_include_tax": False,
        "date_created": rest_date(order.date_created, tz, gmt=False),
        "date_modified": rest_date(order.date_modified, tz, gmt=False),
        "discount_total": format_decimal(order.discount_total, dp),
        "discount_tax": zero,
        "shipping_total": zero,
        "shipping_tax": zero,
        "cart_tax": zero,
        "total": format_decimal(order.total, dp),
        "total_tax": zero,
        "customer_id": order.customer_id,
        "order_key": order.order_key,
        "billing": {key: order.billing.get(key, "") for key in BILLING_FIELDS},
        "shipping": {key: order.shipping.get(key, "") for key in SHIPPING_FIELDS},
        "payment_method": order.payment_method,
        "payment_method_title": order.payment_method_title,
        "transaction_id": order.transaction_id,
        "customer_ip_address": order.customer_ip_address,
        "customer_user_agent": order.customer_user_agent,
        "created_via": order.created_via,
        "customer_note": order.customer_note,
        "date_completed": rest_date(order.date_completed, tz, gmt=False),
        "date_paid": rest_date(order.date_paid, tz, gmt=False),
        "cart_hash": order.cart_hash,
        "number": str(order.id),
        "meta_data": [m.json() for m in meta],
        "line_items": [_line_item(item, dp) for item in order.line_items],
        "tax_lines": [],
        "shipping_lines": [],
        "fee_lines": [],
        "coupon_lines": [
            {
                "id": line.id,
                "code": line.code,
                # set_discount() stores wc_format_decimal(float): no fixed decimals, zeros trimmed
                "discount": format_decimal(line.discount, None),
                "discount_tax": "0",
                "meta_data": _meta_with_display(line.meta),
                "discount_type": line.discount_type,
                "nominal_amount": float(line.nominal_amount),
                "free_shipping": line.free_shipping,
            }
            for line in order.coupon_lines
        ],
        "refunds": [
            {"id": refund.id, "reason": refund.reason, "total": "-" + format_decimal(refund.amount, dp)}
            for refund in order.refunds
        ],
        "payment_url": f"{site.url}/checkout/order-pay/{order.id}/?pay_for_order=true&key={order.order_key}",
        "is_editable": order.is_editable,
        "needs_payment": order.needs_payment,
        "needs_processing": any(item.product is not None for item in order.line_items),
        "date_created_gmt": rest_date(order.date_created, tz, gmt=True),
        "date_modified_gmt": rest_date(order.date_modified, tz, gmt=True),
        "date_completed_gmt": rest_date(order.date_completed, tz, gmt=True),
        "date_paid_gmt": rest_date(order.date_paid, tz, gmt=True),
        "currency_symbol": site.currency_symbol(order.currency),
        "_links": links(
            site.rest_url(f"/wc/v3/orders/{order.id}"), site.rest_url("/wc/v3/orders"), **links_extra
        ),
    }


def coupon_json(site: Site, coupon: Coupon) -> dict[str, Any]:
    tz = site.timezone
    return {
        "id": coupon.id,
        "code": coupon.code,
        "amount": format_decimal(coupon.amount, 2),
        "status": coupon.status,
        "date_created": rest_date(coupon.date_created, tz, gmt=False),
        "date_created_gmt": rest_date(coupon.date_created, tz, gmt=True),
        "date_modified": rest_date(coupon.date_modified, tz, gmt=False),
        "date_modified_gmt": rest_date(coupon.date_modified, tz, gmt=True),
        "discount_type": coupon.discount_type,
        "description": coupon.description,
        "date_expires": rest_date(coupon.date_expires, tz, gmt=False),
        "date_expires_gmt": rest_date(coupon.date_expires, tz, gmt=True),
        "usage_count": coupon.usage_count,
        "individual_use": coupon.individual_use,
        "product_ids": coupon.product_ids,
        "excluded_product_ids": coupon.excluded_product_ids,
        "usage_limit": coupon.usage_limit or None,
        "usage_limit_per_user": coupon.usage_limit_per_user or None,
        "limit_usage_to_x_items": coupon.limit_usage_to_x_items or None,
        "free_shipping": coupon.free_shipping,
        "product_categories": coupon.product_categories,
        "excluded_product_categories": coupon.excluded_product_categories,
        "exclude_sale_items": coupon.exclude_sale_items,
        "minimum_amount": format_decimal(_amount(coupon.minimum_amount), 2),
        "maximum_amount": format_decimal(_amount(coupon.maximum_amount), 2),
        "email_restrictions": coupon.email_restrictions,
        "used_by": coupon.used_by,
        "meta_data": [m.json() for m in coupon.meta],
        "_links": links(site.rest_url(f"/wc/v3/coupons/{coupon.id}"), site.rest_url("/wc/v3/coupons")),
    }


def _amount(text: str) -> Decimal:
    try:
        return Decimal(text) if text.strip() else Decimal(0)
    except ArithmeticError:
        return Decimal(0)


def webhook_json(site: Site, webhook: Webhook) -> dict[str, Any]:
    tz = site.timezone
    return {
        "id": webhook.id,
        "name": webhook.name,
        "status": webhook.status,
        "topic": webhook.topic,
        "resource": webhook.resource,
        "event": webhook.event,
        "hooks": webhook.hooks,
        "delivery_url": webhook.delivery_url,
        "date_created": rest_date(webhook.date_created, tz, gmt=False),
        "date_created_gmt": rest_date(webhook.date_created, tz, gmt=True),
        "date_modified": rest_date(webhook.date_modified, tz, gmt=False),
        "date_modified_gmt": rest_date(webhook.date_modified, tz, gmt=True),
        "_links": links(site.rest_url(f"/wc/v3/webhooks/{webhook.id}"), site.rest_url("/wc/v3/webhooks")),
    }


# WooCommerce > Settings > General, as WC_Settings_General defines the fields (option lists cut
# down to a few entries).
COUNTRY_OPTIONS = {
    "IN:KA": "India - Karnataka",
    "IN:MH": "India - Maharashtra",
    "IN:DL": "India - Delhi",
    "US:CA": "United States (US) - California",
    "GB": "United Kingdom (UK)",
}
CURRENCY_OPTIONS = {
    "INR": "Indian rupee (&#8377;) &mdash; INR",
    "USD": "United States (US) dollar (&#36;) &mdash; USD",
    "EUR": "Euro (&euro;) &mdash; EUR",
    "GBP": "Pound sterling (&pound;) &mdash; GBP",
}


def _setting(
    site: Site, key: str, label: str, description: str, kind: str, default: str, value: str, **extra: Any
) -> dict[str, Any]:
    setting: dict[str, Any] = {
        "id": key,
        "label": label,
        "description": description,
        "type": kind,
        "default": default,
    }
    setting.update(extra)
    setting["tip"] = description
    setting["value"] = value
    setting["_links"] = {
        "self": [
            {
                "href": site.rest_url(f"/wc/v3/settings/general/{key}"),
                "targetHints": {"allow": ["GET", "POST", "PUT", "PATCH"]},
            }
        ],
        "collection": [{"href": site.rest_url("/wc/v3/settings/general")}],
    }
    return setting


def general_settings(site: Site) -> list[dict[str, Any]]:
    return [
        _setting(
            site,
            "woocommerce_store_address",
            "Address line 1",
            "The street address for your business location.",
            "text",
            "",
            "",
        ),
        _setting(
            site,
            "woocommerce_store_address_2",
            "Address line 2",
            "An additional, optional address line for your business location.",
            "text",
            "",
            "",
        ),
        _setting(
            site,
            "woocommerce_store_city",
            "City",
            "The city in which your business is located.",
            "text",
            "",
            "",
        ),
        _setting(
            site,
            "woocommerce_default_country",
            "Country / State",
            "The country and state or province, if any, in which your business is located.",
            "select",
            "US:CA",
            site.default_country,
            options=COUNTRY_OPTIONS,
        ),
        _setting(
            site,
            "woocommerce_store_postcode",
            "Postcode / ZIP",
            "The postal code, if any, in which your business is located.",
            "text",
            "",
            "",
        ),
        _setting(
            site,
            "woocommerce_calc_taxes",
            "Enable taxes",
            "Enable tax rates and calculations",
            "checkbox",
            "no",
            "no",
        ),
        _setting(
            site,
            "woocommerce_enable_coupons",
            "Enable coupons",
            "Enable the use of coupon codes",
            "checkbox",
            "yes",
            "yes",
        ),
        _setting(
            site,
            "woocommerce_currency",
            "Currency",
            "This controls what currency prices are listed at in the catalog and which currency gateways will take payments in.",
            "select",
            "USD",
            site.currency,
            options=CURRENCY_OPTIONS,
        ),
        _setting(
            site,
            "woocommerce_currency_pos",
            "Currency position",
            "This controls the position of the currency symbol.",
            "select",
            "left",
            "left",
            options={
                "left": "Left",
                "right": "Right",
                "left_space": "Left with space",
                "right_space": "Right with space",
            },
        ),
        _setting(
            site,
            "woocommerce_price_thousand_sep",
            "Thousand separator",
            "This sets the thousand separator of displayed prices.",
            "text",
            ",",
            ",",
        ),
        _setting(
            site,
            "woocommerce_price_decimal_sep",
            "Decimal separator",
            "This sets the decimal separator of displayed prices.",
            "text",
            ".",
            ".",
        ),
        _setting(
            site,
            "woocommerce_price_num_decimals",
            "Number of decimals",
            "This sets the number of decimal points shown in displayed prices.",
            "number",
            "2",
            "2",
        ),
    ]


NAMESPACES = [
    "oembed/1.0",
    "wc/store",
    "wc/store/v1",
    "wc/v1",
    "wc/v2",
    "wc/v3",
    "wc-telemetry",
    "wp/v2",
    "wp-site-health/v1",
]


def rest_index(site: Site, routes: list[str]) -> dict[str, Any]:
    """GET /wp-json/: WP_REST_Server::get_index (routes cut down to what this fake serves)."""
    return {
        "name": site.name,
        "description": site.description,
        "url": site.url,
        "home": site.url,
        "gmt_offset": site.gmt_offset,
        "timezone_string": site.timezone_string,
        "page_for_posts": 0,
        "page_on_front": 0,
        "show_on_front": "posts",
        "namespaces": NAMESPACES,
        "authentication": {
            "application-passwords": {
                "endpoints": {"authorization": f"{site.url}/wp-admin/authorize-application.php"}
            }
        },
        "routes": {
            route: {
                "namespace": "" if route == "/" else "wc/v3",
                "methods": ["GET"],
                "_links": {"self": [{"href": site.rest_url(route)}]},
            }
            for route in routes
        },
        "site_logo": 0,
        "site_icon": 0,
        "site_icon_url": "",
        "_links": {"help": [{"href": "https://developer.wordpress.org/rest-api/"}]},
    }
