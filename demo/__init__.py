"""The demo platform, for ``make demo`` and the tests: never imported in production.

``store`` is a simulated store platform (storefront, Admin API, signed webhooks) served under
/demo-store/; ``connector`` is its ``connectors.base`` implementation; ``cloud`` prepares the
demo on the WhatsApp Cloud API transport. ``app`` mounts the store and registers the connector
only outside production.
"""
