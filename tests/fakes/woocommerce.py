"""A fake WordPress + WooCommerce site, served over HTTPS on 127.0.0.1 for tests.

It is strict on purpose: requests get the answer WooCommerce gives (read from
woocommerce/woocommerce, plugins/woocommerce/includes, WooCommerce 10.x, on WordPress 6.8), so a
connector that passes against it has its shapes right. What it serves:

* ``/wp-json/`` and the wc/v3 REST API for orders, coupons, webhooks and general settings, with
  WooCommerce's key authentication (Basic or ``consumer_key``/``consumer_secret`` in the query)
  and WordPress's error bodies (``woocommerce_rest``);
* ``/wc-auth/v1/...``, the app authorization flow (``woocommerce_auth``), and ``approve`` /
  ``deny`` to play the merchant;
* the order-pay page and ``/checkout-link/`` (``woocommerce_storefront``), as JSON;
* webhooks: the creation ping, and signed deliveries of order (and coupon) topics whenever the
  site's data changes, with WooCommerce's failure counting and disabling.

Deliveries go out synchronously, after the change that fires them and before the request or
helper call returns (WooCommerce sends them from Action Scheduler moments later; like it, the
payload is built when it is sent, and one operation sends each topic once per order). They use
httpx against ``ca_bundle_path``, or ``fake.deliver(url, body, headers) -> status`` when a test
drives the app through Flask's test client.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from werkzeug.wrappers import Request, Response

from tests.fakes.woocommerce_auth import (
    AuthError,
    consumer_data,
    deny_url,
    error_page,
    error_text,
    finish_grant,
    formatted_url,
    grant_access_page,
    validate,
)
from tests.fakes.woocommerce_render import coupon_json, order_json
from tests.fakes.woocommerce_rest import RestRequest, authenticate
from tests.fakes.woocommerce_rest_coupons import set_coupon_props
from tests.fakes.woocommerce_routes import RestApi
from tests.fakes.woocommerce_site import Site, parse_money, place_storefront_order
from tests.fakes.woocommerce_state import (
    ApprovalResult,
    Coupon,
    Delivery,
    Product,
    RecordedRequest,
    Webhook,
)
from tests.fakes.woocommerce_storefront import checkout_link_page, order_pay_page
from tests.fakes.woocommerce_tls import TestCA
from tests.fakes.woocommerce_webhooks import Deliver, WebhookCourier
from tests.fakes.woocommerce_wp import wp_json
from tests.support.http_server import ThreadedServer


class FakeWooCommerce(WebhookCourier):
    """The server: seeding and shop-side helpers, and HTTP routing (deliveries: WebhookCourier)."""

    def __init__(
        self,
        *,
        name: str = "Bazaar",
        currency: str = "INR",
        default_country: str = "IN:KA",
        timezone: str = "Asia/Kolkata",
    ) -> None:
        self.site = Site(name=name, currency=currency, default_country=default_country, timezone=timezone)
        self.rest = RestApi(self.site)
        self.port = 0
        self.url = ""
        self.requests: list[RecordedRequest] = []
        self.deliveries: list[Delivery] = []  # webhook deliveries attempted (pings are in ``pings``)
        self.pings: list[Delivery] = []
        self.dropped: list[tuple[int, str, int]] = []  # (webhook id, topic, resource id) not sent
        self.deliver: Deliver | None = None
        self.drop_deliveries = False
        self.strip_authorization = False
        self.plugin_secret: str | None = None  # set: the cartback companion plugin is installed
        self.max_delivery_failures = 5  # woocommerce_max_webhook_delivery_failures
        self._salt = secrets.token_bytes(32)  # wp_salt( 'auth' ), for wp_hash
        self._auth_nonce = hashlib.sha256(self._salt).hexdigest()[:10]  # wc_auth_grant_access nonce
        self._lock = threading.RLock()
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self._ca: TestCA | None = None
        self._http: httpx.Client | None = None
        self._server: ThreadedServer | None = None

    # --- serving ---------------------------------------------------------------------------

    def start(self) -> Self:
        self._directory = tempfile.TemporaryDirectory(prefix="fake-woocommerce-")
        self._ca = TestCA(Path(self._directory.name))
        context = self._ca.server_context(["127.0.0.1", "localhost"])
        self._server = ThreadedServer(self._wsgi, name="fake-woocommerce", ssl_context=context).start()
        self.port = self._server.port
        self.url = self.site.url = self._server.origin
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def home_url(self) -> str:
        """home_url('/'): what X-WC-Webhook-Source carries."""
        return self.url + "/"

    @property
    def ca_bundle_path(self) -> str:
        return str(self._require_ca().bundle_path)

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting the fake's CA (for httpx's ``verify=``)."""
        return ssl.create_default_context(cafile=self.ca_bundle_path)

    def issue_server_cert(self, hosts: Iterable[str]) -> tuple[str, str]:
        """(certfile, keyfile) for ``hosts``, signed by the fake's CA, to serve the app over TLS."""
        certfile, keyfile = self._require_ca().issue(list(hosts))
        return str(certfile), str(keyfile)

    def _require_ca(self) -> TestCA:
        if self._ca is None:
            raise RuntimeError("start the fake first")
        return self._ca

    def calls(self, method: str, path_prefix: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # --- seeding ---------------------------------------------------------------------------

    def add_product(
        self,
        product_id: int,
        name: str,
        price: str,
        *,
        image: str | None = None,
        sku: str = "",
        variations: dict[int, tuple[str, str]] | None = None,
    ) -> None:
        """A product; ``variations`` maps variation id -> (attribute label, price)."""
        with self._lock:
            image_id = product_id + 50000 if image else 0
            self.site.products[product_id] = Product(
                product_id, name, Decimal(price), image_id, image or "", sku
            )
            for variation_id, (label, variation_price) in (variations or {}).items():
                self.site.products[variation_id] = Product(
                    variation_id,
                    f"{name} - {label}",
                    Decimal(variation_price),
                    image_id,
                    image or "",
                    sku,
                    parent_id=product_id,
                    parent_name=name,
                )

    def add_customer(self, customer_id: int, email: str) -> None:
        with self._lock:
            self.site.customers[customer_id] = email

    def add_keys(self, permissions: str = "read_write") -> tuple[str, str]:
        """A REST key pair, as WooCommerce > Settings > Advanced > REST API makes one."""
        with self._lock:
            key = self.site.add_key(permissions, "cartback tests")
            return key.consumer_key, key.consumer_secret

    def revoke_keys(self, consumer_key: str) -> None:
        with self._lock:
            self.site.keys.pop(consumer_key, None)

    def add_coupon(
        self, code: str, amount: str, discount_type: str = "percent", **fields: Any
    ) -> dict[str, Any]:
        """A coupon made in wp-admin (no webhook, no REST call recorded); fields as the REST API names them."""
        with self._lock:
            now = self.site.now()
            coupon = Coupon(self.site.next_post_id(), "", now, now)
            set_coupon_props(
                self.site, coupon, {"code": code, "discount_type": discount_type, "amount": amount, **fields}
            )
            self.site.coupons[coupon.id] = coupon
            return coupon_json(self.site, coupon)

    def coupon(self, code: str) -> dict[str, Any] | None:
        with self._lock:
            found = self.site.coupon_by_code(code)
            return coupon_json(self.site, found) if found else None

    def webhook(self, webhook_id: int) -> Webhook:
        with self._lock:
            return self.site.webhooks[webhook_id]

    # --- the shop at work ------------------------------------------------------------------

    def place_order(
        self,
        *,
        billing: dict[str, str],
        line_items: list[tuple[int, int, int]],
        status: str = "pending",
        payment_method: str = "razorpay",
        payment_method_title: str = "Razorpay",
        created_via: str = "checkout",
        meta_data: list[dict[str, Any]] | None = None,
        customer_id: int = 0,
    ) -> dict[str, Any]:
        """A shopper checks out: line_items are (product_id, variation_id or 0, quantity)."""
        with self._lock:
            order = place_storefront_order(
                self.site,
                status=status,
                payment_method=payment_method,
                payment_method_title=payment_method_title,
                created_via=created_via,
                billing=billing,
                line_items=line_items,
                meta_data=meta_data or [],
                customer_id=customer_id,
            )
        return self._after(order.id)

    def pay(self, order_id: int, transaction_id: str | None = None) -> dict[str, Any]:
        """The payment gateway confirms payment: WC_Order::payment_complete."""
        with self._lock:
            order = self.site.orders[order_id]
            self.site.payment_complete(order, transaction_id or f"pay_{secrets.token_urlsafe(10)}")
        return self._after(order_id)

    def set_status(self, order_id: int, status: str) -> dict[str, Any]:
        with self._lock:
            self.site.set_status(self.site.orders[order_id], status)
        return self._after(order_id)

    def refund(self, order_id: int, amount: str, reason: str = "") -> dict[str, Any]:
        with self._lock:
            self.site.refund(self.site.orders[order_id], parse_money(amount), reason)
        return self._after(order_id)

    def trash(self, order_id: int) -> None:
        with self._lock:
            self.site.trash(self.site.orders[order_id])
        self._after(order_id)

    def restore(self, order_id: int) -> dict[str, Any]:
        with self._lock:
            self.site.untrash(self.site.orders[order_id])
        return self._after(order_id)

    def order(self, order_id: int) -> dict[str, Any]:
        """The order as GET /wp-json/wc/v3/orders/{id} shows it."""
        with self._lock:
            return order_json(self.site, self.site.orders[order_id])

    def _after(self, order_id: int) -> dict[str, Any]:
        with self._lock:
            events = self.site.drain_events()
        self._send(events)
        with self._lock:
            order = self.site.orders.get(order_id)
            return order_json(self.site, order) if order else {}

    # --- storefront URLs -------------------------------------------------------------------

    def pay_url(self, order_id: int) -> str:
        with self._lock:
            return str(order_json(self.site, self.site.orders[order_id])["payment_url"])

    def authorize_url(
        self, *, app_name: str, scope: str, user_id: str, return_url: str, callback_url: str
    ) -> str:
        query = {
            "app_name": app_name,
            "scope": scope,
            "user_id": user_id,
            "return_url": return_url,
            "callback_url": callback_url,
        }
        return f"{self.url}/wc-auth/v1/authorize?{urlencode(query)}"

    # --- wc-auth: the merchant's answer ----------------------------------------------------

    def approve(self, authorize_url: str) -> ApprovalResult:
        """The merchant clicks Approve on the grant-access page ``authorize_url`` leads to."""
        params = dict(parse_qsl(urlsplit(authorize_url).query))
        try:
            with self._lock:
                validated = validate(params)
        except AuthError as error:
            return ApprovalResult(None, None, None, error_text(str(error)))
        return self._grant(validated)

    def deny(self, authorize_url: str) -> str:
        """The merchant clicks Deny: the browser goes to return_url with success=0 (no callback)."""
        return deny_url(validate(dict(parse_qsl(urlsplit(authorize_url).query))))

    def _grant(self, params: dict[str, str]) -> ApprovalResult:
        with self._lock:
            key, body, headers = consumer_data(self.site, params)
        # The key callback is posted without the lock held: the app may call the REST API meanwhile.
        status, error = self._post(
            formatted_url(params["callback_url"]), body, headers, follow_redirects=True
        )
        with self._lock:
            return finish_grant(self.site, params, key, status, error)

    # --- HTTP ------------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        response, events, grant = self._dispatch(request)
        if grant is not None:
            result = self._grant(grant)
            if result.redirect_url:
                response = Response(status=302, headers={"Location": result.redirect_url})
            else:
                response = Response(error_page(str(result.error)), status=401, mimetype="text/html")
        self._send(events)
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> tuple[Response, list[tuple[str, int]], dict[str, str] | None]:
        query = {key: request.args.get(key, "") for key in request.args}
        with self._lock:
            body, invalid_json = _read_body(request)
            authorization = None if self.strip_authorization else request.headers.get("Authorization")
            path = request.path
            grant: dict[str, str] | None = None
            carried: str | None = None
            if path == "/wp-json" or path.startswith("/wp-json/") or (path == "/" and "rest_route" in query):
                route = query.pop("rest_route", "") if path == "/" else path[len("/wp-json") :]
                key = error = None
                if route.startswith(("/wc/", "/wc-")):
                    key, carried, error = authenticate(self.site, query, authorization)
                rest_request = RestRequest(
                    request.method, route.rstrip("/") or "/", query, body, key, invalid_json
                )
                answer = self.rest.serve(rest_request, error)
                response = _json_response(answer.status, answer.body, answer.headers)
            elif path.startswith("/wc-auth/v1/"):
                response, grant = self._serve_wc_auth(path[len("/wc-auth/v1/") :], query)
            elif (
                path.rstrip("/").startswith("/checkout/order-pay/")
                and path.rstrip("/").split("/")[-1].isdigit()
            ):
                page = order_pay_page(
                    self.site, int(path.rstrip("/").split("/")[-1]), query, self.plugin_secret
                )
                response = _json_response(200, page, [])
            elif path.rstrip("/") == "/checkout-link":
                response = _json_response(200, checkout_link_page(self.site, query), [])
            else:
                response = Response("<h1>Page not found</h1>", status=404, mimetype="text/html")
            self.requests.append(
                RecordedRequest(request.method, path, query, body, carried, dict(request.headers))
            )
            return response, self.site.drain_events(), grant

    def _serve_wc_auth(self, route: str, query: dict[str, str]) -> tuple[Response, dict[str, str] | None]:
        route = route.strip("/").lower()
        try:
            params = validate(query)
        except AuthError as error:
            return Response(error_page(error_text(str(error))), status=401, mimetype="text/html"), None
        if route == "login":  # the merchant is logged in already
            return Response(
                status=302, headers={"Location": f"{self.url}/wc-auth/v1/authorize?{urlencode(params)}"}
            ), None
        if route == "authorize":
            return Response(
                grant_access_page(self.site, params, self._auth_nonce), mimetype="text/html"
            ), None
        if route == "access_granted":
            if query.get("wc_auth_nonce") != self._auth_nonce:
                return Response(
                    error_page(error_text("Invalid nonce verification")), status=401, mimetype="text/html"
                ), None
            return Response(status=204), params  # answered by _wsgi once the lock is released
        return Response(
            error_page(error_text("You do not have permission to access this page")),
            status=401,
            mimetype="text/html",
        ), None


def _read_body(request: Request) -> tuple[Any, bool]:
    """The parsed body and whether it was JSON that failed to parse."""
    raw = request.get_data(cache=True)
    if not raw:
        return None, False
    if request.mimetype == "application/json":
        try:
            return json.loads(raw), False
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None, True
    if request.mimetype == "application/x-www-form-urlencoded":
        return dict(parse_qsl(raw.decode(errors="replace"), keep_blank_values=True)), False
    return None, False


def _json_response(status: int, body: Any, headers: list[tuple[str, str]]) -> Response:
    response = Response(wp_json(body), status=status, content_type="application/json; charset=UTF-8")
    response.headers.add("X-Robots-Tag", "noindex")
    response.headers.add("X-Content-Type-Options", "nosniff")
    response.headers.add("Access-Control-Expose-Headers", "X-WP-Total, X-WP-TotalPages, Link")
    for name, value in headers:
        response.headers.add(name, value)
    return response
