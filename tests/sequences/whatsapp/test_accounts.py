"""Connecting a number, checking it with Meta, pushing templates, the send limits, health."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from click.testing import CliRunner
from sqlmodel import select

from channels.whatsapp.templates import DEFINITIONS
from channels.whatsapp.throttle import EARLY_SECONDS, SECOND_GUARD_MS, TURN_SURPLUS, SendThrottle
from sequences.models import (
    Message,
    MessageStatus,
    RecoveryStep,
    Store,
    TemplateStatus,
    WhatsAppAccount,
    WhatsAppTemplate,
)
from sequences.whatsapp.accounts import AccountError, check, connect
from sequences.whatsapp.health import FAILURE_RATE_WINDOW, check_failure_rate
from sequences.whatsapp.template_push import push_templates
from tests.support.whatsapp import ACCESS_TOKEN, PHONE_NUMBER_ID, WABA_ID


def test_the_token_is_stored_encrypted(cloud):
    with cloud.runtime.database.session() as session:
        account = session.exec(select(WhatsAppAccount)).one()
    assert ACCESS_TOKEN not in account.access_token_ciphertext
    assert cloud.runtime.secrets.decrypt(account.access_token_ciphertext) == ACCESS_TOKEN


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"waba_id": "WABA-1"}, "Business Account id is a number"),
        ({"phone_number_id": "+91 90000 00001"}, "not the phone number"),
        ({"access_token": "short"}, "incomplete"),
        ({"default_language": "fr"}, "en, hi"),
    ],
)
def test_connecting_with_wrong_details_says_which_and_saves_nothing(runtime, fields, words):
    from tests.support.factories import make_store

    store = make_store(runtime)
    details = {"waba_id": WABA_ID, "phone_number_id": PHONE_NUMBER_ID, "access_token": ACCESS_TOKEN} | fields
    with pytest.raises(AccountError, match=words):
        connect(runtime, store.id or 0, **details)
    with runtime.database.session() as session:
        assert session.exec(select(WhatsAppAccount)).all() == []


def test_check_reports_the_number_and_subscribes_our_app(cloud):
    report = check(cloud.runtime, cloud.store_id)
    assert report.ok, report.problems
    assert report.facts["verified_name"] == "Kurta Corner" and report.facts["quality_rating"] == "GREEN"
    assert cloud.graph.subscribed(WABA_ID)
    with cloud.runtime.database.session() as session:
        account = session.exec(select(WhatsAppAccount)).one()
    assert account.display_phone_number == "+91 90000 00001" and account.checked_at is not None


def test_check_says_what_to_do_about_a_revoked_token(cloud):
    cloud.graph.revoke_token(ACCESS_TOKEN)
    report = check(cloud.runtime, cloud.store_id)
    assert not report.ok
    assert "refused the access token" in report.problems[0] and "system-user token" in report.problems[0]


def test_check_catches_a_number_of_another_account(cloud):
    cloud.graph.add_account("102290129340399", "106540352242999", "EAAG-other-token-0123456789abcdef")
    with cloud.runtime.database.locked_session() as session:
        account = session.exec(select(WhatsAppAccount)).one()
        account.phone_number_id = "106540352242999"
        account.access_token_ciphertext = cloud.runtime.secrets.encrypt("EAAG-other-token-0123456789abcdef")
        cloud.graph.add_token("EAAG-other-token-0123456789abcdef", WABA_ID)
    report = check(cloud.runtime, cloud.store_id)
    assert any("does not belong" in problem for problem in report.problems)


def test_a_red_quality_rating_pauses_sending_and_green_resumes_it(cloud):
    cloud.graph.set_quality(PHONE_NUMBER_ID, "RED")
    assert not check(cloud.runtime, cloud.store_id).ok
    assert cloud.store().sending_paused and cloud.store().pause_source == "quality"
    cloud.graph.set_quality(PHONE_NUMBER_ID, "GREEN")
    assert check(cloud.runtime, cloud.store_id).ok
    assert not cloud.store().sending_paused


def test_templates_push_creates_every_template_with_its_examples(cloud):
    # The cloud fixture pushed them (auto-approved by the fake): all four are on the WABA
    for definition in DEFINITIONS:
        stored = cloud.graph.template(WABA_ID, definition.name, definition.language)
        assert stored is not None
    with cloud.runtime.database.session() as session:
        rows = session.exec(select(WhatsAppTemplate)).all()
    assert {(row.name, row.language, row.status) for row in rows} == {
        (d.name, d.language, TemplateStatus.APPROVED) for d in DEFINITIONS
    }
    # The image header's example was uploaded through the Resumable Upload API
    assert any(r.path.endswith(f"{cloud.graph.app_id}/uploads") for r in cloud.graph.requests)


def test_pushing_again_reads_back_the_templates_that_exist(cloud):
    lines: list[str] = []
    results = push_templates(cloud.runtime, cloud.store_id, progress=lines.append)
    assert {result.status for result in results} == {"APPROVED"}
    assert all(result.detail == "already on the account" for result in results)
    assert lines[0].startswith("uploading") and "[4/4]" in " ".join(lines)


def test_new_templates_wait_for_review(cloud):
    cloud.graph.reset()
    cloud.graph.add_account(WABA_ID, PHONE_NUMBER_ID, ACCESS_TOKEN, display_phone_number="+91 90000 00001")
    cloud.graph.auto_approve = False
    results = push_templates(cloud.runtime, cloud.store_id)
    assert {result.status for result in results} == {"PENDING"}


def test_the_cli_checks_a_store(cloud, monkeypatch):
    from app.cli.main import main

    monkeypatch.setattr("app.cli.whatsapp.build_runtime", lambda _settings: cloud.runtime)
    result = CliRunner().invoke(main, ["whatsapp", "check", "--store", "demo-bazaar"])
    assert result.exit_code == 0, result.output
    assert "All good" in result.output
    cloud.graph.revoke_token(ACCESS_TOKEN)
    result = CliRunner().invoke(main, ["whatsapp", "check", "--store", "demo-bazaar"])
    assert result.exit_code == 1 and "system-user token" in result.output


def test_throughput_is_shared_through_redis(redis_conn):
    # Given a number allowed 5 messages per second, used by two throttles (two workers)
    first, second = (
        SendThrottle(redis_conn, key="k", pair_interval_ms=1),
        SendThrottle(redis_conn, key="k", pair_interval_ms=1),
    )
    started = time.monotonic()
    refusals = 0
    for index in range(15):
        throttle = first if index % 2 else second
        while (waited := throttle.acquire("pn-1", 5, f"+9198765{index:05d}")) is not None:
            # A wait longer than the sender may hold its decision goes back to the scheduler
            refusals += 1
            time.sleep(waited.retry_after_seconds)
    # Then 15 sends took about 2.8 s (one every 0.2 s, no burst), not less
    assert time.monotonic() - started >= 2.7
    assert refusals == 0  # at 5/s the next moment is 0.2 s away: within the sender's wait


def test_one_message_per_6_seconds_to_the_same_shopper(redis_conn):
    throttle = SendThrottle(redis_conn, key="k")
    assert throttle.acquire("pn-1", 80, "+919876543210") is None
    refused = throttle.acquire("pn-1", 80, "+919876543210")
    assert refused is not None and 5 < refused.retry_after_seconds <= 6
    assert throttle.acquire("pn-1", 80, "+919811112222") is None
    # The key holds a hash, never the number
    assert not any(b"9876543210" in key for key in redis_conn.keys("cartback:wa:*"))


def test_a_high_failure_rate_pauses_sending(cloud):
    cloud.checkout()
    cloud.run(timedelta(minutes=15))
    template = cloud.messages()[0]
    with cloud.runtime.database.locked_session() as session:
        for index in range(FAILURE_RATE_WINDOW):
            step = RecoveryStep(
                store_id=template.store_id, cart_id=template.cart_id, step_number=10 + index, status="sent"
            )
            session.add(step)
            session.flush()
            assert step.id is not None
            session.add(
                Message(
                    store_id=template.store_id,
                    cart_id=template.cart_id,
                    step_id=step.id,
                    contact_id=template.contact_id,
                    transport="cloud",
                    template_name=template.template_name,
                    language="en",
                    status=MessageStatus.FAILED if index % 3 else MessageStatus.DELIVERED,
                    error_code="131026" if index % 3 else None,
                )
            )
    with cloud.runtime.database.locked_session() as session:
        store = session.exec(select(Store)).one()
        assert check_failure_rate(session, store, datetime.now(UTC))
    store = cloud.store()
    assert (
        store.sending_paused
        and store.pause_source == "failure_rate"
        and "of the last 20" in (store.pause_reason or "")
    )


def test_the_sweep_rereads_stale_numbers_and_pauses_a_red_one(cloud):
    from sequences.engine.sweep import run_sweep

    cloud.graph.set_quality(PHONE_NUMBER_ID, "RED")
    assert run_sweep(cloud.runtime).numbers_checked == 1
    assert cloud.store().sending_paused and cloud.store().pause_source == "quality"
    # Checked a moment ago: the next sweep leaves it for an hour
    assert run_sweep(cloud.runtime).numbers_checked == 0


def _just_before_a_whole_second(redis_conn) -> None:
    """Redis's clock 5-10 ms before a whole second: the number's grid of moments starts there,
    so the next moment is about now (and the figures below read as if the grid were not there)."""
    while True:
        _seconds, microseconds = redis_conn.time()
        fraction = microseconds / 1_000_000
        if 0.990 <= fraction < 0.995:
            return
        time.sleep(0.002 if 0.985 <= fraction < 0.990 else (0.985 - fraction) % 1)


def test_a_batch_takes_the_numbers_next_moments_and_the_rest_wait_their_turn(redis_conn):
    # Given a number allowed 5 messages per second, asked for 8 at once by one worker's batch
    throttle = SendThrottle(redis_conn, key="k", pair_interval_ms=1)
    _just_before_a_whole_second(redis_conn)
    asked_at = time.monotonic()
    moments = throttle.reserve("pn-1", 5, [f"+9198765{index:05d}" for index in range(8)])
    # Then the moments within the sender's wait are taken, one every 0.2 s...
    going = [moment.send_at for moment in moments if moment.send_at is not None]
    assert [round(moment - asked_at, 1) for moment in going] == [0.0, 0.2]
    # ...and the other 6 wait their turn, in order, at the number's pace
    waits = [moment.wait.total_seconds() for moment in moments[len(going) :] if moment.wait is not None]
    assert len(waits) == 6
    # (due again a little before their moments, so the number never idles between batches)
    assert [round(wait + EARLY_SECONDS, 1) for wait in waits] == [0.4, 0.6, 0.8, 1.0, 1.2, 1.4]
    # ...and another worker asking at once gets nothing before those turns
    [other] = SendThrottle(redis_conn, key="k", pair_interval_ms=1).reserve("pn-1", 5, ["+919811100000"])
    assert other.wait is not None and other.wait.total_seconds() + EARLY_SECONDS > 0.3


def test_a_batch_s_moments_start_after_the_time_it_needs_to_commit(redis_conn):
    # A batch writes its ledger between taking its moments and sending: a first moment gone by
    # then would leave late, with the next ones, above the number's rate.
    throttle = SendThrottle(redis_conn, key="k", pair_interval_ms=1)
    _just_before_a_whole_second(redis_conn)
    asked_at = time.monotonic()
    moments = throttle.reserve("pn-1", 5, [f"+9198765{index:05d}" for index in range(8)], lead_s=0.18)
    going = [moment.send_at for moment in moments if moment.send_at is not None]
    # The same span of moments as without a lead (test above), shifted by it
    assert [round(moment - asked_at, 1) for moment in going] == [0.2, 0.4]
    assert all(moment.wait is not None for moment in moments[len(going) :])


def test_a_back_off_shorter_than_the_lead_never_brings_a_moment_before_the_lead(redis_conn):
    # A 130429 pause nearly over (50 ms left) must not undo the batch's lead: a moment sooner
    # than its ledger needs to commit would leave late, with the next ones, above the rate.
    throttle = SendThrottle(redis_conn, key="k", pair_interval_ms=1)
    redis_conn.set("cartback:wa:backoff:pn-1", 1, px=50)
    asked_at = time.monotonic()
    moments = throttle.reserve("pn-1", 5, [f"+9198765{index:05d}" for index in range(8)], lead_s=0.3)
    going = [moment.send_at for moment in moments if moment.send_at is not None]
    assert going and all(moment - asked_at >= 0.29 for moment in going)


def test_no_second_carries_more_than_the_numbers_rate_across_workers(redis_conn):
    # Given two workers sending batches for one number allowed 20 messages per second
    workers = [SendThrottle(redis_conn, key="k", pair_interval_ms=1) for _ in range(2)]
    moments: list[float] = []
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < 1.6:
        for throttle in workers:
            for moment in throttle.reserve("pn-1", 20, [f"+91987{n + i:07d}" for i in range(10)]):
                if moment.send_at is not None:
                    moments.append(moment.send_at)
            n += 10
        time.sleep(0.05)
    # Then their messages leave at the number's pace: 20 in any second (the moments are exact
    # on Redis's clock; these are read on this one, a round trip's jitter apart: one more)
    moments.sort()
    busiest = max(sum(1 for t in moments if start <= t < start + 1) for start in moments)
    assert 18 <= busiest <= 21
    # (no two together: 42.5 ms apart on Redis's clock, a round trip's jitter apart on this one)
    assert min(later - earlier for earlier, later in pairwise(moments)) > 0.02


def test_each_second_holds_exactly_the_numbers_rate_of_moments_from_its_start(redis_conn):
    # Given a number allowed 80 messages per second, asked for its moments a few at a time
    throttle = SendThrottle(redis_conn, key="k", pair_interval_ms=1)
    interval_ms = (1000 - SECOND_GUARD_MS) / 80
    grid: list[int] = []
    for _call in range(40):
        seconds, microseconds = redis_conn.time()
        redis_now_ms = seconds * 1000 + microseconds / 1000
        # The script's own answer: each moment and the end of its second, in ms from Redis's
        # clock as it read it (exact, where a conversion to this process's clock is blurred by
        # the round trip)
        reply = throttle._take(
            keys=["cartback:wa:next:pn-1", "cartback:wa:backoff:pn-1", "cartback:wa:queue:pn-1"],
            args=[80, 8, 250, 60_000, 0, 0, SECOND_GUARD_MS, 1],
        )
        for value in reply:
            moment, taken, second_end = (value.decode() if isinstance(value, bytes) else value).partition(":")
            if not taken:
                continue
            # Then each moment is a whole number of intervals into its second, and none lies in
            # the second's last SECOND_GUARD_MS...
            into_second = 1000 - (float(second_end) - float(moment))
            k = into_second / interval_ms
            assert abs(k - round(k)) < 1e-6 and 0 <= round(k) < 80, into_second
            second = round((redis_now_ms + float(moment) - into_second) / 1000)
            grid.append(second * 80 + round(k))
        time.sleep(0.05)
    # ...and, the number kept busy, the moments follow one another with none left out (a
    # moment lost per call was a real fault: one stored to 14 digits missed its grid point);
    # a few may go unasked if this process is held off the CPU for a quarter of a second
    assert len(grid) > 100 and len(set(grid)) == len(grid)
    grid.sort()
    assert grid[-1] - grid[0] + 1 - len(grid) <= 3
    # Through the transport's view: a moment may leave up to ~100 ms late and still count in
    # its second
    for slot in throttle.reserve("pn-2", 80, [f"+91987{i:07d}" for i in range(8)]):
        if slot.send_at is not None:
            assert slot.send_by is not None and slot.send_by - slot.send_at > 0.08


def test_messages_told_to_wait_come_back_evenly_a_little_faster_than_the_numbers_rate(redis_conn):
    # Given a number allowed 80 messages per second, asked for 200 at once
    throttle = SendThrottle(redis_conn, key="k", pair_interval_ms=1)
    slots = throttle.reserve("pn-1", 80, [f"+91987{i:07d}" for i in range(200)])
    waits = [slot.wait.total_seconds() for slot in slots if slot.wait is not None]
    assert len(waits) > 150
    # Then those told to wait are due back evenly: not on the moments' grid, whose guard at each
    # second's end would bring a second's worth of them back together, too late for the moments
    # before the guard; and a little faster than one every 12.5 ms, so the askers stay ahead of
    # the moments and a stall does not leave moments passing unused
    gaps = [later - earlier for earlier, later in pairwise(waits) if earlier > 0.02]
    assert gaps and all(gap == pytest.approx(0.0125 / TURN_SURPLUS, abs=0.0002) for gap in gaps)
    assert 0.0125 / 1.05 < 0.0125 / TURN_SURPLUS < 0.0125 - 0.0002


def test_a_slow_number_always_has_a_first_moment_within_the_senders_wait(redis_conn):
    # Given numbers allowed 3 messages a second (a moment every 0.33 s, longer than the 0.25 s a
    # sender may wait), each idle, asked for one moment at times spread over 0.4 s
    throttle = SendThrottle(redis_conn, key="k", pair_interval_ms=1)
    for n in range(16):
        [slot] = throttle.reserve(f"pn-slow-{n}", 3, ["+919876543210"])
        # Then each gets its moment at once, wherever the clock stands in the second
        assert slot.wait is None and slot.send_at is not None
        assert slot.send_at - time.monotonic() < 0.05
        # ...and it may leave at it, even in the last moments of a second (off the grid no
        # second keeps a guard to leave late in)
        assert slot.send_by is None
        time.sleep(0.025)


def test_a_batch_never_messages_the_same_shopper_twice_within_6_seconds(redis_conn):
    throttle = SendThrottle(redis_conn, key="k")
    moments = throttle.reserve("pn-1", 80, ["+919876543210", "+919811112222", "+919876543210"])
    assert moments[0].wait is None and moments[1].wait is None
    assert moments[2].wait is not None and 5 < moments[2].wait.total_seconds() <= 6
    # ...nor one that a single send took a moment ago
    assert throttle.acquire("pn-1", 80, "+919811112222") is not None


def test_a_number_told_to_slow_down_waits_for_every_worker(redis_conn):
    throttle = SendThrottle(redis_conn, key="k", pair_interval_ms=1)
    throttle.back_off("pn-1")
    moments = throttle.reserve("pn-1", 80, ["+919876543210", "+919811112222"])
    assert all(
        moment.wait is not None and 0.9 < moment.wait.total_seconds() + EARLY_SECONDS < 1.1
        for moment in moments
    )
    # Another number is not held back
    assert throttle.reserve("pn-2", 80, ["+919876543210"])[0].wait is None


def test_messages_told_to_wait_by_two_batches_get_turns_of_their_own(redis_conn):
    # Given two workers' batches for one number allowed 5 messages a second, at once
    first = SendThrottle(redis_conn, key="k", pair_interval_ms=1)
    second = SendThrottle(redis_conn, key="k", pair_interval_ms=1)
    _just_before_a_whole_second(redis_conn)
    one = first.reserve("pn-1", 5, [f"+9198765{index:05d}" for index in range(4)])
    two = second.reserve("pn-1", 5, [f"+9198766{index:05d}" for index in range(4)])
    # Then the second batch's messages wait behind the first batch's, never beside them: each
    # comes back to a moment of its own instead of all of them competing for the same ones
    turns = [round(m.wait.total_seconds() + EARLY_SECONDS, 1) for m in [*one, *two] if m.wait is not None]
    assert turns == [0.4, 0.6, 0.8, 1.0, 1.2, 1.4]
