"""The signatures WooCommerce and the companion plugin check: webhook bodies, order-pay links."""

from __future__ import annotations

import base64
import hashlib
import hmac


def sign(secret: str, raw_body: bytes) -> str:
    """WooCommerce's webhook signature: base64 of the HMAC-SHA256 of the body with the secret."""
    return base64.b64encode(hmac.new(secret.encode(), raw_body, hashlib.sha256).digest()).decode()


def pay_link_token(secret: str, order_id: str, order_key: str, expires: int) -> str:
    """``{expires}.{signature}`` for the plugin to check (plugin ``cartback_verify_pay_token``)."""
    message = f"order-pay|{order_id}|{order_key}|{expires}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return f"{expires}.{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"
