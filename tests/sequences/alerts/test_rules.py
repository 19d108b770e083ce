"""Each alert rule fires on the condition it names and stays quiet on a healthy store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import select

from connectors.base import PlatformError
from sequences.alerts import rules
from sequences.alerts.incidents import evaluate_alerts
from sequences.models import (
    Incident,
    MessageStatus,
    ReconciliationRun,
    RunStatus,
    Store,
    TemplateStatus,
    WebhookDelivery,
    WhatsAppAccount,
    WhatsAppTemplate,
)
from sequences.stores.access import call_platform
from tests.support.admin import _cart, _contact, _message
from tests.support.factories import make_store

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


@pytest.fixture
def store(runtime) -> Store:
    return make_store(runtime)


def _finding(runtime, store: Store, rule: Any, now: datetime = NOW) -> rules.Finding | None:
    with runtime.database.session() as session:
        fresh = session.get(Store, store.id)
        assert fresh is not None
        return rule(rules.StoreContext(runtime, session, fresh, now))


_numbers = iter(range(10_000, 1_000_000))


def _messages(
    runtime, store: Store, statuses: list[str], *, abandoned_at: datetime, created_at: datetime | None = None
) -> None:
    """One cart and its step-1 message per status, for one shopper each call."""
    with runtime.database.session() as session:
        row = session.get(Store, store.id)
        number = next(_numbers)
        contact = _contact(session, row, f"+91987{number:07d}", "Asha")
        for status in statuses:
            cart = _cart(session, row, next(_numbers), contact, abandoned_at=abandoned_at)
            extra: dict[str, Any] = {}
            if status == MessageStatus.FAILED:
                extra["failed_at"] = NOW - 5 * MIN
            if status in (MessageStatus.READ, MessageStatus.DELIVERED):
                extra["delivered_at"] = abandoned_at + 20 * MIN
            if status == MessageStatus.READ:
                extra["read_at"] = abandoned_at + 30 * MIN
            message = _message(session, cart, 1, status, **extra)
            if created_at is not None:
                message.created_at = created_at
        session.commit()


def test_failed_deliveries_fire_on_many_failures_in_30_minutes(runtime, store):
    recently = NOW - 10 * MIN
    _messages(
        runtime,
        store,
        [MessageStatus.FAILED] * 9 + [MessageStatus.SENT] * 6,
        abandoned_at=NOW - 40 * MIN,
        created_at=recently,
    )
    assert _finding(runtime, store, rules.failed_deliveries) is None  # 9: below the floor of 10
    _messages(runtime, store, [MessageStatus.FAILED] * 3, abandoned_at=NOW - 35 * MIN, created_at=recently)
    found = _finding(runtime, store, rules.failed_deliveries)
    assert found is not None and found.evidence == {"failed": 12, "attempted": 18, "share": 0.667}
    # Failures from an hour ago are not this half hour's.
    assert _finding(runtime, store, rules.failed_deliveries, NOW + 60 * MIN) is None


def test_a_read_rate_fall_beyond_chance_fires_and_noise_does_not(runtime, store):
    # Baseline: 10 days ago, 60 % read; yesterday's carts: 20 % read.
    _messages(
        runtime,
        store,
        [MessageStatus.READ] * 60 + [MessageStatus.DELIVERED] * 40,
        abandoned_at=NOW - timedelta(days=10),
    )
    _messages(
        runtime,
        store,
        [MessageStatus.READ] * 55 + [MessageStatus.DELIVERED] * 45,
        abandoned_at=NOW - timedelta(hours=36),
    )
    assert _finding(runtime, store, rules.read_rate_fall) is None  # 55 % against 60 %: chance
    _messages(runtime, store, [MessageStatus.DELIVERED] * 100, abandoned_at=NOW - timedelta(hours=30))
    found = _finding(runtime, store, rules.read_rate_fall)
    assert found is not None and found.evidence["rate"] == 0.275 and found.evidence["baseline"] == 0.6
    assert found.evidence["z"] < -3


def test_number_quality_templates_and_tokens(runtime, store):
    assert _finding(runtime, store, rules.number_quality) is None
    with runtime.database.session() as session:
        session.add(WhatsAppAccount(store_id=store.id, waba_id="1", phone_number_id="2", access_token_ciphertext="x",
                                    quality_rating="YELLOW", display_phone_number="+91 90000 00001"))  # fmt: skip
        session.add(
            WhatsAppTemplate(
                store_id=store.id, name="cart_recovery_image_v1", language="en", status=TemplateStatus.PAUSED
            )
        )
        session.commit()
    quality = _finding(runtime, store, rules.number_quality)
    assert quality is not None and quality.severity == rules.WARNING and quality.evidence["number"] == "0001"
    template = _finding(runtime, store, rules.template_paused)
    assert template is not None and "cart_recovery_image_v1 (en): PAUSED" in template.title
    assert _finding(runtime, store, rules.token_refresh_failing) is None
    with runtime.database.session() as session:
        row = session.get(Store, store.id)
        row.access_token_expires_at = NOW - 5 * MIN
        session.commit()
    assert _finding(runtime, store, rules.token_refresh_failing) is not None


def test_a_platform_failing_for_15_minutes_fires_and_a_working_call_clears_it(runtime, store):
    def refused(connector: Any, access: Any) -> None:
        raise PlatformError("demo store answered 503", retryable=True)

    import time_machine

    with time_machine.travel(NOW - 20 * MIN, tick=False), pytest.raises(PlatformError):
        call_platform(runtime, store.id, refused, operation="test_call")
    with time_machine.travel(NOW - 10 * MIN, tick=False), pytest.raises(PlatformError):
        call_platform(runtime, store.id, refused, operation="test_call")
    found = _finding(runtime, store, rules.platform_failing)
    assert found is not None and "20 minutes" in found.title and "503" in found.action
    assert _finding(runtime, store, rules.platform_failing, NOW - 10 * MIN) is None  # not 15 minutes yet then
    assert call_platform(runtime, store.id, lambda connector, access: "ok", operation="test_call") == "ok"
    assert _finding(runtime, store, rules.platform_failing) is None


def test_reconciliation_differences_fire_on_a_recent_run_that_found_new_ones(runtime, store):
    with runtime.database.session() as session:
        session.add(ReconciliationRun(store_id=store.id, trigger="schedule", status=RunStatus.DONE, period_start=NOW - timedelta(days=60),
                                      period_end=NOW - MIN, finished_at=NOW - MIN,
                                      report={"differences": [{"order_id": "1001", "kind": "refunded", "new": True},
                                                              {"order_id": "1002", "kind": "awaiting_payment", "new": True}],
                                              "messaging": {"days": [{"day": "2026-11-27", "explanation": "Meta billed 1 more"}]}}))  # fmt: skip
        session.commit()
    found = _finding(runtime, store, rules.reconciliation_differences)
    assert (
        found is not None
        and found.evidence["orders"] == ["1001"]
        and found.evidence["cost_days"] == ["2026-11-27"]
    )
    assert _finding(runtime, store, rules.reconciliation_differences, NOW + timedelta(days=9)) is None


def test_the_service_rules_see_late_carts_and_stalled_deliveries(runtime, store):
    with runtime.database.session() as session:
        contact = _contact(session, session.get(Store, store.id), "+919876500010", "Ravi")
        cart = _cart(session, session.get(Store, store.id), 1, contact, abandoned_at=NOW - 30 * MIN)
        cart.next_wake_at = NOW - 3 * MIN
        session.add(WebhookDelivery(platform="demo", store_id=store.id, delivery_id="d1", topic="checkouts/update",
                                    content_sha256="0" * 64, payload="{}", received_at=NOW - 7 * MIN))  # fmt: skip
        session.commit()
    with runtime.database.session() as session:
        late = rules.steps_late(session, NOW)
        pending = rules.deliveries_pending(session, NOW)
        assert rules.steps_late(session, NOW - 3 * MIN + 30 * timedelta(seconds=1)) is None
    assert late is not None and late.evidence["late_carts"] == 1
    assert pending is not None and "7 minutes" in pending.title


def test_a_rule_that_breaks_does_not_silence_the_others(runtime, store, monkeypatch):
    def broken(ctx: Any) -> None:
        raise RuntimeError("bug")

    with runtime.database.session() as session:
        row = session.get(Store, store.id)
        row.access_token_expires_at = NOW - 5 * MIN
        session.commit()
    monkeypatch.setattr(rules, "STORE_RULES", [broken, rules.token_refresh_failing])
    import sequences.alerts.incidents as incidents

    monkeypatch.setattr(incidents, "STORE_RULES", [broken, rules.token_refresh_failing])
    import time_machine

    with time_machine.travel(NOW, tick=False):
        report = evaluate_alerts(runtime)
    assert (report.failed_rules, report.opened) == (1, 1)
    with runtime.database.session() as session:
        assert [i.rule for i in session.exec(select(Incident)).all()] == ["token_refresh_failing"]


def _shoppers(runtime, store: Store, count: int, *, sent_at: datetime) -> None:
    """``count`` different shoppers, each sent one reminder at ``sent_at``."""
    with runtime.database.session() as session:
        row = session.get(Store, store.id)
        for _ in range(count):
            number = next(_numbers)
            contact = _contact(session, row, f"+91986{number:07d}", "Asha")
            cart = _cart(session, row, number, contact, abandoned_at=sent_at - 15 * MIN)
            _message(session, cart, 1, MessageStatus.DELIVERED, sent_at=sent_at)
        session.commit()


def test_the_daily_messaging_limit_warns_near_and_says_when_reached(runtime, store):
    _shoppers(runtime, store, 199, sent_at=NOW - 2 * 60 * MIN)
    _shoppers(runtime, store, 40, sent_at=NOW - 30 * 60 * MIN)  # yesterday's: outside the 24 hours
    assert _finding(runtime, store, rules.messaging_limit) is None  # no tier read yet: never guessed
    with runtime.database.session() as session:
        session.add(WhatsAppAccount(store_id=store.id, waba_id="1", phone_number_id="2", access_token_ciphertext="x",
                                    messaging_limit_tier="TIER_250"))  # fmt: skip
        session.commit()
    assert _finding(runtime, store, rules.messaging_limit) is None  # 199 of 250: under 80 %
    _shoppers(runtime, store, 1, sent_at=NOW - 60 * MIN)
    near = _finding(runtime, store, rules.messaging_limit)
    assert near is not None and near.severity == rules.WARNING and near.evidence["messaged_24h"] == 200
    _shoppers(runtime, store, 50, sent_at=NOW - 30 * MIN)
    reached = _finding(runtime, store, rules.messaging_limit)
    assert reached is not None and reached.severity == rules.CRITICAL and "reached" in reached.title


def test_the_number_check_reads_meta_s_messaging_limit(cloud):
    from sequences.whatsapp.accounts import check
    from tests.support.whatsapp import PHONE_NUMBER_ID

    cloud.graph.set_messaging_limit(PHONE_NUMBER_ID, "TIER_250")
    report = check(cloud.runtime, cloud.store_id, subscribe=False)
    assert report.facts["messaging_limit"] == "TIER_250"
    with cloud.runtime.database.session() as session:
        account = session.exec(select(WhatsAppAccount)).one()
    assert account.messaging_limit_tier == "TIER_250"
