"""What the fake WooCommerce site holds: products, orders, coupons, webhooks, API keys, and what
it was sent and sent out. Plain records; the rules that change them live in ``woocommerce_site``
(orders, coupons, webhooks), ``woocommerce_discounts`` (WC_Discounts) and the endpoints."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

# The versions the fake claims to be: they show in the Hookshot User-Agent and orders' "version".
WC_VERSION = "10.2.1"
WP_VERSION = "6.8.2"
HOOKSHOT_USER_AGENT = f"WooCommerce/{WC_VERSION} Hookshot (WordPress/{WP_VERSION})"

ADDRESS_FIELDS = (
    "first_name",
    "last_name",
    "company",
    "address_1",
    "address_2",
    "city",
    "state",
    "postcode",
    "country",
)
BILLING_FIELDS = (*ADDRESS_FIELDS, "email", "phone")
SHIPPING_FIELDS = (*ADDRESS_FIELDS, "phone")

# wc_get_order_statuses() without the 'wc-' prefix, in its order, after 'auto-draft'
# (WC_REST_Orders_V2_Controller::get_order_statuses).
ORDER_STATUSES = (
    "auto-draft",
    "pending",
    "processing",
    "on-hold",
    "completed",
    "cancelled",
    "refunded",
    "failed",
    "checkout-draft",
)
STATUS_NAMES = {
    "pending": "Pending payment",
    "processing": "Processing",
    "on-hold": "On hold",
    "completed": "Completed",
    "cancelled": "Cancelled",
    "refunded": "Refunded",
    "failed": "Failed",
    "checkout-draft": "Draft",
    "trash": "Trash",
}
COUPON_TYPES = ("percent", "fixed_cart", "fixed_product")  # wc_get_coupon_types()
WEBHOOK_STATUSES = ("active", "paused", "disabled")  # wc_get_webhook_statuses()

# WC_Webhook::get_default_topic_hooks(): the actions each topic listens to.
TOPIC_HOOKS: dict[str, list[str]] = {
    "coupon.created": ["woocommerce_process_shop_coupon_meta", "woocommerce_new_coupon"],
    "coupon.updated": ["woocommerce_process_shop_coupon_meta", "woocommerce_update_coupon"],
    "coupon.deleted": ["wp_trash_post"],
    "coupon.restored": ["untrashed_post"],
    "customer.created": ["user_register", "woocommerce_created_customer", "woocommerce_new_customer"],
    "customer.updated": ["profile_update", "woocommerce_update_customer"],
    "customer.deleted": ["delete_user"],
    "order.created": ["woocommerce_new_order"],
    "order.updated": [
        "woocommerce_update_order",
        "woocommerce_order_refunded",
        "woocommerce_delete_order_refund",
    ],
    "order.deleted": ["wp_trash_post", "woocommerce_trash_order"],
    "order.restored": ["untrashed_post", "woocommerce_untrash_order"],
    "product.created": [
        "woocommerce_process_product_meta",
        "woocommerce_new_product",
        "woocommerce_new_product_variation",
    ],
    "product.updated": [
        "woocommerce_process_product_meta",
        "woocommerce_update_product",
        "woocommerce_update_product_variation",
    ],
    "product.deleted": ["wp_trash_post"],
    "product.restored": ["untrashed_post"],
    "product.published": ["woocommerce_product_published"],
}
# Topics wc_is_webhook_valid_topic refuses even though they look like custom action topics.
INVALID_ACTION_TOPICS = (
    "action.woocommerce_login_credentials",
    "action.woocommerce_product_csv_importer_check_import_file_path",
    "action.woocommerce_webhook_should_deliver",
)


def is_valid_topic(topic: str) -> bool:
    """wc_is_webhook_valid_topic."""
    if topic in INVALID_ACTION_TOPICS:
        return False
    if topic.startswith(("action.woocommerce_", "action.wc_")):
        return True
    resource, _, event = topic.partition(".")
    return resource in ("coupon", "customer", "order", "product") and event in (
        "created",
        "updated",
        "deleted",
        "restored",
    )


@dataclass(frozen=True)
class ApiKey:
    key_id: int
    user_id: int
    consumer_key: str
    consumer_secret: str
    permissions: str  # read | write | read_write
    description: str


@dataclass(frozen=True)
class Product:
    """A simple product, or a variation (parent_id set)."""

    id: int
    name: str
    price: Decimal
    image_id: int = 0
    image_src: str = ""
    sku: str = ""
    parent_id: int = 0
    parent_name: str | None = None


@dataclass
class Meta:
    id: int
    key: str
    value: Any

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "key": self.key, "value": self.value}


@dataclass
class LineItem:
    id: int
    name: str
    product_id: int
    variation_id: int
    quantity: int
    subtotal: Decimal
    total: Decimal
    product: Product | None
    meta: list[Meta] = field(default_factory=list)


@dataclass
class CouponLine:
    id: int
    code: str
    discount: Decimal
    meta: list[Meta]
    discount_type: str
    nominal_amount: Decimal
    free_shipping: bool


@dataclass
class Refund:
    id: int
    amount: Decimal
    reason: str
    date_created: datetime


@dataclass
class Order:
    id: int
    status: str
    currency: str
    order_key: str
    created_via: str
    date_created: datetime
    date_modified: datetime
    customer_id: int = 0
    billing: dict[str, str] = field(default_factory=lambda: dict.fromkeys(BILLING_FIELDS, ""))
    shipping: dict[str, str] = field(default_factory=lambda: dict.fromkeys(SHIPPING_FIELDS, ""))
    payment_method: str = ""
    payment_method_title: str = ""
    transaction_id: str = ""
    customer_ip_address: str = ""
    customer_user_agent: str = ""
    customer_note: str = ""
    cart_hash: str = ""
    version: str = WC_VERSION
    parent_id: int = 0
    date_paid: datetime | None = None
    date_completed: datetime | None = None
    line_items: list[LineItem] = field(default_factory=list)
    coupon_lines: list[CouponLine] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    meta: list[Meta] = field(default_factory=list)
    discount_total: Decimal = Decimal(0)
    total: Decimal = Decimal(0)
    recorded_coupon_usage: bool = False
    status_before_trash: str | None = None

    @property
    def subtotal(self) -> Decimal:
        return sum((item.subtotal for item in self.line_items), Decimal(0))

    @property
    def needs_payment(self) -> bool:
        """WC_Abstract_Order::needs_payment: pending or failed, and something to pay."""
        return self.status in ("pending", "failed") and self.total > 0

    @property
    def is_editable(self) -> bool:
        """WC_Order::is_editable."""
        return self.status in ("pending", "on-hold", "auto-draft")


@dataclass
class Coupon:
    id: int
    code: str
    date_created: datetime
    date_modified: datetime
    amount: Decimal = Decimal(0)
    status: str = "publish"
    discount_type: str = "fixed_cart"
    description: str = ""
    date_expires: datetime | None = None
    usage_count: int = 0
    individual_use: bool = False
    product_ids: list[int] = field(default_factory=list)
    excluded_product_ids: list[int] = field(default_factory=list)
    usage_limit: int = 0
    usage_limit_per_user: int = 0
    limit_usage_to_x_items: int | None = None
    free_shipping: bool = False
    product_categories: list[int] = field(default_factory=list)
    excluded_product_categories: list[int] = field(default_factory=list)
    exclude_sale_items: bool = False
    minimum_amount: str = ""
    maximum_amount: str = ""
    email_restrictions: list[str] = field(default_factory=list)
    used_by: list[str] = field(default_factory=list)
    meta: list[Meta] = field(default_factory=list)


@dataclass
class Webhook:
    id: int
    name: str
    status: str
    topic: str
    delivery_url: str
    secret: str
    user_id: int
    date_created: datetime
    date_modified: datetime
    api_version: str = "wp_api_v3"
    failure_count: int = 0
    pending_delivery: bool = True

    @property
    def resource(self) -> str:
        return self.topic.split(".")[0]

    @property
    def event(self) -> str:
        parts = self.topic.split(".")
        return parts[1] if len(parts) > 1 else ""

    @property
    def hooks(self) -> list[str]:
        if self.resource == "action":
            return [self.event]
        return list(TOPIC_HOOKS.get(self.topic, []))


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any  # parsed JSON, a form dict, or None
    auth: str | None  # "basic" | "query" | None: how the request carried REST keys
    headers: dict[str, str]


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery (or ping) the site attempted."""

    webhook_id: int
    topic: str  # "ping" for the creation ping
    url: str
    body: bytes
    headers: dict[str, str]
    status: int  # the answer's HTTP status; 0 when there was no answer
    error: str | None = None

    @property
    def ok(self) -> bool:
        """class-wc-webhook.php log_delivery: 2xx, 301 and 302 count as success."""
        return 200 <= self.status < 303

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class ApprovalResult:
    """What approving (or denying) a wc-auth request led to."""

    redirect_url: str | None  # where WooCommerce sends the browser; None when it shows an error
    key: ApiKey | None  # the key WooCommerce created (and kept)
    callback_status: int | None  # how the callback_url answered the key POST (0: no answer)
    error: str | None  # the wp_die text, e.g. "Error: ... ." (status 401)
    revoked: bool = False  # a key was created, then deleted because the callback failed
