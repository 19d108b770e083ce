"""Shopify: embedded app, checkout webhooks, unique discounts and the rebuilt checkout."""

from connectors.shopify.connector import PLATFORM, ShopifyConnector, shop_subdomain

__all__ = ["PLATFORM", "ShopifyConnector", "shop_subdomain"]
