"""Fixed-window request budgets in Redis, for endpoints anyone may call.

Anonymous endpoints that write a row or call out (``/woocommerce/connect`` writes a pending
connection and, in production, resolves the typed host) get a budget per client address, so
a script cannot fill the database or use cartback to probe DNS. The key holds a hash of the
address, not the address. When Redis cannot be reached the request goes ahead: the budget is
a guard against abuse, and refusing every merchant during a Redis outage would be worse.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger("cartback.rate_limits")

# The prefix length an ISP hands one IPv6 subscriber (RFC 6177: at least a /64).
IPV6_SUBSCRIBER_PREFIX = 64
# Redis keys: cartback:budget:<budget>:<hash of the client>:<window number>.
KEY_PREFIX = "cartback:budget"


@dataclass(frozen=True)
class Budget:
    name: str
    limit: int  # requests per window
    window_seconds: int


@dataclass(frozen=True)
class BudgetCheck:
    allowed: bool
    retry_after_seconds: int  # 0 when allowed


def client_key(address: str) -> str:
    """Whom a budget counts: an IPv4 address, or an IPv6 address's /64 (one subscriber's
    network: every address in it is theirs to use, so each must not get a budget of its own)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/{IPV6_SUBSCRIBER_PREFIX}", strict=False))
    return str(ip)


def spend(redis: Redis, budget: Budget, client: str, *, now: float | None = None) -> BudgetCheck:
    """Count one request of ``client`` (an address) against ``budget``; refused once the
    window's is spent."""
    moment = time.time() if now is None else now
    window = int(moment // budget.window_seconds)
    client_hash = hashlib.sha256(client_key(client).encode("utf-8", "replace")).hexdigest()[:24]
    key = f"{KEY_PREFIX}:{budget.name}:{client_hash}:{window}"
    try:
        pipeline = redis.pipeline()
        pipeline.incr(key)
        pipeline.expire(key, budget.window_seconds + 1)
        count = int(pipeline.execute()[0])
    except RedisError as exc:
        log.warning(
            "request budget not checked: Redis unreachable",
            extra={"budget": budget.name, "error": type(exc).__name__},
        )
        return BudgetCheck(allowed=True, retry_after_seconds=0)
    if count <= budget.limit:
        return BudgetCheck(allowed=True, retry_after_seconds=0)
    retry_after = int((window + 1) * budget.window_seconds - moment) + 1
    return BudgetCheck(allowed=False, retry_after_seconds=retry_after)
