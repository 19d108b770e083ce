"""GET|POST /webhooks/whatsapp with Meta's recorded deliveries (sandbox transport underneath)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import col, select

from sequences.config import Settings
from sequences.models import (
    CartStatus,
    ConsentEvent,
    Contact,
    InboundMessage,
    Message,
    MessageStatus,
    SandboxOutboxMessage,
    StepStatus,
    Store,
    StoreStatus,
    WhatsAppAccount,
    WhatsAppTemplate,
)
from sequences.whatsapp.accounts import connect
from tests.support.journey import T0
from tests.support.whatsapp import (
    ACCESS_TOKEN,
    APP_SECRET,
    FIXTURE_OPAQUE,
    FIXTURE_WAMID,
    PHONE_NUMBER_ID,
    VERIFY_TOKEN,
    WABA_ID,
    fixture,
    post_delivery,
    stamped,
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_overrides(whatsapp_app_secret=APP_SECRET, whatsapp_verify_token=VERIFY_TOKEN)


@pytest.fixture
def wa(messaged_journey: Any) -> Any:
    """The journey's store with its WhatsApp number connected, and its first message sent."""
    runtime = messaged_journey.runtime
    with runtime.database.session() as session:
        store_id = session.exec(select(Store.id)).one()
    account = connect(
        runtime, store_id, waba_id=WABA_ID, phone_number_id=PHONE_NUMBER_ID, access_token=ACCESS_TOKEN
    )
    with runtime.database.locked_session() as session:
        stored = session.get(WhatsAppAccount, account.id)
        assert stored is not None
        stored.display_phone_number = "+91 90000 00001"
    return messaged_journey


def _message(journey: Any) -> Message:
    return journey.messages()[0]


def _ids(journey: Any) -> dict[str, str]:
    message = _message(journey)
    return {FIXTURE_WAMID: message.provider_message_id, FIXTURE_OPAQUE: f"cartback-{message.id}"}


def _deliver(journey: Any, name: str, moment: timedelta = timedelta(minutes=16), **extra: str) -> Any:
    with journey.at(moment):
        epoch = int(datetime.now(UTC).timestamp())
        response = post_delivery(journey.client, stamped(fixture(name, **_ids(journey), **extra), epoch))
        journey._drain()
    return response


# -- the subscription handshake -----------------------------------------------------------------


def test_meta_subscription_check_echoes_the_challenge_for_our_token(client):
    response = client.get(
        "/webhooks/whatsapp",
        query_string={
            "hub.mode": "subscribe",
            "hub.verify_token": VERIFY_TOKEN,
            "hub.challenge": "1158201444",
        },
    )
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "1158201444"


@pytest.mark.parametrize(
    ("mode", "token"),
    [("subscribe", "wrong-token"), ("unsubscribe", VERIFY_TOKEN), ("", ""), ("subscribe", "")],
)
def test_meta_subscription_check_is_refused_without_our_token(client, mode, token):
    response = client.get(
        "/webhooks/whatsapp",
        query_string={"hub.mode": mode, "hub.verify_token": token, "hub.challenge": "42"},
    )
    assert response.status_code == 403
    assert "42" not in response.get_data(as_text=True)


# -- signatures and bad bodies ------------------------------------------------------------------


