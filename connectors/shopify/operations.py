"""The Admin GraphQL operations cartback sends (named, so Shopify's logs and our fakes can tell
them apart). Field names follow the Admin GraphQL reference for API version 2026-10."""

from __future__ import annotations

# The Admin API version every call uses; the WhatsApp consent mutation needs 2026-07 or later.
API_VERSION = "2026-10"

SHOP = """
query CartbackShop {
  shop {
    name
    myshopifyDomain
    currencyCode
    ianaTimezone
    primaryDomain { url }
    billingAddress { countryCodeV2 }
  }
}
"""

VARIANT_IMAGES = """
query CartbackVariantImages($ids: [ID!]!) {
  nodes(ids: $ids) {
    ... on ProductVariant {
      id
      media(first: 1) { nodes { preview { image { url } } } }
      product { featuredMedia { preview { image { url } } } }
    }
  }
}
"""

DISCOUNT_CREATE = """
mutation CartbackDiscountCreate($basicCodeDiscount: DiscountCodeBasicInput!) {
  discountCodeBasicCreate(basicCodeDiscount: $basicCodeDiscount) {
    codeDiscountNode { id }
    userErrors { field code message }
  }
}
"""

# After "code taken": the code is ours (random, per cart and step), made by an earlier attempt
# whose answer was lost; its id is all we need.
DISCOUNT_BY_CODE = """
query CartbackDiscountByCode($code: String!) {
  codeDiscountNodeByCode(code: $code) { id }
}
"""

DISCOUNT_DELETE = """
mutation CartbackDiscountDelete($id: ID!) {
  discountCodeDelete(id: $id) {
    deletedCodeDiscountId
    userErrors { field code message }
  }
}
"""

WHATSAPP_OPT_OUT = """
mutation CartbackWhatsAppOptOut($input: CustomerWhatsAppMarketingConsentUpdateInput!) {
  customerWhatsAppMarketingConsentUpdate(input: $input) {
    customerPhoneNumber { whatsAppMarketingConsent { state } }
    userErrors { field code message }
  }
}
"""

ORDER_STATUSES = """
query CartbackOrderStatuses($ids: [ID!]!) {
  nodes(ids: $ids) {
    ... on Order {
      id
      cancelledAt
      cancelReason
      displayFinancialStatus
      paymentGatewayNames
      currentTotalPriceSet { shopMoney { amount currencyCode } }
      totalRefundedSet { shopMoney { amount currencyCode } }
    }
  }
}
"""

# nodes(ids:) takes at most 250 ids per call.
MAX_NODES = 250


def gid(kind: str, platform_id: str) -> str:
    return platform_id if platform_id.startswith("gid://") else f"gid://shopify/{kind}/{platform_id}"


def numeric_id(global_id: str) -> str:
    return global_id.rsplit("/", 1)[-1]
