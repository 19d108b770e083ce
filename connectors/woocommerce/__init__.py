"""WooCommerce: app-authorization connect, order webhooks, the companion plugin's cart
captures, single-use coupons and the rebuilt order-pay checkout."""

from connectors.woocommerce.connector import PLATFORM, WooCommerceConnector, canonical_site_url

__all__ = ["PLATFORM", "WooCommerceConnector", "canonical_site_url"]
