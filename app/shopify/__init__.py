"""Shopify's embedded app: the app home (``GET /``) that installs on first load."""