def test_an_unsigned_delivery_is_refused_and_changes_nothing(wa):
    body = json.dumps(fixture("message_button_stop", **_ids(wa))).encode()
    response = wa.client.post("/webhooks/whatsapp", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 401
    assert wa.consent_events() == []


def test_a_delivery_signed_with_another_secret_is_refused_and_changes_nothing(wa):
    response = post_delivery(
        wa.client, fixture("message_button_stop", **_ids(wa)), secret="not-the-app-secret"
    )
    assert response.status_code == 403
    assert "signature" in response.get_json()["error"]
    assert wa.consent_events() == []


def test_a_body_changed_after_signing_is_refused(wa):
    raw = json.dumps(fixture("status_read", **_ids(wa))).encode()
    from tests.support.whatsapp import sign

    response = wa.client.post(
        "/webhooks/whatsapp",
        data=raw.replace(b'"read"', b'"failed"'),
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(raw)},
    )
    assert response.status_code == 403
    assert _message(wa).status == MessageStatus.SENT


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        # A lone surrogate as the WABA id once reached the account lookup as a str no encoder takes.
        (
            b'{"object": "whatsapp_business_account", "entry": [{"id": "\\ud800", "changes": [{"field":'
            b' "messages", "value": {"metadata": {"phone_number_id": "106540352242922"}}}]}]}',
            "lone UTF-16 surrogate",
        ),
        (b'{"object": "whatsapp_business_account", "entry": {"id": "1"}}', "entry must be a list"),
        (
            b'{"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",'
            b' "value": {"metadata": {"phone_number_id": "106540352242922"}, "statuses": [{"status": "read"}]}}]}]}',
            "id is missing",
        ),
    ],
)
def test_a_malformed_delivery_gets_400_with_the_reason(wa, body, reason):
    response = post_delivery(wa.client, body)
    assert response.status_code == 400
    assert reason in response.get_json()["error"]


def test_a_malformed_delivery_applies_none_of_its_good_parts(wa):
    # Given a delivery whose first change is a valid STOP and whose second is broken
    body = fixture("message_button_stop", **_ids(wa))
    body["entry"][0]["changes"].append({"field": "messages", "value": {"metadata": {}, "statuses": []}})
    # Then it is refused whole: the STOP is not half-applied
    assert post_delivery(wa.client, body).status_code == 400
    assert wa.consent_events() == []


def test_an_oversized_delivery_gets_413(wa):
    limit = wa.runtime.settings.max_webhook_bytes
    raw = b'{"object": "whatsapp_business_account", "entry": [], "pad": "' + b"x" * limit + b'"}'
    assert post_delivery(wa.client, raw).status_code == 413


def test_without_an_app_secret_deliveries_wait_with_503(client, runtime):
    runtime.settings = runtime.settings.with_overrides(whatsapp_app_secret="")
    response = post_delivery(client, fixture("status_sent"))
    assert response.status_code == 503
    assert "WHATSAPP_APP_SECRET" in response.get_json()["error"]


def test_a_delivery_for_a_number_no_store_owns_is_acknowledged_and_dropped(wa):
    body = fixture("message_button_stop", **_ids(wa), **{PHONE_NUMBER_ID: "999999999999999"})
    response = post_delivery(wa.client, body)
    assert response.status_code == 200
    assert response.get_json() == {"applied": 0, "ignored": 1}
    assert wa.consent_events() == []


def test_a_delivery_for_an_uninstalled_store_is_acknowledged_and_dropped(wa):
    with wa.runtime.database.locked_session() as session:
        store = session.exec(select(Store)).one()
        store.status = StoreStatus.UNINSTALLED
    response = _deliver(wa, "message_button_stop")
    assert response.status_code == 200
    assert wa.consent_events() == []


# -- statuses -----------------------------------------------------------------------------------


@pytest.mark.postgres
def test_statuses_move_forward_and_record_their_times(wa):
    assert _deliver(wa, "status_sent").status_code == 200
    assert _deliver(wa, "status_delivered").status_code == 200
    message = _message(wa)
    assert message.status == MessageStatus.DELIVERED and message.delivered_at is not None
    _deliver(wa, "status_read")
    assert _message(wa).status == MessageStatus.READ


def test_read_without_delivered_implies_both(wa):
    _deliver(wa, "status_read")
    message = _message(wa)
    assert message.status == MessageStatus.READ
    assert message.delivered_at == message.read_at


