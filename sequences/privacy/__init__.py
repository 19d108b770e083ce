"""Personal data on request: platform privacy requests and erasure (invariant 7).

``requests`` applies Shopify's compliance topics (export, redact a customer, redact a store);
``erasure`` removes a contact's personal data everywhere we hold it and purges old payloads.
"""
