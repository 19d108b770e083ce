"""The WooCommerce REST API (``wp-json/wc/v3``) through ``woocommerce`` (wc-api-python), with
the timeout, retries and error handling the library leaves to its callers.

* Auth: HTTP Basic over https with the consumer key pair. Some hosts (CGI/FastCGI set-ups)
  strip the ``Authorization`` header before PHP sees it, and WooCommerce then answers 401 as if
  no key were sent; the documented fallback is the keys in the query string. A store that
  needed it is remembered for the life of the process.
* Retries: connection failures, 429 and 502/503/504 are tried again with backoff; a timeout
  after the request was sent is retried only where repeating it is harmless.
* Errors: WooCommerce answers ``{"code", "message", "data": {"status"}}``; they become
  ``PlatformError`` (``PlatformUnauthorized`` for a refused key) naming the code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from woocommerce import API

from connectors.base import PlatformError, PlatformUnauthorized, StoreAccess

log = logging.getLogger("cartback.woocommerce")

API_VERSION = "wc/v3"
# (connect, read) seconds: WordPress hosts are often slow, but a click must not hang on one.
TIMEOUT = (3.05, 15.0)
# Attempts per call for failures that may pass, and the first wait between them (doubling).
ATTEMPTS = 3
FIRST_BACKOFF_SECONDS = 0.5
# A Retry-After longer than this is left to the caller's own retry (an RQ retry, the sweep).
MAX_RETRY_AFTER_SECONDS = 5.0
RETRY_STATUSES = frozenset({429, 502, 503, 504})
USER_AGENT = "cartback (+https://github.com/cartback)"
# The answers WooCommerce gives a request that arrived without credentials.
NO_CREDENTIALS_CODES = frozenset(
    {
        "woocommerce_rest_cannot_view",
        "woocommerce_rest_cannot_create",
        "woocommerce_rest_cannot_edit",
        "woocommerce_rest_cannot_delete",
        "woocommerce_rest_cannot_batch",
        "rest_forbidden",
    }
)
KEY_PAIR_SEPARATOR = ":"


def split_key_pair(access_token: str) -> tuple[str, str]:
    """A store's access is its REST key pair, held as ``ck_…:cs_…`` in one encrypted field."""
    key, _, secret = access_token.partition(KEY_PAIR_SEPARATOR)
    if not key or not secret:
        raise PlatformUnauthorized("no WooCommerce REST keys stored for this store; connect it again")
    return key, secret


def join_key_pair(consumer_key: str, consumer_secret: str) -> str:
    return f"{consumer_key}{KEY_PAIR_SEPARATOR}{consumer_secret}"


@dataclass(frozen=True)
class RestResponse:
    status: int
    body: Any
    headers: Mapping[str, str]

    @property
    def total_pages(self) -> int:
        try:
            return int(self.headers.get("X-WP-TotalPages", "1"))
        except ValueError:
            return 1


def error_code(body: Any) -> str:
    return str(body.get("code") or "") if isinstance(body, dict) else ""


def error_message(body: Any) -> str:
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])[:300]
    return "no reason given"


