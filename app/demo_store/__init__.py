"""The demo store: a clearly labelled simulation of a store platform, served under /demo-store/.

It plays the part Shopify or WooCommerce play in production (storefront, checkouts, orders,
discount codes, an Admin API with a bearer token, signed webhooks delivered asynchronously)
so ``make demo`` exercises the whole engine on one machine. Its tables are the platform's own
data; cartback's engine never reads them, it only hears about them through webhooks.
"""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("demo_store", __name__, url_prefix="/demo-store")

# Routes register themselves on ``bp`` (and its nested API blueprint) when imported.
from app.demo_store import api, views  # noqa: E402, F401

bp.register_blueprint(api.api_bp)
