"""The WooCommerce connector: signed webhooks in, REST ``wc/v3`` out.

Every store signs its deliveries with its own secret (the one cartback gave its webhooks, and
its companion plugin): the store is found from ``X-WC-Webhook-Source`` before the signature is
checked. ``X-WC-Webhook-Delivery-ID`` is a hash of the webhook id and the second it was sent,
so two events in one second share it: deliveries are told apart by what they say (the order,
its status and its modification time) instead. Coupons and the rebuilt checkout are in
``checkout``.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from connectors.base import (
    CartSnapshot,
    CheckoutRef,
    CreatedDiscount,
    DiscountRequest,
    OrderEvent,
    OrderStatus,
    PayloadError,
    PlatformError,
    RebuiltCheckout,
    StoreAccess,
    StoreDetails,
    WebhookEvent,
    WebhookIdentity,
    WebhookRejected,
    WebhookSync,
)
from connectors.payload_fields import load_json_object
from connectors.woocommerce import checkout, payloads
from connectors.woocommerce.rest import WooCommerceRest
from connectors.woocommerce.signing import pay_link_token, sign
from connectors.woocommerce.site import canonical_site_url, is_public_host

__all__ = ["PLATFORM", "WooCommerceConnector", "canonical_site_url", "pay_link_token", "sign"]

log = logging.getLogger("cartback.woocommerce")

PLATFORM = "woocommerce"
HEADER_SOURCE = "X-WC-Webhook-Source"
HEADER_TOPIC = "X-WC-Webhook-Topic"
HEADER_SIGNATURE = "X-WC-Webhook-Signature"
HEADER_WEBHOOK_ID = "X-WC-Webhook-ID"
HEADER_DELIVERY_ID = "X-WC-Webhook-Delivery-ID"
# The topics cartback registers on each store.
WEBHOOK_TOPICS = ("order.created", "order.updated", "order.deleted", "order.restored")
# What a polled order is stored as: the webhook that would have said the same.
ORDER_CHANGED_TOPIC = "order.updated"
# WooCommerce's creation ping: a form body naming the new webhook, unsigned.
PING_BODY = re.compile(rb"^webhook_id=\d+$")
# ``per_page`` may not exceed 100 in WooCommerce's REST API.
PAGE_SIZE = 100


def _header(headers: Mapping[str, str], name: str) -> str:
    return (headers.get(name) or "").strip()


def _same_site(url: str, site: str) -> bool:
    """A link on the store's own domain (``www.`` or another subdomain of it included): what a
    capture may point to."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    domain = (urlsplit(site).hostname or "").lower().removeprefix("www.")
    return (
        parts.scheme in ("https", "http") and bool(host) and (host == domain or host.endswith("." + domain))
    )


