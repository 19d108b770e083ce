"""The merchant's admin: the session and its guards, pages, settings and WhatsApp APIs, exports.

``session`` decides who is asking (a Shopify session token or a sign-in link's cookie) and
guards every page and ``/api/`` endpoint; the other modules are views over ``sequences.merchant``.
"""
