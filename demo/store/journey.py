"""A scripted shopper for ``make demo``: shop, go quiet, get the WhatsApp message, come back, buy.

It drives the running web server over real HTTP (cookies kept, like a browser) and watches
cartback's tables to narrate each milestone once, in order. Phone numbers are never printed.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import httpx
from sqlmodel import col, select

from channels.whatsapp.templates import STOP_PAYLOAD
from demo.connector import PLATFORM
from demo.store.catalogue import BY_VARIANT
from demo.store.checkouts import money
from demo.store.models import DemoCheckout
from demo.store.views import COOKIE
from sequences.db import Database
from sequences.models import (
    Cart,
    CartEvent,
    CartStatus,
    Contact,
    Message,
    MessageStatus,
    RecoveryStep,
    SandboxOutboxMessage,
    StepStatus,
    Store,
)

# Seconds between looks at the database.
POLL_INTERVAL_S = 0.5
# Seconds for one HTTP request to the local server.
HTTP_TIMEOUT_S = 15.0
# Kurta ₹1,499 + Dupatta ₹699 = ₹2,198: above the ₹999 the demo offer needs.
PICKS = (8001, 8002)
SHOPPER = {
    "first_name": "Asha",
    "email": "asha@example.com",
    "accepts_marketing": "on",
}


def demo_phone() -> str:
    """A fresh (fictional) Indian mobile per run, typed the way shoppers type it.

    Reusing one number would make a second `make demo` meet the frequency cap, or the opt-out
    someone tried in the outbox last time, which is the engine working, not the demo.
    """
    digits = "98" + "".join(str(secrets.randbelow(10)) for _ in range(8))
    return f"{digits[:5]} {digits[5:]}"


WORKER_HINT = (
    "Is the RQ worker running with its scheduler (`cartback worker`), and is Redis reachable? "
    "The demo store's webhooks and every recovery step run on the worker; see instance/logs/worker.log."
)
_DISCOUNT_ROW = re.compile(r'data-discount-code="([^"]+)"\s+data-discount-amount="([^"]+)"')
_TOTAL = re.compile(r'data-total="([^"]+)"')
_ORDER_FORM = re.compile(r'<form method="post" action="([^"]+/order)"')
_DISCOUNT_FIELD = re.compile(r'name="discount" value="([^"]*)"')

T = TypeVar("T")
# Message statuses that mean it went out.
SENT = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ)


class JourneyFailed(RuntimeError):
    """A milestone did not happen; the message says which and what to check."""


@dataclass(frozen=True)
class JourneyResult:
    cart_id: int
    revenue: Decimal
    elapsed_s: float


def _ok(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code >= 400:
        raise JourneyFailed(
            f"{what}: {response.request.method} {response.url.path} answered {response.status_code}"
        )
    return response


class _Shopper:
    def __init__(
        self, base_url: str, database: Database, say: Callable[[str], None], timeout_s: float
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.database = database
        self.say = say
        self.timeout_s = timeout_s
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s

    def wait(self, milestone: str, check: Callable[[], T | None], hint: str) -> T:
        while True:
            found = check()
            if found is not None:
                return found
            if time.monotonic() >= self.deadline:
                raise JourneyFailed(
                    f"the milestone '{milestone}' did not happen within {self.timeout_s:.0f} s. {hint}"
                )
            time.sleep(POLL_INTERVAL_S)

    def cart(self, checkout_id: str) -> Cart | None:
        with self.database.session() as session:
            return session.exec(
                select(Cart)
                .join(Store, col(Store.id) == col(Cart.store_id))
                .where(Store.platform == PLATFORM, Cart.platform_cart_id == checkout_id)
            ).first()

    def cart_where(
        self, checkout_id: str, test: Callable[[Cart], bool], unexpected: Collection[str]
    ) -> Cart | None:
        cart = self.cart(checkout_id)
        if cart is None:
            return None
        if cart.status in unexpected:
            reason = f" ({cart.status_reason})" if cart.status_reason else ""
            raise JourneyFailed(f"the cart ended up '{cart.status}'{reason} instead of being recovered")
        return cart if test(cart) else None

    def sent_message(self, cart_id: int, *, cloud: bool, status: Collection[str] = SENT) -> Message | None:
        """The cart's first message once it went out: in the sandbox outbox, or accepted by Meta
        (its wamid stored) and, when asked, with a later status from Meta's webhooks."""
        with self.database.session() as session:
            message = session.exec(
                select(Message).where(Message.cart_id == cart_id).order_by(col(Message.id))
            ).first()
            if message is None:
                return None
            if message.status == MessageStatus.FAILED:
                raise JourneyFailed(
                    f"the WhatsApp message failed (error {message.error_code}): {message.error_detail}"
                )
            if cloud:
                return message if message.provider_message_id and message.status in status else None
            outbox = session.exec(
                select(SandboxOutboxMessage).where(SandboxOutboxMessage.message_id == message.id)
            ).first()
            return message if outbox is not None else None

    def messages_of(self, cart_id: int) -> int:
        with self.database.session() as session:
            return len(session.exec(select(Message.id).where(Message.cart_id == cart_id)).all())

    def step(self, cart_id: int, number: int) -> RecoveryStep | None:
        with self.database.session() as session:
            return session.exec(
                select(RecoveryStep).where(
                    RecoveryStep.cart_id == cart_id, RecoveryStep.step_number == number
                )
            ).first()

    def event(self, cart_id: int, kind: str) -> CartEvent | None:
        with self.database.session() as session:
            return session.exec(
                select(CartEvent)
                .where(CartEvent.cart_id == cart_id, CartEvent.kind == kind)
                .order_by(col(CartEvent.id).desc())
            ).first()

    def checkout_id(self, token: str) -> str | None:
        with self.database.session() as session:
            checkout = session.exec(select(DemoCheckout).where(DemoCheckout.token == token)).first()
            return checkout.id if checkout else None


