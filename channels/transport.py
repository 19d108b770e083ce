"""How a rendered message leaves cartback.

``MessageTransport`` is shaped for the WhatsApp Cloud API (template name, language, components
in Cloud API form, ``biz_opaque_callback_data``) so the cloud transport can slot in beside the
sandbox one (``sequences.sandbox``, which keeps messages in an outbox table shown at /outbox).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

# Our message ids travel in biz_opaque_callback_data with this prefix: other apps on the same
# WhatsApp account set callback data of their own, and plain numbers would collide.
CALLBACK_PREFIX = "cartback-"


def callback_data(message_id: int) -> str:
    return f"{CALLBACK_PREFIX}{message_id}"


def message_id_from_callback(value: str | None) -> int | None:
    if not value or not value.startswith(CALLBACK_PREFIX):
        return None
    digits = value[len(CALLBACK_PREFIX) :]
    return int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 18 else None


@dataclass(frozen=True)
class Sender:
    """The store's WhatsApp number on the Cloud API, as the transport needs it."""

    phone_number_id: str
    access_token: str = field(repr=False)
    messages_per_second: int = 80


@dataclass(frozen=True)
class OutboundMessage:
    # None for the merchant's test message (no cart, no ledger row).
    message_id: int | None
    store_id: int
    to_phone_e164: str = field(repr=False)
    template_name: str
    language: str
    # Cloud API template components (header image, body parameters, buttons).
    components: list[dict[str, Any]]
    # Echoed back by status webhooks so they map to our message (Cloud API field name).
    biz_opaque_callback_data: str
    # What the shopper sees, for the sandbox outbox and previews.
    preview: dict[str, Any] = field(default_factory=dict)
    sender: Sender | None = None
    # Not before this ``time.monotonic()`` of the sending process: its number's pace (Slot).
    send_at: float | None = None
    # Not after this one either: past it, it is not sent (Slot.send_by).
    send_by: float | None = None


@dataclass(frozen=True)
class OutboundText:
    """A plain reply inside the shopper's 24-hour window (the opt-out confirmation)."""

    store_id: int
    to_phone_e164: str = field(repr=False)
    body: str
    sender: Sender | None = None


class OutcomeKind(StrEnum):
    SENT = "sent"
    # Known not sent, transient (throughput, pair rate): try again after retry_after.
    RETRY_LATER = "retry_later"
    # Known not sent, final for this step (per-user marketing cap).
    DROP_STEP = "drop_step"
    # The number cannot receive messages: stop the cart.
    STOP_CART = "stop_cart"
    # The shopper stopped marketing messages (131050): record the opt-out.
    OPT_OUT = "opt_out"
    PAUSE_TEMPLATE = "pause_template"
    # Spam, integrity, token or billing problems: stop the store's sending, tell the merchant.
    PAUSE_STORE = "pause_store"
    # We cannot know whether it went out (timeout after sending): never retried blindly.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class SendOutcome:
    kind: OutcomeKind
    provider_message_id: str | None = None
    error_code: str | None = None
    error_detail: str | None = None
    retry_after: timedelta | None = None

    @classmethod
    def sent(cls, provider_message_id: str) -> SendOutcome:
        return cls(OutcomeKind.SENT, provider_message_id=provider_message_id)


class MessageTransport(Protocol):
    name: str
    # Sends need the store's WhatsApp number and Meta-approved templates (the cloud).
    needs_whatsapp_account: bool

    def send(self, message: OutboundMessage) -> SendOutcome: ...

    def send_text(self, message: OutboundText) -> SendOutcome: ...


@dataclass(frozen=True)
class Slot:
    """A message's place in its number's sending limits: send it not before ``send_at`` and
    not at all after ``send_by`` (this process's ``time.monotonic()``; None: no bound; a send
    that late would count in the next second's limit, so its step goes again later); or
    (``wait`` set) not in this batch: its step is due again ``wait`` from now."""

    send_at: float | None = None
    send_by: float | None = None
    wait: timedelta | None = None


GO_NOW = Slot()


@runtime_checkable
class SendsBatches(Protocol):
    """A transport that takes a batch (the engine's batches): each message's place in its
    number's sending limits first, before the ledger is written, then the messages at once."""

    def reserve(self, recipients: Sequence[tuple[Sender | None, str]]) -> list[Slot]:
        """For each (number, shopper's phone): its place in the number's limits."""
        ...

    def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]: ...

    def warm_up(self) -> None:
        """Start what sending needs before the first batch is due (a worker calls it as it
        starts): a batch's messages leave at their moments, not after it."""
        ...
