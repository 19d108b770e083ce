"""Meta's send limits, shared by every worker through Redis.

- Per number: messages are paced, one every 1/rate of a second (80 messages/s by default,
  1,000 once Meta upgrades the number). Redis keeps the number's next free moment; a sender
  takes the next moments in turn (GCRA: no burst allowance, so no second ever carries more
  than the rate, across all workers) and sends each message at its moment. Moments lie
  halfway between the marks of a grid on the Redis clock (whole multiples of the interval),
  so at 80/s every second of that clock holds exactly 80 of them, 6.25 ms from its edges: a
  message that leaves a few ms early or late (clocks read a round trip apart, a thread
  waking) still counts in its moment's own second. Only moments within MAX_WAIT_SECONDS are sent: the send
  decision is committed before the wait, and a long wait would let a STOP land before the
  send. A batch's messages beyond that are given a turn: a later moment kept for each (the
  next free moment moves past it, so no other message takes it), which the message takes
  when it comes back. A 130429 answer pushes the next free moment back for everyone
  (``back_off``), and a turn that falls inside the pause is given up.
- Per recipient: one message per 6 s to the same shopper from the same number (Meta's pair
  rate limit, 131056). Keys hold a hash of the phone, never the phone itself.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis import Redis

from channels.transport import Slot

# Meta's pair rate limit: 1 message per 6 s to one user (DESIGN.md, throughput).
PAIR_INTERVAL_MS = 6000
# How far ahead a sender may take a number's moments: the send decision is already
# committed, so a long wait would let a STOP land before the send.
MAX_WAIT_SECONDS = 0.25
# A message given a turn is due again this long before it: the dispatcher's poll (0.1 s),
# the claim and the batch's ledger all fit before the turn, which stays within
# MAX_WAIT_SECONDS of the message's next batch.
EARLY_SECONDS = MAX_WAIT_SECONDS
MIN_WAIT_SECONDS = 0.01
# After Meta says 130429, the number pauses this long (ms) for everyone.
BACK_OFF_MS = 1000
# The number's keys outlive its last moment (or turn) by this (ms): an idle number costs nothing.
KEY_TTL_MS = 60_000
# Marks a message without a kept turn among the turns passed to the script.
NO_TURN = -1

# KEYS[1] the number's next free moment (ms, Redis's clock), KEYS[2] its back-off flag.
# ARGV: ms between two messages, how far ahead moments may be sent (ms), the keys' TTL (ms),
# 1 to give turns to the messages beyond that (a batch) or 0 (one send), the lead (ms): no new
# moment sooner than that from now; then one value per message: the turn kept for it (ms since
# the epoch on Redis's clock), or NO_TURN. Returns Redis's now (ms since the epoch), then per
# message the ms until its moment, or negated, the ms until its turn (a batch) or until a
# moment could be free (one send). A kept turn is the message's own: returned as it is, unless
# it has passed or a back-off covers it (then the message is a new one). Turns travel as
# moments of Redis's clock, not as delays: a delay measured by a worker grows by each call's
# round trip (ms when its threads are busy), and a turn must be found again to the
# millisecond. Numbers travel as strings: Redis truncates a Lua number reply to an integer.
_TAKE_MOMENTS = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + tonumber(now_parts[2]) / 1000
local interval = tonumber(ARGV[1])
local horizon = tonumber(ARGV[2])
local give_turns = ARGV[4] == '1'
local earliest = now + tonumber(ARGV[5])
local paused_until = now
local backoff = redis.call('PTTL', KEYS[2])
if backoff > 0 then paused_until = now + backoff end
if earliest < paused_until then earliest = paused_until end
local stored = tonumber(redis.call('GET', KEYS[1]))
local next_free = stored
if next_free == nil or next_free < earliest then
  -- Halfway between two marks of the grid (whole multiples of the interval on Redis's clock).
  next_free = math.ceil((earliest - interval / 2) / interval) * interval + interval / 2
end
local reply = {string.format('%.3f', now)}
for i = 6, #ARGV do
  local turn = tonumber(ARGV[i])
  if turn >= now and turn >= paused_until then
    if turn - now <= horizon then reply[#reply + 1] = tostring(turn - now) else reply[#reply + 1] = tostring(-(turn - now)) end
  elseif next_free - now <= horizon then
    reply[#reply + 1] = tostring(next_free - now)
    next_free = next_free + interval
  elseif give_turns then
    reply[#reply + 1] = tostring(-(next_free - now))
    next_free = next_free + interval
  else
    reply[#reply + 1] = tostring(-(next_free - now))
  end
end
if next_free ~= stored then
  redis.call('SET', KEYS[1], string.format('%.3f', next_free), 'PX', math.ceil(next_free - now) + tonumber(ARGV[3]))
end
return reply
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
        self._take = redis.register_script(_TAKE_MOMENTS)
        self._pair_interval_ms = pair_interval_ms

    def _moments(
        self,
        phone_number_id: str,
        messages_per_second: int,
        turns: Sequence[datetime | None],
        *,
        give_turns: bool,
        lead_s: float = 0.0,
    ) -> list[Slot]:
        """A place in the number's pace for each message: its kept turn (a moment of the pace's
        clock), or (None) the next moment, none sooner than ``lead_s`` from now. Moments within
        MAX_WAIT_SECONDS after that are sent; beyond it, a message is given a turn
        (``give_turns``) or told when a moment could be free."""
        keys = [f"cartback:wa:next:{phone_number_id}", f"cartback:wa:backoff:{phone_number_id}"]
        interval_ms = 1000 / max(1, messages_per_second)
        now_ms, *reply = self._take(
            keys=keys,
            args=[
                interval_ms,
                (lead_s + MAX_WAIT_SECONDS) * 1000,
                KEY_TTL_MS,
                int(give_turns),
                lead_s * 1000,
                *(NO_TURN if turn is None else turn.timestamp() * 1000 for turn in turns),
            ],
        )
        now = float(now_ms) / 1000
        slots = []
        for value in reply:
            seconds = float(value) / 1000
            if seconds >= 0:
                slots.append(Slot(send_in=timedelta(seconds=seconds)))
                continue
            # Due again a little before its turn: taken then, with the wait the pace asks, so
            # a number kept busy never idles between two batches.
            wait = timedelta(seconds=max(MIN_WAIT_SECONDS, -seconds - EARLY_SECONDS))
            if not give_turns:
                slots.append(Slot(wait=wait))
                continue
            turn_at = datetime.fromtimestamp(now - seconds, UTC)
            slots.append(Slot(wait=wait, turn=timedelta(seconds=-seconds), turn_at=turn_at))
        return slots

    def acquire(self, phone_number_id: str, messages_per_second: int, to_phone_e164: str) -> Throttled | None:
        """One message: its number's moment (waited for, up to MAX_WAIT_SECONDS) and the
        recipient's pair slot; None when it may go now."""
        [slot] = self._moments(phone_number_id, messages_per_second, [None], give_turns=False)
        if slot.wait is not None:
            return Throttled(slot.wait.total_seconds() + EARLY_SECONDS, "number throughput")
        pair = _recipient_key(self._key, phone_number_id, to_phone_e164)
        if not self._redis.set(pair, 1, nx=True, px=self._pair_interval_ms):
            remaining = max(int(self._redis.pttl(pair)), 1)
            return Throttled(remaining / 1000, "one message per 6 s to the same shopper")
        if slot.send_in > timedelta(0):
            time.sleep(slot.send_in.total_seconds())
        return None

    def reserve(
        self,
        phone_number_id: str,
        messages_per_second: int,
        recipients: list[str],
        *,
        lead_s: float = 0.0,
        turns: Sequence[datetime | None] | None = None,
    ) -> list[Slot]:
        """A batch for one number: each recipient's moment, taken in one call without waiting,
        none sooner than ``lead_s`` (the time the batch needs before it can send: a moment
        that passes meanwhile would leave late, together with the next ones, above the rate).
        A recipient with a turn kept by an earlier batch (``turns``: ``Slot.turn_at``) takes
        it, and no new moment. Messages beyond MAX_WAIT_SECONDS are given a turn of their own, after
        every moment and turn already given (so they come back one by one, each to a moment
        nobody else takes); a recipient already messaged within the pair interval (or twice in
        the batch) waits that out."""
        if not recipients:
            return []
        slots = self._moments(
            phone_number_id,
            messages_per_second,
            list(turns) if turns is not None else [None] * len(recipients),
            give_turns=True,
            lead_s=lead_s,
        )
        going = [index for index, slot in enumerate(slots) if slot.wait is None]
        pairs = [_recipient_key(self._key, phone_number_id, recipients[index]) for index in going]
        pipeline = self._redis.pipeline(transaction=False)
        for pair in pairs:
            pipeline.set(pair, 1, nx=True, px=self._pair_interval_ms)
        refused = [
            (index, pair)
            for index, pair, took in zip(going, pairs, pipeline.execute(), strict=True)
            if not took
        ]
        if refused:
            pipeline = self._redis.pipeline(transaction=False)
            for _index, pair in refused:
                pipeline.pttl(pair)
            for (index, _pair), remaining in zip(refused, pipeline.execute(), strict=True):
                slots[index] = Slot(wait=timedelta(milliseconds=max(int(remaining), 1)))
        return slots

    def back_off(self, phone_number_id: str) -> None:
        self._redis.set(f"cartback:wa:backoff:{phone_number_id}", 1, px=BACK_OFF_MS)
