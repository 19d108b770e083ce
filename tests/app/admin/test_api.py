"""The merchant's admin over HTTP: signing in, settings, dashboard, exports, and tenancy."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlmodel import col, select

from sequences.merchant.store_settings import StoreSettings
from sequences.models import Cart, SandboxOutboxMessage, SettingsChange, Store
from sequences.runtime import Runtime
from tests.support.admin import DAY, PERIOD, login_token, seed_dashboard, sign_in
from tests.support.factories import make_store

MIN = timedelta(minutes=1)


def _store(runtime: Runtime, slug: str = "demo-bazaar") -> Store:
    with runtime.database.session() as session:
        return session.exec(select(Store).where(Store.platform_store_id == slug)).one()


def _settings_payload(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/settings")
    assert response.status_code == 200
    payload: dict[str, Any] = response.get_json()["settings"]
    return payload


def _put(client: FlaskClient, csrf: str, payload: Any) -> Any:
    return client.put("/api/settings", json=payload, headers={"X-CSRF-Token": csrf})


def _audit(runtime: Runtime) -> list[SettingsChange]:
    with runtime.database.session() as session:
        return list(session.exec(select(SettingsChange).order_by(col(SettingsChange.id))).all())


# -- signing in --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/settings"),
        ("PUT", "/api/settings"),
        ("GET", "/api/settings/history"),
        ("POST", "/api/settings/preview"),
        ("POST", "/api/settings/test-message"),
        ("GET", "/api/dashboard"),
        ("GET", "/api/exports/carts.csv"),
        ("GET", "/api/exports/messages.csv"),
        ("GET", "/api/whatsapp"),
        ("POST", "/api/whatsapp/pause"),
        ("GET", "/api/data-exports/1"),
    ],
)
def test_every_api_endpoint_answers_401_without_a_session(journey: Any, method: str, path: str) -> None:
    response = journey.client.open(path, method=method, json={})

    assert response.status_code == 401
    assert "sign in" in response.get_json()["error"].lower()


def test_admin_without_a_session_explains_how_to_sign_in_and_shows_no_data(journey: Any) -> None:
    page = journey.client.get("/admin")

    text = page.get_data(as_text=True)
    assert page.status_code == 401
    assert "cartback admin-link STORE" in text and "Shopify admin" in text
    assert "demo-bazaar" not in text and "Store demo-bazaar" not in text


def test_a_sign_in_link_opens_a_session_once(journey: Any) -> None:
    store = _store(journey.runtime)
    token = login_token(journey.runtime, store.id)

    shown = journey.client.get("/admin/login")
    first = journey.client.post("/admin/login", data={"token": token})
    dashboard = journey.client.get("/admin")
    other_browser = journey.client.application.test_client()
    second = other_browser.post("/admin/login", data={"token": token})

    assert shown.status_code == 200 and "Sign in" in shown.get_data(as_text=True)
    assert first.status_code == 303 and first.headers["Location"].endswith("/admin")
    assert dashboard.status_code == 200 and "Store demo-bazaar" in dashboard.get_data(as_text=True)
    assert second.status_code == 400 and "already used" in second.get_data(as_text=True)


def test_an_expired_or_altered_sign_in_link_is_refused(journey: Any) -> None:
    store = _store(journey.runtime)
    with journey.at(timedelta(0)):
        token = login_token(journey.runtime, store.id)
    with journey.at(timedelta(minutes=31)):
        expired = journey.client.post("/admin/login", data={"token": token})
    altered = journey.client.post("/admin/login", data={"token": token[:-3] + "abc"})

    assert expired.status_code == 400 and "expired" in expired.get_data(as_text=True)
    assert altered.status_code == 400 and "not valid" in altered.get_data(as_text=True)
    assert journey.client.get("/api/settings").status_code == 401


def test_a_change_without_the_csrf_token_is_refused_and_saves_nothing(journey: Any) -> None:
    sign_in(journey.client, journey.runtime, _store(journey.runtime).id)
    payload = _settings_payload(journey.client) | {"inactivity_minutes": 30}

    missing = journey.client.put("/api/settings", json=payload)
    wrong = journey.client.put("/api/settings", json=payload, headers={"X-CSRF-Token": "guess"})

    assert missing.status_code == 403 and wrong.status_code == 403
    assert _settings_payload(journey.client)["inactivity_minutes"] == 15
    assert _audit(journey.runtime) == []


def test_signing_out_ends_the_session_even_for_a_copied_cookie(journey: Any) -> None:
    csrf = sign_in(journey.client, journey.runtime, _store(journey.runtime).id)
    copied = journey.client.get_cookie("cartback_admin")
    assert copied is not None

    journey.client.post("/admin/logout", data={"csrf_token": csrf})
    other = journey.client.application.test_client()
    other.set_cookie("cartback_admin", copied.value)

    assert journey.client.get("/api/settings").status_code == 401
    assert other.get("/api/settings").status_code == 401


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://["])
def test_a_sign_in_posted_from_another_site_is_refused(journey: Any, origin: str) -> None:
    token = login_token(journey.runtime, _store(journey.runtime).id)

    response = journey.client.post("/admin/login", data={"token": token}, headers={"Origin": origin})

    assert response.status_code == 403
    assert journey.client.get("/api/settings").status_code == 401


# -- settings ------------------------------------------------------------------------------------


def test_invalid_settings_get_a_message_per_field_and_nothing_is_saved(journey: Any) -> None:
    csrf = sign_in(journey.client, journey.runtime, _store(journey.runtime).id)
    payload = _settings_payload(journey.client)
    payload["steps"][1]["offer"] = {"kind": "percent", "value": "120", "valid_hours": 48}
    payload["steps"][2]["delay_minutes"] = 60
    payload["timezone"] = "Mars/Olympus"
    payload["quiet_hours_start"] = "25:00"

    response = _put(journey.client, csrf, payload)

    fields = response.get_json()["fields"]
    assert response.status_code == 422
    assert fields["steps.1.offer.value"] == "a percentage must be below 100"
    assert "maximum" in fields["steps.1.offer.max_amount"]
    assert fields["steps.2.delay_minutes"] == "step 3 must come after step 2"
    assert "time zone" in fields["timezone"] and "time of day" in fields["quiet_hours_start"]
    assert _settings_payload(journey.client)["steps"][1]["offer"]["kind"] == "fixed"
    assert _audit(journey.runtime) == []


def test_malformed_json_is_a_400_with_a_reason(journey: Any) -> None:
    csrf = sign_in(journey.client, journey.runtime, _store(journey.runtime).id)

    response = journey.client.put(
        "/api/settings", data=b"{not json", content_type="application/json", headers={"X-CSRF-Token": csrf}
    )

    assert response.status_code == 400
    assert response.get_json()["fields"]["body"].startswith("is not valid JSON")


def test_a_saved_change_is_audited_with_who_and_what(journey: Any) -> None:
    csrf = sign_in(journey.client, journey.runtime, _store(journey.runtime).id)
    payload = _settings_payload(journey.client)
    payload["steps"][1]["offer"]["value"] = "150"
    payload["max_messages_per_24h"] = 2

    saved = _put(journey.client, csrf, payload)
    again = _put(journey.client, csrf, payload)

    assert saved.status_code == 200
    assert {c["field"] for c in saved.get_json()["changes"]} == {
        "steps.1.offer.value",
        "max_messages_per_24h",
    }
    assert again.get_json()["changes"] == []
    (entry,) = _audit(journey.runtime)
    assert entry.actor.startswith("admin link")
    assert {"field": "steps.1.offer.value", "from": "100", "to": "150"} in entry.changes
    assert _settings_payload(journey.client)["steps"][1]["offer"]["value"] == "150"


def test_the_next_message_carries_an_offer_changed_after_the_first_was_sent(journey: Any) -> None:
    journey.checkout()
    journey.run(15 * MIN)

    with journey.at(20 * MIN):
        csrf = sign_in(journey.client, journey.runtime, _store(journey.runtime).id)
        payload = _settings_payload(journey.client)
        payload["steps"][1]["offer"]["value"] = "250"
        payload["steps"][1]["copy_lines"] = {"en": "Only today: {offer}"}
        assert _put(journey.client, csrf, payload).status_code == 200
    journey.run(4 * 60 * MIN)

    second = journey.outbox()[1]
    assert "Only today: Claim ₹250 off" in second.body
    assert journey.steps()[1].offer["value"] == "250"


def test_a_sequence_cut_to_one_step_sends_no_second_message(journey: Any) -> None:
    journey.checkout()
    journey.run(15 * MIN)

    with journey.at(20 * MIN):
        csrf = sign_in(journey.client, journey.runtime, _store(journey.runtime).id)
        payload = _settings_payload(journey.client)
        payload["steps"] = payload["steps"][:1]
        assert _put(journey.client, csrf, payload).status_code == 200
    journey.run(23 * 60 * MIN)

    assert len(journey.outbox()) == 1
    assert [step.status for step in journey.steps()][1:] == ["cancelled", "cancelled"]


def test_an_earlier_step_time_applies_to_carts_already_in_their_sequence(journey: Any) -> None:
    journey.checkout()
    journey.run(15 * MIN)

    with journey.at(20 * MIN):
        csrf = sign_in(journey.client, journey.runtime, _store(journey.runtime).id)
        payload = _settings_payload(journey.client)
        payload["steps"][1]["delay_minutes"] = 60
        assert _put(journey.client, csrf, payload).status_code == 200
        journey._drain()
    journey.run(61 * MIN)

    assert len(journey.outbox()) == 2


def test_pausing_in_settings_stops_sending_and_says_who_paused(journey: Any) -> None:
    csrf = sign_in(journey.client, journey.runtime, _store(journey.runtime).id)
    payload = _settings_payload(journey.client) | {"sending_paused": True}

    _put(journey.client, csrf, payload)
    journey.checkout()
    journey.run(16 * MIN)
    state = journey.client.get("/api/settings").get_json()["sending"]

    assert state == {"paused": True, "reason": "paused by the merchant in settings", "by": "merchant"}
    assert journey.outbox() == []


# -- preview and test message ------------------------------------------------------------------------


def test_the_preview_renders_the_latest_cart_as_the_shopper_would_see_it(journey: Any) -> None:
    csrf = sign_in(journey.client, journey.runtime, _store(journey.runtime).id)
    journey.checkout(prices=("1499.00",))
    payload = _settings_payload(journey.client)
    payload["steps"][1]["offer"] = {"kind": "percent", "value": "10", "max_amount": "120", "valid_hours": 24}

    response = journey.client.post(
        "/api/settings/preview",
        json={"settings": payload, "step": 1, "language": "en"},
        headers={"X-CSRF-Token": csrf},
    )

    data = response.get_json()
    assert response.status_code == 200
    assert "Hi Asha, you left Handloom Cotton Kurta" in data["preview"]["body"]
    assert "₹1,499.00" in data["preview"]["body"] and "Claim 10% off (up to ₹120)!" in data["preview"]["body"]
    assert [b["text"] for b in data["preview"]["buttons"]] == ["Complete my order", "Stop promotions"]
    assert data["source"] == "your latest cart (1 item)"
    assert 'class="wa-image"' in data["html"]


def test_the_preview_uses_a_sample_cart_before_the_store_has_any(journey: Any) -> None:
    csrf = sign_in(journey.client, journey.runtime, _store(journey.runtime).id)

    response = journey.client.post(
        "/api/settings/preview",
        json={"settings": _settings_payload(journey.client), "step": 0, "language": "hi"},
        headers={"X-CSRF-Token": csrf},
    )

    assert response.status_code == 200
    assert response.get_json()["source"] == "a sample cart"
    assert "नमस्ते" in response.get_json()["preview"]["body"]


def test_a_test_message_reaches_the_merchants_number_through_the_transport(journey: Any) -> None:
    csrf = sign_in(journey.client, journey.runtime, _store(journey.runtime).id)
    body = {"settings": _settings_payload(journey.client), "step": 1, "phone": "98111 22334"}

    sent = journey.client.post("/api/settings/test-message", json=body, headers={"X-CSRF-Token": csrf})
    bad = journey.client.post(
        "/api/settings/test-message", json=body | {"phone": "12"}, headers={"X-CSRF-Token": csrf}
    )

    assert sent.status_code == 200 and sent.get_json()["sent_to"] == "…2334"
    (message,) = journey.outbox()
    assert message.to_phone == "+919811122334" and message.message_id is None
    assert message.buttons[0]["url"].endswith("/r/test-message")
    assert journey.client.get("/r/test-message").status_code == 200
    assert bad.status_code == 422 and "phone" in bad.get_json()["fields"]


def test_test_messages_are_limited_per_hour(journey: Any) -> None:
    csrf = sign_in(journey.client, journey.runtime, _store(journey.runtime).id)
    body = {"settings": _settings_payload(journey.client), "step": 0, "phone": "+919811122334"}

    answers = [
        journey.client.post(
            "/api/settings/test-message", json=body, headers={"X-CSRF-Token": csrf}
        ).status_code
        for _ in range(6)
    ]

    assert answers == [200] * 5 + [429]
    with journey.runtime.database.session() as session:
        assert len(session.exec(select(SandboxOutboxMessage)).all()) == 5


# -- dashboard and exports -------------------------------------------------------------------------


@pytest.mark.postgres
def test_the_dashboard_shows_the_exact_figures_of_the_seeded_data(journey: Any) -> None:
    store = _store(journey.runtime)
    expected = seed_dashboard(journey.runtime, store)
    sign_in(journey.client, journey.runtime, store.id)

    data = journey.client.get("/api/dashboard", query_string=PERIOD).get_json()

    assert data["carts"] == {
        "abandoned": expected.abandoned,
        "reachable": expected.reachable,
        "recovered": expected.recovered,
        "recovery_rate": "33.3",
    }
    assert data["revenue"] == {
        "recovered": "3499.00",
        "reconciled": "2499.00",
        "pending_reconciliation": "1000.00",
        "verified": "2499.00",
        "discounts": "100.00",
    }
    messages = data["messages"]
    assert (messages["sent"], messages["delivered"], messages["read"], messages["clicked"]) == (5, 5, 3, 2)
    assert (messages["delivered_rate"], messages["read_rate"], messages["clicked_rate"]) == (
        "100.0",
        "60.0",
        "40.0",
    )
    assert messages["failed"] == 1 and Decimal(messages["cost"]) == expected.cost
    assert data["roi"] == str((expected.revenue / expected.cost).quantize(Decimal("0.1")))
    assert data["opt_outs"] == {"count": 1, "carts_messaged": 4, "rate": "25.0"}
    assert data["funnel"] == [
        {"step": 1, "sent": 4, "delivered": 4, "read": 2, "clicked": 1, "recovered": 1},
        {"step": 2, "sent": 1, "delivered": 1, "read": 1, "clicked": 1, "recovered": 1},
    ]
    day = next(d for d in data["daily"] if d["day"] == "2026-11-20")
    assert day == {"day": "2026-11-20", "abandoned": 6, "messages": 5, "recovered": 2, "revenue": "3499.00"}
    assert len(data["daily"]) == 28
    assert data["failures"][0]["reason"].startswith("this number cannot receive WhatsApp messages")


def test_a_period_the_dashboard_cannot_show_is_a_400_with_the_reason(journey: Any) -> None:
    sign_in(journey.client, journey.runtime, _store(journey.runtime).id)

    backwards = journey.client.get("/api/dashboard", query_string={"from": "2026-11-20", "to": "2026-11-01"})
    garbled = journey.client.get("/api/dashboard", query_string={"from": "yesterday"})

    assert backwards.status_code == 400 and "before" in backwards.get_json()["error"]
    assert garbled.status_code == 400 and "date like" in garbled.get_json()["error"]


def test_the_carts_csv_matches_the_seeded_data(journey: Any) -> None:
    store = _store(journey.runtime)
    seed_dashboard(journey.runtime, store)
    sign_in(journey.client, journey.runtime, store.id)

    response = journey.client.get("/api/exports/carts.csv", query_string=PERIOD)
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))

    assert response.status_code == 200 and "attachment" in response.headers["Content-Disposition"]
    assert sorted(row["checkout_id"] for row in rows) == [f"chk_seed_{n}" for n in range(1, 8)]
    recovered = {row["checkout_id"]: row["recovered_revenue"] for row in rows if row["recovered_revenue"]}
    assert recovered == {"chk_seed_1": "2499.00", "chk_seed_2": "1000.00"}
    assert sum(Decimal(value) for value in recovered.values()) == Decimal("3499.00")
    assert {row["phone_ending"] for row in rows} == {"0001", "0002", "0003", "0004", ""}
    assert all("+91" not in value for row in rows for value in row.values())


def test_the_messages_csv_matches_the_seeded_data(journey: Any) -> None:
    store = _store(journey.runtime)
    seed_dashboard(journey.runtime, store)
    sign_in(journey.client, journey.runtime, store.id)

    response = journey.client.get("/api/exports/messages.csv", query_string=PERIOD)
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))

    assert len(rows) == 6
    assert sum(Decimal(row["cost"] or "0") for row in rows) == Decimal("4.30")
    assert [row["failure_reason"] for row in rows if row["status"] == "failed"] == [
        "this number cannot receive WhatsApp messages (not on WhatsApp, or an old app)"
    ]


# -- tenancy ------------------------------------------------------------------------------------------


def test_another_stores_session_reads_and_changes_only_its_own_store(journey: Any) -> None:
    runtime = journey.runtime
    mine = _store(runtime)
    seed_dashboard(runtime, mine)
    other = make_store(runtime, "other-shop", settings=StoreSettings(quiet_hours_enabled=False))
    csrf = sign_in(journey.client, runtime, other.id)
    mine_before = _store(runtime).settings

    dashboard = journey.client.get("/api/dashboard", query_string=PERIOD).get_json()
    carts = journey.client.get("/api/exports/carts.csv", query_string=PERIOD).get_data(as_text=True)
    messages = journey.client.get("/api/exports/messages.csv", query_string=PERIOD).get_data(as_text=True)
    payload = _settings_payload(journey.client) | {"inactivity_minutes": 10}
    _put(journey.client, csrf, payload)
    journey.client.post("/api/whatsapp/pause", headers={"X-CSRF-Token": csrf})
    page = journey.client.get("/admin").get_data(as_text=True)

    assert dashboard["carts"]["abandoned"] == 0 and dashboard["messages"]["sent"] == 0
    assert carts.count("\n") == 1 and messages.count("\n") == 1
    assert _store(runtime).settings == mine_before and not _store(runtime).sending_paused
    assert _store(runtime, "other-shop").settings["inactivity_minutes"] == 10
    assert "Store other-shop" in page and "Store demo-bazaar" not in page
    assert all(entry.store_id == other.id for entry in _audit(runtime))


# Every /api/ route, and what a session of another store sends to it. A new route without a
# case here fails test_every_api_route_is_checked_for_tenancy.
TENANCY_CASES: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/api/settings"): {},
    ("PUT", "/api/settings"): {"json": {"inactivity_minutes": 60}},
    ("GET", "/api/settings/history"): {},
    ("POST", "/api/settings/preview"): {"json": {"step": 0}},
    ("POST", "/api/settings/test-message"): {"json": {"step": 0, "phone": "+919811122334"}},
    ("GET", "/api/dashboard"): {"query_string": PERIOD},
    ("GET", "/api/exports/carts.csv"): {"query_string": PERIOD},
    ("GET", "/api/exports/messages.csv"): {"query_string": PERIOD},
    ("GET", "/api/data-exports/<int(max=2147483647):export_id>"): {},
    ("GET", "/api/carts"): {"query_string": {"q": "0001"}},
    ("GET", "/api/carts/<int(max=2147483647):cart_id>"): {},
    ("GET", "/api/contacts/<int(max=2147483647):contact_id>"): {},
    ("GET", "/api/whatsapp"): {},
    ("PUT", "/api/whatsapp"): {"json": {"waba_id": "1", "phone_number_id": "2", "access_token": "x"}},
    ("POST", "/api/whatsapp/check"): {},
    ("POST", "/api/whatsapp/pause"): {},
    ("POST", "/api/whatsapp/resume"): {},
    ("GET", "/api/experiments"): {},
    ("GET", "/api/experiments/plan"): {"query_string": {"baseline_rate": "0.08", "mde": "0.02"}},
    ("GET", "/api/experiments/calibration"): {},
    ("POST", "/api/experiments"): {
        "json": {"name": "Theirs", "arms": [{"name": "a", "control": True}, {"name": "b"}]}
    },
    ("GET", "/api/experiments/<int(max=2147483647):experiment_id>"): {},
    ("GET", "/api/experiments/<int(max=2147483647):experiment_id>.csv"): {},
    ("POST", "/api/experiments/<int(max=2147483647):experiment_id>/stop"): {},
    (
        "POST",
        "/api/experiments/<int(max=2147483647):experiment_id>/arms/<int(max=2147483647):arm_id>/promote",
    ): {},
    ("GET", "/api/reconciliation"): {},
    ("POST", "/api/reconciliation/runs"): {},
    ("GET", "/api/reconciliation/runs/<int(max=2147483647):run_id>"): {},
    ("GET", "/api/incidents"): {},
    ("PUT", "/api/incidents/<int(max=2147483647):incident_id>/note"): {"json": {"note": "theirs now"}},
}


def _challenger_arm(runtime: Runtime, experiment_id: int | None) -> int:
    from sequences.models import ExperimentArm

    with runtime.database.session() as session:
        arm = session.exec(
            select(ExperimentArm).where(
                ExperimentArm.experiment_id == experiment_id, col(ExperimentArm.is_control).is_(False)
            )
        ).first()
        assert arm is not None and arm.id is not None
        return arm.id


def test_every_api_route_is_checked_for_tenancy(app: Any) -> None:
    routes = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }

    assert routes == set(TENANCY_CASES)


@pytest.mark.parametrize(("method", "rule"), sorted(TENANCY_CASES))
def test_another_stores_session_cannot_read_or_change_this_store(
    journey: Any, method: str, rule: str
) -> None:
    from sequences.models import DataExport

    runtime = journey.runtime
    mine = _store(runtime)
    seed_dashboard(runtime, mine)
    with runtime.database.session() as session:
        export = DataExport(store_id=mine.id, request_ref="mine-request", content={"phone": "+919876500001"})
        session.add(export)
        session.commit()
        export_id = export.id
    from sequences.experiments.manage import ArmSpec, start_experiment
    from sequences.models import Experiment, ExperimentStatus

    experiment = start_experiment(
        runtime, mine.id, "Mine secret test", [ArmSpec("Mine control", control=True), ArmSpec("Mine b")]
    )
    from sequences.models import ReconciliationRun, RunStatus, RunTrigger
    from sequences.reconciliation import runs

    my_run = runs.open_run(runtime, mine.id, RunTrigger.SCHEDULE, enqueue=False)
    with runtime.database.session() as session:
        stored_run = session.get(ReconciliationRun, my_run.id)
        assert stored_run is not None
        stored_run.status = RunStatus.DONE
        stored_run.report = {
            "currency": "INR",
            "differences": [
                {"order_id": "o-1002", "amount": None, "explanation": "Mine partly refunded 2499"}
            ],
        }
        session.commit()
    from sequences.alerts import rules as alert_rules
    from sequences.alerts.incidents import apply_finding, store_scope
    from sequences.models import Incident

    finding = alert_rules.Finding("template_paused", "critical", "Mine template paused", "Mine: edit it.")
    apply_finding(runtime, store_scope(mine.id), mine.id, "template_paused", finding, runtime.now())
    with runtime.database.session() as session:
        my_incident = session.exec(select(Incident).where(Incident.store_id == mine.id)).one()
    before = _store(runtime)
    other = make_store(runtime, "other-shop")
    csrf = sign_in(journey.client, runtime, other.id)
    options = dict(TENANCY_CASES[(method, rule)])
    if "json" in options and rule == "/api/settings":
        options["json"] = _settings_payload(journey.client) | options["json"]
    if "json" in options and rule.startswith("/api/settings/"):
        options["json"] = {"settings": _settings_payload(journey.client)} | options["json"]

    with runtime.database.session() as session:
        my_cart = session.exec(
            select(Cart).where(Cart.store_id == mine.id, col(Cart.contact_id).is_not(None))
        ).first()
        assert my_cart is not None
    path = (
        rule.replace("<int(max=2147483647):export_id>", str(export_id))
        .replace("<int(max=2147483647):cart_id>", str(my_cart.id))
        .replace("<int(max=2147483647):contact_id>", str(my_cart.contact_id))
        .replace("<int(max=2147483647):experiment_id>", str(experiment.id))
        .replace("<int(max=2147483647):arm_id>", str(_challenger_arm(runtime, experiment.id)))
        .replace("<int(max=2147483647):run_id>", str(my_run.id))
        .replace("<int(max=2147483647):incident_id>", str(my_incident.id))
    )

    response = journey.client.open(path, method=method, headers={"X-CSRF-Token": csrf}, **options)

    text = response.get_data(as_text=True)
    assert response.status_code < 500
    for secret in ("demo-bazaar", "chk_seed", "mine-request", "9876500001", "0001", "2499", "Mine "):
        assert secret not in text
    with runtime.database.session() as session:
        mine_incident = session.get(Incident, my_incident.id)
        assert mine_incident is not None and mine_incident.note is None
        mine_experiment = session.get(Experiment, experiment.id)
        assert mine_experiment is not None and mine_experiment.status == ExperimentStatus.RUNNING
    after = _store(runtime)
    assert (after.settings, after.timezone, after.sending_paused) == (
        before.settings,
        before.timezone,
        before.sending_paused,
    )
    assert all(entry.store_id == other.id for entry in _audit(runtime))


# -- carts and contacts ----------------------------------------------------------------------------


def test_carts_are_found_by_checkout_id_order_id_or_the_phones_last_4_digits(journey: Any) -> None:
    store = _store(journey.runtime)
    seed_dashboard(journey.runtime, store)
    sign_in(journey.client, journey.runtime, store.id)

    def found(query: str) -> list[str]:
        data = journey.client.get("/api/carts", query_string={"q": query}).get_json()
        return sorted(cart["checkout_id"] for cart in data["carts"])

    assert found("chk_seed_3") == ["chk_seed_3"]
    assert found("o-1002") == ["chk_seed_2"]
    assert found("0002") == ["chk_seed_2", "chk_seed_7"]
    assert found("9999") == []
    everything = journey.client.get("/api/carts").get_json()
    assert len(everything["carts"]) == 9 and everything["next"] is None
    assert all(cart["phone_end"] in (None, "0001", "0002", "0003", "0004") for cart in everything["carts"])


def test_the_carts_list_pages_newest_first(journey: Any) -> None:
    from sequences.merchant import lists

    store = _store(journey.runtime)
    seed_dashboard(journey.runtime, store)

    with journey.runtime.database.session() as session:
        first, cursor = lists.search_carts(session, store.id, limit=4)
        second, cursor2 = lists.search_carts(session, store.id, before=cursor, limit=4)
        third, cursor3 = lists.search_carts(session, store.id, before=cursor2, limit=4)

    rows = first + second + third
    assert len({row.id for row in rows}) == 9 and cursor3 is None
    keys = [(row.last_activity_at, row.id) for row in rows]
    assert keys == sorted(keys, reverse=True)


def test_a_carts_timeline_shows_its_steps_messages_clicks_and_order(messaged_journey: Any) -> None:
    journey = messaged_journey
    store = _store(journey.runtime)
    sign_in(journey.client, journey.runtime, store.id)
    with journey.at(20 * MIN):
        journey.client.get(journey.link_path())
    cart = journey.cart()

    data = journey.client.get(f"/api/carts/{cart.id}").get_json()
    page = journey.client.get(f"/admin/carts/{cart.id}").get_data(as_text=True)

    kinds = [event["kind"] for event in data["timeline"]]
    assert kinds[:2] == ["cart_captured", "cart_abandoned"] and "link_clicked" in kinds
    assert data["messages"][0]["step"] == 1 and data["messages"][0]["clicked_at"] is not None
    assert [step["status"] for step in data["steps"]] == ["sent", "scheduled", "scheduled"]
    assert data["phone_end"] == "3210" and "+91" not in str(data)
    assert "link opened" in page and "…3210" in page


def test_a_contacts_consent_history_lists_each_change_with_its_evidence(messaged_journey: Any) -> None:
    from sequences.engine.consent import handle_reply

    journey = messaged_journey
    store = _store(journey.runtime)
    with journey.at(30 * MIN):
        handle_reply(
            journey.runtime,
            store.id,
            "+919876543210",
            "STOP",
            source="whatsapp_text",
            evidence={"text": "STOP"},
        )
    sign_in(journey.client, journey.runtime, store.id)
    cart = journey.cart()

    data = journey.client.get(f"/api/contacts/{cart.contact_id}").get_json()
    page = journey.client.get(f"/admin/contacts/{cart.contact_id}").get_data(as_text=True)

    assert [(e["kind"], e["source"]) for e in data["consent_history"]] == [("opt_out", "whatsapp_text")]
    assert data["consent_history"][0]["evidence"] == "said STOP"
    assert data["opted_out_at"] is not None and "opted out" in page
    assert [c["checkout_id"] for c in data["carts"]] == ["chk_1"]


def test_a_cart_or_contact_of_another_store_is_not_found(journey: Any) -> None:
    store = _store(journey.runtime)
    seed_dashboard(journey.runtime, store)
    other = make_store(journey.runtime, "other-shop")
    sign_in(journey.client, journey.runtime, other.id)
    with journey.runtime.database.session() as session:
        cart = session.exec(
            select(Cart).where(Cart.store_id == store.id, col(Cart.contact_id).is_not(None))
        ).first()
    assert cart is not None

    assert journey.client.get(f"/admin/carts/{cart.id}").status_code == 404
    assert journey.client.get(f"/admin/contacts/{cart.contact_id}").status_code == 404
    assert journey.client.get(f"/api/carts/{cart.id}").status_code == 404


def test_a_shopify_looking_page_load_on_a_server_without_shopify_explains_how_to_sign_in(
    journey: Any,
) -> None:
    page = journey.client.get("/admin?shop=bazaar.myshopify.com&host=abc&id_token=x.y.z")

    assert page.status_code == 401 and "Sign in to cartback" in page.get_data(as_text=True)


@pytest.mark.parametrize("cursor", ["garbage", "2026-01-01T00:00:00_5", "2026-01-01T00:00:00+05:30_x", "_"])
def test_an_odd_page_cursor_is_no_error(journey: Any, cursor: str) -> None:
    store = _store(journey.runtime)
    seed_dashboard(journey.runtime, store)
    sign_in(journey.client, journey.runtime, store.id)

    response = journey.client.get("/api/carts", query_string={"before": cursor, "q": "%' OR 1=1 --"})

    assert response.status_code == 200 and response.get_json()["carts"] == []


# -- inside Shopify: App Bridge session tokens -------------------------------------------------------


def test_inside_shopify_the_api_takes_the_session_token_and_needs_no_csrf(shopify: Any) -> None:
    store = shopify.install()
    token = shopify.fake.session_token(shopify.shop)
    headers = {"Authorization": f"Bearer {token}"}
    payload = shopify.client.get("/api/settings", headers=headers).get_json()["settings"]

    saved = shopify.client.put("/api/settings", json=payload | {"inactivity_minutes": 10}, headers=headers)

    assert saved.status_code == 200
    (change,) = _audit(shopify.runtime)
    assert change.store_id == store.id and change.actor == "Shopify user 42"


@pytest.mark.parametrize("problem", ["expired", "wrong secret", "other app", "not bearer"])
def test_inside_shopify_a_bad_session_token_is_a_401_app_bridge_retries(shopify: Any, problem: str) -> None:
    shopify.install()
    fake = shopify.fake
    token = {
        "expired": lambda: fake.session_token(shopify.shop, expires_in=-60),
        "wrong secret": lambda: fake.session_token(shopify.shop, secret="not-the-app-secret-" * 2),
        "other app": lambda: fake.session_token(shopify.shop, aud="another-client-id"),
        "not bearer": lambda: "x",
    }[problem]()
    header = f"Basic {token}" if problem == "not bearer" else f"Bearer {token}"

    response = shopify.client.get("/api/dashboard", headers={"Authorization": header})

    assert response.status_code == 401
    assert response.get_json()["error"]
    # App Bridge retries with a fresh token on Shopify's header; a non-Bearer header is no
    # Shopify session at all (it may be a proxy's Basic auth) and gets the sign-in answer.
    retry = response.headers.get("X-Shopify-Retry-Invalid-Session-Request")
    assert retry == (None if problem == "not bearer" else "1")


# -- from the second read ------------------------------------------------------------------------------


def test_saving_other_settings_leaves_a_pause_cartback_made_alone(journey: Any) -> None:
    from sequences.whatsapp.health import QUALITY, pause_store

    store = _store(journey.runtime)
    csrf = sign_in(journey.client, journey.runtime, store.id)
    payload = _settings_payload(journey.client)  # the page, loaded before the pause
    with journey.runtime.database.locked_session() as session:
        held = session.get(Store, store.id)
        pause_store(held, QUALITY, "the number's quality rating is RED", journey.runtime.now())
        session.commit()

    _put(
        journey.client,
        csrf,
        {k: v for k, v in payload.items() if k != "sending_paused"} | {"attribution_days": 5},
    )
    _put(journey.client, csrf, payload | {"sending_paused": True})

    after = _store(journey.runtime)
    assert (after.sending_paused, after.pause_source) == (True, QUALITY)
    assert all("sending_paused" not in str(entry.changes) for entry in _audit(journey.runtime))


def test_switching_the_consent_policy_back_stops_shoppers_who_never_ticked_the_box(journey: Any) -> None:
    # Signed in on the journey's clock: the session must not come from its future.
    with journey.at(timedelta(0)):
        csrf = sign_in(journey.client, journey.runtime, _store(journey.runtime).id)
        payload = _settings_payload(journey.client)
        _put(journey.client, csrf, payload | {"consent_policy": "store_collects_optin"})
    journey.checkout(consent=False)
    journey.run(15 * MIN)

    with journey.at(30 * MIN):
        assert (
            _put(journey.client, csrf, payload | {"consent_policy": "checkout_checkbox"}).status_code == 200
        )
    journey.run(4 * 60 * MIN + MIN)
    journey.run(22 * 60 * MIN + MIN)

    assert len(journey.outbox()) == 1
    assert {step.reason for step in journey.steps()[1:]} == {
        "consent policy: the shopper did not tick the marketing box"
    }


def test_a_test_message_is_refused_while_paused_or_to_a_number_that_opted_out(messaged_journey: Any) -> None:
    from sequences.engine.consent import handle_reply

    journey = messaged_journey
    store = _store(journey.runtime)
    with journey.at(20 * MIN):
        csrf = sign_in(journey.client, journey.runtime, store.id)
        body = {"settings": _settings_payload(journey.client), "step": 0, "phone": "+919876543210"}
        handle_reply(journey.runtime, store.id, "+919876543210", "STOP", source="whatsapp_text", evidence={})
        opted_out = journey.client.post(
            "/api/settings/test-message", json=body, headers={"X-CSRF-Token": csrf}
        )
        _put(journey.client, csrf, body["settings"] | {"sending_paused": True})
        paused = journey.client.post(
            "/api/settings/test-message",
            json=body | {"phone": "+919811122334"},
            headers={"X-CSRF-Token": csrf},
        )

    assert opted_out.status_code == 409 and "opted out" in opted_out.get_json()["fields"]["phone"]
    assert paused.status_code == 409 and "paused" in paused.get_json()["fields"]["phone"]
    assert len(journey.outbox()) == 1  # only the shopper's real step 1


def test_a_test_message_leaves_the_real_shoppers_name_out(messaged_journey: Any) -> None:
    journey = messaged_journey
    csrf = sign_in(journey.client, journey.runtime, _store(journey.runtime).id)
    body = {"settings": _settings_payload(journey.client), "step": 0, "phone": "+919811122334"}

    journey.client.post("/api/settings/test-message", json=body, headers={"X-CSRF-Token": csrf})

    test = journey.outbox()[-1]
    assert test.body.startswith("Hi there, you left Handloom Cotton Kurta") and "Asha" not in test.body


def test_costs_in_another_currency_are_not_added_and_no_roi_is_claimed(journey: Any) -> None:
    from sequences.models import Message

    store = _store(journey.runtime)
    seed_dashboard(journey.runtime, store)
    with journey.runtime.database.session() as session:
        message = session.exec(
            select(Message).where(col(Message.cost).is_not(None), Message.cart_abandoned_at == DAY)
        ).first()
        assert message is not None
        message.cost_currency = "USD"
        session.commit()
    sign_in(journey.client, journey.runtime, store.id)

    data = journey.client.get("/api/dashboard", query_string=PERIOD).get_json()

    assert data["messages"]["cost"] == "3.44" and data["roi"] is None
    assert data["messages"]["costs_in_other_currencies"] == 1


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/carts/3000000000", None),
        ("GET", "/admin/carts/99999999999999999999", None),
        ("GET", "/api/contacts/3000000000", None),
        ("GET", "/api/data-exports/3000000000", None),
        ("GET", "/api/carts?q=%00abc", None),
        ("GET", "/api/carts?before=0001-01-01T00:00:00%2B05:00_1", None),
        ("GET", "/api/carts?before=2026-01-01T00:00:00_3000000000", None),
        ("GET", "/api/dashboard?to=0001-01-01", None),
        ("PUT", "/api/settings", b'{"timezone": "Asia"}'),
        ("PUT", "/api/settings", b'{"timezone": "' + b"A" * 300 + b'"}'),
        ("PUT", "/api/settings", b"[" * 50000),
        ("PUT", "/api/settings", b'{"inactivity_minutes": 1e10000000}'),
        ("PUT", "/api/settings", b'{"quiet_hours_start": "21:00+05:30"}'),
    ],
)
def test_odd_input_gets_a_4xx_never_a_500(journey: Any, method: str, path: str, body: bytes | None) -> None:
    csrf = sign_in(journey.client, journey.runtime, _store(journey.runtime).id)

    response = journey.client.open(
        path, method=method, data=body, content_type="application/json", headers={"X-CSRF-Token": csrf}
    )

    assert response.status_code < 500
    assert response.status_code in (200, 400, 404, 422)


def test_a_proxys_basic_auth_header_does_not_hide_the_cookie_session(journey: Any) -> None:
    sign_in(journey.client, journey.runtime, _store(journey.runtime).id)

    response = journey.client.get("/api/settings", headers={"Authorization": "Basic dXNlcjpwYXNz"})

    assert response.status_code == 200


@pytest.mark.parametrize("margin", ["0", "120", "forty", "12.345"])
def test_a_gross_margin_outside_0_to_100_percent_is_refused_with_its_reason(
    journey: Any, margin: str
) -> None:
    csrf = sign_in(journey.client, journey.runtime, _store(journey.runtime).id)
    payload = _settings_payload(journey.client)
    assert payload["gross_margin_percent"] == "40"

    response = _put(journey.client, csrf, payload | {"gross_margin_percent": margin})

    assert response.status_code == 422
    assert "gross_margin_percent" in response.get_json()["fields"]
    assert _settings_payload(journey.client)["gross_margin_percent"] == "40"


def test_the_gross_margin_is_saved_exactly_and_audited(journey: Any) -> None:
    csrf = sign_in(journey.client, journey.runtime, _store(journey.runtime).id)
    payload = _settings_payload(journey.client)

    response = _put(journey.client, csrf, payload | {"gross_margin_percent": "32.5"})

    assert response.status_code == 200, response.get_json()
    assert _settings_payload(journey.client)["gross_margin_percent"] == "32.5"
    assert any("gross_margin_percent" in str(entry.changes) for entry in _audit(journey.runtime))
