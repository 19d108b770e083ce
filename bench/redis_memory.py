"""(d) Redis memory per pending cart: what one future alarm costs while it waits.

A pending cart is, in Redis, exactly what ``schedule_wake`` writes for a due time in the
future: the rq job hash ``rq:job:wake-{cart}-{epoch}`` plus one member of the sorted set
``rq:scheduled:default``. The database holds the cart itself (invariant 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.environment import BenchEnv
from bench.report import Section, say
from sequences.engine.scheduling import schedule_wake, wake_job_id
from sequences.runtime import QUEUE_NAME

ABOUT = """
Redis memory per pending cart: on an emptied Redis, one alarm is set first (so the Lua script,
the scheduled-jobs sorted set and the queue registry exist and are not charged to the carts),
`INFO memory` `used_memory` is read, 10,000 alarms are set exactly as the engine sets them
(`schedule_wake` with due times 4 to ~7 hours ahead), and `used_memory` is read again: the
difference divided by 10,000 is the cost of one pending cart. Target ≤ 1 KB. The breakdown
uses `MEMORY USAGE` on one job hash and on the sorted set (divided by its size), and lists the
job hash's fields by size. Redis runs with `--save '' --appendonly no` and default
encodings (`hash-max-listpack-value 64`).
"""

# rq's zset key for scheduled jobs of our queue.
SCHEDULED_KEY = f"rq:scheduled:{QUEUE_NAME}"
FIRST_CART_ID = 1_000_000


@dataclass(frozen=True)
class MemoryConfig:
    carts: int = 10_000
    ahead: timedelta = timedelta(hours=4)


def quick() -> MemoryConfig:
    return MemoryConfig(carts=2_000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def run(env: BenchEnv, config: MemoryConfig | None = None) -> Section:
    config = config or MemoryConfig()
    section = Section("memory", "(d) Redis per pending cart", ABOUT)
    say(f"(d) Redis memory per pending cart, {config.carts:,} alarms")
    with env.scenario("memory") as scenario:
        runtime = scenario.runtime
        client = env.redis.client()
        try:
            base = datetime.now(UTC) + config.ahead
            # Warm-up alarm: fixed costs (script cache, the zset and set keys) are not per cart.
            schedule_wake(runtime, FIRST_CART_ID, base)
            before = _used_memory(client)
            keys_before = int(client.dbsize())
            for n in range(1, config.carts + 1):
                # One second apart: distinct scores, as real carts abandoned at different times.
                if not schedule_wake(runtime, FIRST_CART_ID + n, base + timedelta(seconds=n)):
                    raise RuntimeError("schedule_wake failed: Redis unreachable?")
            after = _used_memory(client)
            keys_after = int(client.dbsize())
            per_cart = (after - before) / config.carts
            job_key = f"rq:job:{wake_job_id(FIRST_CART_ID + 1, base + timedelta(seconds=1))}"
            job_bytes = int(client.memory_usage(job_key, samples=0) or 0)
            zset_bytes = int(client.memory_usage(SCHEDULED_KEY, samples=0) or 0)
            zset_members = int(client.zcard(SCHEDULED_KEY))
            encoding = _text(client.object("encoding", job_key))
            fields = {_text(k): _raw(v) for k, v in client.hgetall(job_key).items()}
            ttl = int(client.ttl(job_key))
        finally:
            client.close()

    section.add(
        "**bytes per pending cart** (used_memory delta)", f"**{per_cart:,.0f} B**", "target ≤ 1,024 B"
    )
    section.add(
        "keys per pending cart",
        f"{(keys_after - keys_before) / config.carts:.2f}",
        f"+ one member of {SCHEDULED_KEY}",
    )
    section.add(
        "job hash (MEMORY USAGE)",
        f"{job_bytes:,} B",
        f"{len(fields)} fields, encoding {encoding}, TTL {'none' if ttl < 0 else f'{ttl} s'}",
    )
    section.add(
        "sorted-set entry (MEMORY USAGE / members)",
        f"{zset_bytes / max(zset_members, 1):,.0f} B",
        f"{zset_members:,} members",
    )
    section.add("100,000 pending carts would take", f"{per_cart * 100_000 / 2**20:,.0f} MiB")
    largest = sorted(fields.items(), key=lambda item: len(item[1]), reverse=True)
    payload = sum(len(k) + len(v) for k, v in fields.items())
    section.note(
        f"job hash {job_key}: {payload:,} bytes of field names and values; largest fields: "
        + ", ".join(f"`{name}` {len(value)} B" for name, value in largest[:6])
    )
    say(f"  fields of one job: {', '.join(f'{k}={len(v)}B' for k, v in largest)}")
    return section
