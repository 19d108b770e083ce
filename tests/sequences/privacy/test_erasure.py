"""Erasure removes a shopper's personal data for good; their opt-out survives it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlmodel import select

from sequences.engine.consent import handle_reply
from sequences.models import CartStatus, Contact, WebhookDelivery
from sequences.privacy.erasure import erase_contact, purge_processed_payloads
from tests.support.factories import PHONE
from tests.support.journey import Journey

MIN = timedelta(minutes=1)


@pytest.fixture
def journey(messaged_journey: Journey) -> Journey:
    return messaged_journey


def dump(runtime) -> str:
    """Every text value in every table, as one string."""
    chunks: list[str] = []
    with runtime.database.engine.connect() as connection:
        tables = [
            row[0] for row in connection.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
        ]
        for table in tables:
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):  # our own table names
                chunks.extend(str(value) for value in row)
    return "\n".join(chunks)


@pytest.mark.postgres
def test_erasing_a_shopper_removes_their_phone_name_and_email_everywhere(journey, runtime):
    store_id = journey.cart().store_id
    with journey.at(20 * MIN):
        handle_reply(
            runtime,
            store_id,
            PHONE,
            "Is this in XL? I'm Asha Rao",
            source="test",
            evidence={"text": "Asha Rao"},
        )
        report = erase_contact(runtime, store_id, PHONE)
    assert report.contacts == 1 and report.messages == 1
    if runtime.database.sqlite:
        everything = dump(runtime)
        for personal in ("9876543210", "asha@example.in", "Asha"):
            assert personal not in everything
    with runtime.database.session() as session:
        contact = session.exec(select(Contact)).one()
        assert (contact.first_name, contact.email) == (None, None)
        assert not contact.phone_e164.startswith("+")


def test_an_opt_out_survives_erasure(journey, runtime):
    store_id = journey.cart().store_id
    with journey.at(20 * MIN):
        handle_reply(runtime, store_id, PHONE, "STOP", source="test", evidence={"text": "STOP"})
        erase_contact(runtime, store_id, PHONE)
    journey.checkout(timedelta(days=2), checkout_id="chk_2", token="tok_2")
    journey.run(timedelta(days=2, minutes=16))
    assert len(journey.outbox()) == 0  # the erased message left the outbox; none new went out
    assert journey.cart("chk_2").status == CartStatus.OPTED_OUT


def test_a_shopper_who_never_opted_out_is_a_stranger_after_erasure(journey, runtime):
    store_id = journey.cart().store_id
    with journey.at(20 * MIN):
        erase_contact(runtime, store_id, PHONE)
    journey.checkout(timedelta(days=2), checkout_id="chk_2", token="tok_2")
    journey.run(timedelta(days=2, minutes=16))
    assert journey.cart("chk_2").status == CartStatus.RECOVERING


def test_processed_payloads_are_emptied_after_a_week(journey, runtime):
    with journey.at(timedelta(days=8)):
        assert purge_processed_payloads(runtime) == 1
    with runtime.database.session() as session:
        assert session.exec(select(WebhookDelivery.payload)).one() == ""