def test_a_late_delivered_after_read_changes_nothing(wa):
    _deliver(wa, "status_read")
    before = _message(wa)
    response = _deliver(wa, "status_delivered")
    assert response.get_json()["applied"] == 0
    after = _message(wa)
    assert after.status == MessageStatus.READ and after.delivered_at == before.delivered_at


def test_a_replayed_status_changes_nothing(wa):
    _deliver(wa, "status_delivered")
    first = _message(wa)
    assert _deliver(wa, "status_delivered").get_json()["applied"] == 0
    assert _message(wa).model_dump() == first.model_dump()


def test_failed_is_terminal(wa):
    _deliver(wa, "status_failed_131049")
    _deliver(wa, "status_read")
    message = _message(wa)
    assert message.status == MessageStatus.FAILED and message.error_code == "131049"
    assert message.read_at is None


def test_a_failed_after_delivered_does_not_undo_the_delivery(wa):
    _deliver(wa, "status_delivered")
    _deliver(wa, "status_failed_131026")
    assert _message(wa).status == MessageStatus.DELIVERED
    assert wa.cart().status == CartStatus.RECOVERING


def test_a_delivered_marketing_message_to_india_records_its_cost(wa):
    _deliver(wa, "status_delivered")
    message = _message(wa)
    assert message.pricing_category == "marketing"
    assert message.cost == Decimal("0.86") and message.cost_currency == "INR"


def test_a_status_maps_to_our_message_by_its_callback_data_when_the_send_answer_was_lost(wa):
    # Given the send's answer never came back: no wamid stored, step uncertain
    sent_status = fixture("status_sent", **_ids(wa))
    with wa.runtime.database.locked_session() as session:
        message = session.exec(select(Message)).one()
        message.provider_message_id, message.status = None, MessageStatus.UNCERTAIN
        from sequences.models import RecoveryStep

        step = session.get(RecoveryStep, message.step_id)
        assert step is not None
        step.status = StepStatus.UNCERTAIN
    # When Meta reports it sent (with our id in biz_opaque_callback_data)
    assert post_delivery(wa.client, sent_status).get_json()["applied"] == 1
    # Then the message and its step are known to have gone out
    assert _message(wa).status == MessageStatus.SENT
    assert wa.steps()[0].status == StepStatus.SENT


def test_failed_131050_opts_the_shopper_out_for_good(wa):
    _deliver(wa, "status_failed_131050")
    assert wa.cart().status == CartStatus.OPTED_OUT
    (event,) = wa.consent_events()
    assert event.kind == "opt_out" and event.source == "whatsapp_error" and event.evidence["code"] == 131050
    assert all(step.status != StepStatus.SCHEDULED for step in wa.steps())


def test_failed_131026_stops_the_cart(wa):
    _deliver(wa, "status_failed_131026")
    cart = wa.cart()
    assert cart.status == CartStatus.UNREACHABLE
    assert all(step.status != StepStatus.SCHEDULED for step in wa.steps())
    assert wa.consent_events() == []


def test_unknown_fields_are_ignored(wa):
    response = _deliver(wa, "unknown_fields")
    assert response.status_code == 200
    assert _message(wa).status == MessageStatus.DELIVERED


def test_every_entry_change_status_and_message_of_a_delivery_is_applied(wa):
    # Given a delivery with two numbers (only the first is ours), several statuses and a reply
    response = _deliver(wa, "multi_entry")
    assert response.status_code == 200
    body = response.get_json()
    assert body["applied"] >= 2 and body["ignored"] >= 1
    assert _message(wa).status == MessageStatus.READ
    with wa.runtime.database.session() as session:
        assert session.exec(select(InboundMessage)).all() != []


# -- the shopper's replies ----------------------------------------------------------------------


def _outbox_replies(journey: Any) -> list[SandboxOutboxMessage]:
    return [row for row in journey.outbox() if row.message_id is None]


