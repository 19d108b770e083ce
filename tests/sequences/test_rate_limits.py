"""Request budgets per client (sequences.rate_limits), on a real Redis."""

from __future__ import annotations

from sequences.rate_limits import Budget, client_key, spend

BUDGET = Budget("test", limit=2, window_seconds=60)


def test_a_client_gets_its_budget_then_is_told_when_to_come_back(redis_conn):
    first = spend(redis_conn, BUDGET, "203.0.113.5", now=1_000.0)
    second = spend(redis_conn, BUDGET, "203.0.113.5", now=1_001.0)
    third = spend(redis_conn, BUDGET, "203.0.113.5", now=1_010.0)

    assert (first.allowed, second.allowed, third.allowed) == (True, True, False)
    # The window of 60 s that began at 960 ends at 1,020: 10 s (and a second's margin) later.
    assert third.retry_after_seconds == 11
    assert spend(redis_conn, BUDGET, "203.0.113.5", now=1_020.0).allowed


def test_every_address_of_one_ipv6_subscriber_shares_a_budget(redis_conn):
    spend(redis_conn, BUDGET, "2001:db8:1:2::1", now=1_000.0)
    spend(redis_conn, BUDGET, "2001:db8:1:2::ffff", now=1_000.0)

    assert not spend(redis_conn, BUDGET, "2001:db8:1:2:abcd::9", now=1_000.0).allowed
    assert spend(redis_conn, BUDGET, "2001:db8:1:3::1", now=1_000.0).allowed
    assert client_key("2001:db8:1:2:abcd::9") == "2001:db8:1:2::/64"
    assert client_key("203.0.113.5") == "203.0.113.5"


def test_without_redis_the_request_goes_ahead():
    from redis import Redis

    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)

    assert spend(unreachable, BUDGET, "203.0.113.5").allowed
