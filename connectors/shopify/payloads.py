"""Shopify webhook bodies -> the common model (pure functions, no I/O).

Identity: since API 2026-04 checkout webhooks carry no ``id`` and order webhooks no
``checkout_id`` (Shopify's changelog "Removed Checkout ID from checkout and order webhooks"):
a checkout is its ``token``, which orders name as ``checkout_token``. ``checkouts/delete``
carries ``id`` and ``cart_token`` but no token, so carts also keep the storefront
``cart_token`` to be found by. Older API versions' ids are still used when present.

Shopify's checkout and order webhooks use the REST resource shapes. Amounts are taken in the
shopper's presentment currency (``*_set.presentment_money`` when the body has money bags),
because that is what the shopper saw and what the WhatsApp message must show.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from connectors.base import (
    AppUninstalled,
    Buyer,
    CartDeleted,
    CartLine,
    CartSnapshot,
    ConsentSource,
    CustomerDataRequest,
    CustomerRedact,
    CustomerRef,
    Ignored,
    OrderChanged,
    OrderEvent,
    PayloadError,
    StoreRedact,
    WebhookEvent,
    parse_currency,
    parse_decimal,
    parse_timestamp,
)
from connectors.payload_fields import (
    first_valid_phone,
    line_list,
    line_quantity,
    optional_object,
    optional_str,
    platform_id,
    require,
)

CHECKOUT_TOPICS = frozenset({"checkouts/create", "checkouts/update"})
ORDER_TOPICS = frozenset({"orders/create", "orders/paid"})
# After an order is placed: its refunds, cancellation (a COD parcel returned among them) and
# edits. Their bodies hold only part of the order's money, so the order is read again.
ORDER_CHANGE_TOPICS = frozenset({"orders/updated", "orders/cancelled"})
REFUND_TOPIC = "refunds/create"
COMPLIANCE_TOPICS = frozenset({"customers/data_request", "customers/redact", "shop/redact"})
# Shopify sends shop/redact this long after the uninstall it follows.
SHOP_REDACT_DELAY = timedelta(hours=48)
KNOWN_TOPICS = (
    CHECKOUT_TOPICS
    | ORDER_TOPICS
    | ORDER_CHANGE_TOPICS
    | COMPLIANCE_TOPICS
    | {REFUND_TOPIC, "checkouts/delete", "app/uninstalled"}
)
# Consent states on Shopify's customer marketing-consent objects.
SUBSCRIBED = "subscribed"
REFUSED_STATES = frozenset({"unsubscribed", "redacted", "not_subscribed"})


def parse(
    topic: str,
    payload: dict[str, Any],
    *,
    default_region: str,
    triggered_at: datetime | None,
    shop: str | None = None,
) -> WebhookEvent:
    if shop is not None:
        _same_shop(payload, shop)
    if topic in CHECKOUT_TOPICS:
        return checkout_snapshot(payload, default_region)
    if topic in ORDER_TOPICS:
        return order_event(payload, default_region)
    occurred_at = triggered_at or datetime.now(UTC)
    if topic in ORDER_CHANGE_TOPICS:
        return OrderChanged(order_id=platform_id(payload, "id"), occurred_at=occurred_at)
    if topic == REFUND_TOPIC:
        return OrderChanged(order_id=platform_id(payload, "order_id"), occurred_at=occurred_at)
    if topic == "checkouts/delete":
        return CartDeleted(
            cart_id=platform_id(payload, "id"),
            occurred_at=occurred_at,
            cart_token=optional_str(payload, "cart_token"),
        )
    if topic == "app/uninstalled":
        return AppUninstalled(occurred_at=occurred_at)
    if topic == "customers/data_request":
        request = optional_object(payload, "data_request")
        return CustomerDataRequest(
            customer=_customer_ref(payload, default_region),
            request_id=optional_str(request, "id"),
            order_ids=_id_list(payload, "orders_requested"),
        )
    if topic == "customers/redact":
        return CustomerRedact(
            customer=_customer_ref(payload, default_region), order_ids=_id_list(payload, "orders_to_redact")
        )
    if topic == "shop/redact":
        return StoreRedact(uninstalled_by=occurred_at - SHOP_REDACT_DELAY)
    return Ignored(f"topic {topic} is not used by cartback")


def _same_shop(payload: Mapping[str, Any], shop: str) -> None:
    """The shop a body names must be the one the headers name.

    The HMAC covers the body, not the headers: a captured privacy request replayed with
    another shop's header must not erase that shop's customer.
    """
    for name in ("shop_domain", "myshopify_domain"):
        named = payload.get(name)
        if isinstance(named, str) and named.strip().lower() != shop:
            raise PayloadError(f"{name} does not match the shop the delivery is for")


# -- money and addresses --------------------------------------------------------------------


def _presentment_amount(payload: Mapping[str, Any], name: str, where: str = "") -> Decimal:
    bag = payload.get(f"{name}_set")
    if isinstance(bag, dict) and isinstance(bag.get("presentment_money"), dict):
        amount = bag["presentment_money"].get("amount")
        return parse_decimal(amount, f"{where}{name}_set.presentment_money.amount")
    return parse_decimal(payload.get(name), f"{where}{name}")


def _presentment_currency(payload: Mapping[str, Any]) -> str:
    value = payload.get("presentment_currency") or payload.get("currency")
    return parse_currency(value, "presentment_currency")


def _country(address: Mapping[str, Any]) -> str | None:
    code = address.get("country_code")
    return code.upper() if isinstance(code, str) and len(code) == 2 and code.isalpha() else None


def _phone_chain(payload: Mapping[str, Any], default_region: str) -> str | None:
    """DESIGN.md's order: phone, sms_marketing_phone, shipping, billing, customer, its address."""
    shipping = optional_object(payload, "shipping_address")
    billing = optional_object(payload, "billing_address")
    customer = optional_object(payload, "customer")
    customer_address = optional_object(customer, "default_address")
    region = _country(shipping) or _country(billing) or _country(customer_address)
    return first_valid_phone(
        [
            (payload.get("phone"), region),
            (payload.get("sms_marketing_phone"), region),
            (shipping.get("phone"), _country(shipping) or region),
            (billing.get("phone"), _country(billing) or region),
            (customer.get("phone"), region),
            (customer_address.get("phone"), _country(customer_address) or region),
        ],
        default_region,
    )


