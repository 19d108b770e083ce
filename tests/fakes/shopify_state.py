"""What the fake Shopify holds: its shops, catalogue, orders, discounts and tokens, and the
requests it was sent. Plain records; the rules that change them live with the endpoints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, a form dict, or None
    operation: str | None  # GraphQL operation name, or the OAuth grant_type

    @property
    def variables(self) -> dict[str, Any]:
        variables = self.body.get("variables") if isinstance(self.body, dict) else None
        return variables if isinstance(variables, dict) else {}


@dataclass(frozen=True)
class FakeShop:
    domain: str
    name: str
    currency: str
    timezone: str
    country: str


@dataclass
class FakeDiscount:
    id: str
    code: str
    input: dict[str, Any]
    starts_at: datetime
    ends_at: datetime | None
    usage_limit: int | None
    used_count: int = 0
    deleted: bool = False


@dataclass(frozen=True)
class FakeVariant:
    id: int
    image_url: str | None
    product_image_url: str | None


@dataclass
class FakeOrder:
    id: int
    total: Decimal
    currency: str
    cancelled_at: str | None
    financial_status: str
    refunded: Decimal
    # Admin GraphQL Order.paymentGatewayNames ("Cash on Delivery (COD)" for COD) and
    # Order.cancelReason (OrderCancelReason: CUSTOMER, DECLINED, FRAUD, INVENTORY, OTHER, STAFF).
    payment_gateway_names: tuple[str, ...] = ("Razorpay Secure (UPI, Cards, Wallets, NetBanking)",)
    cancel_reason: str | None = None


@dataclass(frozen=True)
class FakeCustomer:
    id: int
    phone: str | None


@dataclass
class AccessToken:
    shop: str
    scope: str
    expires_at: float | None  # time.time(); None for non-expiring offline tokens


@dataclass
class RefreshToken:
    shop: str
    expires_at: float
    spent: bool = False
