"""What a step's message will look like, and the merchant's "send me a test message".

Both render through ``render_step_message``, the function every real send uses, from the
store's most recent cart (or a sample when it has none yet): the preview is the message, not
an imitation of it. The test message goes through the store's real transport to the
merchant's own number; it has no cart and no ledger row, and its link opens a page that says
it was a test.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from redis.exceptions import RedisError
from sqlmodel import Session, col, select

from channels.transport import OutboundMessage, OutcomeKind
from channels.whatsapp.templates import LANGUAGES
from connectors.base import InvalidPhone, normalise_phone
from sequences.engine.messages import RenderedMessage, render_step_message
from sequences.merchant.store_settings import Problem, StoreSettings
from sequences.models import Cart, CartLine, Contact, Store, TemplateStatus, WhatsAppAccount, WhatsAppTemplate
from sequences.privacy.erasure import is_suppressed
from sequences.runtime import Runtime
from sequences.whatsapp.accounts import sender_for

log = logging.getLogger("cartback.settings.preview")

# The link token of test messages: /r/<this> says it was a test (a real token is ~45 chars).
TEST_MESSAGE_TOKEN = "test-message"  # noqa: S105 - a fixed path, not a secret
# Test messages per store per hour: enough to try copy, too few to spam anyone with.
TEST_MESSAGES_PER_HOUR = 5
SAMPLE_TITLE = "Handloom Cotton Kurta"


class PreviewRefused(Exception):
    def __init__(self, problem: Problem, status: int = 422) -> None:
        super().__init__(problem.message)
        self.problem, self.status = problem, status


@dataclass(frozen=True)
class Preview:
    rendered: RenderedMessage
    # Where the cart came from, for the page: "your latest cart (2 items)" or "a sample cart".
    source: str


def _latest_cart(session: Session, store: Store) -> tuple[Cart, list[CartLine], Contact] | None:
    row = session.exec(
        select(Cart, Contact)
        .join(Contact, col(Contact.id) == col(Cart.contact_id))
        .where(Cart.store_id == store.id, col(Cart.line_count) > 0)
        .order_by(col(Cart.last_activity_at).desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    cart, contact = row
    lines = list(
        session.exec(
            select(CartLine).where(CartLine.cart_id == cart.id).order_by(col(CartLine.position))
        ).all()
    )
    return (cart, lines, contact) if lines else None


def _sample(store: Store) -> tuple[Cart, list[CartLine], Contact]:
    price = Decimal("1499.00")
    cart = Cart(
        store_id=store.id or 0,
        platform_cart_id="sample",
        currency=store.currency,
        subtotal=price,
        total=price,
        platform_updated_at=store.created_at,
        last_activity_at=store.created_at,
    )
    line = CartLine(cart_id=0, title=SAMPLE_TITLE, quantity=1, unit_price=price)
    return cart, [line], Contact(store_id=store.id or 0, phone_e164="+910000000000", first_name="Asha")


def _language(session: Session, store: Store, requested: str | None) -> str:
    if requested is not None:
        if requested not in LANGUAGES:
            raise PreviewRefused(Problem("language", f"must be one of {', '.join(LANGUAGES)}"))
        return requested
    account = session.exec(select(WhatsAppAccount).where(WhatsAppAccount.store_id == store.id)).first()
    return account.default_language if account else "en"


def render_preview(
    runtime: Runtime,
    session: Session,
    store: Store,
    settings: StoreSettings,
    step_index: int,
    language: str | None,
    *,
    link_token: str = TEST_MESSAGE_TOKEN,
    shopper_name: bool = True,
) -> Preview:
    """``shopper_name`` False: the greeting leaves the real shopper's name out (test messages
    go to whatever number the merchant types)."""
    if not 0 <= step_index < len(settings.steps):
        raise PreviewRefused(Problem("step", f"choose a step from 1 to {len(settings.steps)}"))
    chosen_language = _language(session, store, language)
    latest = _latest_cart(session, store)
    cart, lines, contact = latest or _sample(store)
    if not shopper_name:
        contact = Contact(store_id=store.id or 0, phone_e164=contact.phone_e164, first_name=None)
    step = settings.steps[step_index]
    offer = step.offer if cart.currency == store.currency else None
    rendered = render_step_message(
        store=store,
        cart=cart,
        lines=lines,
        contact=contact,
        offer=offer,
        link_url=runtime.link_url(link_token),
        link_token=link_token,
        language=chosen_language,
        copy_line=step.copy_lines.get(chosen_language),
    )
    items = sum(line.quantity for line in lines)
    source = f"your latest cart ({items} item{'s' if items != 1 else ''})" if latest else "a sample cart"
    return Preview(rendered, source)


def _count_test_message(runtime: Runtime, store_id: int) -> bool:
    """True while the store is under its hourly allowance (Redis counter, per store)."""
    key = f"cartback:test-messages:{store_id}"
    try:
        count = runtime.redis.incr(key)
        if count == 1:
            # The hour starts with the first message (EXPIRE's NX flag would need Redis 7).
            runtime.redis.expire(key, 3600)
    except RedisError:
        # No counter, no sending: a test message is never worth an unbounded loop.
        raise PreviewRefused(Problem("phone", "cannot send right now: try again in a minute"), 503) from None
    return int(count) <= TEST_MESSAGES_PER_HOUR


def send_test_message(
    runtime: Runtime,
    store_id: int,
    settings: StoreSettings,
    step_index: int,
    language: str | None,
    phone: Any,
) -> dict[str, Any]:
    """Send the step's message to the merchant's own phone; what happened, in words."""
    with runtime.database.session() as session:
        store = session.get(Store, store_id)
        assert store is not None
        if not isinstance(phone, str) or not phone.strip():
            raise PreviewRefused(Problem("phone", "enter your WhatsApp number"))
        try:
            to_phone = normalise_phone(phone, store.default_region)
        except InvalidPhone:
            raise PreviewRefused(
                Problem("phone", f"is not a valid phone number (country {store.default_region})")
            ) from None
        if store.sending_paused:
            raise PreviewRefused(
                Problem("phone", f"sending is paused ({store.pause_reason or 'by you'}): resume it first"),
                409,
            )
        known = session.exec(
            select(Contact).where(Contact.store_id == store_id, Contact.phone_e164 == to_phone)
        ).first()
        if (known is not None and known.opted_out_at is not None) or is_suppressed(
            session, runtime, store_id, to_phone
        ):
            raise PreviewRefused(Problem("phone", "this number opted out of your messages on WhatsApp"), 409)
        preview = render_preview(runtime, session, store, settings, step_index, language, shopper_name=False)
        rendered = preview.rendered
        sender = None
        if runtime.transport.needs_whatsapp_account:
            account = session.exec(
                select(WhatsAppAccount).where(WhatsAppAccount.store_id == store_id)
            ).first()
            if account is None:
                raise PreviewRefused(Problem("phone", "connect a WhatsApp number first"), 409)
            status = session.exec(
                select(WhatsAppTemplate.status).where(
                    WhatsAppTemplate.store_id == store_id,
                    WhatsAppTemplate.name == rendered.template_name,
                    WhatsAppTemplate.language == rendered.language,
                )
            ).first()
            if status != TemplateStatus.APPROVED:
                raise PreviewRefused(
                    Problem(
                        "phone",
                        f"template {rendered.template_name} ({rendered.language}) is "
                        f"{(status or 'not pushed').lower()}: it can be sent once Meta approves it",
                    ),
                    409,
                )
            sender = sender_for(runtime, account)
    if not _count_test_message(runtime, store_id):
        raise PreviewRefused(
            Problem("phone", f"at most {TEST_MESSAGES_PER_HOUR} test messages an hour: try again later"), 429
        )
    outcome = runtime.transport.send(
        OutboundMessage(
            message_id=None,
            store_id=store_id,
            to_phone_e164=to_phone,
            template_name=rendered.template_name,
            language=rendered.language,
            components=rendered.components,
            biz_opaque_callback_data="cartback-test",
            preview=rendered.preview,
            sender=sender,
        )
    )
    log.info("test message", extra={"store_id": store_id, "outcome": outcome.kind.value})
    if outcome.kind != OutcomeKind.SENT:
        detail = outcome.error_detail or outcome.kind.value.replace("_", " ")
        raise PreviewRefused(Problem("phone", f"WhatsApp did not accept it: {detail}"), 502)
    return {"sent_to": f"…{to_phone[-4:]}", "template": rendered.template_name, "language": rendered.language}
