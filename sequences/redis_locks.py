"""One process at a time per key, across processes: a Redis lock that degrades to no lock.

Used around platform work that must not run twice at once (a token refresh, webhook
registration, a click's rebuild). When Redis is down the work goes ahead unlocked: the
database's own guards keep it correct, and reaching the platform beats not reaching it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger("cartback.locks")


@contextmanager
def redis_lock(redis: Redis, key: str, *, timeout: float, wait: float) -> Iterator[bool | None]:
    """Hold ``key`` for at most ``timeout`` seconds, waiting up to ``wait`` for it.

    Yields True when held, False when another process kept it all that time, None when Redis
    could not be reached (nothing held). Released on the way out when held.
    """
    lock = redis.lock(key, timeout=timeout)
    try:
        held: bool | None = bool(lock.acquire(blocking=True, blocking_timeout=wait))
    except RedisError:
        held = None
    try:
        yield held
    finally:
        if held:
            try:
                lock.release()
            except RedisError:
                log.warning("lock not released (it expires by itself)", extra={"key": key})