@pytest.mark.postgres
@pytest.mark.parametrize("name", ["message_button_stop", "message_text_stop", "message_text_hindi_stop"])
def test_stop_opts_out_within_the_request_and_cancels_pending_steps(wa, name):
    with wa.at(timedelta(minutes=16)):
        response = post_delivery(wa.client, fixture(name, **_ids(wa)))
        # Already applied when the request returns, before any job runs
        assert response.status_code == 200
        assert wa.cart().status == CartStatus.OPTED_OUT
    assert [step.status for step in wa.steps()] == [
        StepStatus.SENT,
        StepStatus.CANCELLED,
        StepStatus.CANCELLED,
    ]
    (event,) = wa.consent_events()
    assert event.kind == "opt_out" and event.evidence["wamid"].startswith("wamid.")
    assert event.evidence["text"] and event.evidence["at"]


def test_stop_gets_one_short_confirmation(wa):
    _deliver(wa, "message_button_stop")
    (reply,) = _outbox_replies(wa)
    assert "won't get promotional messages" in reply.body and "START" in reply.body


def test_a_replayed_stop_records_one_opt_out_and_one_confirmation(wa):
    _deliver(wa, "message_button_stop")
    again = _deliver(wa, "message_button_stop")
    assert again.status_code == 200 and again.get_json()["applied"] == 0
    assert len(wa.consent_events()) == 1
    assert len(_outbox_replies(wa)) == 1


def test_start_after_stop_opts_back_in_on_record(wa):
    _deliver(wa, "message_text_stop")
    body = fixture("message_text_stop", **_ids(wa))
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    message["id"], message["text"]["body"] = "wamid.start-reply", "Start"
    with wa.at(timedelta(minutes=20)):
        assert post_delivery(wa.client, stamped(body, int(datetime.now(UTC).timestamp()))).status_code == 200
        wa._drain()
    assert [event.kind for event in wa.consent_events()] == ["opt_out", "opt_in"]
    with wa.runtime.database.session() as session:
        assert session.exec(select(Contact)).one().opted_out_at is None
    assert "Welcome back" in _outbox_replies(wa)[-1].body


def test_any_other_reply_pauses_the_sequence_for_a_person(wa):
    _deliver(wa, "message_text_other")
    cart = wa.cart()
    assert cart.shopper_replied_at is not None and cart.status == CartStatus.RECOVERING
    assert [step.status for step in wa.steps()][1:] == [StepStatus.CANCELLED, StepStatus.CANCELLED]
    assert "shopper_replied" in wa.events()
    assert wa.consent_events() == [] and _outbox_replies(wa) == []
    with wa.runtime.database.session() as session:
        (inbound,) = session.exec(select(InboundMessage)).all()
    assert inbound.intent == "other" and inbound.text


def test_user_preferences_stop_and_resume(wa):
    _deliver(wa, "user_preferences_stop")
    assert wa.cart().status == CartStatus.OPTED_OUT
    _deliver(wa, "user_preferences_resume", timedelta(minutes=30))
    assert [(e.kind, e.source) for e in wa.consent_events()] == [
        ("opt_out", "whatsapp_user_preferences"),
        ("opt_in", "whatsapp_user_preferences"),
    ]
    # WhatsApp told the shopper itself: no reply of ours
    assert _outbox_replies(wa) == []


def test_stop_from_a_number_we_hold_nothing_for_is_remembered(wa):
    body = fixture("message_text_stop", **_ids(wa), **{"919876543210": "919811112222"})
    _deliver_body = post_delivery(wa.client, body)
    assert _deliver_body.status_code == 200
    with wa.runtime.database.session() as session:
        stranger = session.exec(select(Contact).where(Contact.phone_e164 == "+919811112222")).one()
    assert stranger.opted_out_at is not None and not stranger.marketing_consent


# -- templates and the number's health ----------------------------------------------------------


def _templates(journey: Any) -> dict[tuple[str, str], WhatsAppTemplate]:
    with journey.runtime.database.session() as session:
        return {(t.name, t.language): t for t in session.exec(select(WhatsAppTemplate)).all()}


