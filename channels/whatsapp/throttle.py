"""Meta's send limits, shared by every worker through Redis.

- Per number: messages are paced, one every 1/rate of a second (80 messages/s by default,
  1,000 once Meta upgrades the number). Redis keeps the number's next free moment; a sender
  takes the next moments in turn (GCRA: no burst allowance, across all workers) and sends
  each message at its moment. The moments lie on a grid of Redis's clock (at 4 messages/s
  or more, whose moments are closer together than a sender may wait): ``rate`` to each
  whole second, evenly from its start to SECOND_GUARD_MS before its end, so every second
  holds exactly ``rate`` of them (any 1 s window at most one more) and a send that leaves a
  little late still counts in its own second; one that could not leave by then does not go
  (``Slot.send_by``). Only moments within MAX_WAIT_SECONDS are taken: the send decision is
  committed before the wait, and a long wait would let a STOP land before the send. A 130429
  answer pushes the next free moment back for everyone (``back_off``), not only for the
  worker that was told.
- Per recipient: one message per 6 s to the same shopper from the same number (Meta's pair
  rate limit, 131056). Keys hold a hash of the phone, never the phone itself.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import timedelta

from redis import Redis

from channels.transport import Slot

# Meta's pair rate limit: 1 message per 6 s to one user (DESIGN.md, throughput).
PAIR_INTERVAL_MS = 6000
# How far ahead a sender may take a number's moments: the send decision is already
# committed, so a long wait would let a STOP land before the send.
MAX_WAIT_SECONDS = 0.25
# A message that must wait its turn is due again this long before its moment, and never
# sooner than MIN_WAIT_SECONDS: time for a dispatcher's poll (0.1 s), its claim and the
# batch's lead (0.1 s), so it takes its moment before the moment passes unused.
EARLY_SECONDS = 0.3
MIN_WAIT_SECONDS = 0.01
# Turns are promised this much faster than the number's rate. Returning carts are then always a
# little more than the moments can take, so the number's next free moment stays near the far
# end of what a sender may take (the surplus is told to wait again), and a stall of a worker
# or two (~0.15 s on two shared CPUs) finds moments still ahead rather than passing unused. At
# exactly the rate nothing pulled it back up after a stall: it sank to the lead, and each
# second's last moments were lost (bench (f), 1 number: 1 run in 5 at 80 messages/s, against
# 5 in 5 with 3 %).
TURN_SURPLUS = 1.03
# Each second's moments end this long (ms) before it does: a send that leaves late by up to
# that (a busy worker's threads wait for the GIL) still counts in its own second.
SECOND_GUARD_MS = 150
# A send must have left this long before the end of its moment's second (``Slot.send_by``):
# between the check and Meta's receipt lie the request's writing and the network.
SEND_BY_MARGIN_S = 0.05
# After Meta says 130429, the number pauses this long (ms) for everyone.
BACK_OFF_MS = 1000
# The number's keys outlive its last moment by this (ms): an idle number costs nothing.
KEY_TTL_MS = 60_000

# KEYS[1] the number's next free moment (ms, Redis's clock), KEYS[2] its back-off flag,
# KEYS[3] the end of its queue: the turns promised to messages told to wait.
# ARGV: messages per second, moments wanted, how far ahead they may be taken (ms), the keys'
# TTL (ms), 1 to promise turns to the messages told to wait (a batch) or 0 (one send), the
# lead (ms): no moment sooner than that from now (nor within a back-off), the ms at the end of
# each second that hold no moment (SECOND_GUARD_MS), 1 to put the moments on the grid or 0 (a
# rate under 4/s, whose grid points lie further apart than a sender may wait: a batch asking
# between two would find none), the turns' pace as a multiple of the rate. Returns {for each
# moment taken "ms until it:ms until the end of its second"..., then for each message told to
# wait, negated, the ms until its turn}. Numbers travel as strings: Redis truncates a Lua
# number reply to an integer.
_TAKE_MOMENTS = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + tonumber(now_parts[2]) / 1000
local rate = tonumber(ARGV[1])
local interval = (1000 - tonumber(ARGV[7])) / rate
local wanted = tonumber(ARGV[2])
local horizon = tonumber(ARGV[3])
-- The first moment of the grid at or after t: second + k * interval, k < rate, computed from
-- the second each time (never summed up, so it never drifts off the grid); the guard at the
-- end of the second holds none.
local gridded = ARGV[8] == '1'
local function on_grid(t)
  if not gridded then return t end
  local second = math.floor(t / 1000) * 1000
  -- (a hundredth of an interval's tolerance: t was stored to a thousandth of a ms)
  local k = math.ceil((t - second) / interval - 0.01)
  if k >= rate then return second + 1000 end
  return second + k * interval
end
-- The moment after t: the next grid point, or one interval later off the grid.
local function following(t)
  if gridded then return on_grid(t + interval / 2) end
  return t + interval
end
local earliest = now + tonumber(ARGV[6])
local backoff = redis.call('PTTL', KEYS[2])
if backoff > 0 and now + backoff > earliest then earliest = now + backoff end
local next_free = tonumber(redis.call('GET', KEYS[1]))
if next_free == nil or next_free < earliest then next_free = earliest end
next_free = on_grid(next_free)
local reply = {}
while #reply < wanted and next_free - now <= horizon do
  -- Off the grid no second has a guard to leave late in: no deadline then.
  local second_end = ''
  if gridded then second_end = tostring(math.floor(next_free / 1000) * 1000 + 1000 - now) end
  reply[#reply + 1] = tostring(next_free - now) .. ':' .. second_end
  next_free = following(next_free)
end
-- Written in full: tostring keeps 14 digits, a hundredth of a ms at today's epoch, which put
-- a moment stored as x.375 ms at x.4, past its place on the grid (a moment lost a batch).
if #reply > 0 then redis.call('SET', KEYS[1], string.format('%.3f', next_free), 'PX', ARGV[4]) end
if #reply < wanted and ARGV[5] == '0' then
  -- One message that must wait: when the next moment is free, nothing promised.
  reply[#reply + 1] = tostring(-(next_free - now))
elseif #reply < wanted then
  -- Each waiting message gets its own turn after those already promised, so messages told
  -- to wait by different batches come back one by one, not all at once.
  -- The turns run evenly, not on the grid (turns bunched after each second's guard brought
  -- their carts back together, too late for the moments before it), a little faster than the
  -- rate (ARGV[9], TURN_SURPLUS): the askers keep ahead of the moments.
  local tail = tonumber(redis.call('GET', KEYS[3]))
  if tail == nil or tail < next_free then tail = next_free end
  while #reply < wanted do
    reply[#reply + 1] = tostring(-(tail - now))
    tail = tail + 1000 / (rate * tonumber(ARGV[9]))
  end
  redis.call('SET', KEYS[3], string.format('%.3f', tail), 'PX', ARGV[4])
end
return reply
"""