def _consent_state(customer: Mapping[str, Any], name: str) -> str | None:
    consent = customer.get(name)
    if isinstance(consent, dict) and isinstance(consent.get("state"), str):
        return str(consent["state"]).lower()
    return None


def _consent(payload: Mapping[str, Any], customer: Mapping[str, Any]) -> tuple[bool, ConsentSource]:
    # Shopify spells it whats_app_ on its consent webhook; accept either spelling.
    whatsapp = _consent_state(customer, "whats_app_marketing_consent") or _consent_state(
        customer, "whatsapp_marketing_consent"
    )
    if whatsapp in REFUSED_STATES:
        # An explicit "no" to WhatsApp outranks a ticked SMS box.
        return False, ConsentSource.UNKNOWN
    accepts_sms = payload.get("buyer_accepts_sms_marketing", False)
    if accepts_sms is not None and not isinstance(accepts_sms, bool):
        raise PayloadError("buyer_accepts_sms_marketing must be true or false")
    if accepts_sms:
        return True, ConsentSource.CHECKOUT_CHECKBOX
    if whatsapp == SUBSCRIBED or _consent_state(customer, "sms_marketing_consent") == SUBSCRIBED:
        return True, ConsentSource.CUSTOMER_RECORD
    return False, ConsentSource.UNKNOWN


# -- checkouts and orders -------------------------------------------------------------------


