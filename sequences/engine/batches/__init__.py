"""Sending in batches: a claimed batch of carts in a few statements, its messages all at once.

engine.dispatch claims the carts whose moment came and hands them here. ``advance_batch``
does for the common case what sending.advance_cart does for one cart, in three steps:

1. The ledger (``ledger``), in one transaction under the locks (contacts, then carts, each by id; the
   dashboard's buckets at commit, rollups): every cart's state read in a few statements, the
   guards checked, and for every step going out now the step SENDING, its message row, the
   cart's next moment and the dashboard's deltas written with Core statements. The numbers'
   sending limits are taken before the commit, so a message that may not go yet never
   enters the ledger. Committed before any transport call: a worker that dies after it
   leaves its steps SENDING, settled later as UNCERTAIN, never sent twice (invariant 1).
2. The transport carries the batch at once (the cloud transport's calls run concurrently).
3. The outcomes (``outcomes``), in one transaction under the same locks: "sent" written for the batch, with
   each cart's next moment.

Only the common path is decided here: a cart whose moment came (abandoned now, or mid-
sequence) with a consenting shopper, one step due and every guard passing, or its next step
not due yet. Anything else (a guard that skips the step, a sequence over, a step left
sending, an older sequence to replace, a message row already there from a retry, an answer
other than "sent", Meta's webhook settling the step first) goes to sending.advance_cart or
sending.finish_send, which decide every case. The whole test suite runs through this path
(tests/conftest.py drains through engine.dispatch), so the two cannot drift apart unseen.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from channels.transport import OutboundMessage, OutcomeKind, SendOutcome, SendsBatches
from sequences.engine.batches.ledger import write_ledger
from sequences.engine.batches.outcomes import record_outcomes
from sequences.engine.sending import advance_cart, finish_send, observe_lateness
from sequences.runtime import Runtime

__all__ = ["advance_batch", "transmit"]

log = logging.getLogger("cartback.batches")


def advance_batch(runtime: Runtime, cart_ids: Sequence[int]) -> None:
    """Run the clock tick of every cart in ``cart_ids`` (claimed by the caller)."""
    if not cart_ids:
        return
    in_flight, per_cart = write_ledger(runtime, sorted(set(cart_ids)))
    if in_flight:
        # The batch's messages first: they are what is due now; the rare carts left to the
        # per-cart path (a sequence ending, a guard skipping a step) follow.
        observe_lateness(runtime, [sending.due_at for sending in in_flight])
        outcomes = transmit(runtime, [sending.outbound for sending in in_flight])
        for cart_id, decision, outcome in record_outcomes(runtime, in_flight, outcomes):
            try:
                finish_send(runtime, cart_id, decision, outcome, [])
            except Exception:
                log.exception("send outcome not recorded; the step settles later", extra={"cart_id": cart_id})
    for cart_id in per_cart:
        _one_cart(runtime, cart_id)


def _one_cart(runtime: Runtime, cart_id: int) -> None:
    try:
        advance_cart(runtime, cart_id)
    except Exception:
        # The claim's lease brings it back.
        log.exception("cart not advanced; it comes due again after the lease", extra={"cart_id": cart_id})


def transmit(runtime: Runtime, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
    """Hand the batch to the transport; a transport without batches gets them one by one."""
    transport = runtime.transport
    try:
        if isinstance(transport, SendsBatches):
            return transport.send_batch(messages)
    except Exception as exc:
        log.exception("transport raised on a batch", extra={"messages": len(messages)})
        return [SendOutcome(OutcomeKind.UNKNOWN, error_detail=type(exc).__name__) for _ in messages]
    outcomes = []
    for message in messages:
        try:
            outcomes.append(transport.send(message))
        except Exception as exc:
            log.exception("transport raised", extra={"message_id": message.message_id})
            outcomes.append(SendOutcome(OutcomeKind.UNKNOWN, error_detail=type(exc).__name__))
    return outcomes