class WooCommerceConnector:
    platform = PLATFORM
    # Each store signs with its own secret: the store is looked up before verifying.
    signs_with_app_secret = False

    def __init__(
        self,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        public_only: bool = False,
    ):
        """``public_only`` (production): refuse store addresses that lead to private networks."""
        self._sleep = sleep
        self._clock = clock
        self._public_only = public_only
        self._query_auth_sites: set[str] = set()

    def rest(self, store: StoreAccess) -> WooCommerceRest:
        return WooCommerceRest(store, query_auth_sites=self._query_auth_sites, sleep=self._sleep)

    # -- webhooks -------------------------------------------------------------------------

    def is_ping(self, raw_body: bytes, headers: Mapping[str, str]) -> bool:
        return not _header(headers, HEADER_SIGNATURE) and bool(PING_BODY.match(raw_body.strip()))

    def webhook_identity(self, headers: Mapping[str, str]) -> WebhookIdentity:
        missing = [
            name for name in (HEADER_SOURCE, HEADER_TOPIC, HEADER_SIGNATURE) if not _header(headers, name)
        ]
        if missing:
            raise WebhookRejected(400, "missing header(s): " + ", ".join(missing))
        try:
            site = canonical_site_url(_header(headers, HEADER_SOURCE))
        except ValueError:
            raise WebhookRejected(400, f"{HEADER_SOURCE} must be the store's URL") from None
        webhook_id = _header(headers, HEADER_WEBHOOK_ID) or "-"
        return WebhookIdentity(
            store_ref=site,
            topic=_header(headers, HEADER_TOPIC).lower(),
            # Replaced by ``delivery_key`` once the body is read (this one repeats per second).
            delivery_id=f"{webhook_id}:{_header(headers, HEADER_DELIVERY_ID) or '-'}",
            event_id=None,
        )

    def verify_webhook(self, raw_body: bytes, headers: Mapping[str, str], secret: str) -> bool:
        given = _header(headers, HEADER_SIGNATURE)
        if not secret or not given:
            return False
        return hmac.compare_digest(sign(secret, raw_body).encode(), given.encode())

    def parse_webhook(
        self, identity: WebhookIdentity, raw_body: bytes, *, default_region: str
    ) -> WebhookEvent:
        payload = load_json_object(raw_body)
        event = payloads.parse(
            identity.topic,
            payload,
            default_region=default_region,
            received_at=identity.triggered_at or datetime.now(UTC),
        )
        if (
            isinstance(event, CartSnapshot)
            and event.checkout_url
            and not _same_site(event.checkout_url, identity.store_ref)
        ):
            # A capture's link (the plugin's, CartFlows') becomes where a recovery link lands:
            # only one on the store itself, never an open redirect.
            event = replace(event, checkout_url=None)
        return event

    def acknowledges_unreadable(self, identity: WebhookIdentity) -> bool:
        """WooCommerce disables a webhook after a few non-2xx answers (and re-activating it
        keeps the count): an order delivery we cannot read is acknowledged and dropped, so one
        odd order never stops the store's deliveries. The plugin's own captures get the 4xx."""
        return identity.topic in payloads.ORDER_TOPICS or identity.topic == payloads.ORDER_DELETED

    def delivery_key(
        self, identity: WebhookIdentity, raw_body: bytes, event: WebhookEvent | None = None
    ) -> str:
        """What makes a delivery the same event: an order in one status at one modification
        time, a captured cart at one moment. Replays and the same change reported twice (a
        webhook and the reconcile poll) share it. ``event``: the body already parsed, when it
        kept its payload (not read twice on the webhook path)."""
        payload: Mapping[str, Any]
        if isinstance(event, CartSnapshot | OrderEvent) and event.raw:
            payload = event.raw
        else:
            try:
                payload = load_json_object(raw_body)
            except PayloadError:
                payload = {}
        topic = identity.topic
        if topic in payloads.ORDER_TOPICS:
            what = f"order|{payload.get('id')}|{payload.get('status')}|{payload.get('date_modified_gmt')}"
        elif topic == payloads.ORDER_DELETED:
            what = f"order|{payload.get('id')}|deleted|{identity.delivery_id}"
        elif topic in (payloads.CART_UPDATED, payloads.CART_EMPTIED):
            what = f"cart|{payload.get('cart_id')}|{topic}|{payload.get('updated_at_gmt')}"
        else:
            what = f"{topic}|{hashlib.sha256(raw_body).hexdigest()}"
        return hashlib.sha256(f"{identity.store_ref}|{what}".encode()).hexdigest()

    def ensure_webhooks(
        self, store: StoreAccess, delivery_url: str, *, set_secret: bool = False
    ) -> WebhookSync:
        """Make sure each topic has an active webhook to ``delivery_url`` signed with the
        store's secret: create what is missing, re-activate what WooCommerce disabled after
        failed deliveries. Safe to run any number of times.

        WooCommerce never returns a webhook's secret: ``set_secret`` (at a connect) sends ours
        to the webhooks that already exist, which an earlier install may have signed otherwise.
        """
        if not store.webhook_secret:
            raise PlatformError("the store has no webhook secret; connect it again")
        rest = self.rest(store)
        ours: dict[str, dict[str, Any]] = {}
        for hook in self._pages(rest, "webhooks", {}, "list webhooks"):
            if str(hook.get("delivery_url") or "").rstrip("/") == delivery_url.rstrip("/"):
                topic = str(hook.get("topic") or "")
                # Several for one topic (an old connect): keep an active one.
                if topic not in ours or hook.get("status") == "active":
                    ours[topic] = hook
        sync = WebhookSync()
        for topic in WEBHOOK_TOPICS:
            existing = ours.get(topic)
            if existing is None:
                rest.call(
                    "POST",
                    "webhooks",
                    what=f"create the {topic} webhook",
                    json={
                        "name": f"cartback {topic}",
                        "topic": topic,
                        "delivery_url": delivery_url,
                        "secret": store.webhook_secret,
                        "status": "active",
                    },
                )
                sync.created.append(topic)
                continue
            changes: dict[str, Any] = {}
            # Disabled is WooCommerce giving up after failures; paused is the merchant's choice.
            if existing.get("status") == "disabled":
                changes["status"] = "active"
            if set_secret:
                changes["secret"] = store.webhook_secret
            if changes:
                rest.call(
                    "PUT", f"webhooks/{existing['id']}", what=f"update the {topic} webhook", json=changes
                )
                (sync.reactivated if "status" in changes else sync.resecreted).append(topic)
            elif existing.get("status") == "active":
                sync.healthy.append(topic)
            else:
                sync.paused.append(topic)
        return sync

    def verify_keys(self, typed_site: str, access_token: str) -> str:
        """The site's own address, once a REST call with these keys (``join_key_pair``) has
        succeeded there.

        WordPress's index names the address the site calls itself (``home``, what its webhooks
        carry as their source): a merchant who typed ``shop.example`` for ``www.shop.example``
        is named as their webhooks will name them. PlatformError when the keys do not work.
        """
        home = self.discover_home(typed_site)
        access = StoreAccess(home, home, access_token, home)
        self.rest(access).call("GET", "settings/general", what="accept cartback's new keys")
        return home

    def discover_home(self, typed_site: str) -> str:
        site = typed_site
        for _hop in range(2):
            index, moved_to = WooCommerceRest.read_index(site)
            if moved_to is not None:
                # One redirect (shop.example -> www.shop.example), to https and a public host.
                site = self._checked_site(moved_to)
                continue
            home = index.get("home") if isinstance(index, dict) else None
            return self._checked_site(str(home)) if isinstance(home, str) and home else site
        return site

    def _checked_site(self, url: str) -> str:
        try:
            site = canonical_site_url(url)
        except ValueError:
            raise PlatformError(f"the store names an address that is not one ({url[:100]})") from None
        if not site.startswith("https://"):
            raise PlatformError(
                f"the store calls itself {site}, which is not https; set WordPress's address to https"
            )
        if self._public_only and not is_public_host(urlsplit(site).hostname or ""):
            raise PlatformError("the store's address leads to a private network")
        return site

    # -- reading the store ----------------------------------------------------------------

    def _pages(
        self, rest: WooCommerceRest, endpoint: str, params: Mapping[str, Any], what: str
    ) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            response = rest.call(
                "GET", endpoint, what=what, params={**params, "per_page": PAGE_SIZE, "page": page}
            )
            items = response.body if isinstance(response.body, list) else []
            yield from (item for item in items if isinstance(item, dict))
            if page >= response.total_pages or not items:
                return
            page += 1

    def changed_orders(self, store: StoreAccess, since: datetime) -> Iterator[tuple[str, bytes]]:
        """Every order modified since ``since`` (UTC), as REST JSON, page by page: what the
        webhooks should have said, for the deliveries WooCommerce never retries."""
        params = {
            "modified_after": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "dates_are_gmt": "true",
            "orderby": "id",
            "order": "asc",
        }
        for order in self._pages(self.rest(store), "orders", params, "list changed orders"):
            yield ORDER_CHANGED_TOPIC, json.dumps(order, separators=(",", ":")).encode()

    def store_details(self, store: StoreAccess) -> StoreDetails:
        rest = self.rest(store)
        general = rest.call("GET", "settings/general", what="read the store's settings").body
        values = {
            str(item.get("id")): item.get("value")
            for item in (general if isinstance(general, list) else [])
            if isinstance(item, dict)
        }
        country = str(values.get("woocommerce_default_country") or "").split(":")[0].upper()
        currency = str(values.get("woocommerce_currency") or "INR").upper()
        index, _ = WooCommerceRest.read_index(store.api_base_url)
        timezone = str(index.get("timezone_string") or "") or _zone_for_offset(index.get("gmt_offset"))
        name = html.unescape(str(index.get("name") or ""))
        return StoreDetails(
            storefront_url=store.api_base_url.rstrip("/"),
            name=name or urlsplit(store.api_base_url).hostname or store.platform_store_id,
            currency=currency if re.fullmatch(r"[A-Z]{3}", currency) else "INR",
            timezone=timezone or "Asia/Kolkata",
            country=country if re.fullmatch(r"[A-Z]{2}", country) else None,
        )

    # -- discounts and the rebuilt checkout -----------------------------------------------

    def create_discount(self, store: StoreAccess, request: DiscountRequest) -> CreatedDiscount:
        return checkout.create_coupon(self.rest(store), request)

    def delete_discount(self, store: StoreAccess, platform_discount_id: str) -> None:
        self.rest(store).call(
            "DELETE",
            f"coupons/{platform_discount_id}",
            what="delete an expired coupon",
            params={"force": "true"},
            allow=frozenset({404}),  # already gone: the merchant deleted it by hand
        )

    def rebuild_checkout(
        self, store: StoreAccess, checkout_ref: CheckoutRef, discount_code: str | None
    ) -> RebuiltCheckout:
        return checkout.rebuild(self.rest(store), store, checkout_ref, discount_code, now=self._clock)

    # -- reconciling recovered revenue ------------------------------------------------------

    def order_statuses(self, store: StoreAccess, order_ids: Sequence[str]) -> list[OrderStatus]:
        rest = self.rest(store)
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(order_ids), PAGE_SIZE):
            batch = list(order_ids[start : start + PAGE_SIZE])
            for order in self._pages(rest, "orders", {"include": ",".join(batch)}, "read recovered orders"):
                found[str(order.get("id"))] = order
        return [payloads.order_status(order_id, found.get(order_id)) for order_id in order_ids]


def _zone_for_offset(offset: Any) -> str:
    """A site set to a bare UTC offset ("UTC+5:30") has no zone name: a fixed-offset zone, or
    India's for +5:30 (the offset no other country uses)."""
    try:
        hours = float(offset)
    except (TypeError, ValueError):
        return ""
    if hours == 5.5:
        return "Asia/Kolkata"
    # Etc/GMT zones exist for whole hours only, with the sign inverted (POSIX).
    return f"Etc/GMT{-int(hours):+d}" if hours.is_integer() and hours else ("UTC" if hours == 0 else "")
