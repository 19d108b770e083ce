"""Build the WhatsApp message for one recovery step from the cart as we hold it.

The same data produces the Cloud API template components (what Meta renders) and the
preview (what the sandbox outbox and the settings page show); both come from the template
definitions in ``channels.whatsapp.templates``, so they cannot drift.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from channels.whatsapp.templates import (
    STOP_PAYLOAD,
    TEMPLATE_TEXT_ONLY,
    TEMPLATE_WITH_IMAGE,
    Copy,
    copy_for,
    definition,
    fill,
)
from sequences.merchant.store_settings import OFFER_PLACEHOLDER, Offer
from sequences.models import Cart, CartLine, Contact, Store
from sequences.money import format_money, format_offer_amount, to_amount_1000

CENT = Decimal("0.01")
# Meta refuses a text parameter with a newline, a tab or more than 4 spaces in a row (132018),
# and a shopper's name can hold any of them: one refused parameter must not cost the message.
_UNSAFE_SPACE = re.compile(r"\s+")
# Characters of one text parameter: long product names are cut, the body stays readable.
MAX_PARAMETER_CHARS = 120


def template_text(value: str) -> str:
    """A value safe for a template's text parameter: one line, single spaces, bounded."""
    cleaned = _UNSAFE_SPACE.sub(" ", value).strip()
    return (
        cleaned if len(cleaned) <= MAX_PARAMETER_CHARS else cleaned[: MAX_PARAMETER_CHARS - 1].rstrip() + "…"
    )


def discount_amount(offer: Offer, subtotal: Decimal) -> Decimal | None:
    """What the offer takes off this cart, or None when the cart does not qualify."""
    if offer.min_subtotal is not None and subtotal < offer.min_subtotal:
        return None
    if offer.kind == "fixed":
        return min(offer.value, subtotal)
    amount = (subtotal * offer.value / 100).quantize(CENT, rounding=ROUND_HALF_UP)
    return min(amount, offer.max_amount) if offer.max_amount is not None else amount


def offer_text(offer: Offer, currency: str, locale: str, copy: Copy | None = None) -> str:
    words = copy or copy_for("en")
    if offer.kind == "fixed":
        return words.offer_fixed.format(amount=format_offer_amount(offer.value, currency, locale))
    percent = format(offer.value.normalize(), "f")
    if offer.max_amount:
        cap = format_offer_amount(offer.max_amount, currency, locale)
        return words.offer_percent_capped.format(percent=percent, cap=cap)
    return words.offer_percent.format(percent=percent)


def items_summary(lines: Sequence[CartLine], copy: Copy | None = None) -> str:
    first = lines[0].title
    rest = len(lines) - 1
    return first if rest == 0 else (copy or copy_for("en")).more_items.format(first=first, rest=rest)


def step_line(
    offer: Offer | None, currency: str, locale: str, words: Copy, copy_line: str | None = None
) -> str:
    """The message's own line ({{4}}): the merchant's words when they fit this cart, else ours."""
    if offer is None:
        line = copy_line if copy_line and OFFER_PLACEHOLDER not in copy_line else words.no_offer_line
        return template_text(line)
    offered = offer_text(offer, currency, locale, words)
    if copy_line and OFFER_PLACEHOLDER in copy_line:
        return template_text(copy_line.replace(OFFER_PLACEHOLDER, offered))
    return offered + "!"


@dataclass(frozen=True)
class RenderedMessage:
    template_name: str
    language: str
    components: list[dict[str, Any]]
    preview: dict[str, Any]


def render_step_message(
    *,
    store: Store,
    cart: Cart,
    lines: Sequence[CartLine],
    contact: Contact,
    offer: Offer | None,
    link_url: str,
    link_token: str,
    language: str = "en",
    copy_line: str | None = None,
) -> RenderedMessage:
    """``copy_line``: the merchant's line for this step and language ({offer} is filled in)."""
    if not lines:
        raise ValueError("a recovery message needs at least one cart line")
    words = copy_for(language)
    first_name = template_text(contact.first_name or "") or words.no_name
    items = template_text(items_summary(lines, words))
    total_text = format_money(cart.total, cart.currency, store.locale)
    qualifies = offer is not None and discount_amount(offer, cart.subtotal) is not None
    offer_line = step_line(offer if qualifies else None, cart.currency, store.locale, words, copy_line)
    image_url = next((line.image_url for line in lines if line.image_url), None)
    template = definition(TEMPLATE_WITH_IMAGE if image_url else TEMPLATE_TEXT_ONLY, words.language)

    components: list[dict[str, Any]] = []
    if image_url:
        components.append({"type": "header", "parameters": [{"type": "image", "image": {"link": image_url}}]})
    components.append(
        {
            "type": "body",
            "parameters": [
                {"type": "text", "text": first_name},
                {"type": "text", "text": items},
                {
                    "type": "currency",
                    "currency": {
                        "fallback_value": total_text,
                        "code": cart.currency,
                        "amount_1000": to_amount_1000(cart.total),
                    },
                },
                {"type": "text", "text": offer_line},
            ],
        }
    )
    components.append(
        {
            "type": "button",
            "sub_type": "url",
            "index": "0",
            "parameters": [{"type": "text", "text": link_token}],
        }
    )
    components.append(
        {
            "type": "button",
            "sub_type": "quick_reply",
            "index": "1",
            "parameters": [{"type": "payload", "payload": STOP_PAYLOAD}],
        }
    )
    return RenderedMessage(
        template_name=template.name,
        language=template.language,
        components=components,
        preview={
            "body": fill(template.body(store.name), [first_name, items, total_text, offer_line]),
            "footer": words.footer,
            "image_url": image_url,
            "link": link_url,
            "buttons": [
                {"type": "url", "text": words.link_button, "url": link_url},
                {"type": "quick_reply", "text": words.stop_button},
            ],
        },
    )