def _second_guard_ms(messages_per_second: int) -> float:
    """SECOND_GUARD_MS, less at a low rate: the moment after the guard stays within
    MAX_WAIT_SECONDS of the one before it (at 5/s: 50 ms), so one send at the end of a second
    is never refused for the guard alone."""
    return max(0.0, min(SECOND_GUARD_MS, MAX_WAIT_SECONDS * 1000 - 1000 / messages_per_second))


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
        self, phone_number_id: str, messages_per_second: int, wanted: int, *, queue: bool, lead_s: float = 0.0
    ) -> list[Slot]:
        """The next ``wanted`` places of the number's pace, none sooner than ``lead_s`` from now:
        moments taken within MAX_WAIT_SECONDS after that, and (``queue``) turns promised to the
        rest."""
        keys = [
            f"cartback:wa:next:{phone_number_id}",
            f"cartback:wa:backoff:{phone_number_id}",
            f"cartback:wa:queue:{phone_number_id}",
        ]
        asked_at = time.monotonic()
        reply = self._take(
            keys=keys,
            args=[
                max(1, messages_per_second),
                wanted,
                (lead_s + MAX_WAIT_SECONDS) * 1000,
                KEY_TTL_MS,
                int(queue),
                lead_s * 1000,
                _second_guard_ms(max(1, messages_per_second)),
                int(1 / max(1, messages_per_second) <= MAX_WAIT_SECONDS),
                TURN_SURPLUS,
            ],
        )
        # Redis read its clock between these two: a moment counted from the answer is never
        # early, a deadline counted from the question never late.
        answered_at = time.monotonic()
        slots = []
        for value in reply:
            if isinstance(value, bytes):
                value = value.decode()
            moment, taken, second_end = str(value).partition(":")
            seconds = float(moment) / 1000
            if taken:
                slots.append(
                    Slot(
                        send_at=answered_at + seconds,
                        send_by=asked_at + float(second_end) / 1000 - SEND_BY_MARGIN_S
                        if second_end
                        else None,
                    )
                )
            else:
                # Due again a little before its turn: taken then, with the wait the pace asks,
                # so a number kept busy never idles between two batches.
                slots.append(Slot(wait=timedelta(seconds=max(MIN_WAIT_SECONDS, -seconds - EARLY_SECONDS))))
        return slots

    def acquire(self, phone_number_id: str, messages_per_second: int, to_phone_e164: str) -> Throttled | None:
        """One message: its number's moment (waited for, up to MAX_WAIT_SECONDS) and the
        recipient's pair slot; None when it may go now."""
        [slot] = self._moments(phone_number_id, messages_per_second, 1, queue=False)
        if slot.wait is not None:
            return Throttled(slot.wait.total_seconds() + EARLY_SECONDS, "number throughput")
        pair = _recipient_key(self._key, phone_number_id, to_phone_e164)
        if not self._redis.set(pair, 1, nx=True, px=self._pair_interval_ms):
            remaining = max(int(self._redis.pttl(pair)), 1)
            return Throttled(remaining / 1000, "one message per 6 s to the same shopper")
        if slot.send_at is not None and (delay := slot.send_at - time.monotonic()) > 0:
            time.sleep(delay)
        return None

    def reserve(
        self, phone_number_id: str, messages_per_second: int, recipients: list[str], *, lead_s: float = 0.0
    ) -> list[Slot]:
        """A batch for one number: each recipient's moment, taken in one call without waiting,
        none sooner than ``lead_s`` (the time the batch needs before it can send: a moment
        that passes meanwhile would leave late, together with the next ones, above the rate).
        Messages beyond MAX_WAIT_SECONDS are promised a turn after every turn already promised,
        at the number's rate and TURN_SURPLUS more (so they come back a few at a time, and are
        taken then, or told to wait again); a
        recipient already messaged within the pair interval (or twice in the batch) waits that
        out."""
        if not recipients:
            return []
        slots = self._moments(
            phone_number_id, messages_per_second, len(recipients), queue=True, lead_s=lead_s
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

    def release_recipient(self, phone_number_id: str, to_phone_e164: str) -> None:
        """A message reserved but not sent (its moment passed): the shopper's pair slot is free
        again, so its retry is not held 6 s for a message that never left."""
        self._redis.delete(_recipient_key(self._key, phone_number_id, to_phone_e164))

    def back_off(self, phone_number_id: str) -> None:
        self._redis.set(f"cartback:wa:backoff:{phone_number_id}", 1, px=BACK_OFF_MS)