def play_journey(
    base_url: str,
    database: Database,
    say: Callable[[str], None],
    timeout_s: float = 120,
    *,
    cloud: CloudDemo | None = None,
) -> JourneyResult:
    shopper = _Shopper(base_url, database, say, timeout_s)
    terminal_failures = {
        CartStatus.UNREACHABLE,
        CartStatus.OPTED_OUT,
        CartStatus.EXPIRED,
        CartStatus.CONVERTED_UNASSISTED,
    }
    with httpx.Client(base_url=shopper.base_url, follow_redirects=True, timeout=HTTP_TIMEOUT_S) as http:
        # -- shop, leave a number, go quiet ------------------------------------------------
        _ok(http.get("/demo-store/"), "open the demo store")
        for variant_id in PICKS:
            _ok(
                http.post("/demo-store/cart/add", data={"variant_id": str(variant_id), "quantity": "1"}),
                f"add {BY_VARIANT[variant_id].title} to the cart",
            )
        _ok(
            http.post("/demo-store/cart/contact", data={**SHOPPER, "phone": demo_phone()}),
            "save the contact details",
        )
        token = http.cookies.get(COOKIE)
        if not token:
            raise JourneyFailed(
                "the demo store did not set its cart cookie; is /demo-store/ served by this app?"
            )
        checkout_id = shopper.checkout_id(token)
        if checkout_id is None:
            raise JourneyFailed(
                "the shopper's checkout is not in the database the journey reads (DATABASE_URL differs?)"
            )
        picks = " + ".join(BY_VARIANT[variant_id].title for variant_id in PICKS)
        say(f"shopper {SHOPPER['first_name']} adds {picks}, ticks WhatsApp consent and goes quiet")

        cart = shopper.wait(
            "cart captured",
            lambda: shopper.cart_where(checkout_id, lambda c: c.contact_id is not None, terminal_failures),
            WORKER_HINT,
        )
        assert cart.id is not None
        cart_id = cart.id
        say(f"cart captured ({cart.line_count} items, {money(cart.total)})")

        shopper.wait(
            "cart abandoned",
            lambda: shopper.cart_where(
                checkout_id,
                lambda c: c.abandoned_at is not None or c.status != CartStatus.ACTIVE,
                terminal_failures,
            ),
            "A cart counts as abandoned after the store's inactivity (15 min ÷ CARTBACK_TIME_SCALE). "
            + WORKER_HINT,
        )
        say("cart abandoned")

        message = shopper.wait(
            "WhatsApp message sent",
            lambda: shopper.sent_message(cart_id, cloud=cloud is not None),
            "Step 1 is due at abandonment; check that sending is not paused and quiet hours are off "
            "for the demo store. " + WORKER_HINT,
        )
        first_line = next(
            (line.strip() for line in str(message.preview.get("body", "")).splitlines() if line), ""
        )
        if cloud is None:
            say(f"WhatsApp message sent to the sandbox outbox: {first_line}")
        else:
            say(f"WhatsApp template {message.template_name} accepted by the Graph API: {first_line}")
            shopper.wait(
                "delivered and read",
                lambda: shopper.sent_message(cart_id, cloud=True, status=(MessageStatus.READ,)),
                "Meta's status webhooks (sent, delivered, read) come to /webhooks/whatsapp; is the "
                "Graph API posting them to APP_URL, signed with WHATSAPP_APP_SECRET?",
            )
            say("Meta reports the message sent, delivered and read")

        # -- come back through the message's button ---------------------------------------
        link = message.preview.get("link")
        if not isinstance(link, str) or not link:
            raise JourneyFailed("the message has no link button to click")
        landing = _ok(http.get(link), "open the recovery link")
        say("link clicked")
        rebuilt = shopper.wait(
            "checkout rebuilt",
            lambda: shopper.event(cart_id, "checkout_rebuilt"),
            "The link handler asks the demo store's Admin API (/demo-store/api/) for the checkout URL; "
            "see instance/logs/web.log.",
        )
        page = landing.text
        shown = _DISCOUNT_ROW.search(page)
        code = rebuilt.detail.get("discount_code")
        if code and shown:
            say(f"checkout rebuilt with discount {code} (−{money(Decimal(html.unescape(shown.group(2))))})")
        elif code:
            raise JourneyFailed(f"the checkout page does not show the discount {code}; open {landing.url}")
        else:
            say("checkout rebuilt (this step carries no discount)")

        # -- buy ---------------------------------------------------------------------------
        form = _ORDER_FORM.search(page)
        if form is None:
            raise JourneyFailed(f"the checkout page has no order form; open {landing.url}")
        field = _DISCOUNT_FIELD.search(page)
        data: dict[str, Any] = {"discount": html.unescape(field.group(1)) if field else ""}
        receipt = _ok(http.post(html.unescape(form.group(1)), data=data), "place the order")
        total = _TOTAL.search(receipt.text)
        if total is None:
            raise JourneyFailed(f"the order page shows no total; open {receipt.url}")
        say(f"order placed: {money(Decimal(total.group(1)))}")

        recovered = shopper.wait(
            "cart recovered",
            lambda: shopper.cart_where(
                checkout_id, lambda c: c.status == CartStatus.RECOVERED, terminal_failures
            ),
            "The orders/create webhook marks the cart recovered. " + WORKER_HINT,
        )
    revenue = recovered.order_total if recovered.order_total is not None else Decimal("0")
    say(f"cart recovered: {money(revenue)} revenue")
    if cloud is not None:
        _stop_before_the_next_step(shopper, cloud, terminal_failures)
    return JourneyResult(cart_id=cart_id, revenue=revenue, elapsed_s=time.monotonic() - shopper.started)


