"""CartFlows' "WooCommerce Cart Abandonment Recovery" webhook, for stores that already run it.

Its Zapier integration POSTs a form (``http_build_query``), unsigned, when its cron marks a
cart abandoned (``order_status=abandoned``, 15-20 minutes after the shopper left) and when the
cart is bought (``completed``). Fields (v1.3, ``class-cartflows-ca-tracking.php``):
first_name, last_name, phone_number, email, billing_address, shipping_address, checkout_url
(its cart-restoring link, HTML-escaped), product_names ("A, B & C"), coupon_code,
order_status, cart_total ("123.45"), product_table (HTML).

Unsigned, so the URL carries the proof: ``/webhooks/woocommerce/cartflows/{store id}-{key}``
with a key derived from the store's secret. It names no products by id and no prices per
item: the cart is one line, the names with the cart's total, and its own link restores it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from connectors.base import (
    Buyer,
    CartLine,
    CartSnapshot,
    ConsentSource,
    Ignored,
    PayloadError,
    WebhookEvent,
    parse_currency,
    parse_decimal,
)
from connectors.payload_fields import clean_text, first_valid_phone, is_numeric_id

TOPIC_PREFIX = "cartflows."
# Where the store's currency rides along: the form does not say it.
CURRENCY_FIELD = "_store_currency"
# Form fields kept (the HTML product table and addresses are left out: nothing reads them).
KEPT_FIELDS = (
    "first_name",
    "last_name",
    "phone_number",
    "phone",
    "email",
    "checkout_url",
    "product_names",
    "coupon_code",
    "order_status",
    "cart_total",
)
MAX_FIELD_CHARS = 2000


def url_key(secret: str, store_id: int) -> str:
    """The path segment that proves a CartFlows delivery is for this store."""
    digest = hmac.new(secret.encode(), f"cartflows|{store_id}".encode(), hashlib.sha256).hexdigest()
    return f"{store_id}-{digest[:32]}"


def store_id_of(key: str) -> int | None:
    head, _, _ = key.partition("-")
    # A row id, not any number: a 30-digit one must not reach the database.
    return int(head) if is_numeric_id(head) and len(head) <= 18 else None


def key_matches(secret: str, store_id: int, given: str) -> bool:
    return hmac.compare_digest(url_key(secret, store_id).encode(), given.encode())


def delivery_body(form: Mapping[str, str], currency: str) -> tuple[str, bytes]:
    """The topic and the JSON body stored for a form delivery."""
    kept = {name: str(form[name])[:MAX_FIELD_CHARS] for name in KEPT_FIELDS if name in form}
    status = kept.get("order_status", "").strip().lower() or "unknown"
    kept[CURRENCY_FIELD] = currency
    return f"{TOPIC_PREFIX}{status}", json.dumps(kept, sort_keys=True, separators=(",", ":")).encode()


def _session_id(checkout_url: str) -> str | None:
    """CartFlows' session id from its restore link (``wcf_ac_token`` = base64 of a query)."""
    token = parse_qs(urlsplit(checkout_url).query).get("wcf_ac_token", [""])[0]
    if not token:
        return None
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    session = parse_qs(decoded).get("wcf_session_id", [""])[0]
    return session if session and len(session) <= 64 and session.replace("-", "").isalnum() else None


def parse(
    topic: str, payload: Mapping[str, Any], *, default_region: str, received_at: datetime
) -> WebhookEvent:
    status = topic.removeprefix(TOPIC_PREFIX)
    if status not in ("abandoned", "completed"):
        return Ignored(f"CartFlows status {status} is not used by cartback")
    checkout_url = html.unescape(clean_text(payload.get("checkout_url")) or "")
    phone = first_valid_phone(
        [(payload.get("phone_number"), None), (payload.get("phone"), None)], default_region
    )
    email = (clean_text(payload.get("email")) or "").lower() or None
    session = _session_id(checkout_url)
    if session is None and not (phone or email):
        raise PayloadError(
            "checkout_url carries no wcf_ac_token and there is no phone or email to know the cart by"
        )
    who = session or hashlib.sha256(f"{phone}|{email}".encode()).hexdigest()[:32]
    names = html.unescape(clean_text(payload.get("product_names")) or "")
    total = parse_decimal(clean_text(payload.get("cart_total")) or "0", "cart_total")
    lines = (CartLine(title=names[:200], quantity=1, unit_price=total),) if names else ()
    return CartSnapshot(
        cart_id=f"cartflows-{who}",
        # The form carries no time: CartFlows sends it as the cart is judged abandoned.
        updated_at=received_at,
        currency=parse_currency(payload.get(CURRENCY_FIELD)),
        subtotal=total,
        total=total,
        lines=lines,
        buyer=Buyer(
            phone_e164=phone,
            email=email,
            first_name=clean_text(payload.get("first_name")),
            # CartFlows asks no WhatsApp opt-in: only a store that collects it elsewhere
            # (consent policy "store_collects_optin") has these shoppers messaged.
            marketing_consent=False,
            consent_source=ConsentSource.UNKNOWN,
        ),
        checkout_url=checkout_url if checkout_url.startswith(("https://", "http://")) else None,
        completed=status == "completed",
        raw=dict(payload),
    )
