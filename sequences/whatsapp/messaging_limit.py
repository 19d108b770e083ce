"""Meta's daily messaging limit: how many unique shoppers a business may message (outside a
conversation they opened) in a moving 24 hours; 250 for a new business portfolio, then 2,000,
10,000, 100,000 or unlimited (Meta's "Messaging limits"). The tier is read with each number
check (``accounts.check``).

- Sending holds before the limit (``admit``): a Redis sorted set per WhatsApp Business Account
  keeps each shopper messaged and when; a shopper already in the last 24 hours always passes
  (they do not count again), a new one only while fewer than HOLD_AT of the limit are used. The
  check and the reservation are one Lua script, so concurrent workers never overshoot. A held
  step waits (``engine.sending.channel_guard``) instead of collecting Meta's refusals.
- The alert rule counts the shoppers this store messaged from its messages
  (``shoppers_messaged``): near at 80 %, reached at 100 %.

Meta counts the whole portfolio: other apps or numbers of the same portfolio count too, which
cartback cannot see.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from redis.exceptions import RedisError
from sqlalchemy import distinct, func
from sqlmodel import Session, col, select

from sequences.models import Message, WhatsAppAccount
from sequences.runtime import Runtime

log = logging.getLogger("cartback.messaging_limit")

# Tier -> unique shoppers per 24 hours; None: no limit. TIER_50 and TIER_1K are the per-number
# tiers from before October 2025, still reported by old accounts.
TIER_LIMITS: dict[str, int | None] = {
    "TIER_50": 50,
    "TIER_250": 250,
    "TIER_1K": 1_000,
    "TIER_2K": 2_000,
    "TIER_10K": 10_000,
    "TIER_100K": 100_000,
    "TIER_UNLIMITED": None,
}
WINDOW = timedelta(hours=24)
# New shoppers are held once this share of the limit is used: room for Meta's count running a
# little ahead of ours (a send whose answer was lost, another sender on the portfolio).
HOLD_AT = 0.95
KEY = "cartback:messaged:{waba_id}"
# Member: "<store id>:<contact id>", score: the send's time (s). Expired members are dropped
# first; a member already there is refreshed and admitted; a new one is added only below the cap.
_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local now, cap, member = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if redis.call('ZSCORE', KEYS[1], member) then
  redis.call('ZADD', KEYS[1], now, member)
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= cap then
  return 0
end
redis.call('ZADD', KEYS[1], now, member)
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""
# A reminder goes out within a day of its cart's abandonment: bounds the dashboard index's range.
STEP_SPAN = timedelta(hours=48)


def limit_of(tier: str | None) -> int | None:
    """The tier's limit; None for unlimited or a tier not known (never hold on a guess)."""
    return TIER_LIMITS.get(tier or "")


def shoppers_messaged(session: Session, store_id: int, now: datetime) -> int:
    """Unique shoppers this store sent a reminder to in the last 24 hours."""
    return int(
        session.exec(
            select(func.count(distinct(col(Message.contact_id)))).where(
                Message.store_id == store_id,
                col(Message.cart_abandoned_at) >= now - STEP_SPAN,
                col(Message.sent_at) >= now - WINDOW,
            )
        ).one()
    )


def admit(runtime: Runtime, account: WhatsAppAccount, contact_id: int | None, now: datetime) -> bool:
    """May this shopper be messaged now under the portfolio's daily limit? Reserves their place
    when so. Unlimited or unknown tiers, and Redis unreachable, admit (Meta still decides)."""
    limit = limit_of(account.messaging_limit_tier)
    if limit is None or contact_id is None:
        return True
    cap = int(limit * HOLD_AT)
    stamp = now.timestamp()
    try:
        admitted = runtime.redis.eval(
            _ADMIT,
            1,
            KEY.format(waba_id=account.waba_id),
            stamp - WINDOW.total_seconds(),
            stamp,
            cap,
            f"{account.store_id}:{contact_id}",
            int(WINDOW.total_seconds()) + 3600,
        )
    except RedisError:
        log.warning("messaging limit not checked: Redis unreachable", extra={"store_id": account.store_id})
        return True
    return bool(admitted)
