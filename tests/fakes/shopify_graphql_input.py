"""GraphQL input for the fake Shopify: the Admin API's input types and enums (as far as cartback
sends them), coercion of a request's variables against them, global ids, and the rules
discountCodeBasicCreate applies once its input's shape is right (userErrors)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

GLOBAL_ID = re.compile(r"^gid://shopify/(\w+)/(\d+)$")

# Input types as the 2026-10 schema declares them, limited to the fields cartback may send: a
# field missing here is refused like an unknown one, and the message says the fake lacks it.
INPUT_TYPES: dict[str, dict[str, str]] = {
    "DiscountCodeBasicInput": {
        "appliesOncePerCustomer": "Boolean",
        "code": "String",
        "combinesWith": "DiscountCombinesWithInput",
        "context": "DiscountContextInput",
        "customerGets": "DiscountCustomerGetsInput",
        "customerSelection": "DiscountCustomerSelectionInput",  # deprecated for context
        "endsAt": "DateTime",
        "minimumRequirement": "DiscountMinimumRequirementInput",
        "recurringCycleLimit": "Int",
        "startsAt": "DateTime",
        "tags": "[String!]",
        "title": "String",
        "usageLimit": "Int",
    },
    "DiscountCombinesWithInput": {
        "orderDiscounts": "Boolean",
        "productDiscounts": "Boolean",
        "shippingDiscounts": "Boolean",
    },
    "DiscountContextInput": {"all": "DiscountBuyerSelection"},
    "DiscountCustomerSelectionInput": {"all": "Boolean"},
    "DiscountCustomerGetsInput": {
        "value": "DiscountCustomerGetsValueInput",
        "items": "DiscountItemsInput",
        "appliesOnOneTimePurchase": "Boolean",
        "appliesOnSubscription": "Boolean",
    },
    "DiscountCustomerGetsValueInput": {"discountAmount": "DiscountAmountInput", "percentage": "Float"},
    "DiscountAmountInput": {"amount": "Decimal", "appliesOnEachItem": "Boolean"},
    "DiscountItemsInput": {"all": "Boolean"},
    "DiscountMinimumRequirementInput": {
        "subtotal": "DiscountMinimumSubtotalInput",
        "quantity": "DiscountMinimumQuantityInput",
    },
    "DiscountMinimumSubtotalInput": {"greaterThanOrEqualToSubtotal": "Decimal"},
    "DiscountMinimumQuantityInput": {"greaterThanOrEqualToQuantity": "UnsignedInt64"},
    "CustomerWhatsAppMarketingConsentUpdateInput": {
        "customerId": "ID!",
        "whatsAppMarketingConsent": "CustomerMarketingConsentInput!",
    },
    "CustomerMarketingConsentInput": {
        "state": "CustomerMarketingConsentState!",
        "optInLevel": "CustomerMarketingOptInLevel",
        "updatedAt": "DateTime",
        "sourceLocationId": "ID",
    },
}
ENUMS: dict[str, frozenset[str]] = {
    "DiscountBuyerSelection": frozenset({"ALL"}),
    "CustomerMarketingConsentState": frozenset(
        {"INVALID", "NOT_SUBSCRIBED", "PENDING", "REDACTED", "SUBSCRIBED", "UNSUBSCRIBED"}
    ),
    "CustomerMarketingOptInLevel": frozenset({"CONFIRMED_OPT_IN", "SINGLE_OPT_IN", "UNKNOWN"}),
}
# Of the consent states, the ones a merchant or app may set.
SETTABLE_CONSENT_STATES = frozenset({"PENDING", "SUBSCRIBED", "UNSUBSCRIBED"})


def parse_datetime(value: str) -> datetime:
    if "T" not in value:
        raise ValueError("DateTime needs a time")
    moment = datetime.fromisoformat(value)
    # Shopify reads an offset-less DateTime as UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _scalar(kind: str, value: Any) -> Any:
    """The coerced value, or ValueError. DateTime and Decimal stay the strings that were sent."""
    ok = {
        "String": isinstance(value, str),
        "Boolean": isinstance(value, bool),
        "Int": isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31,
        "Float": isinstance(value, int | float) and not isinstance(value, bool),
        "ID": isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)),
        "UnsignedInt64": (isinstance(value, str) and value.isdigit())
        or (isinstance(value, int) and not isinstance(value, bool) and value >= 0),
        # Decimal is a string on Shopify's wire; the fake refuses JSON numbers to keep money exact.
        "Decimal": isinstance(value, str),
        "DateTime": isinstance(value, str),
    }[kind]
    if not ok:
        raise ValueError(kind)
    if kind == "DateTime":
        parse_datetime(value)
    elif kind == "Decimal" and not Decimal(value).is_finite():
        raise ValueError(kind)
    return float(value) if kind == "Float" else str(value) if kind == "ID" else value


class GraphQLErrors(Exception):
    """Top-level GraphQL errors: the request is answered with these and no data."""

    def __init__(self, *errors: dict[str, Any]) -> None:
        super().__init__(errors[0]["message"])
        self.errors = list(errors)


def _invalid_variable(variable: tuple[str, str], path: tuple[Any, ...], explanation: str) -> GraphQLErrors:
    name, declared = variable
    where = f" for {'.'.join(str(part) for part in path)}" if path else ""
    return GraphQLErrors(
        {
            "message": f"Variable ${name} of type {declared} was provided invalid value{where} ({explanation})",
            "extensions": {
                "code": "INVALID_VARIABLE",
                "problems": [{"path": list(path), "explanation": explanation}],
            },
        }
    )


def coerce(value: Any, kind: str, variable: tuple[str, str], path: tuple[Any, ...] = ()) -> Any:
    """GraphQL input coercion of a variable's JSON value against its declared type."""
    if kind.endswith("!"):
        if value is None:
            raise _invalid_variable(variable, path, "Expected value to not be null")
        return coerce(value, kind[:-1], variable, path)
    if value is None:
        return None
    if kind.startswith("["):
        # GraphQL wraps a lone value into a one-item list.
        items = value if isinstance(value, list) else [value]
        return [coerce(item, kind[1:-1], variable, (*path, i)) for i, item in enumerate(items)]
    if kind in INPUT_TYPES:
        fields = INPUT_TYPES[kind]
        if not isinstance(value, dict):
            raise _invalid_variable(variable, path, f"Expected value to be an object of {kind}")
        for key in value:
            if key not in fields:
                raise _invalid_variable(
                    variable, (*path, key), f"Field is not defined on {kind} (or not modelled by the fake)"
                )
        return {
            key: coerce(value.get(key), field_kind, variable, (*path, key))
            for key, field_kind in fields.items()
            if key in value or field_kind.endswith("!")
        }
    if kind in ENUMS:
        if not isinstance(value, str) or value not in ENUMS[kind]:
            allowed = ", ".join(sorted(ENUMS[kind]))
            raise _invalid_variable(variable, path, f"Expected {json.dumps(value)} to be one of: {allowed}")
        return value
    try:
        return _scalar(kind, value)
    except (ValueError, InvalidOperation):
        raise _invalid_variable(
            variable, path, f"Could not coerce value {json.dumps(value)} to {kind}"
        ) from None