def test_template_status_updates_keep_the_template_current(wa):
    _deliver(wa, "template_status_approved")
    assert _templates(wa)[("cart_recovery_image_v1", "en")].status == "APPROVED"
    _deliver(wa, "template_status_paused")
    template = _templates(wa)[("cart_recovery_image_v1", "en")]
    assert template.status == "PAUSED"


def test_an_older_template_event_arriving_late_changes_nothing(wa):
    _deliver(wa, "template_status_paused")
    approved = fixture("template_status_approved")
    paused_at = int((T0 + timedelta(minutes=16)).timestamp())
    post_delivery(wa.client, stamped(approved, paused_at - 3600))
    assert _templates(wa)[("cart_recovery_image_v1", "en")].status == "PAUSED"


def test_a_flagged_number_pauses_sending_and_unflagged_resumes_it(wa):
    _deliver(wa, "phone_number_quality_update_flagged")
    with wa.runtime.database.session() as session:
        store = session.exec(select(Store)).one()
    assert store.sending_paused and store.pause_source == "quality" and "RED" in (store.pause_reason or "")
    _deliver(wa, "phone_number_quality_update_unflagged", timedelta(minutes=20))
    with wa.runtime.database.session() as session:
        assert not session.exec(select(Store)).one().sending_paused


def test_a_merchant_pause_is_not_lifted_by_quality_recovering(wa):
    with wa.runtime.database.locked_session() as session:
        store = session.exec(select(Store)).one()
        store.sending_paused, store.pause_source, store.pause_reason = True, "merchant", "holiday"
    _deliver(wa, "phone_number_quality_update_unflagged")
    with wa.runtime.database.session() as session:
        assert session.exec(select(Store)).one().pause_reason == "holiday"


def test_consent_events_are_only_ever_added(wa):
    _deliver(wa, "message_text_stop")
    first = wa.consent_events()
    _deliver(wa, "user_preferences_resume", timedelta(minutes=30))
    later = wa.consent_events()
    assert [e.model_dump() for e in later[: len(first)]] == [e.model_dump() for e in first]
    with wa.runtime.database.session() as session:
        ids = session.exec(select(ConsentEvent.id).order_by(col(ConsentEvent.id))).all()
    assert len(ids) == 2


# -- what the second read found ------------------------------------------------------------------


def test_a_status_with_our_callback_data_but_another_message_id_is_not_ours(wa):
    # Another app on the same WhatsApp account, with callback data that happens to match
    body = fixture("status_failed_131050", **(_ids(wa) | {FIXTURE_WAMID: "wamid.someone-elses-message"}))
    response = post_delivery(wa.client, body)
    assert response.status_code == 200 and response.get_json()["applied"] == 0
    assert wa.consent_events() == [] and wa.cart().status == CartStatus.RECOVERING


def test_an_older_resume_arriving_after_a_stop_changes_nothing(wa):
    said_stop = int((T0 + timedelta(minutes=17)).timestamp())
    with wa.at(timedelta(minutes=18)):
        post_delivery(wa.client, stamped(fixture("user_preferences_stop"), said_stop))
        # Meta retries a resume the shopper sent a minute before the stop
        post_delivery(wa.client, stamped(fixture("user_preferences_resume"), said_stop - 60))
    assert [event.kind for event in wa.consent_events()] == ["opt_out"]
    with wa.runtime.database.session() as session:
        assert session.exec(select(Contact)).one().opted_out_at is not None


def test_stored_event_keys_hold_no_phone_number(wa):
    _deliver(wa, "user_preferences_stop")
    _deliver(wa, "message_text_other", timedelta(minutes=20))
    with wa.runtime.database.session() as session:
        keys = [row.provider_event_id for row in session.exec(select(InboundMessage)).all()]
    assert len(keys) == 2 and not any("9876543210" in key or "wamid" in key for key in keys)


