"""The cloud transport: template messages through ``POST {graph}/{phone_number_id}/messages``.

One pooled httpx client per process (connections are reused across sends and threads).
Before each send the number's token bucket and the recipient's pair slot are taken in Redis,
shared by all workers (``throttle``). What Meta answers becomes a ``SendOutcome`` through the
error policy in ``errors``; a timeout after the request went out is UNKNOWN, never retried,
because Meta may have sent it (invariant 1: a skipped message beats a duplicate).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import httpx

from channels.transport import OutboundMessage, OutboundText, OutcomeKind, Sender, SendOutcome
from channels.whatsapp.errors import THROUGHPUT, action_for
from channels.whatsapp.graph import parse_error
from channels.whatsapp.throttle import SendThrottle

log = logging.getLogger("cartback.whatsapp.cloud")

# Meta answers a send in well under a second; a read timeout means "maybe sent" (UNKNOWN).
SEND_TIMEOUT = httpx.Timeout(15.0, connect=3.0, pool=5.0)
# Enough connections for a threaded worker's sends in flight at once.
SEND_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=100)
# Nothing left our side: these never reached Meta, so trying again cannot duplicate.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
NOT_SENT_RETRY_AFTER = timedelta(minutes=1)


def recipient(phone_e164: str) -> str:
    """Cloud API ``to``: the number in international form, digits only."""
    return phone_e164.lstrip("+")


def _addressed(phone_e164: str) -> dict[str, str]:
    """What every Cloud API message starts with: the product and one shopper."""
    return {"messaging_product": "whatsapp", "recipient_type": "individual", "to": recipient(phone_e164)}


def new_http_client() -> httpx.Client:
    return httpx.Client(timeout=SEND_TIMEOUT, limits=SEND_LIMITS, follow_redirects=False)


class CloudTransport:
    name = "cloud"
    needs_whatsapp_account = True

    def __init__(self, graph_url: str, http: httpx.Client, throttle: SendThrottle) -> None:
        self._graph_url = graph_url.rstrip("/")
        self._http = http
        self._throttle = throttle

    def send(self, message: OutboundMessage) -> SendOutcome:
        payload = {
            **_addressed(message.to_phone_e164),
            "type": "template",
            "template": {
                "name": message.template_name,
                "language": {"code": message.language, "policy": "deterministic"},
                "components": message.components,
            },
            "biz_opaque_callback_data": message.biz_opaque_callback_data,
        }
        return self._post(message.sender, message.to_phone_e164, payload, message_id=message.message_id)

    def send_text(self, message: OutboundText) -> SendOutcome:
        payload = {
            **_addressed(message.to_phone_e164),
            "type": "text",
            "text": {"body": message.body, "preview_url": False},
        }
        return self._post(message.sender, message.to_phone_e164, payload, message_id=None)

    def _post(
        self, sender: Sender | None, to_phone_e164: str, payload: dict[str, Any], *, message_id: int | None
    ) -> SendOutcome:
        if sender is None:
            return SendOutcome(OutcomeKind.DROP_STEP, error_detail="no WhatsApp number connected")
        throttled = self._throttle.acquire(sender.phone_number_id, sender.messages_per_second, to_phone_e164)
        if throttled is not None:
            return SendOutcome(
                OutcomeKind.RETRY_LATER,
                error_code="throttled",
                error_detail=throttled.reason,
                retry_after=timedelta(seconds=max(1.0, throttled.retry_after_seconds)),
            )
        try:
            response = self._http.post(
                f"{self._graph_url}/{sender.phone_number_id}/messages",
                json=payload,
                headers={"Authorization": f"Bearer {sender.access_token}"},
            )
        except NOT_SENT_ERRORS as exc:
            log.warning("graph unreachable", extra={"message_id": message_id, "error": type(exc).__name__})
            return SendOutcome(
                OutcomeKind.RETRY_LATER, error_detail=type(exc).__name__, retry_after=NOT_SENT_RETRY_AFTER
            )
        except httpx.HTTPError as exc:
            log.warning("graph answer lost", extra={"message_id": message_id, "error": type(exc).__name__})
            return SendOutcome(
                OutcomeKind.UNKNOWN, error_detail=f"no answer from Meta ({type(exc).__name__})"
            )
        if response.status_code == 200:
            return _accepted(response, message_id)
        error = parse_error(response)
        if error.code == THROUGHPUT:
            self._throttle.back_off(sender.phone_number_id)
        action = action_for(error.code, response.status_code)
        log.info(
            "graph refused send",
            extra={"message_id": message_id, "code": error.code, "http_status": response.status_code},
        )
        return SendOutcome(
            action.kind,
            error_code=str(error.code) if error.code is not None else f"http_{response.status_code}",
            error_detail=action.merchant_reason or str(error),
            retry_after=action.retry_after,
        )


def _accepted(response: httpx.Response, message_id: int | None) -> SendOutcome:
    try:
        wamid = response.json()["messages"][0]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        wamid = None
    if not isinstance(wamid, str) or not wamid:
        # 200 without a message id: Meta took it but we cannot tell; never resend.
        log.warning("graph accepted without a message id", extra={"message_id": message_id})
        return SendOutcome(OutcomeKind.UNKNOWN, error_detail="Meta answered without a message id")
    return SendOutcome.sent(wamid)