def parse_gid(value: str) -> tuple[str, int]:
    match = GLOBAL_ID.match(value)
    if not match:
        raise GraphQLErrors(
            {
                "message": f"Invalid global id '{value}'",
                "extensions": {"code": "argumentLiteralsIncompatible"},
            }
        )
    return match.group(1), int(match.group(2))


def discount_user_errors(given: dict[str, Any], taken: Iterable[str]) -> list[dict[str, Any]]:
    """What discountCodeBasicCreate refuses after the input's shape is right (userErrors)."""
    errors: list[dict[str, Any]] = []

    def error(path: list[str], message: str, code: str = "INVALID") -> None:
        errors.append({"field": ["basicCodeDiscount", *path], "code": code, "message": message})

    # Required when creating (the schema leaves them nullable because updates share the type).
    for key, label in (("title", "Title"), ("code", "Code"), ("startsAt", "Starts at")):
        if not given.get(key):
            error([key], f"{label} can't be blank")
    code = given.get("code") or ""
    if len(code) > 255:
        error(["code"], "Code is too long (maximum is 255 characters)")
    if "\n" in code or "\r" in code:
        error(["code"], "Code cannot contain newline characters.")
    if code and code.casefold() in {other.casefold() for other in taken}:
        error(["code"], "Code must be unique. Please try a different code.", "TAKEN")
    starts_at, ends_at = given.get("startsAt"), given.get("endsAt")
    if starts_at and ends_at and parse_datetime(ends_at) <= parse_datetime(starts_at):
        error(["endsAt"], "Ends at needs to be after starts_at")
    if given.get("usageLimit") is not None and given["usageLimit"] < 1:
        error(["usageLimit"], "Usage limit must be greater than 0")
    context, selection = given.get("context"), given.get("customerSelection")
    if context is not None and selection is not None:
        error(["context"], "Only one of context or customerSelection can be provided")
    elif context is None and selection is None:
        error(["context"], "Context can't be blank")
    elif context is not None and context.get("all") != "ALL":
        error(["context"], "Context must select buyers (the fake models only all: ALL)")
    elif selection is not None and selection.get("all") is not True:
        error(["customerSelection", "all"], "Customer selection must select customers (fake: all only)")
    gets = given.get("customerGets")
    if not gets:
        error(["customerGets"], "Customer gets can't be blank")
        return errors
    value = gets.get("value") or {}
    if len([kind for kind in ("discountAmount", "percentage") if value.get(kind) is not None]) != 1:
        error(["customerGets", "value"], "Value must have exactly one of discountAmount or percentage")
    elif value.get("percentage") is not None and not 0 < value["percentage"] <= 1:
        error(["customerGets", "value", "percentage"], "Value must be between 0.0 and 1.0")
    elif value.get("discountAmount") is not None:
        amount = value["discountAmount"].get("amount")
        if amount is None or Decimal(amount) <= 0:
            error(["customerGets", "value", "discountAmount", "amount"], "Value must be greater than 0")
    if (gets.get("items") or {}).get("all") is not True:
        error(["customerGets", "items"], "Items must be specified (the fake models only all: true)")
    minimum = given.get("minimumRequirement") or {}
    if minimum.get("subtotal") is not None and minimum.get("quantity") is not None:
        error(["minimumRequirement"], "Only one of subtotal or quantity can be provided")
    subtotal = (minimum.get("subtotal") or {}).get("greaterThanOrEqualToSubtotal")
    if subtotal is not None and Decimal(subtotal) <= 0:
        error(["minimumRequirement", "subtotal", "greaterThanOrEqualToSubtotal"], "Must be greater than 0")
    return errors
