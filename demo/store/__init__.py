"""The demo store: a clearly labelled simulation of a store platform, served under /demo-store/.

It plays the part Shopify or WooCommerce play in production (storefront, checkouts, orders,
discount codes, an Admin API with a bearer token, signed webhooks delivered asynchronously)
so ``make demo`` exercises the whole engine on one machine. Its tables are the platform's own
data; cartback's engine never reads them, it only hears about them through webhooks.
"""

from __future__ import annotations

# Routes register themselves on ``bp`` (and its nested API blueprint) when imported.
from demo.store import api, views  # noqa: F401
from demo.store.blueprint import bp as demo_store_bp

demo_store_bp.register_blueprint(api.api_bp)

__all__ = ["demo_store_bp"]
