"""A strict fake of Meta's WhatsApp Cloud API (Graph API v25.0), served on 127.0.0.1 for tests.

It refuses what Meta documents as refused, with Meta's error codes and HTTP statuses, so code that
passes against it has its shapes right. ``fake.url`` is ``http://127.0.0.1:{port}/v25.0``, the
value for WHATSAPP_GRAPH_URL; every path below is relative to it:

* ``POST /{phone-number-id}/messages``: template messages (checked against the stored template,
  rules in ``whatsapp_templates_rules``) and text replies.
* ``GET /{phone-number-id}``, ``GET /{waba-id}``, ``GET /{waba-id}/phone_numbers``.
* ``GET /{waba-id}?fields=pricing_analytics.start(..).end(..).granularity(..)...``: what this fake
  billed, from delivered template messages and ``bill`` (``whatsapp_pricing``).
* ``GET|POST|DELETE /{waba-id}/subscribed_apps``.
* ``GET|POST /{waba-id}/message_templates``, ``GET /{template-id}``.
* The Resumable Upload API for header examples: ``POST /{app-id}/uploads``, then
  ``POST /upload:{session}`` with the file's bytes (and ``GET`` for the session's offset).

Webhook bodies are built by ``whatsapp_webhooks``; ``status_for`` fills one from a message this
fake accepted. With ``webhook_url`` set, the fake also delivers webhooks as Meta does: signed
POSTs of ``auto_statuses`` for every accepted send, from a background thread, and ``deliver`` for
any other body (a ``button_reply_for`` tap); attempts are recorded in ``webhook_deliveries``.

Run it beside the app as "Meta" (``python -m tests.fakes.whatsapp_graph --help``)::

    python -m tests.fakes.whatsapp_graph --port 8081 --app-secret S --access-token TOKEN \
        --webhook-url http://127.0.0.1:8000/webhooks/whatsapp

then start the app with WHATSAPP_TRANSPORT=cloud, WHATSAPP_GRAPH_URL=http://127.0.0.1:8081/v25.0,
WHATSAPP_APP_SECRET=S and WHATSAPP_APP_ID=710000000000001 (``--app-id``), and connect the store
with the seeded WABA, phone number and token. Templates the app pushes are approved at once.

Sources, read in their December 2025 - March 2026 editions (prefix
https://developers.facebook.com/documentation/business-messaging/whatsapp):

* ERRORS         /support/error-codes (codes, HTTP statuses, the error body)
* MESSAGE_API    /reference/whatsapp-business-phone-number/message-api
* SEND           /messages/send-messages and /messages/text-messages
* PHONE_API      /reference/whatsapp-business-phone-number/whatsapp-business-account-phone-number-api
* PHONES_API     /reference/whatsapp-business-account/phone-number-management-api
* WABA_API       /reference/whatsapp-business-account/whatsapp-business-account-api
* SUBSCRIBED     /reference/whatsapp-business-account/subscribed-apps-api
* TEMPLATE_API   /reference/whatsapp-business-account/template-api and /templates/template-management
* THROUGHPUT     /throughput and /solution-providers/manage-phone-numbers (``throughput.level``)
* CHANGELOG      /reference/changelog
* UPLOADS        https://developers.facebook.com/docs/graph-api/guides/upload and
                 https://developers.facebook.com/docs/graph-api/reference/application/uploads/
* GRAPH_ERRORS   https://developers.facebook.com/docs/graph-api/guides/error-handling
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import heapq
import itertools
import json
import re
import secrets
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode

import httpx
from werkzeug.wrappers import Request, Response

from tests.fakes import whatsapp_pricing as pricing
from tests.fakes import whatsapp_webhooks as webhooks
from tests.fakes.shopify_http import json_response
from tests.fakes.whatsapp_templates_rules import (
    CONTENT_ALREADY_EXISTS,
    MAX_TEMPLATES_PER_WABA,
    TEMPLATE_DISABLED,
    TEMPLATE_DOES_NOT_EXIST,
    TEMPLATE_LIMIT_EXCEEDED,
    TEMPLATE_PAUSED,
    NewTemplate,
    Refusal,
    RenderedTemplate,
    check_new_template,
    check_send,
)
from tests.support.http_server import QuietHandler, ThreadedServer

API_VERSION = "v25.0"
DEFAULT_APP_ID = "710000000000001"
DEFAULT_PAGE_SIZE = 25  # Graph's default page size (not verified in docs)
MAX_PAGE_SIZE = 100  # "limit integer [min: 1, max: 100]" (PHONES_API)
BIZ_OPAQUE_MAX_CHARS = 512  # raised from 256 (CHANGELOG)
TEXT_BODY_MAX_CHARS = 4096  # text messages (SEND)
# E.164 numbers have at most 15 digits; the 8-digit floor is this fake's (not verified in docs).
TO_MIN_DIGITS, TO_MAX_DIGITS = 8, 15
# MESSAGE_API's own example sends "to": "+1-631-555-5555" and gets wa_id "16315555555".
TO_PATTERN = re.compile(r"^\+?[0-9][0-9 ()\-]*$")
# "Valid values are: application/pdf, image/jpeg, image/jpg, image/png, video/mp4" (UPLOADS).
UPLOAD_FILE_TYPES = frozenset({"application/pdf", "image/jpeg", "image/jpg", "image/png", "video/mp4"})
QUALITY_RATINGS = frozenset({"GREEN", "YELLOW", "RED", "NA", "UNKNOWN"})  # PHONE_API; UNKNOWN in PHONES_API
THROUGHPUT_LEVELS = frozenset(
    {"STANDARD", "HIGH", "NOT_APPLICABLE"}
)  # STANDARD in THROUGHPUT; rest unverified
TEMPLATE_STATUSES = frozenset(  # TEMPLATE_API statuses and the status-update webhook's events
    {"APPROVED", "PENDING", "REJECTED", "PAUSED", "DISABLED", "IN_APPEAL", "PENDING_DELETION"}
    | {"DELETED", "ARCHIVED", "LIMIT_EXCEEDED", "LOCKED", "FLAGGED", "REINSTATED"}
)
# Fields each node answers to; without ``fields`` Graph returns the defaults.
PHONE_FIELDS = frozenset(
    {"id", "display_phone_number", "verified_name", "quality_rating", "code_verification_status"}
    | {"name_status", "status", "throughput", "messaging_limit_tier", "platform_type", "account_mode"}
    | {"whatsapp_business_manager_messaging_limit"}
)
PHONE_DEFAULT_FIELDS = ("id", "display_phone_number", "verified_name", "quality_rating")  # PHONE_API
# MESSAGING_LIMITS (developers.facebook.com/documentation/business-messaging/whatsapp/messaging-limits):
# 250 for a new portfolio, then 2,000, 10,000, 100,000, unlimited; TIER_50 and TIER_1K are the
# per-number tiers from before October 2025, still seen on old accounts.
MESSAGING_LIMIT_TIERS = frozenset(
    {"TIER_50", "TIER_250", "TIER_1K", "TIER_2K", "TIER_10K", "TIER_100K", "TIER_UNLIMITED"}
)
WABA_FIELDS = frozenset(
    {"id", "name", "timezone_id", "message_template_namespace", "account_review_status"}
    | {"business_verification_status", "country", "ownership_type", "primary_business_location"}
    # The currency pricing_analytics costs are in (whatsapp_pricing); a WABA field as Meta returns
    # it per AWS's MetaFlowWhatsAppBusinessAccountInfo, asked beside pricing_analytics in public code.
    | {"currency"}
)
WABA_DEFAULT_FIELDS = ("id", "name")  # WABA_API
TEMPLATE_FIELDS = frozenset(
    {"id", "name", "language", "status", "category", "components", "parameter_format", "quality_score"}
)
TEMPLATE_DEFAULT_FIELDS = ("name", "parameter_format", "components", "language", "status", "category", "id")

UNDERSCORE_HEADERS = "cartback.underscore_headers"
# Cloud API codes: (title, HTTP status) from ERRORS; the title is what "message" carries after
# "(#code)". 132000, 132001 and 132012 use the wording Meta sends (reported in public code);
# 132018 is in CHANGELOG only, its status is assumed to be 400.
CLOUD_API_ERRORS: dict[int, tuple[str, int]] = {
    0: ("AuthException", 401),
    1: ("API Unknown", 400),
    2: ("API Service", 503),
    3: ("API Method", 500),
    4: ("API Too Many Calls", 400),
    10: ("Permission Denied", 403),
    33: ("Parameter value is not valid", 400),
    100: ("Invalid parameter", 400),
    190: ("Access token has expired", 401),
    200: ("API Permission", 403),
    368: ("Temporarily blocked for policies violations", 403),
    80007: ("Rate limit issues", 400),
    130429: ("Rate limit hit", 400),
    130472: ("User's number is part of an experiment", 400),
    130497: ("Business account is restricted from messaging users in this country.", 403),
    131000: ("Something went wrong", 500),
    131005: ("Access denied", 403),
    131008: ("Required parameter is missing", 400),
    131009: ("Parameter value is not valid", 400),
    131016: ("Service unavailable", 500),
    131021: ("Recipient cannot be sender", 400),
    131026: ("Message undeliverable", 400),
    131031: ("Account has been locked", 403),
    131037: ("WhatsApp provided number needs display name approval before message can be sent.", 400),
    131042: ("Business eligibility payment issue", 400),
    131045: ("Incorrect certificate", 500),
    131047: ("Re-engagement message", 400),
    131048: ("Spam rate limit hit", 400),
    131049: ("This message was not delivered to maintain healthy ecosystem engagement.", 400),
    131050: (
        "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on"
        " WhatsApp from your business.",
        400,
    ),
    131051: ("Unsupported message type", 400),
    131052: ("Media download error", 400),
    131053: ("Media upload error", 400),
    131056: ("(Business Account, Consumer Account) pair rate limit hit", 400),
    131057: ("Account in maintenance mode", 500),
    132000: ("Number of parameters does not match the expected number of params", 400),
    132001: ("Template name does not exist in the translation", 404),
    132005: ("Template Hydrated Text Too Long", 400),
    132007: ("Template Format Character Policy Violated", 400),
    132012: ("Parameter format does not match format in the created template", 400),
    132015: ("Template is Paused", 400),
    132016: ("Template is Disabled", 400),
    132018: ("There was an issue with the parameters in your template.", 400),
    133004: ("Server Temporarily Unavailable", 503),
    133010: ("Phone number Not Registered", 400),
    135000: ("Generic user error", 400),
}
# What error_data.details says when a test injects a code without saying (ERRORS descriptions).
DEFAULT_DETAILS = {
    130429: "Cloud API message throughput has been reached.",
    131000: "Message failed to send due to an unknown error.",
    131016: "A service is temporarily unavailable.",
    131026: "Message Undeliverable.",
    131031: "Business Account locked.",
    131042: "There was an error related to your payment method.",
    131047: "Message failed to send because more than 24 hours have passed since the customer last replied"
    " to this number.",
    131048: "Message failed to send because there are restrictions on how many messages can be sent from this"
    " phone number. This may be because too many previous messages were blocked or flagged as spam.",
    131049: "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
    131050: "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on"
    " WhatsApp from your business.",
    131056: "Message failed to send because there were too many messages sent from this phone number to the"
    " same phone number in a short period of time.",
    368: "The WhatsApp Business Account associated with the app has been restricted or disabled for"
    " violating a platform policy.",
}


class GraphError(Exception):
    """A Graph API error answer. ``cloud_api`` errors carry ``error_data`` (ERRORS: "Error response
    syntax"); Graph-level ones (tokens, unknown objects, template creation) do not.
    ``error_subcode`` is "Deprecated. Will not be returned in v16.0+ responses" for Cloud API
    errors (ERRORS), so it is only set on Graph-level ones."""

    def __init__(
        self,
        code: int,
        details: str | None = None,
        *,
        http_status: int | None = None,
        message: str | None = None,
        kind: str = "OAuthException",
        subcode: int | None = None,
        user_title: str | None = None,
        user_msg: str | None = None,
        cloud_api: bool = True,
    ) -> None:
        title, default_status = CLOUD_API_ERRORS.get(code, ("Error", 400))
        self.code = code
        self.http_status = http_status or default_status
        self.message = message or f"(#{code}) {title}"
        self.details = details or DEFAULT_DETAILS.get(code, title)
        self.kind = kind
        self.subcode = subcode
        self.user_title = user_title
        self.user_msg = user_msg
        self.cloud_api = cloud_api
        super().__init__(self.message)

    @classmethod
    def refused(cls, refusal: Refusal, *, cloud_api: bool = True) -> GraphError:
        if refusal.subcode is not None or not cloud_api:
            # Template creation: {"message": "Invalid parameter", "code": 100, "error_subcode":
            # ..., "error_user_title", "error_user_msg"} as Meta answers it (reported in public code).
            return cls(
                refusal.code,
                refusal.details,
                message="Invalid parameter",
                subcode=refusal.subcode,
                user_title=refusal.user_title,
                user_msg=refusal.user_msg or refusal.details,
                cloud_api=False,
            )
        return cls(refusal.code, refusal.details)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.kind, "code": self.code}
        if self.cloud_api:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if not self.cloud_api:
            error["is_transient"] = self.http_status >= 500
        if self.user_title is not None:
            error["error_user_title"] = self.user_title
        if self.user_msg is not None:
            error["error_user_msg"] = self.user_msg
        # "Internal support identifier" (GRAPH_ERRORS); Meta's look like "Az8or2yhqkZfEZ-_4Qn_Bam".
        error["fbtrace_id"] = "A" + secrets.token_urlsafe(16)[:22]
        return {"error": error}


class GraphHandler(QuietHandler):
    """Werkzeug's dev server drops request headers whose names hold "_" (as nginx does), but the
    upload step sends ``file_offset`` (UPLOADS); such headers are kept aside under
    ``UNDERSCORE_HEADERS`` in the WSGI environ."""

    def make_environ(self) -> dict[str, Any]:
        environ = super().make_environ()
        environ[UNDERSCORE_HEADERS] = {
            key.lower(): value for key, value in self.headers.items() if "_" in key
        }
        return environ


def _unsupported(method: str, node: str) -> GraphError:
    # Graph's answer for an ID the token cannot see, or that does not exist (not verified in the
    # WhatsApp docs; reported as "code 100/33" in public code).
    return GraphError(
        100,
        message=f"Unsupported {method.lower()} request. Object with ID '{node}' does not exist, cannot be loaded"
        " due to missing permissions, or does not support this operation. Please read the Graph API"
        " documentation at https://developers.facebook.com/docs/graph-api",
        kind="GraphMethodException",
        subcode=33,
        cloud_api=False,
    )


def _digits(phone: str) -> str:
    return re.sub(r"\D", "", phone)


# --- state -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphRequest:
    method: str
    path: str  # as requested, with the /v25.0 prefix
    query: dict[str, str]
    headers: dict[str, str]
    json: Any  # the parsed JSON body, or None
    body: bytes


@dataclass
class PhoneNumber:
    id: str
    waba_id: str
    display_phone_number: str
    verified_name: str
    quality_rating: str
    throughput_level: str
    # PHONES_API's enum still lists TIER_1K, while the phone_number_quality_update page's limits
    # run TIER_250, TIER_2K, TIER_10K... since limits moved to the business portfolio.
    messaging_limit_tier: str = "TIER_2K"
    # The field that replaced messaging_limit_tier (v24.0+; MESSAGING_LIMITS: "Request the
    # whatsapp_business_manager_messaging_limit field instead", example "TIER_250"); the limit is
    # the business portfolio's, shared by its numbers.
    whatsapp_business_manager_messaging_limit: str = "TIER_2K"
    code_verification_status: str = "VERIFIED"
    name_status: str = "APPROVED"
    status: str = "CONNECTED"
    platform_type: str = "CLOUD_API"
    account_mode: str = "LIVE"

    def node(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in PHONE_FIELDS if name != "throughput"}
        return values | {"throughput": {"level": self.throughput_level}}


@dataclass
class Waba:
    id: str
    name: str
    phone_number_ids: list[str] = field(default_factory=list)
    subscribed: bool = False
    currency: str = "INR"
    message_template_namespace: str = field(default_factory=lambda: str(uuid.uuid4()).replace("-", "_"))

    def node(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "timezone_id": "71",
            "message_template_namespace": self.message_template_namespace,
            "account_review_status": "APPROVED",
            "business_verification_status": "verified",
            "country": "IN",
            "ownership_type": "SELF_OWNED",
            "primary_business_location": "IN",
            "currency": self.currency,
        }


@dataclass
class StoredTemplate:
    id: str
    waba_id: str
    template: NewTemplate
    status: str
    quality_score: str = "UNKNOWN"
    quality_date: int = field(default_factory=lambda: int(time.time()))

    def node(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.template.name,
            "language": self.template.language,
            "status": self.status,
            "category": self.template.category,
            "components": json.loads(json.dumps(self.template.components)),
            "parameter_format": self.template.parameter_format,
            # {"score": "GREEN", "date": 1758754645} (TEMPLATE_API, quality rating page)
            "quality_score": {"score": self.quality_score, "date": self.quality_date},
        }


@dataclass(frozen=True)
class SentMessage:
    """A send this fake accepted, with what the shopper would see."""

    wamid: str
    waba_id: str
    phone_number_id: str
    to: str  # as the request gave it
    wa_id: str  # digits
    type: str  # "template" or "text"
    payload: dict[str, Any]
    accepted_at: float
    template_name: str | None = None
    language: str | None = None
    category: str | None = None  # the template's, e.g. "MARKETING"
    components: list[dict[str, Any]] = field(default_factory=list)
    biz_opaque_callback_data: str | None = None
    body: str = ""  # the rendered template body, or the text message's body
    header_media: dict[str, str] | None = None
    button_urls: dict[int, str] = field(default_factory=dict)  # index -> the full URL
    button_payloads: dict[int, str] = field(default_factory=dict)  # index -> quick-reply payload


@dataclass(frozen=True)
class WebhookDelivery:
    """One POST of a webhook to ``webhook_url``: the app's HTTP status, or why there was none."""

    url: str
    body: dict[str, Any]  # as signed and sent ({} when the body could not be built)
    status_code: int | None
    error: str | None  # e.g. "ConnectError: [Errno 111] Connection refused"
    at: float  # time.time() when the answer or the error came

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class InjectedFailure:
    code: int
    remaining: int
    to_digits: str | None
    http_status: int | None
    details: str | None


@dataclass
class UploadSession:
    id: str
    file_name: str | None
    file_length: int
    file_type: str
    received: int = 0
    handle: str | None = None


# --- the server --------------------------------------------------------------------------------


class FakeGraphAPI:
    """The server; seed it, start it (``with FakeGraphAPI() as fake:``), point the app at ``url``."""

    def __init__(
        self,
        app_secret: str | None = None,
        app_id: str = DEFAULT_APP_ID,
        latency_seconds: float = 0.0,
        *,
        app_name: str = "cartback",
        port: int = 0,
    ) -> None:
        """``port`` 0 binds a free port; ``url`` is known once started."""
        self.app_secret = app_secret if app_secret is not None else secrets.token_hex(16)
        self.app_id = app_id
        self.app_name = app_name
        self.latency_seconds = latency_seconds
        self.auto_approve = False
        self.port = port
        self.origin = ""
        self.url = ""
        self.requests: list[GraphRequest] = []
        self.sent_messages: list[SentMessage] = []
        self.wabas: dict[str, Waba] = {}
        self.phone_numbers: dict[str, PhoneNumber] = {}
        self.templates: dict[str, StoredTemplate] = {}
        self.billing = pricing.BillingLedger()  # what Meta charged each WABA (see bill, billed)
        self._tokens: dict[str, set[str]] = {}  # token -> WABA ids it was granted
        self._revoked: set[str] = set()
        self._failures: list[InjectedFailure] = []
        self._uploads: dict[str, UploadSession] = {}
        self._handles: dict[str, str] = {}  # header handle -> MIME type
        self._next_id = 1_000_000_000_000_000
        self._lock = threading.RLock()
        self._server: ThreadedServer | None = None
        # Webhook deliveries to the app: sends schedule statuses in a heap of (due on the
        # monotonic clock, order, url, message, status), drained by one courier thread.
        self.webhook_url: str | None = None
        self._auto_statuses: tuple[str, ...] = ()
        self.status_delay_seconds = 0.2
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.on_webhook_delivery: Callable[[WebhookDelivery], None] | None = None
        self._outbox: list[tuple[float, int, str, SentMessage, str]] = []
        self._outbox_order = itertools.count()
        self._outbox_changed = threading.Condition()
        self._delivered = threading.Condition()
        self._courier: threading.Thread | None = None
        self._courier_stopping = False
        self._webhook_http: httpx.Client | None = None

    # --- serving -------------------------------------------------------------------------------

    def start(self) -> Self:
        # One thread per request (ThreadedServer), so per-request latency overlaps.
        self._server = ThreadedServer(
            self._wsgi, port=self.port, name="fake-graph", request_handler=GraphHandler
        ).start()
        self.port = self._server.port
        self.origin = self._server.origin
        self.url = f"{self.origin}/{API_VERSION}"
        with self._outbox_changed:
            self._courier_stopping = False
        self._courier = threading.Thread(target=self._courier_loop, name="fake-graph-webhooks", daemon=True)
        self._courier.start()
        return self

    def stop(self) -> None:
        """Stop serving and delivering; webhooks not yet due are dropped."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        with self._outbox_changed:
            self._courier_stopping = True
            self._outbox.clear()
            self._outbox_changed.notify_all()
        if self._courier is not None:
            self._courier.join(timeout=10)  # a POST in flight ends within the client's timeout
            self._courier = None
        if self._webhook_http is not None:
            self._webhook_http.close()
            self._webhook_http = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every account, template, token, upload, injected failure, billed message and
        recorded request, so one started server can serve many tests; webhook deliveries are
        switched off, those not yet due dropped and the record of past ones cleared."""
        with self._outbox_changed:
            self._outbox.clear()
        with self._delivered:
            self.webhook_deliveries.clear()
        with self._lock:
            self.auto_approve = False
            self.latency_seconds = 0.0
            self.webhook_url = None
            self.auto_statuses = ()
            self.status_delay_seconds = 0.2
            for collection in (self.requests, self.sent_messages, self._failures):
                collection.clear()
            for mapping in (
                self.wabas,
                self.phone_numbers,
                self.templates,
                self._tokens,
                self._uploads,
                self._handles,
            ):
                mapping.clear()
            self._revoked.clear()
            self.billing.clear()

    # --- seeding -------------------------------------------------------------------------------

    def add_account(
        self,
        waba_id: str,
        phone_number_id: str,
        access_token: str,
        display_phone_number: str = "+91 98765 43210",
        verified_name: str = "Kurta Corner",
        quality_rating: str = "GREEN",
        throughput_level: str = "STANDARD",
        *,
        waba_name: str | None = None,
        currency: str = "INR",
    ) -> PhoneNumber:
        """A phone number in a WABA (created on first use, billing in ``currency``), and a token
        granted that WABA."""
        if quality_rating not in QUALITY_RATINGS or throughput_level not in THROUGHPUT_LEVELS:
            raise ValueError("unknown quality_rating or throughput_level")
        with self._lock:
            if phone_number_id in self.phone_numbers or phone_number_id in self.wabas:
                raise ValueError(f"{phone_number_id} is already seeded")
            waba = self.wabas.setdefault(
                waba_id, Waba(waba_id, waba_name or verified_name, currency=currency)
            )
            phone = PhoneNumber(
                phone_number_id,
                waba_id,
                display_phone_number,
                verified_name,
                quality_rating,
                throughput_level,
            )
            waba.phone_number_ids.append(phone_number_id)
            self.phone_numbers[phone_number_id] = phone
            self.add_token(access_token, waba_id)
            return phone

    def set_messaging_limit(self, phone_number_id: str, tier: str) -> None:
        """Meta moved the portfolio to another messaging limit (250, 2K, 10K, 100K, unlimited)."""
        if tier not in MESSAGING_LIMIT_TIERS:
            raise ValueError(f"tier must be one of {sorted(MESSAGING_LIMIT_TIERS)}")
        with self._lock:
            phone = self.phone_numbers[phone_number_id]
            phone.whatsapp_business_manager_messaging_limit = phone.messaging_limit_tier = tier

    def add_token(self, access_token: str, *waba_ids: str) -> None:
        with self._lock:
            unknown = [waba_id for waba_id in waba_ids if waba_id not in self.wabas]
            if unknown:
                raise KeyError(unknown)
            self._tokens.setdefault(access_token, set()).update(waba_ids)
            self._revoked.discard(access_token)

    def revoke_token(self, access_token: str) -> None:
        with self._lock:
            self._revoked.add(access_token)

    def set_quality(self, phone_number_id: str, rating: str) -> None:
        if rating not in QUALITY_RATINGS:
            raise ValueError(f"rating must be one of {sorted(QUALITY_RATINGS)}")
        with self._lock:
            self.phone_numbers[phone_number_id].quality_rating = rating

    def add_template(
        self,
        waba_id: str,
        name: str,
        language: str,
        category: str,
        components: list[dict[str, Any]],
        status: str = "APPROVED",
    ) -> str:
        """Seed a template given in creation format (as POSTed to message_templates); the creation
        rules apply, except that a media header's handle need not come from this fake's uploads."""
        payload = {"name": name, "language": language, "category": category, "components": components}
        try:
            new = check_new_template(payload, known_handle=None)
        except Refusal as refusal:
            raise ValueError(refusal.details) from refusal
        with self._lock:
            if waba_id not in self.wabas:
                raise KeyError(waba_id)
            if self._find_template(waba_id, name, language) is not None:
                raise ValueError(f"{name} ({language}) already exists")
            return self._store_template(waba_id, new, status).id

    def set_template_status(self, waba_id: str, name: str, language: str, status: str) -> None:
        if status not in TEMPLATE_STATUSES:
            raise ValueError(f"status must be one of {sorted(TEMPLATE_STATUSES)}")
        with self._lock:
            stored = self._find_template(waba_id, name, language)
            if stored is None:
                raise KeyError((waba_id, name, language))
            stored.status = status

    def template(self, waba_id: str, name: str, language: str) -> StoredTemplate | None:
        with self._lock:
            return self._find_template(waba_id, name, language)

    def fail_next(
        self,
        code: int,
        *,
        count: int = 1,
        to: str | None = None,
        http_status: int | None = None,
        details: str | None = None,
    ) -> None:
        """The next ``count`` sends (to ``to`` only, when given) that pass authentication and every
        check are answered with Graph error ``code`` instead, with the HTTP status ERRORS lists for
        it. Meta reports some of these codes (131026, 131049, 131050...) in a ``failed`` status
        webhook rather than, or as well as, in the response: see ``status_for(..., errors=...)``."""
        if code not in CLOUD_API_ERRORS and http_status is None:
            raise ValueError(f"code {code} has no documented HTTP status here; pass http_status")
        with self._lock:
            self._failures.append(
                InjectedFailure(code, count, _digits(to) if to else None, http_status, details)
            )

    def subscribed(self, waba_id: str) -> bool:
        with self._lock:
            return self.wabas[waba_id].subscribed

    def bill(
        self,
        waba_id: str,
        *,
        at: datetime,
        phone_number_id: str | None = None,
        country: str = "IN",
        category: str = "MARKETING",
        pricing_type: str = "REGULAR",
        volume: int = 1,
        cost: Decimal | None = None,
    ) -> pricing.BilledMessage:
        """Billing Meta did that the app may not have seen (a delivery whose webhook was lost, a
        send from another tool on the same WABA): ``volume`` messages from ``phone_number_id``
        (the WABA's first number by default) delivered at ``at`` (timezone-aware), costing
        ``cost`` in all, or the fake rate card's price (``whatsapp_pricing.RATES``)."""
        with self._lock:
            waba = self.wabas[waba_id]
            phone_id = phone_number_id or waba.phone_number_ids[0]
            if phone_id not in waba.phone_number_ids:
                raise ValueError(f"{phone_id} is not a number of WABA {waba_id}")
            digits = _digits(self.phone_numbers[phone_id].display_phone_number)
        return self.billing.bill(
            waba_id,
            digits,
            at=at,
            country=country,
            category=category,
            pricing_type=pricing_type,
            volume=volume,
            cost=cost,
        )

    def billed(self, waba_id: str) -> list[pricing.BilledMessage]:
        """What Meta charged the WABA, in the order billed: deliveries and ``bill`` calls."""
        return self.billing.entries(waba_id)

    # --- webhooks ------------------------------------------------------------------------------

    def status_for(self, sent: SentMessage, status: str, **overrides: Any) -> dict[str, Any]:
        """A status webhook for a message this fake accepted. Template sends are billed at their
        category's rate; a text reply is a free customer-service message (STATUS pricing types).
        The first delivered (or read) status of a billable template send bills it, at the
        status's timestamp, as Meta charges on delivery whether or not the app hears of it."""
        phone = self.phone_numbers[sent.phone_number_id]
        arguments: dict[str, Any] = {
            "timestamp": int(time.time()),
            "biz_opaque_callback_data": sent.biz_opaque_callback_data,
            "pricing_category": (sent.category or "service").lower()
            if sent.type == "template"
            else "service",
            "billable": sent.type == "template",
        }
        arguments.update(overrides)
        body = webhooks.status(
            sent.waba_id,
            sent.phone_number_id,
            phone.display_phone_number,
            sent.wamid,
            status,
            sent.wa_id,
            **arguments,
        )
        if sent.type == "template" and any(accepted.wamid == sent.wamid for accepted in self.sent_messages):
            self.billing.record_delivery(
                wamid=sent.wamid,
                waba_id=sent.waba_id,
                phone_number=_digits(phone.display_phone_number),
                recipient=sent.wa_id,
                status=status,
                timestamp=int(arguments["timestamp"]),
                category=arguments["pricing_category"],
                pricing_type=arguments.get("pricing_type"),
                billable=bool(arguments["billable"]),
            )
        return body

    def button_reply_for(
        self, sent: SentMessage, index: int, *, timestamp: int | None = None, profile_name: str = "Asha"
    ) -> dict[str, Any]:
        """The shopper tapping quick-reply button ``index`` of a template message: the payload is
        the one the send set, else the button's label (BUTTON webhook reference)."""
        phone = self.phone_numbers[sent.phone_number_id]
        stored = self._find_template(sent.waba_id, sent.template_name or "", sent.language or "")
        if stored is None or index >= len(stored.template.shape.buttons):
            raise ValueError("the message has no such button")
        label = stored.template.shape.buttons[index].text
        return webhooks.button_reply(
            sent.waba_id,
            sent.phone_number_id,
            phone.display_phone_number,
            sent.wa_id,
            "wamid." + base64.b64encode(secrets.token_bytes(24)).decode(),
            sent.button_payloads.get(index, label),
            label,
            sent.wamid,
            int(time.time()) if timestamp is None else timestamp,
            profile_name,
        )

    def signed_webhook(
        self, body: dict[str, Any], *, secret: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """The exact bytes and headers Meta would POST, signed with this app's secret."""
        return webhooks.signed(body, self.app_secret if secret is None else secret)

    # --- webhook deliveries --------------------------------------------------------------------

    @property
    def auto_statuses(self) -> tuple[str, ...]:
        """Statuses delivered, in order, for every send accepted while ``webhook_url`` is set,
        e.g. ("sent", "delivered", "read"); "failed" carries error 131026 (undeliverable)."""
        return self._auto_statuses

    @auto_statuses.setter
    def auto_statuses(self, statuses: Iterable[str]) -> None:
        given = tuple(statuses)
        unknown = [status for status in given if status not in webhooks.STATUSES]
        if unknown:
            raise ValueError(f"unknown statuses {unknown}; they are {sorted(webhooks.STATUSES)}")
        self._auto_statuses = given

    def deliver(self, body: dict[str, Any]) -> int:
        """Sign ``body`` with the app secret and POST it to ``webhook_url`` now, as Meta does;
        the app's HTTP status. Recorded in ``webhook_deliveries``; a transport error is recorded,
        then raised."""
        url = self.webhook_url
        if not url:
            raise RuntimeError("set webhook_url first")
        delivery = self._post(url, body)
        assert delivery.status_code is not None
        return delivery.status_code

    def wait_for_deliveries(self, count: int, timeout: float = 5.0) -> list[WebhookDelivery]:
        """Block until ``webhook_deliveries`` holds at least ``count`` attempts (statuses and
        ``deliver`` calls alike); a copy of them. TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._delivered:
            while len(self.webhook_deliveries) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(self.webhook_deliveries)} of {count} webhook deliveries after {timeout} s"
                    )
                self._delivered.wait(left)
            return list(self.webhook_deliveries)

    def _schedule_statuses(self, sent: SentMessage) -> None:
        """Called for an accepted send: its statuses are due one ``status_delay_seconds`` apart,
        the first one delay after the send, so the app has its answer (the wamid) first."""
        url, statuses, delay = self.webhook_url, self.auto_statuses, self.status_delay_seconds
        if not url or not statuses:
            return
        now = time.monotonic()
        with self._outbox_changed:
            for position, status in enumerate(statuses, start=1):
                due = now + position * delay
                heapq.heappush(self._outbox, (due, next(self._outbox_order), url, sent, status))
            self._outbox_changed.notify_all()

    def _courier_loop(self) -> None:
        while True:
            with self._outbox_changed:
                while not self._courier_stopping:
                    if not self._outbox:
                        self._outbox_changed.wait()
                        continue
                    left = self._outbox[0][0] - time.monotonic()
                    if left <= 0:
                        break
                    self._outbox_changed.wait(left)
                if self._courier_stopping:
                    return
                _, _, url, sent, status = heapq.heappop(self._outbox)
            errors = [webhooks.status_error(131026)] if status == "failed" else None
            try:
                with self._lock:
                    body = self.status_for(sent, status, errors=errors)
            except (KeyError, ValueError) as error:  # the account was removed by reset()
                self._record(WebhookDelivery(url, {}, None, f"{type(error).__name__}: {error}", time.time()))
                continue
            with contextlib.suppress(httpx.HTTPError):  # recorded; Meta would retry, this fake does not
                self._post(url, body)

    def _http(self) -> httpx.Client:
        with self._outbox_changed:
            if self._webhook_http is None:
                self._webhook_http = httpx.Client(timeout=5.0, trust_env=False)
            return self._webhook_http

    def _post(self, url: str, body: dict[str, Any]) -> WebhookDelivery:
        raw, headers = self.signed_webhook(body)
        try:
            answer = self._http().post(url, content=raw, headers=headers)
        except httpx.HTTPError as error:
            self._record(WebhookDelivery(url, body, None, f"{type(error).__name__}: {error}", time.time()))
            raise
        delivery = WebhookDelivery(url, body, answer.status_code, None, time.time())
        self._record(delivery)
        return delivery

    def _record(self, delivery: WebhookDelivery) -> None:
        with self._delivered:
            self.webhook_deliveries.append(delivery)
            self._delivered.notify_all()
        if self.on_webhook_delivery is not None:
            self.on_webhook_delivery(delivery)

    # --- HTTP ----------------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        raw = request.get_data(cache=True)
        parsed: Any = None
        if request.mimetype == "application/json":
            try:
                parsed = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                parsed = None
        recorded = GraphRequest(
            request.method, request.path, dict(request.args.items()), dict(request.headers), parsed, raw
        )
        with self._lock:
            self.requests.append(recorded)
        if self.latency_seconds > 0:
            time.sleep(self.latency_seconds)  # outside the lock, so concurrent requests overlap
        with self._lock:
            try:
                response = self._dispatch(request, recorded)
            except GraphError as error:
                response = json_response(error.body(), error.http_status)
        return response(environ, start_response)

    def _dispatch(self, request: Request, recorded: GraphRequest) -> Response:
        prefix = f"/{API_VERSION}/"
        if not request.path.startswith(prefix):
            raise GraphError(
                100, message=f"cartback fake: only /{API_VERSION} is served", http_status=404, cloud_api=False
            )
        parts = request.path[len(prefix) :].strip("/").split("/")
        node, edge = parts[0], (parts[1] if len(parts) == 2 else None)
        method = request.method
        if len(parts) > 2 or not node:
            raise _unsupported(method, request.path)
        if node.startswith("upload:") and edge is None:
            self._caller(request, upload=True)
            return self._serve_upload(request, node, method)
        token = self._caller(request)
        if edge is None and method == "GET":
            return self._serve_node(request, token, node)
        route = (method, edge)
        if route == ("POST", "messages"):
            return self._serve_send(request, recorded, token, node)
        if route == ("GET", "phone_numbers"):
            return self._serve_phone_numbers(request, token, node)
        if edge == "subscribed_apps" and method in ("GET", "POST", "DELETE"):
            return self._serve_subscribed_apps(token, node, method)
        if route == ("GET", "message_templates"):
            return self._serve_templates(request, token, node)
        if route == ("POST", "message_templates"):
            return self._serve_create_template(request, recorded, token, node)
        if route == ("POST", "uploads"):
            return self._serve_upload_session(request, recorded, node)
        raise _unsupported(method, node)

    def _caller(self, request: Request, *, upload: bool = False) -> str:
        """The access token: ``Authorization: Bearer <token>`` (MESSAGE_API) or, as Graph allows,
        the ``access_token`` query parameter; the upload step uses ``Authorization: OAuth <token>``
        (UPLOADS), and that is all it takes here."""
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        token = token.strip()
        if upload:
            if scheme != "OAuth" or not token:
                raise GraphError(
                    190,
                    message="cartback fake: the upload step takes 'Authorization: OAuth <token>' (Resumable Upload API)",
                    http_status=401,
                    cloud_api=False,
                )
        elif scheme.lower() not in ("bearer", "oauth") or not token:
            token = request.args.get("access_token", "")
        if not token:
            # (not verified in docs) Graph's answer to a request without a token.
            raise GraphError(
                104,
                message="An access token is required to request this resource.",
                http_status=400,
                cloud_api=False,
            )
        if token not in self._tokens:
            raise GraphError(
                190,
                message="Invalid OAuth access token - Cannot parse access token",
                http_status=401,
                cloud_api=False,
            )
        if token in self._revoked:
            raise GraphError(
                190,
                message="Error validating access token: The session has been invalidated.",
                http_status=401,
                cloud_api=False,
            )
        return token

    def _waba(self, token: str, node: str, method: str) -> Waba:
        waba = self.wabas.get(node)
        if waba is None or node not in self._tokens[token]:
            raise _unsupported(method, node)
        return waba

    def _phone(self, token: str, node: str, method: str) -> PhoneNumber:
        phone = self.phone_numbers.get(node)
        if phone is None or phone.waba_id not in self._tokens[token]:
            raise _unsupported(method, node)
        return phone

    # --- nodes ---------------------------------------------------------------------------------

    @staticmethod
    def _fields(
        request: Request, allowed: frozenset[str], defaults: tuple[str, ...], node_type: str
    ) -> list[str]:
        given = request.args.get("fields")
        if not given:
            return list(defaults)
        names = [name.strip() for name in given.split(",") if name.strip()]
        for name in names:
            if name not in allowed:
                # (not verified in docs) Graph's wording for an unknown field.
                raise GraphError(
                    100,
                    message=f"(#100) Tried accessing nonexisting field ({name}) on node type ({node_type})",
                    cloud_api=False,
                )
        return ["id", *[name for name in names if name != "id"]]

    @staticmethod
    def _select(node: dict[str, Any], names: list[str]) -> dict[str, Any]:
        return {name: node[name] for name in names}

    def _serve_node(self, request: Request, token: str, node: str) -> Response:
        if node in self.phone_numbers:
            phone = self._phone(token, node, "GET")
            names = self._fields(request, PHONE_FIELDS, PHONE_DEFAULT_FIELDS, "WhatsAppBusinessPhoneNumber")
            return json_response(self._select(phone.node(), names))
        if node in self.wabas:
            waba = self._waba(token, node, "GET")
            if pricing.FIELD in request.args.get("fields", ""):
                return json_response(self._pricing_answer(waba, request.args["fields"]))
            names = self._fields(request, WABA_FIELDS, WABA_DEFAULT_FIELDS, "WhatsAppBusinessAccount")
            return json_response(self._select(waba.node(), names))
        if node in self.templates:
            stored = self.templates[node]
            self._waba(token, stored.waba_id, "GET")
            names = self._fields(request, TEMPLATE_FIELDS, TEMPLATE_DEFAULT_FIELDS, "WhatsAppMessageTemplate")
            return json_response(self._select(stored.node(), names))
        raise _unsupported("GET", node)

    def _pricing_answer(self, waba: Waba, fields: str) -> dict[str, Any]:
        try:
            return pricing.answer_fields(
                fields,
                waba.node(),
                WABA_FIELDS,
                "WhatsAppBusinessAccount",
                lambda query: self.billing.data_points(waba.id, query),
            )
        except pricing.AnalyticsRefusal as refusal:
            raise GraphError(refusal.code, message=refusal.message, cloud_api=False) from refusal

    def _page(self, request: Request, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Cursor paging as Graph pages edges: ``limit``, ``after``, ``paging.cursors`` and ``next``."""
        try:
            limit = int(request.args.get("limit", DEFAULT_PAGE_SIZE))
            start = (
                int(base64.b64decode(request.args["after"]).decode()) + 1 if "after" in request.args else 0
            )
        except ValueError as bad:
            raise GraphError(
                100, message="(#100) Invalid parameter: limit or after", cloud_api=False
            ) from bad
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise GraphError(100, message=f"(#100) limit must be 1 to {MAX_PAGE_SIZE}", cloud_api=False)
        page = items[start : start + limit]
        answer: dict[str, Any] = {"data": page}
        if page:

            def cursor(position: int) -> str:
                return base64.b64encode(str(position).encode()).decode()

            last = start + len(page) - 1
            answer["paging"] = {"cursors": {"before": cursor(start - 1), "after": cursor(last)}}
            if last + 1 < len(items):
                query = dict(request.args.items()) | {"after": cursor(last)}
                answer["paging"]["next"] = f"{self.origin}{request.path}?{urlencode(query)}"
        return answer

    def _serve_phone_numbers(self, request: Request, token: str, node: str) -> Response:
        waba = self._waba(token, node, "GET")
        names = self._fields(request, PHONE_FIELDS, PHONE_DEFAULT_FIELDS, "WhatsAppBusinessPhoneNumber")
        nodes = [self._select(self.phone_numbers[pid].node(), names) for pid in waba.phone_number_ids]
        return json_response(self._page(request, nodes))

    def _serve_subscribed_apps(self, token: str, node: str, method: str) -> Response:
        waba = self._waba(token, node, method)
        if method == "GET":
            app = {
                "id": self.app_id,
                "name": self.app_name,
                "link": f"https://www.facebook.com/games/?app_id={self.app_id}",  # SUBSCRIBED example
            }
            return json_response({"data": [{"whatsapp_business_api_data": app}] if waba.subscribed else []})
        waba.subscribed = method == "POST"
        return json_response({"success": True})

    # --- templates -----------------------------------------------------------------------------

    def _find_template(self, waba_id: str, name: str, language: str) -> StoredTemplate | None:
        for stored in self.templates.values():
            if (stored.waba_id, stored.template.name, stored.template.language) == (waba_id, name, language):
                return stored
        return None

    def _store_template(self, waba_id: str, new: NewTemplate, status: str) -> StoredTemplate:
        self._next_id += 1
        stored = StoredTemplate(str(self._next_id), waba_id, new, status)
        self.templates[stored.id] = stored
        return stored

    def _serve_templates(self, request: Request, token: str, node: str) -> Response:
        self._waba(token, node, "GET")
        names = self._fields(request, TEMPLATE_FIELDS, TEMPLATE_DEFAULT_FIELDS, "WhatsAppMessageTemplate")
        wanted = {key: request.args[key] for key in ("name", "language") if key in request.args}
        status = request.args.get("status", "").upper()
        nodes = [
            self._select(stored.node(), names)
            for stored in self.templates.values()
            if stored.waba_id == node
            and all(getattr(stored.template, key) == value for key, value in wanted.items())
            and (not status or stored.status == status)
        ]
        return json_response(self._page(request, nodes))

    def _serve_create_template(
        self, request: Request, recorded: GraphRequest, token: str, node: str
    ) -> Response:
        self._waba(token, node, "POST")
        if not isinstance(recorded.json, dict):
            raise GraphError(
                100, message="cartback fake: send the template as a JSON object", cloud_api=False
            )
        if sum(stored.waba_id == node for stored in self.templates.values()) >= MAX_TEMPLATES_PER_WABA:
            raise GraphError.refused(
                Refusal(100, "Message template limit exceeded", subcode=TEMPLATE_LIMIT_EXCEEDED),
                cloud_api=False,
            )
        try:
            new = check_new_template(recorded.json, known_handle=self._handles.get)
        except Refusal as refusal:
            raise GraphError.refused(refusal, cloud_api=False) from refusal
        if self._find_template(node, new.name, new.language) is not None:
            raise GraphError.refused(
                Refusal(
                    100,
                    f"There is already {new.language} content for this template. You can create a new template"
                    " and try again.",
                    subcode=CONTENT_ALREADY_EXISTS,
                    user_title="Content in This Language Already Exists",
                ),
                cloud_api=False,
            )
        stored = self._store_template(node, new, "APPROVED" if self.auto_approve else "PENDING")
        # {"id": "1689556908129832", "status": "PENDING", "category": "UTILITY"} (TEMPLATE_API)
        return json_response({"id": stored.id, "status": stored.status, "category": new.category})

    # --- uploads -------------------------------------------------------------------------------

    def _serve_upload_session(self, request: Request, recorded: GraphRequest, node: str) -> Response:
        if node != self.app_id:
            raise _unsupported("POST", node)
        # Parameters may come in the query (UPLOADS example) or the body, as anywhere in Graph.
        params: dict[str, Any] = dict(request.args.items())
        if isinstance(recorded.json, dict):
            params |= recorded.json
        elif request.mimetype == "application/x-www-form-urlencoded":
            params |= dict(parse_qsl(recorded.body.decode(errors="replace")))
        try:
            file_length = int(params.get("file_length", ""))
        except (TypeError, ValueError):
            file_length = 0
        if file_length <= 0:
            raise GraphError(100, message="(#100) The parameter file_length is required.", cloud_api=False)
        file_type = params.get("file_type")
        if file_type not in UPLOAD_FILE_TYPES:
            raise GraphError(
                100, message=f"(#100) file_type must be one of {sorted(UPLOAD_FILE_TYPES)}", cloud_api=False
            )
        opaque = base64.urlsafe_b64encode(f"1:attachment:{uuid.uuid4()}".encode()).decode().rstrip("=")
        session = UploadSession(f"upload:{opaque}", params.get("file_name"), file_length, file_type)
        self._uploads[session.id] = session
        return json_response({"id": session.id})

    def _serve_upload(self, request: Request, node: str, method: str) -> Response:
        session = self._uploads.get(node)
        if session is None:
            raise _unsupported(method, node)
        if method == "GET":  # the session's progress, for resuming (UPLOADS)
            return json_response({"id": session.id, "file_offset": session.received})
        if method != "POST":
            raise _unsupported(method, node)
        offset = request.environ.get(UNDERSCORE_HEADERS, {}).get("file_offset")
        if offset is None or not offset.isdigit():
            raise GraphError(100, message="(#100) The file_offset header is required.", cloud_api=False)
        data = request.get_data(cache=True)
        if int(offset) != session.received or session.handle is not None:
            raise GraphError(100, message=f"(#100) file_offset must be {session.received}", cloud_api=False)
        if len(data) != session.file_length:
            # Meta resumes partial uploads from file_offset; this fake takes the whole file at once.
            raise GraphError(
                100,
                message=f"cartback fake: send all {session.file_length} bytes (got {len(data)}) in one request",
                cloud_api=False,
            )
        session.received = len(data)
        session.handle = "4::" + base64.b64encode(secrets.token_bytes(30)).decode()  # like "4::aW..."
        self._handles[session.handle] = session.file_type
        return json_response({"h": session.handle})

    # --- sending -------------------------------------------------------------------------------

    @staticmethod
    def _required(given: Any, name: str) -> Any:
        if given is None or given == "":
            raise GraphError(
                100, f"The parameter {name} is required.", message=f"(#100) The parameter {name} is required."
            )
        return given

    def _serve_send(self, request: Request, recorded: GraphRequest, token: str, node: str) -> Response:
        phone = self._phone(token, node, "POST")
        payload = recorded.json
        if not isinstance(payload, dict):
            # MESSAGE_API also lists form-encoded bodies; this fake takes JSON only.
            raise GraphError(100, "cartback fake: send the message as a JSON object")
        product = self._required(payload.get("messaging_product"), "messaging_product")
        if product != "whatsapp":
            raise GraphError(100, f'Param messaging_product must be one of {{WHATSAPP}} - got "{product}".')
        if payload.get("recipient_type", "individual") != "individual":
            raise GraphError(100, "cartback fake: only recipient_type individual is modelled")
        to = self._required(payload.get("to"), "to")
        wa_id = _digits(to) if isinstance(to, str) else ""
        if (
            not isinstance(to, str)
            or not TO_PATTERN.match(to)
            or not TO_MIN_DIGITS <= len(wa_id) <= TO_MAX_DIGITS
        ):
            raise GraphError(
                100, f"Invalid parameter 'to': {to!r} is not a phone number"
            )  # (not verified in docs)
        if wa_id == _digits(phone.display_phone_number):
            raise GraphError(131021, "Sender and recipient phone number is the same.")
        opaque = payload.get("biz_opaque_callback_data")
        if opaque is not None and (not isinstance(opaque, str) or len(opaque) > BIZ_OPAQUE_MAX_CHARS):
            raise GraphError(
                100, f"biz_opaque_callback_data must be a string of at most {BIZ_OPAQUE_MAX_CHARS} characters"
            )
        kind = self._required(payload.get("type"), "type")
        if kind == "template":
            sent = self._check_template_send(phone, payload)
        elif kind == "text":
            text = payload.get("text")
            body = self._required(text.get("body") if isinstance(text, dict) else None, "text['body']")
            if not isinstance(body, str) or len(body) > TEXT_BODY_MAX_CHARS:
                raise GraphError(
                    100, f"text['body'] must be a string of at most {TEXT_BODY_MAX_CHARS} characters"
                )
            sent = {"body": body}
        else:
            raise GraphError(
                131051, f"cartback fake: message type {kind!r} is not modelled (template and text are)"
            )
        self._take_injected_failure(wa_id)
        wamid = (
            "wamid."
            + base64.b64encode(
                b"\x1c\x18"
                + bytes([len(wa_id)])
                + wa_id.encode()
                + b"\x15\x02\x00\x11\x18\x12"
                + secrets.token_hex(9).upper().encode()
            ).decode()
        )
        message = SentMessage(
            wamid=wamid,
            waba_id=phone.waba_id,
            phone_number_id=phone.id,
            to=to,
            wa_id=wa_id,
            type=kind,
            payload=payload,
            accepted_at=time.time(),
            biz_opaque_callback_data=opaque,
            **sent,
        )
        self.sent_messages.append(message)
        self._schedule_statuses(message)
        reply: dict[str, Any] = {"id": wamid}
        if kind == "template":
            # "Cloud API will always include a message_status property" for templates: accepted,
            # or held_for_quality_assessment while paced (template pacing; SEND).
            reply["message_status"] = "accepted"
        return json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": wa_id}],
                "messages": [reply],
            }
        )

    def _check_template_send(self, phone: PhoneNumber, payload: dict[str, Any]) -> dict[str, Any]:
        given = payload.get("template")
        template = self._required(given if isinstance(given, dict) else None, "template")
        name = self._required(template.get("name"), "template['name']")
        language = template.get("language")
        code = self._required(
            language.get("code") if isinstance(language, dict) else None, "template['language']['code']"
        )
        assert isinstance(language, dict)
        # "The only supported option is deterministic" (LanguageObject, WhatsApp Node.js SDK docs).
        if language.get("policy", "deterministic") != "deterministic":
            raise GraphError(100, "Param template['language']['policy'] must be one of {DETERMINISTIC}")
        stored = self._find_template(phone.waba_id, name, code) if isinstance(name, str) else None
        if stored is None:
            raise GraphError(TEMPLATE_DOES_NOT_EXIST, f"template name ({name}) does not exist in {code}")
        # ERRORS: 132015 paused, 132016 disabled; 132001 "does not exist in the specified language
        # or the template has not been approved".
        if stored.status == "PAUSED":
            raise GraphError(TEMPLATE_PAUSED, f"Template {name} is paused due to low quality.")
        if stored.status == "DISABLED":
            raise GraphError(TEMPLATE_DISABLED, f"Template {name} has been disabled due to low quality.")
        if stored.status != "APPROVED":
            raise GraphError(TEMPLATE_DOES_NOT_EXIST, f"template name ({name}) does not exist in {code}")
        try:
            rendered: RenderedTemplate = check_send(stored.template.shape, template.get("components"))
        except Refusal as refusal:
            raise GraphError.refused(refusal) from refusal
        return {
            "template_name": name,
            "language": code,
            "category": stored.template.category,
            "components": json.loads(json.dumps(template.get("components") or [])),
            "body": rendered.body,
            "header_media": rendered.header_media,
            "button_urls": rendered.button_urls,
            "button_payloads": rendered.button_payloads,
        }

    def _take_injected_failure(self, wa_id: str) -> None:
        for failure in self._failures:
            if failure.remaining > 0 and failure.to_digits in (None, wa_id):
                failure.remaining -= 1
                if failure.remaining == 0:
                    self._failures.remove(failure)
                if failure.code == 190:  # an expired token fails in Graph, before the Cloud API
                    raise GraphError(
                        190,
                        message="Error validating access token: Session has expired.",
                        http_status=failure.http_status,
                        subcode=463,  # "Expired" (GRAPH_ERRORS, authentication subcodes)
                        cloud_api=False,
                    )
                raise GraphError(failure.code, failure.details, http_status=failure.http_status)