def test_a_stop_after_erasure_still_protects_the_number(wa):
    from sequences.privacy.erasure import erase_contact, is_suppressed

    ids = _ids(wa)
    with wa.runtime.database.session() as session:
        store_id = session.exec(select(Store.id)).one()
    erase_contact(wa.runtime, store_id, "+919876543210")
    # The shopper taps Stop promotions on the message they still have
    with wa.at(timedelta(minutes=30)):
        body = stamped(fixture("message_button_stop", **ids), int(datetime.now(UTC).timestamp()))
        assert post_delivery(wa.client, body).status_code == 200
    with wa.runtime.database.session() as session:
        live = session.exec(select(Contact).where(Contact.phone_e164 == "+919876543210")).first()
        protected = (live is not None and live.opted_out_at is not None) or is_suppressed(
            session, wa.runtime, store_id, "+919876543210"
        )
    assert protected


def test_cost_is_recorded_on_delivery_and_never_on_a_failed_message(wa):
    _deliver(wa, "status_sent")
    assert _message(wa).cost is None
    _deliver(wa, "status_failed_131026")
    assert _message(wa).cost is None


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (
            b'{"object": "whatsapp_business_account", "entry": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
            400,
        ),
        (b'{"object": "whatsapp_business_account", "n": ' + b"9" * 5000 + b"}", 400),
    ],
)
def test_absurd_json_gets_400(wa, body, status):
    assert post_delivery(wa.client, body).status_code == status


def test_odd_values_in_a_status_get_400_or_are_ignored_never_500(wa):
    def status_with(**changes: Any) -> dict[str, Any]:
        body = fixture("status_failed_131050", **_ids(wa))
        body["entry"][0]["changes"][0]["value"]["statuses"][0].update(changes)
        return body

    assert post_delivery(wa.client, status_with(errors=5)).status_code == 400
    assert post_delivery(wa.client, status_with(id="wamid." + "x" * 300)).status_code == 400
    assert post_delivery(wa.client, status_with(timestamp="9" * 40)).status_code == 400
    huge_callback = status_with(id="wamid.unknown", biz_opaque_callback_data="cartback-" + "9" * 30)
    assert post_delivery(wa.client, huge_callback).status_code == 200
    long_sender = fixture("message_text_stop", **{"919876543210": "9" * 25})
    assert post_delivery(wa.client, long_sender).status_code == 200
    assert wa.consent_events() == []


def test_an_older_quality_event_or_one_for_another_number_changes_nothing(wa):
    _deliver(wa, "phone_number_quality_update_flagged", timedelta(minutes=20))
    older = fixture("phone_number_quality_update_unflagged")
    post_delivery(wa.client, stamped(older, int((T0 + timedelta(minutes=10)).timestamp())))
    with wa.runtime.database.session() as session:
        assert session.exec(select(Store)).one().sending_paused
    other_number = fixture("phone_number_quality_update_unflagged", **{"919000000001": "919000000077"})
    post_delivery(wa.client, stamped(other_number, int((T0 + timedelta(minutes=30)).timestamp())))
    with wa.runtime.database.session() as session:
        assert session.exec(select(Store)).one().sending_paused


def test_events_for_the_merchants_other_templates_are_not_tracked(wa):
    _deliver(wa, "template_status_approved", **{"cart_recovery_image_v1": "diwali_sale_2026"})
    assert _templates(wa) == {}


def test_a_start_in_the_same_second_as_a_stop_loses_to_it(wa):
    second = int((T0 + timedelta(minutes=17)).timestamp())
    with wa.at(timedelta(minutes=18)):
        post_delivery(wa.client, stamped(fixture("user_preferences_stop"), second))
        post_delivery(wa.client, stamped(fixture("user_preferences_resume"), second))
    with wa.runtime.database.session() as session:
        assert session.exec(select(Contact)).one().opted_out_at is not None