@dataclass(frozen=True)
class CloudDemo:
    """What the journey needs to play the shopper's phone on the Cloud API: the number's ids
    and the Meta app secret that signs webhook deliveries."""

    waba_id: str
    phone_number_id: str
    app_secret: str = field(repr=False)


def stop_promotions_tap(cloud: CloudDemo, shopper_wa_id: str, message_wamid: str) -> dict[str, Any]:
    """The delivery Meta sends when a shopper taps the template's "Stop promotions" button."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": cloud.waba_id,
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "",
                                "phone_number_id": cloud.phone_number_id,
                            },
                            "contacts": [{"profile": {"name": "Ravi"}, "wa_id": shopper_wa_id}],
                            "messages": [
                                {
                                    "context": {"id": message_wamid},
                                    "from": shopper_wa_id,
                                    "id": f"wamid.demo-{secrets.token_hex(12)}",
                                    "timestamp": str(int(time.time())),
                                    "type": "button",
                                    "button": {"payload": STOP_PAYLOAD, "text": "Stop promotions"},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }


def _stop_before_the_next_step(shopper: _Shopper, cloud: CloudDemo, terminal: Collection[str]) -> None:
    """A second shopper gets step 1, then taps "Stop promotions" one second before step 2 is due."""
    say = shopper.say
    with httpx.Client(base_url=shopper.base_url, follow_redirects=True, timeout=HTTP_TIMEOUT_S) as http:
        _ok(
            http.post("/demo-store/cart/add", data={"variant_id": str(PICKS[0]), "quantity": "1"}),
            "add an item for the second shopper",
        )
        _ok(
            http.post(
                "/demo-store/cart/contact",
                data={"first_name": "Ravi", "email": "", "accepts_marketing": "on", "phone": demo_phone()},
            ),
            "save the second shopper's details",
        )
        checkout_id = shopper.checkout_id(http.cookies.get(COOKIE) or "")
    if checkout_id is None:
        raise JourneyFailed("the second shopper's checkout was not saved")
    say("shopper Ravi leaves a kurta in the cart and goes quiet")
    cart = shopper.wait(
        "second cart captured",
        lambda: shopper.cart_where(checkout_id, lambda c: c.id is not None, terminal),
        WORKER_HINT,
    )
    assert cart.id is not None
    cart_id = cart.id
    first = shopper.wait(
        "second shopper's step 1", lambda: shopper.sent_message(cart_id, cloud=True), WORKER_HINT
    )
    step_two = shopper.step(cart_id, 2)
    if step_two is None or step_two.due_at is None:
        raise JourneyFailed("the second shopper's sequence has no step 2 to stop")
    due = step_two.due_at.timestamp()
    wait_s = due - time.time() - 1.0
    say(f"step 1 sent; step 2 is due in {max(wait_s, 0) + 1:.0f} s")
    shopper.deadline = max(shopper.deadline, due + 30)
    time.sleep(max(wait_s, 0))
    with shopper.database.session() as session:
        phone = session.exec(select(Contact.phone_e164).where(Contact.id == first.contact_id)).one()
    raw = json.dumps(stop_promotions_tap(cloud, phone.lstrip("+"), first.provider_message_id or "")).encode()
    signature = "sha256=" + hmac.new(cloud.app_secret.encode(), raw, hashlib.sha256).hexdigest()
    _ok(
        httpx.post(
            f"{shopper.base_url}/webhooks/whatsapp",
            content=raw,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
            timeout=HTTP_TIMEOUT_S,
        ),
        "deliver the Stop promotions tap",
    )
    say(f"Ravi taps Stop promotions {due - time.time():.1f} s before step 2 is due")
    time.sleep(max(due - time.time(), 0) + 3.0)  # past the due time, with the worker's poll
    stopped = shopper.step(cart_id, 2)
    if stopped is None or stopped.status != StepStatus.CANCELLED or shopper.messages_of(cart_id) != 1:
        raise JourneyFailed(
            f"step 2 was not stopped by the opt-out (it is {stopped.status if stopped else '?'})"
        )
    final = shopper.cart(checkout_id)
    say(
        f"step 2's time passed and nothing went out: cart {final.status if final else '?'}, opt-out on record"
    )
