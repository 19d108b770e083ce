"""The fake Shopify's Admin GraphQL endpoint: the six named operations cartback sends (see
``connectors/shopify/operations.py``), how a document is checked against them, query cost and
throttling, and the resolvers that read and change the fake's state."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

from werkzeug.wrappers import Request, Response

from tests.fakes.shopify_graphql_input import (
    SETTABLE_CONSENT_STATES,
    GraphQLErrors,
    coerce,
    discount_user_errors,
    parse_datetime,
    parse_gid,
)
from tests.fakes.shopify_http import json_response
from tests.fakes.shopify_state import (
    AccessToken,
    FakeCustomer,
    FakeDiscount,
    FakeOrder,
    FakeShop,
    FakeVariant,
)

DEFAULT_API_VERSION = "2026-10"
# customerWhatsAppMarketingConsentUpdate first appears in the 2026-07 Admin API.
WHATSAPP_CONSENT_SINCE = "2026-07"

INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"
MAX_NODE_IDS = 250  # nodes(ids:) limit
BUCKET_SIZE = 2000.0  # cost points; throttleStatus.maximumAvailable
RESTORE_RATE = 100.0  # cost points per second; throttleStatus.restoreRate
THROTTLED_DOCS = "https://shopify.dev/api/usage/rate-limits"

OPERATION_HEAD = re.compile(r"^\s*(query|mutation)\s+(\w+)\s*(?:\(([^)]*)\))?")
VARIABLE_DECLARATION = re.compile(r"\$(\w+)\s*:\s*([\w\[\]!]+)")


def _shopify_decimal(value: Decimal) -> str:
    """Shopify serialises Decimal without trailing zeros but with one decimal: "2098.0", "10.5"."""
    text = format(value.normalize(), "f")
    return text if "." in text else f"{text}.0"


@dataclass(frozen=True)
class Operation:
    kind: str  # "query" or "mutation"
    root_field: str
    variables: dict[str, str]  # what the document must declare: name -> type
    scope: str | None  # access scope the token needs
    cost: int  # requested cost points, before per-id costs
    null_field: str | None = None  # the payload field fail_next() nulls (mutations only)


class AdminGraphQL:
    """FakeShopify's GraphQL endpoint and its steering; FakeShopify.__init__ sets these fields."""

    OPERATIONS: ClassVar[dict[str, Operation]] = {
        "CartbackShop": Operation("query", "shop", {}, None, 1),
        "CartbackVariantImages": Operation("query", "nodes", {"ids": "[ID!]!"}, "read_products", 2),
        "CartbackDiscountCreate": Operation(
            "mutation",
            "discountCodeBasicCreate",
            {"basicCodeDiscount": "DiscountCodeBasicInput!"},
            "write_discounts",
            10,
            "codeDiscountNode",
        ),
        "CartbackDiscountDelete": Operation(
            "mutation", "discountCodeDelete", {"id": "ID!"}, "write_discounts", 10, "deletedCodeDiscountId"
        ),
        "CartbackWhatsAppOptOut": Operation(
            "mutation",
            "customerWhatsAppMarketingConsentUpdate",
            {"input": "CustomerWhatsAppMarketingConsentUpdateInput!"},
            "write_customers",
            10,
            "customerPhoneNumber",
        ),
        "CartbackOrderStatuses": Operation("query", "nodes", {"ids": "[ID!]!"}, "read_orders", 2),
        "CartbackDiscountByCode": Operation(
            "query", "codeDiscountNodeByCode", {"code": "String!"}, "read_discounts", 1
        ),
    }

    api_version: str
    discounts: dict[str, dict[str, FakeDiscount]]
    whatsapp_consent: dict[tuple[str, str], str]
    variants: dict[int, FakeVariant]
    customers: dict[int, FakeCustomer]
    orders: dict[int, FakeOrder]
    _access: dict[str, AccessToken]
    _throttle_next: int
    _fail_next: dict[str, list[list[dict[str, Any]]]]
    _next_id: int
    _lock: threading.RLock
    storefront_url: Callable[[str], str]  # a FakeShopify method
    _find_discount: Callable[[str, str], FakeDiscount | None]  # a FakeShopify method

    # --- steering --------------------------------------------------------------------------

    def throttle_next(self, n: int = 1) -> None:
        with self._lock:
            self._throttle_next += n

    def fail_next(self, operation_name: str, user_errors: list[dict[str, Any]]) -> None:
        """The next call of that mutation (operation or root field name) answers these userErrors;
        of a query (operation name), these top-level errors (Shopify answers an internal error so,
        HTTP 200 with ``errors`` and no ``data``)."""
        if (
            self.OPERATIONS.get(operation_name) is not None
            and self.OPERATIONS[operation_name].kind == "query"
        ):
            with self._lock:
                self._fail_next.setdefault(operation_name, []).append(user_errors)
            return
        names = {name for name, op in self.OPERATIONS.items() if op.kind == "mutation"}
        names |= {self.OPERATIONS[name].root_field for name in names}
        if operation_name not in names:
            raise ValueError(f"{operation_name} is not a mutation the fake serves")
        with self._lock:
            self._fail_next.setdefault(operation_name, []).append(user_errors)

    # --- HTTP ------------------------------------------------------------------------------

    def _serve_graphql(self, request: Request, shop: FakeShop, body: Any, version: str) -> Response:
        if version != self.api_version:
            return json_response({"errors": "Not Found"}, 404)
        token = self._access.get(request.headers.get("X-Shopify-Access-Token", ""))
        if token is None or token.shop != shop.domain or (token.expires_at or float("inf")) <= time.time():
            return json_response({"errors": INVALID_TOKEN}, 401)
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return json_response({"errors": {"query": "Required parameter missing or invalid"}}, 400)
        raw_variables = body.get("variables") or {}
        if not isinstance(raw_variables, dict):
            return json_response({"errors": {"variables": "must be a JSON object"}}, 400)
        head = OPERATION_HEAD.match(body["query"])
        if head is None:
            return self._graphql_answer(1, errors=[{"message": "cartback fake: operations must be named"}])
        name = head.group(2)
        operation = self.OPERATIONS.get(name)
        if operation is None:
            return self._graphql_answer(1, errors=[{"message": f"unknown operation {name}"}])
        ids = raw_variables.get("ids")
        cost = operation.cost + (len(ids) if isinstance(ids, list) else 0)
        if self._throttle_next:
            self._throttle_next -= 1
            return self._throttled(cost)
        queued = self._fail_next.get(name) if operation.kind == "query" else None
        if queued:
            return self._graphql_answer(cost, errors=queued.pop(0))
        try:
            self._check_document(name, operation, head.group(1), head.group(3) or "", body["query"], token)
            variables = {
                var: coerce(raw_variables.get(var), kind, (var, kind))
                for var, kind in operation.variables.items()
            }
            data = self._run(name, operation, shop, variables)
        except GraphQLErrors as refused:
            return self._graphql_answer(cost, errors=refused.errors)
        return self._graphql_answer(cost, data=data)

    def _check_document(
        self, name: str, operation: Operation, kind: str, declared: str, query: str, token: AccessToken
    ) -> None:
        """The document declares what the operation needs and selects its root field."""
        if (
            operation.root_field == "customerWhatsAppMarketingConsentUpdate"
            and self.api_version < WHATSAPP_CONSENT_SINCE
        ):
            raise GraphQLErrors(
                {
                    "message": f"Field '{operation.root_field}' doesn't exist on type 'Mutation'",
                    "extensions": {
                        "code": "undefinedField",
                        "typeName": "Mutation",
                        "fieldName": operation.root_field,
                    },
                }
            )
        wanted = ", ".join(f"${var}: {kind}" for var, kind in operation.variables.items())
        if kind != operation.kind or dict(VARIABLE_DECLARATION.findall(declared)) != operation.variables:
            raise GraphQLErrors(
                {"message": f"cartback fake: {name} must be `{operation.kind} {name}({wanted})`"}
            )
        if not re.search(rf"\b{operation.root_field}\s*[({{]", query):
            raise GraphQLErrors({"message": f"cartback fake: {name} must select {operation.root_field}"})
        granted = set(token.scope.split(","))
        needed = operation.scope
        # A write scope implies its read scope.
        if needed and needed not in granted and needed.replace("read_", "write_") not in granted:
            raise GraphQLErrors(
                {
                    "message": f"Access denied for {operation.root_field} field. Required access: `{needed}` access scope.",
                    "extensions": {"code": "ACCESS_DENIED", "requiredAccess": f"`{needed}` access scope."},
                }
            )

    def _run(
        self, name: str, operation: Operation, shop: FakeShop, variables: dict[str, Any]
    ) -> dict[str, Any]:
        for key in (name, operation.root_field):
            queued = self._fail_next.get(key)
            if queued and operation.null_field:
                return {operation.root_field: {operation.null_field: None, "userErrors": queued.pop(0)}}
        if name == "CartbackShop":
            return {"shop": self._shop_node(shop)}
        if name == "CartbackVariantImages":
            return {"nodes": [self._variant_node(gid) for gid in self._node_ids(variables["ids"])]}
        if name == "CartbackOrderStatuses":
            return {"nodes": [self._order_node(gid) for gid in self._node_ids(variables["ids"])]}
        if name == "CartbackDiscountCreate":
            return {operation.root_field: self._create_discount(shop, variables["basicCodeDiscount"])}
        if name == "CartbackDiscountDelete":
            return {operation.root_field: self._delete_discount(shop, variables["id"])}
        if name == "CartbackDiscountByCode":
            found = self._find_discount(shop.domain, variables["code"])
            return {operation.root_field: {"id": found.id} if found and not found.deleted else None}
        return {operation.root_field: self._update_whatsapp_consent(shop, variables["input"])}

    @staticmethod
    def _cost_extension(requested: int, actual: int | None) -> dict[str, Any]:
        # A full bucket less this call: throttling is steered by throttle_next() only, so no
        # test is throttled by accident of timing.
        available = BUCKET_SIZE - (actual or 0) if actual is not None else 0
        return {
            "cost": {
                "requestedQueryCost": requested,
                "actualQueryCost": actual,
                "throttleStatus": {
                    "maximumAvailable": BUCKET_SIZE,
                    "currentlyAvailable": available,
                    "restoreRate": RESTORE_RATE,
                },
            }
        }

    def _graphql_answer(
        self, cost: int, *, data: Any = None, errors: list[dict[str, Any]] | None = None
    ) -> Response:
        answer: dict[str, Any] = {"errors": errors} if errors else {"data": data}
        answer["extensions"] = self._cost_extension(cost, cost)
        return json_response(answer)

    def _throttled(self, cost: int) -> Response:
        # Shopify answers a throttled GraphQL call with HTTP 200, not 429.
        extensions = self._cost_extension(cost, None)
        error = {"message": "Throttled", "extensions": {"code": "THROTTLED", "documentation": THROTTLED_DOCS}}
        return json_response({"errors": [error], "extensions": extensions})

    # --- operations ------------------------------------------------------------------------

    @staticmethod
    def _node_ids(ids: list[str]) -> list[str]:
        if len(ids) > MAX_NODE_IDS:
            raise GraphQLErrors({"message": f"ids: too many (at most {MAX_NODE_IDS}, got {len(ids)})"})
        for gid in ids:
            parse_gid(gid)
        return ids

    def _shop_node(self, shop: FakeShop) -> dict[str, Any]:
        return {
            "name": shop.name,
            "myshopifyDomain": shop.domain,
            "currencyCode": shop.currency,
            "ianaTimezone": shop.timezone,
            "primaryDomain": {"url": self.storefront_url(shop.domain)},
            "billingAddress": {"countryCodeV2": shop.country},
        }

    def _variant_node(self, gid: str) -> dict[str, Any] | None:
        kind, number = parse_gid(gid)
        if kind != "ProductVariant":
            return {}  # `... on ProductVariant` selects nothing from another type
        variant = self.variants.get(number)
        if variant is None:
            return None

        def media(url: str) -> dict[str, Any]:
            return {"preview": {"image": {"url": url}}}

        return {
            "id": gid,
            "media": {"nodes": [media(variant.image_url)] if variant.image_url else []},
            "product": {
                "featuredMedia": media(variant.product_image_url) if variant.product_image_url else None
            },
        }

    def _order_node(self, gid: str) -> dict[str, Any] | None:
        kind, number = parse_gid(gid)
        if kind != "Order":
            return {}
        order = self.orders.get(number)
        if order is None:
            return None

        def money(amount: Decimal) -> dict[str, Any]:
            # Fake orders are paid in the shop's own currency: both bags hold the same money.
            bag = {"amount": _shopify_decimal(amount), "currencyCode": order.currency}
            return {"shopMoney": bag, "presentmentMoney": bag}

        # currentTotalPriceSet reflects edits, returns and refunds (Admin API reference).
        return {
            "id": gid,
            "cancelledAt": order.cancelled_at,
            "cancelReason": order.cancel_reason,
            "displayFinancialStatus": order.financial_status,
            "paymentGatewayNames": list(order.payment_gateway_names),
            "currentTotalPriceSet": money(max(Decimal(0), order.total - order.refunded)),
            "totalRefundedSet": money(order.refunded),
        }

    def _create_discount(self, shop: FakeShop, given: dict[str, Any]) -> dict[str, Any]:
        live = [code for code, discount in self.discounts[shop.domain].items() if not discount.deleted]
        errors = discount_user_errors(given, live)
        if errors:
            return {"codeDiscountNode": None, "userErrors": errors}
        self._next_id += 1
        discount = FakeDiscount(
            id=f"gid://shopify/DiscountCodeNode/{self._next_id}",
            code=given["code"],
            input=given,
            starts_at=parse_datetime(given["startsAt"]),
            ends_at=parse_datetime(given["endsAt"]) if given.get("endsAt") else None,
            usage_limit=given.get("usageLimit"),
        )
        self.discounts[shop.domain][discount.code] = discount
        return {"codeDiscountNode": {"id": discount.id}, "userErrors": []}

    def _delete_discount(self, shop: FakeShop, gid: str) -> dict[str, Any]:
        parse_gid(gid)
        for discount in self.discounts[shop.domain].values():
            if discount.id == gid and not discount.deleted:
                discount.deleted = True
                return {"deletedCodeDiscountId": gid, "userErrors": []}
        error = {"field": ["id"], "code": "INVALID", "message": "Discount does not exist"}
        return {"deletedCodeDiscountId": None, "userErrors": [error]}

    def _update_whatsapp_consent(self, shop: FakeShop, given: dict[str, Any]) -> dict[str, Any]:
        customer_gid = given["customerId"]
        kind, number = parse_gid(customer_gid)
        state = given["whatsAppMarketingConsent"]["state"]
        customer = self.customers.get(number) if kind == "Customer" else None
        errors = []
        if customer is None:
            errors.append(
                {"field": ["input", "customerId"], "code": "INVALID", "message": "Customer does not exist"}
            )
        elif customer.phone is None:
            # WhatsApp consent lives on the customer's phone number; without one there is nothing to update.
            message = "Customer does not have a phone number"
            errors.append({"field": ["input", "customerId"], "code": "INVALID", "message": message})
        if state not in SETTABLE_CONSENT_STATES:
            path = ["input", "whatsAppMarketingConsent", "state"]
            errors.append({"field": path, "code": "INVALID", "message": f"State {state} cannot be set"})
        if errors:
            return {"customerPhoneNumber": None, "userErrors": errors}
        self.whatsapp_consent[(shop.domain, customer_gid)] = state
        return {"customerPhoneNumber": {"whatsAppMarketingConsent": {"state": state}}, "userErrors": []}