def _line(raw: Any, index: int) -> CartLine:
    if not isinstance(raw, dict):
        raise PayloadError(f"line_items[{index}] must be an object")
    quantity = line_quantity(raw, f"line_items[{index}]")
    title = raw.get("presentment_title") or raw.get("title")
    if not isinstance(title, str) or not title.strip():
        raise PayloadError(f"line_items[{index}].title is required")
    variant_title = raw.get("presentment_variant_title") or raw.get("variant_title")
    return CartLine(
        title=title.strip(),
        quantity=quantity,
        unit_price=_presentment_amount(raw, "price", f"line_items[{index}]."),
        product_id=optional_str(raw, "product_id"),
        variant_id=optional_str(raw, "variant_id"),
        variant_title=variant_title.strip()
        if isinstance(variant_title, str) and variant_title.strip()
        else None,
    )


def checkout_snapshot(payload: dict[str, Any], default_region: str) -> CartSnapshot:
    raw_lines = line_list(payload, "line_items")
    customer = optional_object(payload, "customer")
    shipping = optional_object(payload, "shipping_address")
    billing = optional_object(payload, "billing_address")
    consent, source = _consent(payload, customer)
    first_name = customer.get("first_name") or shipping.get("first_name") or billing.get("first_name")
    token = optional_str(payload, "token")
    return CartSnapshot(
        cart_id=token or platform_id(payload, "id"),
        cart_token=optional_str(payload, "cart_token"),
        updated_at=parse_timestamp(require(payload, "updated_at", str), "updated_at"),
        currency=_presentment_currency(payload),
        subtotal=_presentment_amount(payload, "subtotal_price"),
        total=_presentment_amount(payload, "total_price"),
        lines=tuple(_line(raw, index) for index, raw in enumerate(raw_lines)),
        buyer=Buyer(
            phone_e164=_phone_chain(payload, default_region),
            email=optional_str(payload, "email") or optional_str(customer, "email"),
            first_name=first_name.strip() if isinstance(first_name, str) and first_name.strip() else None,
            customer_id=optional_str(customer, "id"),
            marketing_consent=consent,
            consent_source=source,
        ),
        checkout_url=optional_str(payload, "abandoned_checkout_url"),
        completed=payload.get("completed_at") is not None,
        raw=payload,
    )


def order_event(payload: dict[str, Any], default_region: str) -> OrderEvent:
    codes = payload.get("discount_codes") or []
    if not isinstance(codes, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("code"), str) for entry in codes
    ):
        raise PayloadError("discount_codes must be a list of {code: string}")
    return OrderEvent(
        order_id=platform_id(payload, "id"),
        created_at=parse_timestamp(require(payload, "created_at", str), "created_at"),
        currency=_presentment_currency(payload),
        total=_presentment_amount(payload, "total_price"),
        cart_id=optional_str(payload, "checkout_token") or optional_str(payload, "checkout_id"),
        cart_token=optional_str(payload, "cart_token"),
        discount_codes=tuple(entry["code"] for entry in codes),
        phone_e164=_phone_chain(payload, default_region),
        store_total=_shop_amount(payload, "total_price"),
        raw=payload,
    )


def _shop_amount(payload: Mapping[str, Any], name: str) -> Decimal | None:
    bag = payload.get(f"{name}_set")
    if isinstance(bag, dict) and isinstance(bag.get("shop_money"), dict):
        return parse_decimal(bag["shop_money"].get("amount"), f"{name}_set.shop_money.amount")
    return None


# -- privacy requests -----------------------------------------------------------------------


def _customer_ref(payload: Mapping[str, Any], default_region: str) -> CustomerRef:
    customer = optional_object(payload, "customer")
    return CustomerRef(
        customer_id=optional_str(customer, "id"),
        email=optional_str(customer, "email"),
        # An unparseable phone must not block an erasure: the id and email still match.
        phone_e164=first_valid_phone([(customer.get("phone"), None)], default_region),
    )


def _id_list(payload: Mapping[str, Any], name: str) -> tuple[str, ...]:
    values = payload.get(name) or []
    if not isinstance(values, list) or not all(
        isinstance(v, (int, str)) and not isinstance(v, bool) for v in values
    ):
        raise PayloadError(f"{name} must be a list of ids")
    return tuple(str(v) for v in values)
