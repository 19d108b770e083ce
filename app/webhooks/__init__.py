"""Inbound webhooks: verify, store, enqueue, answer fast.

``platforms`` takes Shopify, WooCommerce and demo deliveries (and Shopify's compliance topics);
``whatsapp`` takes Meta's; ``cartflows`` takes CartFlows' unsigned abandonment capture.
"""