class WooCommerceRest:
    """One store's REST API."""

    def __init__(
        self,
        access: StoreAccess,
        *,
        query_auth_sites: set[str],
        sleep: Callable[[float], None] = time.sleep,
        timeout: tuple[float, float] = TIMEOUT,
    ) -> None:
        """``query_auth_sites``: the sites whose host strips the Authorization header, shared by
        the connector's calls (learned once per process)."""
        self.site = access.api_base_url.rstrip("/")
        self._key, self._secret = split_key_pair(access.access_token)
        self._query_auth_sites = query_auth_sites
        self._sleep = sleep
        self._timeout = timeout

    def _api(self, query_auth: bool) -> API:
        return API(
            url=self.site,
            consumer_key=self._key,
            consumer_secret=self._secret,
            version=API_VERSION,
            timeout=self._timeout,
            query_string_auth=query_auth,
            user_agent=USER_AGENT,
        )

    def call(
        self,
        method: str,
        endpoint: str,
        *,
        what: str,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotent: bool | None = None,
        allow: frozenset[int] = frozenset(),
    ) -> RestResponse:
        """Send one request; raise PlatformError unless it answers 2xx or a status in ``allow``.

        ``what`` completes "WooCommerce refused to …" in errors. ``idempotent`` (default: every
        method but POST) says whether a request that may have reached the store can be repeated.
        """
        if not self.site.startswith("https://"):
            raise PlatformError(f"{self.site} is not https: WooCommerce keys are only sent over TLS")
        query_auth = self.site in self._query_auth_sites
        response = self._send(method, endpoint, params, json, query_auth, idempotent)
        if response.status == 401 and not query_auth and error_code(response.body) in NO_CREDENTIALS_CODES:
            # The host may have stripped the Authorization header: try the keys in the query.
            retried = self._send(method, endpoint, params, json, True, idempotent)
            if retried.status != 401:
                self._query_auth_sites.add(self.site)
                log.info("woocommerce keys sent in the query string (host strips Authorization)")
            response = retried
        if 200 <= response.status < 300 or response.status in allow:
            return response
        code, message = error_code(response.body), error_message(response.body)
        if response.status == 401 or code == "woocommerce_rest_authentication_error":
            raise PlatformUnauthorized(
                f"WooCommerce refused cartback's REST keys ({code or response.status}): they were revoked "
                "or the store moved; connect the store again at /woocommerce/connect"
            )
        retryable = response.status in RETRY_STATUSES or response.status >= 500
        raise PlatformError(
            f"WooCommerce refused to {what}: {message} ({code or 'HTTP ' + str(response.status)})",
            retryable=retryable,
        )

    @staticmethod
    def read_index(site: str, timeout: tuple[float, float] = TIMEOUT) -> tuple[dict[str, Any], str | None]:
        """WordPress's public REST index (``/wp-json/``): the site's own address, name and time
        zone, which WooCommerce's routes do not carry. (index, where it redirected to, if it
        did): redirects are not followed blindly, the caller checks the new address first."""
        try:
            raw = requests.get(
                f"{site.rstrip('/')}/wp-json/",
                timeout=timeout,
                headers={"user-agent": USER_AGENT},
                allow_redirects=False,
            )
        except requests.exceptions.RequestException:
            return {}, None
        if raw.is_redirect and raw.headers.get("Location", "").startswith("https://"):
            return {}, raw.headers["Location"].split("/wp-json", 1)[0]
        body = _json_or_none(raw) if raw.status_code == 200 else None
        return (body if isinstance(body, dict) else {}), None

    def _send(
        self,
        method: str,
        endpoint: str,
        params: Mapping[str, Any] | None,
        body: Any,
        query_auth: bool,
        idempotent: bool | None,
    ) -> RestResponse:
        repeatable = idempotent if idempotent is not None else method != "POST"
        api = self._api(query_auth)
        wait = FIRST_BACKOFF_SECONDS
        for attempt in range(1, ATTEMPTS + 1):
            last = attempt == ATTEMPTS
            try:
                # The library adds the auth parameters to the dict it is given: a copy each time.
                # Redirects are not followed: a store answering with one to another host (or
                # a private address) would take the keys, or cartback's requests, there.
                options: dict[str, Any] = {"params": dict(params or {}), "allow_redirects": False}
                if method in ("POST", "PUT"):
                    raw = getattr(api, method.lower())(endpoint, body, **options)
                else:
                    raw = getattr(api, method.lower())(endpoint, **options)
            except requests.exceptions.RequestException as exc:
                if not isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
                    raise PlatformError(
                        f"WooCommerce request failed ({exc.__class__.__name__})", retryable=True
                    ) from None
                # A request that never left can always be sent again; one that may have reached
                # the store (a read timeout, a dropped connection) only when repeating is harmless.
                never_sent = isinstance(exc, requests.exceptions.ConnectTimeout) or (
                    "Failed to establish a new connection" in str(exc)
                )
                if last or not (repeatable or never_sent):
                    raise PlatformError(
                        f"WooCommerce store {self.site} unreachable or too slow ({exc.__class__.__name__})",
                        retryable=True,
                    ) from None
                self._sleep(wait)
                wait *= 2
                continue
            response = RestResponse(raw.status_code, _json_or_none(raw), raw.headers)
            if raw.status_code in RETRY_STATUSES and not last and (repeatable or raw.status_code == 429):
                delay = _retry_after(raw.headers.get("Retry-After"), wait)
                if delay is None:
                    return response
                self._sleep(delay)
                wait *= 2
                continue
            return response
        raise AssertionError("unreachable: the loop returns or raises")


def _json_or_none(raw: requests.Response) -> Any:
    try:
        return raw.json()
    except ValueError:
        return None


def _retry_after(header: str | None, default: float) -> float | None:
    if not header:
        return default
    try:
        seconds = float(header)
    except ValueError:
        return default
    return seconds if seconds <= MAX_RETRY_AFTER_SECONDS else None
