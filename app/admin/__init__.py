"""The merchant's admin: the session and its guards, sign-in, pages, settings and WhatsApp APIs,
exports.

``session`` decides who is asking (a Shopify session token or a sign-in link's cookie) and
guards every page and ``/api/`` endpoint; ``login`` redeems sign-in links and signs out; the
other modules are views over ``sequences.merchant`` (and ``sequences.whatsapp``), which do
every write.
"""
