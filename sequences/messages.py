"""Build the WhatsApp message for one recovery step from the cart as we hold it.

The same data produces the Cloud API template components (what Meta renders) and the
preview text (what the sandbox outbox shows); both come from one place so they cannot drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from sequences.models import Cart, CartLine, Contact, Store
from sequences.money import format_money, format_offer_amount, to_amount_1000
from sequences.store_settings import Offer

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
# Meta template names (MARKETING category); the header IMAGE variant needs a product image.
TEMPLATE_WITH_IMAGE = "cart_recovery_image_v1"
TEMPLATE_TEXT_ONLY = "cart_recovery_text_v1"
STOP_BUTTON_TEXT = "Stop promotions"
STOP_PAYLOAD = "STOP"
NO_OFFER_LINE = "We've saved your cart for you."
CENT = Decimal("0.01")


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        undefined=StrictUndefined,
        autoescape=False,  # noqa: S701 - plain text for WhatsApp, never rendered as HTML
        keep_trailing_newline=False,
    )


def discount_amount(offer: Offer, subtotal: Decimal) -> Decimal | None:
    """What the offer takes off this cart, or None when the cart does not qualify."""
    if offer.min_subtotal is not None and subtotal < offer.min_subtotal:
        return None
    if offer.kind == "fixed":
        return min(offer.value, subtotal)
    amount = (subtotal * offer.value / 100).quantize(CENT, rounding=ROUND_HALF_UP)
    return min(amount, offer.max_amount) if offer.max_amount is not None else amount


def offer_text(offer: Offer, currency: str, locale: str) -> str:
    if offer.kind == "fixed":
        return f"Claim {format_offer_amount(offer.value, currency, locale)} off"
    percent = format(offer.value.normalize(), "f")
    cap = f" (up to {format_offer_amount(offer.max_amount, currency, locale)})" if offer.max_amount else ""
    return f"Claim {percent}% off{cap}"


def items_summary(lines: Sequence[CartLine]) -> str:
    first = lines[0].title
    rest = len(lines) - 1
    return first if rest == 0 else f"{first} and {rest} more"


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
) -> RenderedMessage:
    if not lines:
        raise ValueError("a recovery message needs at least one cart line")
    first_name = (contact.first_name or "").strip() or "there"
    items = items_summary(lines)
    total_text = format_money(cart.total, cart.currency, store.locale)
    qualifies = offer is not None and discount_amount(offer, cart.subtotal) is not None
    offer_line = (
        offer_text(offer, cart.currency, store.locale) + "!" if offer and qualifies else NO_OFFER_LINE
    )
    button_text = (
        offer_text(offer, cart.currency, store.locale) if offer and qualifies else "Complete my order"
    )
    image_url = next((line.image_url for line in lines if line.image_url), None)

    body = (
        _environment()
        .get_template(f"messages/cart_recovery.{language}.txt")
        .render(
            first_name=first_name,
            items=items,
            store_name=store.name,
            total=total_text,
            offer_line=offer_line,
        )
    )
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
        template_name=TEMPLATE_WITH_IMAGE if image_url else TEMPLATE_TEXT_ONLY,
        language=language,
        components=components,
        preview={
            "body": body,
            "image_url": image_url,
            "link": link_url,
            "buttons": [
                {"type": "url", "text": button_text, "url": link_url},
                {"type": "quick_reply", "text": STOP_BUTTON_TEXT},
            ],
        },
    )
