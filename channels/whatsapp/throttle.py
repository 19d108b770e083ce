"""Meta's send limits, shared by every worker through Redis.

- Per number: a token bucket refilled at the number's messages/second (80 by default, 1,000
  once Meta upgrades it), holding at most one second's worth. A 130429 answer empties it for
  a moment (``back_off``), so all workers slow down together, not only the one that was told.
- Per recipient: one message per 6 s to the same shopper from the same number (Meta's pair
  rate limit, 131056). Keys hold a hash of the phone, never the phone itself.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from redis import Redis

# Meta's pair rate limit: 1 message per 6 s to one user (DESIGN.md, throughput).
PAIR_INTERVAL_MS = 6000
# How long a sender may wait for a token before giving the step back to the scheduler: the
# send decision is already committed, so a long wait would let a STOP land before the send.
MAX_WAIT_SECONDS = 0.25
# After Meta says 130429, the number pauses this long (ms) for everyone.
BACK_OFF_MS = 1000

# Token bucket: KEYS[1] bucket hash, KEYS[2] back-off flag; ARGV rate/s, capacity.
# Returns 0 when a token was taken, else the milliseconds until one will be there.
_TAKE_BUCKET_SLOT = """
local backoff = redis.call('PTTL', KEYS[2])
if backoff > 0 then return backoff end
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil then tokens = capacity; at = now end
tokens = math.min(capacity, tokens + (now - at) * rate / 1000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], 60000)
return wait
"""


# A batch's share of the bucket: KEYS as above; ARGV rate/s, capacity, tokens wanted.
# Returns {tokens granted, milliseconds until the next token (0 when all were granted)};
# during a back-off, {0, the back-off's remaining milliseconds}.
_TAKE_BUCKET_SLOTS = """
local backoff = redis.call('PTTL', KEYS[2])
if backoff > 0 then return {0, backoff} end
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil then tokens = capacity; at = now end
tokens = math.min(capacity, tokens + (now - at) * rate / 1000)
local granted = math.min(wanted, math.floor(tokens))
tokens = tokens - granted
local wait = 0
if granted < wanted then wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], 60000)
return {granted, wait}
"""


@dataclass(frozen=True)
class Throttled:
    """Not now: how long until it could go (seconds)."""

    retry_after_seconds: float
    reason: str


def _recipient_key(key: bytes, phone_number_id: str, to_phone_e164: str) -> str:
    # Keyed: a plain hash of a 10-digit mobile number is reversed by trying them all.
    digest = hmac.new(key, f"{phone_number_id}:{to_phone_e164}".encode(), hashlib.sha256).hexdigest()[:24]
    return f"cartback:wa:pair:{digest}"


class SendThrottle:
    def __init__(self, redis: Redis, *, key: str, pair_interval_ms: int = PAIR_INTERVAL_MS) -> None:
        self._redis = redis
        self._key = key.encode()
        self._take = redis.register_script(_TAKE_BUCKET_SLOT)
        self._take_many = redis.register_script(_TAKE_BUCKET_SLOTS)
        self._pair_interval_ms = pair_interval_ms

    def acquire(self, phone_number_id: str, messages_per_second: int, to_phone_e164: str) -> Throttled | None:
        """Take the number's token (waiting up to MAX_WAIT_SECONDS) and the recipient's slot."""
        deadline = time.monotonic() + MAX_WAIT_SECONDS
        keys = [f"cartback:wa:bucket:{phone_number_id}", f"cartback:wa:backoff:{phone_number_id}"]
        rate = max(1, messages_per_second)
        while True:
            wait_ms = int(self._take(keys=keys, args=[rate, rate]))
            if wait_ms <= 0:
                break
            if time.monotonic() + wait_ms / 1000 > deadline:
                return Throttled(wait_ms / 1000, "number throughput")
            time.sleep(wait_ms / 1000)
        pair = _recipient_key(self._key, phone_number_id, to_phone_e164)
        if not self._redis.set(pair, 1, nx=True, px=self._pair_interval_ms):
            remaining = max(int(self._redis.pttl(pair)), 1)
            return Throttled(remaining / 1000, "one message per 6 s to the same shopper")
        return None

    def reserve(
        self, phone_number_id: str, messages_per_second: int, recipients: list[str]
    ) -> list[float | None]:
        """A batch for one number: for each recipient, None when its message may go now, else
        the seconds to wait. The number's tokens are taken in one call, without waiting:
        messages beyond them wait their turn at the number's rate; a recipient already
        messaged within the pair interval (or twice in the batch) waits that out."""
        if not recipients:
            return []
        keys = [f"cartback:wa:bucket:{phone_number_id}", f"cartback:wa:backoff:{phone_number_id}"]
        rate = max(1, messages_per_second)
        granted, wait_ms = (
            int(value) for value in self._take_many(keys=keys, args=[rate, rate, len(recipients)])
        )
        waits: list[float | None] = [
            None if index < granted else (wait_ms + (index - granted) * 1000 / rate) / 1000
            for index in range(len(recipients))
        ]
        going = [index for index, wait in enumerate(waits) if wait is None]
        pairs = [_recipient_key(self._key, phone_number_id, recipients[index]) for index in going]
        pipeline = self._redis.pipeline(transaction=False)
        for pair in pairs:
            pipeline.set(pair, 1, nx=True, px=self._pair_interval_ms)
        refused = [
            (index, pair)
            for index, pair, taken in zip(going, pairs, pipeline.execute(), strict=True)
            if not taken
        ]
        if refused:
            pipeline = self._redis.pipeline(transaction=False)
            for _index, pair in refused:
                pipeline.pttl(pair)
            for (index, _pair), remaining in zip(refused, pipeline.execute(), strict=True):
                waits[index] = max(int(remaining), 1) / 1000
        return waits

    def back_off(self, phone_number_id: str) -> None:
        self._redis.set(f"cartback:wa:backoff:{phone_number_id}", 1, px=BACK_OFF_MS)
