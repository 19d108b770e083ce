"""The cloud transport: template messages through ``POST {graph}/{phone_number_id}/messages``.

Connections are kept alive and reused: one pooled httpx client per process for single sends
and Graph calls, and each send thread's own two connections for a batch's sends.
Before each send the number's next moment (its pace) and the recipient's pair slot are taken
in Redis, shared by all workers (``throttle``); a batch takes them for all its messages at once
(``reserve``, before the engine writes its ledger) and is then sent concurrently, each message
at its moment. What Meta answers becomes a ``SendOutcome`` through the
error policy in ``errors``; a timeout after the request went out is UNKNOWN, never retried,
because Meta may have sent it (invariant 1: a skipped message beats a duplicate).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx

from channels.transport import GO_NOW, OutboundMessage, OutboundText, OutcomeKind, Sender, SendOutcome, Slot
from channels.whatsapp.errors import THROUGHPUT, action_for
from channels.whatsapp.graph import parse_error
from channels.whatsapp.throttle import SendThrottle

log = logging.getLogger("cartback.whatsapp.cloud")

# Meta answers a send in well under a second; a read timeout means "maybe sent" (UNKNOWN).
SEND_TIMEOUT = httpx.Timeout(15.0, connect=3.0, pool=5.0)
# Enough connections for a threaded worker's sends in flight at once.
SEND_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=100)
# Sends in flight at once per process (a batch's calls overlap; Meta answers in ~100 ms, so
# this carries ~600 messages/s, beyond one upgraded number's 1,000/s only with more workers).
SEND_CONCURRENCY = 64
# A batch's moments start this far ahead: its ledger commits between the reservation and the
# first send (tens of ms on PostgreSQL with 100 carts, hundreds on a busy machine). A first
# moment passed by then would leave late, together with the next ones. The lead is learned:
# LEAD_MARGIN times the time this process's recent batches took per message, from
# RESERVE_LEAD_S up to MAX_LEAD_S.
RESERVE_LEAD_S = 0.1
MAX_LEAD_S = 1.0
LEAD_MARGIN = 1.5
# The longest a worker waits for its send threads to start (warm_up); more is a machine in
# trouble, and sending starts anyway.
WARM_UP_TIMEOUT_S = 10.0
# Each send thread's own connections (``_thread_client``): a thread has one request in
# flight at a time; a second kept alive saves a reconnect after Meta closes one.
THREAD_LIMITS = httpx.Limits(max_connections=2, max_keepalive_connections=2)
# Nothing left our side: these never reached Meta, so trying again cannot duplicate.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
NOT_SENT_RETRY_AFTER = timedelta(minutes=1)
# A send whose moment's second ended before it could leave goes again this much later: its
# number is busy, and other messages take the moments meanwhile.
MISSED_MOMENT_RETRY_AFTER = timedelta(seconds=1)


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
        self._senders: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._pool_lock = threading.Lock()
        # One TLS context for every send thread's client: each builds its own otherwise (the
        # CA bundle read and parsed again), ~15 ms of CPU per thread, 64 threads a worker.
        self._tls: ssl.SSLContext | None = None
        self._departures = _Departures(self._pool)
        # Seconds from a batch's reservation to its hand-over, per message (a moving average).
        self._ledger_s_per_message = 0.0

    def reserve(self, recipients: Sequence[tuple[Sender | None, str]]) -> list[Slot]:
        """Each message's moment in its number's pace (throttle), before the ledger is written."""
        slots: list[Slot] = [GO_NOW] * len(recipients)
        by_number: dict[str, list[int]] = defaultdict(list)
        for index, (sender, _phone) in enumerate(recipients):
            if sender is not None:
                by_number[sender.phone_number_id].append(index)
        lead_s = min(
            MAX_LEAD_S, max(RESERVE_LEAD_S, LEAD_MARGIN * self._ledger_s_per_message * len(recipients))
        )
        # Read back by send_batch in this thread: the batch's ledger is written in between.
        self._local.reserved = (time.monotonic(), len(recipients))
        for number, indexes in by_number.items():
            sender = recipients[indexes[0]][0]
            assert sender is not None
            taken = self._throttle.reserve(
                number,
                sender.messages_per_second,
                [recipients[index][1] for index in indexes],
                lead_s=lead_s,
            )
            for index, slot in zip(indexes, taken, strict=True):
                slots[index] = slot
        return slots

    def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        """Messages whose moments ``reserve`` took, each sent at its moment, concurrently (each
        waits ~100 ms on Meta)."""
        if len(messages) == 1:
            return [self._send(messages[0], throttled=False)]
        now = time.monotonic()
        reserved: tuple[float, int] | None = getattr(self._local, "reserved", None)
        if reserved is not None:
            self._local.reserved = None
            reserved_at, count = reserved
            per_message = (now - reserved_at) / max(count, 1)
            self._ledger_s_per_message += (per_message - self._ledger_s_per_message) * 0.2
        leaving = [
            self._departures.at(
                message.send_at or now,
                lambda message=message: self._send(message, throttled=False, pooled=True),  # type: ignore[misc]
            )
            for message in messages
        ]
        return [future.result() for future in leaving]

    def warm_up(self) -> None:
        """Every send thread started, each with its client. Started as a batch needs them,
        the first batch's threads came up one by one after its first moments had passed, and
        those messages left together (bench (f): 15 in 30 ms, above 80/s in that second)."""
        pool = self._pool()
        # Each task waits for all the others: the pool starts a thread for every one.
        everyone = threading.Barrier(SEND_CONCURRENCY)

        def start() -> None:
            self._thread_client()
            with contextlib.suppress(threading.BrokenBarrierError):
                everyone.wait(timeout=WARM_UP_TIMEOUT_S)

        for future in [pool.submit(start) for _ in range(SEND_CONCURRENCY)]:
            future.result()

    def _thread_client(self) -> httpx.Client:
        """The send thread's own keep-alive connections. One pool shared by every send thread
        is scanned under one lock on each request and again on each response (httpcore):
        ~25% of a worker's CPU at 64 threads (bench (f), py-spy)."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            with self._pool_lock:
                if self._tls is None:
                    self._tls = httpx.create_ssl_context()
            client = httpx.Client(
                timeout=self._http.timeout, limits=THREAD_LIMITS, follow_redirects=False, verify=self._tls
            )
            self._local.client = client
        return client

    def _pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._senders is None:
                self._senders = ThreadPoolExecutor(
                    max_workers=SEND_CONCURRENCY, thread_name_prefix="graph-send"
                )
            return self._senders

    def send(self, message: OutboundMessage) -> SendOutcome:
        return self._send(message, throttled=True)

    def _send(self, message: OutboundMessage, *, throttled: bool, pooled: bool = False) -> SendOutcome:
        # The client first: a send thread's first one is built here (~1 ms, the shared TLS
        # context ~15 ms for the first), which must not make it leave after its moment.
        http = self._thread_client() if pooled else self._http
        if message.send_at is not None and (delay := message.send_at - time.monotonic()) > 0:
            # Its number's pace (reserve): the moment it may leave.
            time.sleep(delay)
        if message.send_by is not None and time.monotonic() > message.send_by and message.sender:
            # Too late for its moment's second: sent now, it would count in the next one, above
            # the number's rate there. Not sent, so trying again cannot duplicate it.
            self._throttle.release_recipient(message.sender.phone_number_id, message.to_phone_e164)
            return SendOutcome(
                OutcomeKind.RETRY_LATER,
                error_code="throttled",
                error_detail="its moment in the number's pace passed before it could leave",
                retry_after=MISSED_MOMENT_RETRY_AFTER,
            )
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
        return self._post(
            message.sender,
            message.to_phone_e164,
            payload,
            message_id=message.message_id,
            throttled=throttled,
            http=http,
        )

    def send_text(self, message: OutboundText) -> SendOutcome:
        payload = {
            **_addressed(message.to_phone_e164),
            "type": "text",
            "text": {"body": message.body, "preview_url": False},
        }
        return self._post(message.sender, message.to_phone_e164, payload, message_id=None, throttled=True)

    def _post(
        self,
        sender: Sender | None,
        to_phone_e164: str,
        payload: dict[str, Any],
        *,
        message_id: int | None,
        throttled: bool,
        http: httpx.Client | None = None,
    ) -> SendOutcome:
        if sender is None:
            return SendOutcome(OutcomeKind.DROP_STEP, error_detail="no WhatsApp number connected")
        waiting = (
            self._throttle.acquire(sender.phone_number_id, sender.messages_per_second, to_phone_e164)
            if throttled
            else None
        )
        if waiting is not None:
            return SendOutcome(
                OutcomeKind.RETRY_LATER,
                error_code="throttled",
                error_detail=waiting.reason,
                retry_after=timedelta(seconds=max(1.0, waiting.retry_after_seconds)),
            )
        try:
            response = (http or self._http).post(
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


class _Departures:
    """Hands each of a batch's sends to the send threads at its moment, from one thread that
    keeps them in order of moment. A send thread that slept until its moment carried nothing
    meanwhile: with up to ~0.35 s of lead and wait plus Meta's ~0.1 s per send, 64 threads
    carried ~140 messages/s a process, below ten numbers' 800/s, and a send queued behind
    sleeping threads left after its moment."""

    def __init__(self, pool: Callable[[], ThreadPoolExecutor]) -> None:
        self._pool = pool
        self._due: list[tuple[float, int, Callable[[], SendOutcome], Future[SendOutcome]]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def at(self, moment: float, send: Callable[[], SendOutcome]) -> Future[SendOutcome]:
        """``send()`` run by a send thread from ``moment`` (``time.monotonic()``) on."""
        future: Future[SendOutcome] = Future()
        with self._changed:
            heapq.heappush(self._due, (moment, next(self._order), send, future))
            if self._thread is None or self._pid != os.getpid():
                # Started where it is first needed; a forked child starts its own.
                self._thread = threading.Thread(target=self._run, name="graph-departures", daemon=True)
                self._pid = os.getpid()
                self._thread.start()
            self._changed.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._due or (wait := self._due[0][0] - time.monotonic()) > 0:
                    self._changed.wait(None if not self._due else wait)
                _moment, _order, send, future = heapq.heappop(self._due)
            try:
                self._pool().submit(_settle, send, future)
            except RuntimeError as exc:
                # The pool is shut down (the interpreter is exiting): the batch waiting on this
                # send learns it, rather than waiting for ever.
                future.set_exception(exc)


def _settle(send: Callable[[], SendOutcome], future: Future[SendOutcome]) -> None:
    if future.set_running_or_notify_cancel():
        try:
            future.set_result(send())
        except Exception as exc:  # noqa: BLE001 - the caller's future.result() raises it
            future.set_exception(exc)


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
