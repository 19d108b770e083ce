"""Alerts and incidents end to end: a store whose checkouts stop arriving gets one incident
within the rule's window, emailed once to the merchant (a real SMTP server) and posted once to
the operator's Alertmanager-compatible receiver, shown in the admin, closed when checkouts come
back; a flapping condition is one incident."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import select
from werkzeug.wrappers import Request, Response

from sequences.alerts import rules
from sequences.alerts.incidents import CLEAR_AFTER, apply_finding, evaluate_alerts, store_scope
from sequences.merchant.store_settings import StoreSettings
from sequences.models import Incident, IncidentStatus, Store
from tests.support.admin import sign_in
from tests.support.http_server import ThreadedServer
from tests.support.smtp import Inbox, smtp_server

MIN = timedelta(minutes=1)
ALERT_EMAIL = "owner@bazaar.example.com"


class Receiver:
    """The operator's Alertmanager-compatible webhook receiver: keeps each POSTed JSON body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self._lock:
            self.bodies.append(json.loads(request.get_data()))
        return Response("ok")(environ, start_response)


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    with ThreadedServer(app) as server:
        yield app, f"{server.origin}/alerts"


@pytest.fixture
def alerting(journey, runtime, inbox, receiver):
    """The journey's store with an alert address; SMTP and the operator's webhook configured."""
    runtime.settings = runtime.settings.with_overrides(
        smtp_host=inbox.host,
        smtp_port=inbox.port,
        smtp_security="none",
        smtp_from="cartback alerts <alerts@cartback.example>",
        alertmanager_webhook_url=receiver[1],
    )
    with runtime.database.session() as session:
        store = session.exec(select(Store)).one()
        settings = StoreSettings.from_stored(store.settings).model_copy(update={"alert_email": ALERT_EMAIL})
        store.settings = settings.to_stored()
        session.commit()
    return journey


def _incidents(runtime) -> list[Incident]:
    with runtime.database.session() as session:
        return list(session.exec(select(Incident).order_by(Incident.id)).all())


def _evaluate(journey, moment: timedelta) -> Any:
    journey.run(moment)  # what is due by then (abandonments) is done, as workers would
    with journey.at(moment):
        report = evaluate_alerts(journey.runtime)
    journey.run(moment)  # the notices' jobs
    return report


def test_a_store_whose_checkouts_stop_gets_one_incident_emailed_posted_shown_and_closed(
    alerting, runtime, client, inbox, receiver
):
    journey = alerting
    # A store whose checkouts come every 10 minutes, for 4 hours.
    for n in range(25):
        journey.checkout(n * 10 * MIN, checkout_id=f"chk_{n}", token=f"tok_{n}", phone=None)
    last = 24 * 10 * MIN
    # Learned: a 10-minute usual gap, so silence counts after an hour (the floor).
    assert _evaluate(journey, last + 59 * MIN).opened == 0, [
        (i.rule, i.title, i.evidence) for i in _incidents(runtime)
    ]
    assert _incidents(runtime) == []

    report = _evaluate(journey, last + 61 * MIN)
    assert report.opened == 1
    [incident] = _incidents(runtime)
    assert (incident.rule, incident.status, incident.severity) == (
        "webhooks_silent",
        IncidentStatus.OPEN,
        "critical",
    )
    assert "No checkout has reached cartback for 61 minutes" in incident.title
    assert incident.evidence["usual_gap_seconds"] == 600 and incident.evidence["threshold_seconds"] == 3600

    # The merchant's inbox and the operator's receiver, once each.
    [email] = inbox.messages
    assert inbox.envelopes[0][1] == [ALERT_EMAIL]
    assert (
        email["Subject"].startswith("[cartback] ") and "No checkout has reached cartback" in email["Subject"]
    )
    body = email.get_content()
    assert "What to do:" in body and "WooCommerce" in body and "/admin/incidents" in body
    [posted] = receiver[0].bodies
    assert posted["version"] == "4" and posted["status"] == "firing"
    [alert] = posted["alerts"]
    assert alert["labels"]["alertname"] == "webhooks_silent" and alert["labels"]["severity"] == "critical"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z" and "No checkout" in alert["annotations"]["summary"]

    # Still silent a few minutes on: the same incident, nobody told again.
    for minute in (62, 63, 64):
        assert _evaluate(journey, last + minute * MIN).opened == 0
    assert len(_incidents(runtime)) == 1 and len(inbox.messages) == 1 and len(receiver[0].bodies) == 1

    # The merchant sees it: a banner on every page and the incident log, with a note field.
    with journey.at(last + 65 * MIN):
        sign_in(client, runtime, _incidents(runtime)[0].store_id)
        dashboard = client.get("/admin").get_data(as_text=True)
        log_page = client.get("/admin/incidents").get_data(as_text=True)
    assert (
        'data-incident-banner="webhooks_silent"' in dashboard
        and "No checkout has reached cartback" in dashboard
    )
    assert "What to do:" in log_page and "Save note" in log_page

    # Checkouts come back: clear for 10 minutes, then closed, and that is told once too.
    journey.checkout(last + 70 * MIN, checkout_id="chk_back", token="tok_back", phone=None)
    assert _evaluate(journey, last + 71 * MIN).closed == 0
    assert _evaluate(journey, last + 71 * MIN + CLEAR_AFTER).closed == 1
    [closed] = _incidents(runtime)
    assert closed.status == IncidentStatus.CLOSED and closed.ended_at is not None
    assert len(inbox.messages) == 2 and inbox.messages[1]["Subject"].startswith("[cartback] ")
    assert "Resolved:" in inbox.messages[1]["Subject"]
    assert [body["status"] for body in receiver[0].bodies] == ["firing", "resolved"]
    assert set((closed.opened_notice or "").split("; ")) == {"email: sent", "webhook: sent"}


