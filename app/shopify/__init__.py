"""Shopify's embedded app: ``session_token`` (verifying App Bridge's session token, a leaf) and
``home`` (installing on first load, keeping the shop's token working, the token bounce page)."""