# --- serve mode --------------------------------------------------------------------------------


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.whatsapp_graph",
        description="Serve the fake WhatsApp Graph API on 127.0.0.1 as 'Meta' for a local cartback:"
        " one seeded WABA, phone number and token, templates approved as pushed, and signed status"
        " webhooks POSTed to the app for every accepted send.",
    )
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port (default 8081)")
    parser.add_argument("--app-secret", required=True, help="the app's WHATSAPP_APP_SECRET")
    parser.add_argument("--access-token", required=True, help="the token the store connects with")
    parser.add_argument("--webhook-url", help="e.g. http://127.0.0.1:8000/webhooks/whatsapp")
    parser.add_argument("--waba-id", default="102290129340398")
    parser.add_argument("--phone-number-id", default="106540352242922")
    parser.add_argument("--display-phone-number", default="+91 90000 00001")
    parser.add_argument("--verified-name", default="Kurta Corner")
    parser.add_argument("--app-id", default=DEFAULT_APP_ID, help="the app's WHATSAPP_APP_ID (uploads)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="wait before every answer")
    parser.add_argument(
        "--statuses",
        default="sent,delivered,read",
        help='delivered for every accepted send, in order (default "sent,delivered,read"; "" for none)',
    )
    parser.add_argument("--status-delay-ms", type=float, default=200.0, help="between statuses (200)")
    return parser


def fake_from_args(argv: Sequence[str] | None = None) -> FakeGraphAPI:
    """The fake the serve mode runs, configured and seeded from command-line arguments; not
    started."""
    parser = _arguments()
    options = parser.parse_args(argv)
    statuses = tuple(status.strip() for status in options.statuses.split(",") if status.strip())
    fake = FakeGraphAPI(
        app_secret=options.app_secret,
        app_id=options.app_id,
        latency_seconds=options.latency_ms / 1000,
        port=options.port,
    )
    try:
        fake.auto_statuses = statuses
    except ValueError as error:
        parser.error(str(error))
    fake.webhook_url = options.webhook_url or None
    fake.status_delay_seconds = options.status_delay_ms / 1000
    fake.auto_approve = True
    fake.add_account(
        options.waba_id,
        options.phone_number_id,
        options.access_token,
        display_phone_number=options.display_phone_number,
        verified_name=options.verified_name,
    )
    return fake


def _report_failed_delivery(delivery: WebhookDelivery) -> None:
    if not delivery.ok:
        answer = delivery.error or f"HTTP {delivery.status_code}"
        print(f"webhook to {delivery.url} failed: {answer}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    fake = fake_from_args(argv)
    fake.on_webhook_delivery = _report_failed_delivery
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        fake.start()
    except OSError as error:
        print(f"cannot serve on 127.0.0.1:{fake.port}: {error}", file=sys.stderr)
        return 1
    try:
        print(f"fake Graph API on {fake.url}", flush=True)
        while not stopping.wait(0.5):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