def test_a_flapping_condition_is_one_incident(journey, runtime):
    store_id = _store_id(runtime)
    scope = store_scope(store_id)
    finding = rules.Finding(
        "failed_deliveries", rules.CRITICAL, "12 of 20 reminders failed", "Look.", {"failed": 12}
    )
    with journey.at(0 * MIN):
        start = journey.runtime.now()
    events = []
    # True, clear, true, clear... every minute for 20 minutes: never clear for 10 minutes.
    for minute in range(20):
        events.append(
            apply_finding(
                runtime,
                scope,
                store_id,
                "failed_deliveries",
                finding if minute % 2 == 0 else None,
                start + minute * MIN,
            )
        )
    assert events.count("opened") == 1 and events.count("closed") == 0
    # Then clear for good: closed once, 10 minutes after it last held.
    for minute in range(20, 32):
        events.append(
            apply_finding(runtime, scope, store_id, "failed_deliveries", None, start + minute * MIN)
        )
    assert events.count("closed") == 1
    assert len(_incidents(runtime)) == 1


def test_a_merchant_s_note_is_kept_and_another_store_cannot_read_or_write_it(alerting, runtime, client):
    from tests.support.factories import make_store

    store_id = _store_id(runtime)
    with alerting.at(0 * MIN):
        apply_finding(runtime, store_scope(store_id), store_id, "template_paused",
                      rules.Finding("template_paused", rules.CRITICAL, "Template paused", "Edit it."), alerting.runtime.now())  # fmt: skip
        [incident] = _incidents(runtime)
        csrf = sign_in(client, runtime, store_id)
        saved = client.put(f"/api/incidents/{incident.id}/note", json={"note": "  Meta paused it after a spam wave; reworded.  "}, headers={"X-CSRF-Token": csrf})  # fmt: skip
        too_long = client.put(f"/api/incidents/{incident.id}/note", json={"note": "x" * 4001}, headers={"X-CSRF-Token": csrf})  # fmt: skip
        listed = client.get("/api/incidents").get_json()
        other = make_store(runtime, "other-shop")
        other_csrf = sign_in(client, runtime, other.id)
        theirs = client.put(f"/api/incidents/{incident.id}/note", json={"note": "mine now"}, headers={"X-CSRF-Token": other_csrf})  # fmt: skip
        their_list = client.get("/api/incidents").get_json()
    assert (
        saved.status_code == 200 and saved.get_json()["note"] == "Meta paused it after a spam wave; reworded."
    )
    assert too_long.status_code == 422 and "note" in too_long.get_json()["fields"]
    assert listed["incidents"][0]["title"] == "Template paused"
    assert theirs.status_code == 404 and their_list == {"incidents": []}
    assert _incidents(runtime)[0].note == "Meta paused it after a spam wave; reworded."


def _store_id(runtime) -> int:
    with runtime.database.session() as session:
        store_id = session.exec(select(Store.id)).first()
    assert store_id is not None
    return store_id
