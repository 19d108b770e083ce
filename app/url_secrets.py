"""Which parts of a URL are secrets: the one list, used by the access log and the app's logs.

Some of cartback's URLs are bearer credentials. Whoever reads a recovery link
(``/r/<token>``) opens a shopper's checkout with their contact and address; a CartFlows
address (``/webhooks/woocommerce/cartflows/<key>``) lets anyone post carts for a store; the
Shopify admin's ``id_token`` is a session; ``hmac``, ``code``, ``session`` and WooCommerce's
``key``/``consumer_*`` and connection ``user_id`` are one-time or long-lived proofs. A log line
keeps the route and drops the secret: ``GET /r/[redacted]``, ``/?shop=x&id_token=[redacted]``.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"

# Path prefixes whose next segment is a credential.
SECRET_PATH_PREFIXES = (
    "/r/",
    "/webhooks/woocommerce/cartflows/",
    # The demo store's checkout pages play Shopify's checkout links: the token opens a contact.
    "/demo-store/checkout/",
)
# Query parameters that carry a credential (matched case-insensitively, by exact name).
SECRET_QUERY_PARAMETERS = frozenset(
    {
        "id_token",  # Shopify App Bridge session token
        "hmac",  # Shopify's signature over the launch query
        "signature",
        "code",  # OAuth authorization codes
        "session",
        "state",
        "token",
        "access_token",
        "key",  # WooCommerce order keys (order-pay links)
        "consumer_key",  # WooCommerce REST keys in the query string
        "consumer_secret",
        "user_id",  # WooCommerce's connection id at the return (one-time, names the connection)
        "hub.verify_token",  # Meta's subscription check
    }
)

_PATH_SECRET = re.compile(
    "(" + "|".join(re.escape(prefix) for prefix in SECRET_PATH_PREFIXES) + r")[^/\s?#\"'&]+"
)
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:"
    + "|".join(re.escape(name) for name in sorted(SECRET_QUERY_PARAMETERS, key=len, reverse=True))
    + r")=)[^&;#\s\"']*"
)


def redact_url_secrets(text: str) -> str:
    """``text`` (a URL, a request line or any log text) with every URL credential masked."""
    if "/" not in text and "=" not in text:
        return text
    text = _PATH_SECRET.sub(lambda match: match.group(1) + REDACTED, text)
    return _QUERY_SECRET.sub(lambda match: match.group(1) + REDACTED, text)
