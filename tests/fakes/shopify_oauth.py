"""The fake Shopify's OAuth: the token endpoint (token exchange of App Bridge ID tokens, refresh
of expiring offline tokens), and the ID tokens and token pairs tests seed or revoke."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import jwt
from werkzeug.wrappers import Request, Response

from tests.fakes.shopify_http import json_response
from tests.fakes.shopify_state import AccessToken, FakeShop, RefreshToken

DEFAULT_CLIENT_ID = "test-client-id"
# pyjwt warns (an error under filterwarnings=error) for HS256 keys under 32 bytes (RFC 7518
# §3.2); real client secrets are "shpss_" + 32 hex characters, so tests use a long one too.
DEFAULT_CLIENT_SECRET = "test-client-secret-0123456789abcdef"
MIN_HMAC_KEY_BYTES = 32
DEFAULT_SCOPE = "read_orders,read_products,write_discounts,read_customers,write_customers"

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
OFFLINE_TOKEN_TYPE = "urn:shopify:params:oauth:token-type:offline-access-token"
ONLINE_TOKEN_TYPE = "urn:shopify:params:oauth:token-type:online-access-token"
ACCESS_TOKEN_TTL = 3600  # seconds: expiring offline tokens last 60 minutes (changelog, 2025-12-10)
REFRESH_TOKEN_TTL = 7_776_000  # seconds (90 days), Shopify's refresh_token_expires_in
ONLINE_TOKEN_TTL = 86_399  # seconds: online tokens last until the user's session ends (~1 day)
JWT_LEEWAY = 10  # seconds of clock skew allowed on ID tokens, as shopifyapp allows


def require_hmac_key(secret: str) -> None:
    if len(secret.encode()) < MIN_HMAC_KEY_BYTES:
        raise ValueError(f"HS256 secrets must be at least {MIN_HMAC_KEY_BYTES} bytes (pyjwt warns otherwise)")


class ShopifyOAuth:
    """FakeShopify's token endpoint and token seeding; FakeShopify.__init__ sets these fields."""

    client_id: str
    client_secret: str
    scope: str
    _access: dict[str, AccessToken]
    _refresh: dict[str, RefreshToken]
    _lock: threading.RLock

    # --- tokens ----------------------------------------------------------------------------

    def session_token(
        self,
        shop: str,
        *,
        user_id: str = "42",
        expires_in: int = 60,
        secret: str | None = None,
        aud: str | None = None,
    ) -> str:
        """An App Bridge ID token as the admin hands it to the app's frontend."""
        key = self.client_secret if secret is None else secret
        require_hmac_key(key)
        now = int(time.time())
        claims = {
            "iss": f"https://{shop}/admin",
            "dest": f"https://{shop}",
            "aud": self.client_id if aud is None else aud,
            "sub": user_id,
            "exp": now + expires_in,
            "nbf": now,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "sid": str(uuid.uuid4()),
        }
        return jwt.encode(claims, key, algorithm="HS256")

    def issue_token(self, shop: str, *, expires_in: int = ACCESS_TOKEN_TTL) -> tuple[str, str]:
        """Seed a store with an expiring offline token pair, as if it had installed the app."""
        with self._lock:
            return self._issue(shop, expires_in=expires_in, refresh=True)

    def expire_access_tokens(self, shop: str) -> None:
        with self._lock:
            for token in self._access.values():
                if token.shop == shop:
                    # Expired at any clock, frozen test clocks included (not "a second ago").
                    token.expires_at = 1.0

    def revoke_all(self, shop: str) -> None:
        """The merchant uninstalled the app: every token of the shop stops working."""
        with self._lock:
            self._access = {value: t for value, t in self._access.items() if t.shop != shop}
            self._refresh = {value: t for value, t in self._refresh.items() if t.shop != shop}

    def _issue(
        self, shop: str, *, expires_in: int | None, refresh: bool, prefix: str = "shpat_"
    ) -> tuple[str, str]:
        access = prefix + secrets.token_hex(16)
        expires_at = None if expires_in is None else time.time() + expires_in
        self._access[access] = AccessToken(shop, self.scope, expires_at)
        refresh_token = ""
        if refresh:
            refresh_token = "shprt_" + secrets.token_hex(16)
            self._refresh[refresh_token] = RefreshToken(shop, time.time() + REFRESH_TOKEN_TTL)
        return access, refresh_token

    # --- HTTP ------------------------------------------------------------------------------

    def _serve_token(self, request: Request, shop: FakeShop, body: Any) -> Response:
        if not isinstance(body, dict):
            return _oauth_error("invalid_request", "send a JSON or form-encoded body", 400)
        fields = {key: value for key, value in body.items() if value is not None}
        client_ok = fields.get("client_id") == self.client_id and hmac.compare_digest(
            str(fields.get("client_secret", "")).encode(), self.client_secret.encode()
        )
        if not client_ok:
            return _oauth_error("invalid_client", "client_id or client_secret is wrong", 401)
        grant = fields.get("grant_type")
        if grant == TOKEN_EXCHANGE_GRANT:
            return self._token_exchange(shop, fields)
        if grant == "refresh_token":
            return self._token_refresh(shop, fields)
        return _oauth_error("unsupported_grant_type", f"grant_type {grant!r} is not supported", 400)

    def _token_exchange(self, shop: FakeShop, fields: dict[str, Any]) -> Response:
        if fields.get("subject_token_type") != ID_TOKEN_TYPE:
            return _oauth_error("invalid_request", f"subject_token_type must be {ID_TOKEN_TYPE}", 400)
        requested = fields.get("requested_token_type")
        if requested not in (OFFLINE_TOKEN_TYPE, ONLINE_TOKEN_TYPE):
            return _oauth_error(
                "invalid_request", "requested_token_type must be an offline or online token", 400
            )
        expiring = fields.get("expiring", 0)
        if expiring not in (0, 1, "0", "1"):
            return _oauth_error("invalid_request", "expiring must be 0 or 1", 400)
        subject = fields.get("subject_token")
        if not isinstance(subject, str) or not subject:
            return _oauth_error("invalid_request", "subject_token is required", 400)
        try:
            claims = jwt.decode(
                subject,
                self.client_secret,
                algorithms=["HS256"],
                audience=self.client_id,
                leeway=JWT_LEEWAY,
                options={"require": ["exp", "nbf", "iat", "aud", "iss", "dest", "sub"]},
            )
        except jwt.PyJWTError as refused:
            return _oauth_error("invalid_subject_token", f"ID token is invalid: {refused}", 400)
        if (
            urlsplit(str(claims["dest"])).hostname != shop.domain
            or claims["iss"] != f"https://{shop.domain}/admin"
        ):
            return _oauth_error("invalid_subject_token", "ID token was issued for another shop", 400)
        if requested == ONLINE_TOKEN_TYPE:
            # Online tokens always expire with the user's session and never carry a refresh token.
            access, _ = self._issue(shop.domain, expires_in=ONLINE_TOKEN_TTL, refresh=False, prefix="shpua_")
            return json_response(
                {
                    "access_token": access,
                    "scope": self.scope,
                    "expires_in": ONLINE_TOKEN_TTL,
                    "associated_user_scope": self.scope,
                    "associated_user": {"id": _user_id(claims["sub"]), "account_owner": True},
                }
            )
        if expiring in (1, "1"):
            return self._token_pair(shop.domain)
        access, _ = self._issue(shop.domain, expires_in=None, refresh=False)
        return json_response({"access_token": access, "scope": self.scope})

    def _token_refresh(self, shop: FakeShop, fields: dict[str, Any]) -> Response:
        token = self._refresh.get(str(fields.get("refresh_token", "")))
        if token is None or token.shop != shop.domain or token.spent or token.expires_at <= time.time():
            return _oauth_error("invalid_grant", "refresh_token is invalid, expired, used or revoked", 400)
        token.spent = True
        return self._token_pair(shop.domain)

    def _token_pair(self, shop: str) -> Response:
        access, refresh = self._issue(shop, expires_in=ACCESS_TOKEN_TTL, refresh=True)
        return json_response(
            {
                "access_token": access,
                "scope": self.scope,
                "expires_in": ACCESS_TOKEN_TTL,
                "refresh_token": refresh,
                "refresh_token_expires_in": REFRESH_TOKEN_TTL,
            }
        )


def _user_id(subject: Any) -> Any:
    return int(subject) if str(subject).isdigit() else subject


def _oauth_error(error: str, description: str, status: int) -> Response:
    return json_response({"error": error, "error_description": description}, status)
