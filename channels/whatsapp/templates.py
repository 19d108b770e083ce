"""The cart-recovery templates, as data: what Meta approves and what the shopper then sees.

One definition per (template, language) produces both the creation payload for
``POST /{waba_id}/message_templates`` and the text a message renders to, so the preview
cannot drift from what Meta shows. Positional parameters, in this order in the body:
{{1}} first name, {{2}} items, {{3}} total (a ``currency`` parameter), {{4}} the offer line.
The URL button's dynamic suffix is the signed link token; the quick reply is the opt-out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# MARKETING: cart reminders are promotional in Meta's taxonomy (DESIGN.md, platform notes).
CATEGORY = "MARKETING"
TEMPLATE_WITH_IMAGE = "cart_recovery_image_v1"
TEMPLATE_TEXT_ONLY = "cart_recovery_text_v1"
TEMPLATE_NAMES = (TEMPLATE_WITH_IMAGE, TEMPLATE_TEXT_ONLY)
# The quick-reply payload we set on the "Stop promotions" button; a tap comes back with it.
STOP_PAYLOAD = "STOP"
# The link path before the token; Meta's URL button only allows a variable at the very end.
LINK_PATH = "/r/"
# Meta's example for the dynamic URL suffix must look like the real thing.
EXAMPLE_LINK_TOKEN = "eyJtIjo0Mn0.Z3f1Qw.k6b2Vt0b4r2n8Hq"  # noqa: S105 - a sample link, not a secret
PLACEHOLDER = re.compile(r"\{\{(\d+)\}\}")


@dataclass(frozen=True)
class Copy:
    """The words of one language."""

    language: str
    body: str  # {store} is filled at push time; {{1}}..{{4}} at send time
    footer: str
    link_button: str
    stop_button: str
    no_name: str  # when the shopper gave no first name
    no_offer_line: str
    offer_fixed: str  # "{amount}" -> "Claim ₹100 off"
    offer_percent: str  # "{percent}"
    offer_percent_capped: str  # "{percent}", "{cap}"
    more_items: str  # "{first}", "{rest}"
    examples: tuple[str, str, str, str]
    opt_out_confirmation: str  # "{store}"
    opt_in_confirmation: str  # "{store}"


ENGLISH = Copy(
    language="en",
    body=(
        "Hi {{1}}, you left {{2}} in your cart at {store}.\n"
        "Total: {{3}}\n"
        "{{4}}\n\n"
        "Tap below to pick up where you left off."
    ),
    footer="Not interested? Tap Stop promotions.",
    link_button="Complete my order",
    stop_button="Stop promotions",
    no_name="there",
    no_offer_line="We've saved your cart for you.",
    offer_fixed="Claim {amount} off",
    offer_percent="Claim {percent}% off",
    offer_percent_capped="Claim {percent}% off (up to {cap})",
    more_items="{first} and {rest} more",
    examples=("Asha", "Cotton Kurta and 1 more", "₹1,499.00", "Claim ₹100 off!"),
    opt_out_confirmation=(
        "You won't get promotional messages from {store} on WhatsApp any more. Reply START to undo."
    ),
    opt_in_confirmation="Welcome back! {store} can send you cart reminders again. Reply STOP at any time.",
)

HINDI = Copy(
    language="hi",
    body=(
        "नमस्ते {{1}}, आपने {store} पर अपने कार्ट में {{2}} छोड़ दिया है।\n"
        "कुल: {{3}}\n"
        "{{4}}\n\n"
        "जहाँ छोड़ा था वहीं से जारी रखने के लिए नीचे टैप करें।"
    ),
    footer="रुचि नहीं है? Stop promotions पर टैप करें।",
    link_button="ऑर्डर पूरा करें",
    stop_button="Stop promotions",
    no_name="ग्राहक",
    no_offer_line="हमने आपका कार्ट सँभालकर रखा है।",
    offer_fixed="{amount} की छूट पाएँ",
    offer_percent="{percent}% की छूट पाएँ",
    offer_percent_capped="{percent}% की छूट पाएँ ({cap} तक)",
    more_items="{first} और {rest} अन्य",
    examples=("आशा", "कॉटन कुर्ता और 1 अन्य", "₹1,499.00", "₹100 की छूट पाएँ!"),
    opt_out_confirmation="अब आपको WhatsApp पर {store} से प्रचार संदेश नहीं मिलेंगे। फिर से पाने के लिए START लिखें।",
    opt_in_confirmation="फिर से स्वागत है! {store} आपको कार्ट रिमाइंडर भेज सकता है। कभी भी STOP लिखें।",
)

COPIES = {copy.language: copy for copy in (ENGLISH, HINDI)}
LANGUAGES = tuple(COPIES)


def copy_for(language: str) -> Copy:
    return COPIES.get(language, ENGLISH)


@dataclass(frozen=True)
class TemplateDefinition:
    name: str
    copy: Copy
    with_image: bool

    @property
    def language(self) -> str:
        return self.copy.language

    def body(self, store_name: str) -> str:
        # str.replace, not format: the body's {{n}} braces are Meta's, not Python's.
        return self.copy.body.replace("{store}", store_name)

    def creation_payload(self, *, store_name: str, app_url: str, header_handle: str | None) -> dict[str, Any]:
        """The body of ``POST /{waba_id}/message_templates`` (positional parameters)."""
        components: list[dict[str, Any]] = []
        if self.with_image:
            if not header_handle:
                raise ValueError("an IMAGE header needs an uploaded example (header_handle)")
            components.append(
                {"type": "HEADER", "format": "IMAGE", "example": {"header_handle": [header_handle]}}
            )
        components.append(
            {
                "type": "BODY",
                "text": self.body(store_name),
                "example": {"body_text": [list(self.copy.examples)]},
            }
        )
        components.append({"type": "FOOTER", "text": self.copy.footer})
        link_base = f"{app_url.rstrip('/')}{LINK_PATH}"
        components.append(
            {
                "type": "BUTTONS",
                "buttons": [
                    {
                        "type": "URL",
                        "text": self.copy.link_button,
                        "url": link_base + "{{1}}",
                        "example": [link_base + EXAMPLE_LINK_TOKEN],
                    },
                    {"type": "QUICK_REPLY", "text": self.copy.stop_button},
                ],
            }
        )
        return {
            "name": self.name,
            "language": self.language,
            "category": CATEGORY,
            "parameter_format": "positional",
            "components": components,
        }


DEFINITIONS = tuple(
    TemplateDefinition(name, copy, name == TEMPLATE_WITH_IMAGE)
    for copy in (ENGLISH, HINDI)
    for name in TEMPLATE_NAMES
)


def definition(name: str, language: str) -> TemplateDefinition:
    for candidate in DEFINITIONS:
        if candidate.name == name and candidate.language == language:
            return candidate
    raise KeyError(f"no template {name!r} in {language!r}")


def fill(text: str, values: list[str]) -> str:
    """Meta's substitution of positional parameters, for previews."""
    return PLACEHOLDER.sub(lambda match: values[int(match.group(1)) - 1], text)
