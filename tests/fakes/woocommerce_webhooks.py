"""How the fake WooCommerce site sends webhooks, as includes/class-wc-webhook.php does.

* Deliveries (``WC_Webhook::deliver``): the REST resource as the v3 API shows it (``{"id": N}``
  for a ``deleted`` event), as ``wp_json_encode`` writes it (slashes escaped), POSTed with the
  Hookshot User-Agent, ``X-WC-Webhook-*`` headers and a base64 HMAC-SHA256 signature of the exact
  body; redirects are not followed. ``X-WC-Webhook-Delivery-ID`` is ``wp_hash( id . time() )``:
  the same for every delivery of a webhook within one second.
* Failures (``log_delivery`` / ``failed_delivery``): 200-302 is success and resets the count;
  anything else (or no answer) adds one, and a failure when the count is already above
  ``woocommerce_max_webhook_delivery_failures`` (5) disables the webhook instead: the 7th failure
  in a row.
* Pings (``deliver_ping``): ``webhook_id=N`` form-encoded and unsigned, redirects followed, and
  only exactly 200 clears ``pending_delivery``; an active webhook still pending pings again each
  time it is saved (a delivery's log saves it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
import threading
from collections.abc import Callable
from typing import Any

import httpx

from tests.fakes.woocommerce_render import coupon_json, order_json
from tests.fakes.woocommerce_site import Site
from tests.fakes.woocommerce_state import HOOKSHOT_USER_AGENT, Delivery, Webhook
from tests.fakes.woocommerce_wp import RestError, wp_json

# Seconds the fake waits for the app to answer a delivery, ping or key callback (WooCommerce
# waits 60 s for deliveries and key callbacks, 5 s for pings; tests should not wait that long).
OUTBOUND_TIMEOUT = 5.0
Deliver = Callable[[str, bytes, dict[str, str]], int]


class WebhookCourier:
    """Outbound HTTP for FakeWooCommerce: webhook deliveries, pings, and the wc-auth key callback."""

    site: Site
    url: str
    deliveries: list[Delivery]
    pings: list[Delivery]
    dropped: list[tuple[int, str, int]]
    deliver: Deliver | None
    drop_deliveries: bool
    max_delivery_failures: int
    _salt: bytes
    _lock: threading.RLock
    _http: httpx.Client | None

    def ssl_context(self) -> ssl.SSLContext:
        raise NotImplementedError

    def signed_delivery(
        self, topic: str, payload: Any, secret: str, *, webhook_id: int = 1
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers WooCommerce would POST for ``topic`` with this payload and secret."""
        body = wp_json(payload)
        resource, _, event = topic.partition(".")
        signature = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
        return body, {
            "Content-Type": "application/json",
            "User-Agent": HOOKSHOT_USER_AGENT,
            "X-WC-Webhook-Source": self.url + "/",  # home_url( '/' )
            "X-WC-Webhook-Topic": topic,
            "X-WC-Webhook-Resource": resource,
            "X-WC-Webhook-Event": event,
            "X-WC-Webhook-Signature": signature,
            "X-WC-Webhook-ID": str(webhook_id),
            "X-WC-Webhook-Delivery-ID": self._delivery_id(webhook_id),
        }

    def _delivery_id(self, webhook_id: int) -> str:
        moment = int(self.site.now().timestamp())
        return hmac.new(self._salt, f"{webhook_id}{moment}".encode(), hashlib.md5).hexdigest()

    def _send(self, events: list[tuple[str, int]]) -> None:
        """Send what one request or helper call fired, in order, outside the lock."""
        for topic, resource_id in events:
            if topic == "ping":
                self._ping(resource_id)
                continue
            with self._lock:
                listening = [
                    w.id for w in self.site.webhooks.values() if w.status == "active" and w.topic == topic
                ]
            for webhook_id in listening:
                if self.drop_deliveries:
                    with self._lock:
                        self.dropped.append((webhook_id, topic, resource_id))
                    continue
                self._deliver(webhook_id, topic, resource_id)

    def _payload(self, webhook: Webhook, resource_id: int) -> Any:
        """WC_Webhook::build_payload for a wp_api_v3 webhook, built when it is sent."""
        if webhook.event == "deleted":
            return {"id": resource_id}
        if webhook.resource == "order" and resource_id in self.site.orders:
            return order_json(self.site, self.site.orders[resource_id])
        if webhook.resource == "coupon" and resource_id in self.site.coupons:
            return coupon_json(self.site, self.site.coupons[resource_id])
        post_type = {"order": "shop_order", "coupon": "shop_coupon"}.get(webhook.resource, webhook.resource)
        return RestError(f"woocommerce_rest_{post_type}_invalid_id", "Invalid ID.", 404).body()

    def _deliver(self, webhook_id: int, topic: str, resource_id: int) -> None:
        with self._lock:
            webhook = self.site.webhooks.get(webhook_id)
            if webhook is None or webhook.status != "active":
                return
            payload = self._payload(webhook, resource_id)
            body, headers = self.signed_delivery(topic, payload, webhook.secret, webhook_id=webhook.id)
            url = webhook.delivery_url
        status, error = self._post(url, body, headers, follow_redirects=False)
        with self._lock:
            delivery = Delivery(webhook_id, topic, url, body, headers, status, error)
            self.deliveries.append(delivery)
            if delivery.ok:
                webhook.failure_count = 0
            elif webhook.failure_count > self.max_delivery_failures:
                webhook.status = "disabled"
            else:
                webhook.failure_count += 1
            webhook.date_modified = self.site.now()
            ping_again = webhook.status == "active" and webhook.pending_delivery
        if ping_again:
            self._ping(webhook_id)

    def _ping(self, webhook_id: int) -> None:
        with self._lock:
            webhook = self.site.webhooks.get(webhook_id)
            if webhook is None:
                return
            url, body = webhook.delivery_url, f"webhook_id={webhook.id}".encode()
        # No Content-Type of its own: WordPress's HTTP transport sends a string body as a form.
        headers = {"User-Agent": HOOKSHOT_USER_AGENT, "Content-Type": "application/x-www-form-urlencoded"}
        status, error = self._post(url, body, headers, follow_redirects=True)
        with self._lock:
            self.pings.append(Delivery(webhook_id, "ping", url, body, headers, status, error))
            if status == 200:
                webhook.pending_delivery = False

    def _post(
        self, url: str, body: bytes, headers: dict[str, str], *, follow_redirects: bool
    ) -> tuple[int, str | None]:
        """POST to the app: (HTTP status, or 0 when there was no answer; the failure's text)."""
        if self.deliver is not None:
            try:
                return int(self.deliver(url, body, headers)), None
            except Exception as error:  # a hook that raises stands for an unreachable URL
                return 0, f"{type(error).__name__}: {error}"
        if self._http is None:
            self._http = httpx.Client(verify=self.ssl_context(), timeout=OUTBOUND_TIMEOUT, trust_env=False)
        try:
            response = self._http.post(url, content=body, headers=headers, follow_redirects=follow_redirects)
        except Exception as error:  # refused, timed out, bad TLS, or a socket pytest-socket blocks
            return 0, f"{type(error).__name__}: {error}"
        return response.status_code, None
