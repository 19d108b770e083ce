"""Meta's error codes mapped to what the engine does about them (DESIGN.md, error policy).

The same table applies to a send refused at once and to a ``failed`` status webhook later:
131049/131050/131026 usually arrive the second way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from channels.transport import OutcomeKind

# Throughput (130429) and per-recipient pair rate (131056): transient; wait and try again.
THROUGHPUT_RETRY_AFTER = timedelta(seconds=30)
PAIR_RATE_RETRY_AFTER = timedelta(minutes=1)
TRANSIENT_RETRY_AFTER = timedelta(minutes=2)

THROUGHPUT = 130429
PAIR_RATE = 131056
MARKETING_CAP = 131049
USER_STOPPED_MARKETING = 131050
UNDELIVERABLE = 131026
TEMPLATE_PAUSED = 132015
TEMPLATE_DISABLED = 132016
# Spam rate limit, policy block, account locked, token, billing, number not registered:
# every further send makes things worse, so the store's sending stops and the merchant is told.
STORE_STOPPERS = {
    131048: "Meta is limiting this number because shoppers reported messages as spam",
    368: "Meta temporarily blocked this account for policy violations",
    131031: "Meta locked this WhatsApp Business account",
    190: "the WhatsApp access token expired or was revoked: paste a new system-user token",
    131042: "Meta refused to charge the WhatsApp Business account: check its payment method",
    133010: "the phone number is not registered on the Cloud API",
    # A token without permission on this number (Graph's generic permission errors).
    10: "the access token has no permission on this WhatsApp number",
    200: "the access token has no permission on this WhatsApp number",
}
# Transient on Meta's side, and the message was not taken: try again later.
TRANSIENT = {2, 4, 80007, 131016}
# "Something went wrong" / unknown: Meta may have taken the message. Never resent (invariant 1).
AMBIGUOUS = {1, 131000}
# Template errors that are about this message's values (parameter count, format, length),
# not the template: the step is dropped, the template keeps working for every other cart.
MESSAGE_CONTENT = {131008, 131009, 132000, 132005, 132007, 132012, 132018}
# The shopper is part of a Meta experiment that holds marketing messages back.
EXPERIMENT = 130472


@dataclass(frozen=True)
class ErrorAction:
    kind: OutcomeKind
    retry_after: timedelta | None = None
    merchant_reason: str | None = None


def action_for(code: int | None, http_status: int | None = None) -> ErrorAction:
    if code == THROUGHPUT:
        return ErrorAction(OutcomeKind.RETRY_LATER, THROUGHPUT_RETRY_AFTER)
    if code == PAIR_RATE:
        return ErrorAction(OutcomeKind.RETRY_LATER, PAIR_RATE_RETRY_AFTER)
    if code == MARKETING_CAP:
        return ErrorAction(OutcomeKind.DROP_STEP)
    if code == USER_STOPPED_MARKETING:
        return ErrorAction(OutcomeKind.OPT_OUT)
    if code == UNDELIVERABLE:
        return ErrorAction(OutcomeKind.STOP_CART)
    if code in MESSAGE_CONTENT or code == EXPERIMENT:
        return ErrorAction(OutcomeKind.DROP_STEP)
    if code is not None and 132000 <= code <= 132999:
        return ErrorAction(OutcomeKind.PAUSE_TEMPLATE)
    if code in STORE_STOPPERS:
        return ErrorAction(OutcomeKind.PAUSE_STORE, merchant_reason=STORE_STOPPERS[code])
    if code in TRANSIENT:
        return ErrorAction(OutcomeKind.RETRY_LATER, TRANSIENT_RETRY_AFTER)
    if code in AMBIGUOUS or (code is None and http_status is not None and http_status >= 500):
        # A 5xx without Meta's word (a proxy, a timeout upstream) may follow an accepted send.
        return ErrorAction(OutcomeKind.UNKNOWN)
    # Anything else is about this message (a bad parameter, an unsupported recipient): final
    # for the step, never retried blindly.
    return ErrorAction(OutcomeKind.DROP_STEP)


# Failures that say nothing about the number's health: the shopper's own choice or cap, or
# Meta asking us to slow down (retried anyway).
NOT_HEALTH_SIGNALS = {
    str(code) for code in (USER_STOPPED_MARKETING, MARKETING_CAP, EXPERIMENT, THROUGHPUT, PAIR_RATE)
}
