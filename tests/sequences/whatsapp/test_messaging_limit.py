"""Meta's daily messaging limit: sending holds new shoppers before the limit (both send paths),
lets shoppers already messaged today through, and sends the held step once there is room."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from sequences.engine.sending import advance_cart
from sequences.models import StepStatus, WhatsAppAccount
from sequences.whatsapp import messaging_limit
from tests.support.journey import T0
from tests.support.whatsapp import WABA_ID

MIN = timedelta(minutes=1)
KEY = messaging_limit.KEY.format(waba_id=WABA_ID)


def _limit(cloud, tier: str) -> None:
    with cloud.runtime.database.session() as session:
        account = session.exec(select(WhatsAppAccount)).one()
        account.messaging_limit_tier = tier
        session.commit()


def _others(cloud, count: int, at) -> None:
    """Shoppers of other stores on the same portfolio, messaged at ``at``."""
    cloud.runtime.redis.zadd(KEY, {f"999:{n}": at.timestamp() for n in range(count)})


@pytest.mark.parametrize("path", ["dispatch", "per-cart"])
def test_a_new_shopper_waits_at_the_limit_and_goes_when_room_comes(cloud, path):
    _limit(cloud, "TIER_250")
    _others(cloud, 237, T0)  # 95 % of 250: the cap for new shoppers
    cloud.checkout()
    if path == "dispatch":
        cloud.run(15 * MIN)
    else:
        with cloud.at(15 * MIN):
            advance_cart(cloud.runtime, cloud.cart().id)
    assert cloud.sent() == []
    [step, *_] = cloud.steps()
    assert step.status == StepStatus.SCHEDULED and step.due_at == T0 + 45 * MIN
    assert cloud.cart().next_wake_at == T0 + 45 * MIN
    # Half an hour later the others' day is not over: still held. A day after them: room.
    cloud.run(45 * MIN)
    assert cloud.sent() == []
    cloud.runtime.redis.zrem(KEY, *[f"999:{n}" for n in range(10)])
    cloud.run(75 * MIN)
    assert len(cloud.sent()) == 1
    assert cloud.runtime.redis.zscore(KEY, f"{cloud.store_id}:{cloud.cart().contact_id}") is not None


def test_a_shopper_already_messaged_today_is_not_held(cloud):
    _limit(cloud, "TIER_250")
    cloud.checkout()
    contact_id = cloud.cart().contact_id
    _others(cloud, 300, T0)  # over the limit already...
    cloud.runtime.redis.zadd(
        KEY, {f"{cloud.store_id}:{contact_id}": T0.timestamp()}
    )  # ...but they count already
    cloud.run(15 * MIN)
    assert len(cloud.sent()) == 1


def test_an_unlimited_or_unknown_tier_never_holds_and_costs_no_redis_call(cloud):
    _others(cloud, 10_000, T0)
    cloud.checkout()
    cloud.run(15 * MIN)
    assert len(cloud.sent()) == 1  # tier not read yet: never held on a guess
    assert messaging_limit.limit_of("TIER_UNLIMITED") is None and messaging_limit.limit_of("TIER_2K") == 2_000
