"""The experiments API: start, read live results, stop, CSV; bad requests get their reasons."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlmodel import select

from sequences.models import Experiment, ExperimentArm, Store
from tests.support.admin import sign_in

OFFER = {"steps": [{"delay_minutes": 15, "offer": {"kind": "fixed", "value": "100"}}]}
BODY = {
    "name": "Does ₹100 off pay?",
    "holdout": True,
    "arms": [{"name": "₹0 off", "control": True}, {"name": "₹100 off", "overrides": OFFER}],
}


def _signed_in(journey: Any) -> str:
    with journey.runtime.database.session() as session:
        store = session.exec(select(Store)).one()
    return sign_in(journey.client, journey.runtime, store.id)


def _start(journey: Any, csrf: str, body: Any = BODY) -> Any:
    return journey.client.post("/api/experiments", json=body, headers={"X-CSRF-Token": csrf})


def test_without_a_session_every_experiments_route_answers_401(journey: Any) -> None:
    for method, path in (
        ("GET", "/api/experiments"),
        ("POST", "/api/experiments"),
        ("GET", "/api/experiments/1"),
    ):
        assert journey.client.open(path, method=method, json={}).status_code == 401


def test_an_experiment_started_with_a_holdout_shows_its_arms_at_zero(journey: Any) -> None:
    csrf = _signed_in(journey)

    response = _start(journey, csrf)

    assert response.status_code == 201, response.get_json()
    started = response.get_json()
    assert [(arm["name"], arm["weight"], arm["holdout"]) for arm in started["arms"]] == [
        ("₹0 off", 45, False),
        ("₹100 off", 45, False),
        ("Holdout (no messages)", 10, True),
    ]
    assert all(arm["eligible"] == 0 and arm["net_revenue"] == "0.00" for arm in started["arms"])
    assert started["arms"][1]["lift_vs_control"]["net_revenue_per_cart"]["estimate"] is None
    listed = journey.client.get("/api/experiments").get_json()["experiments"]
    assert [(e["id"], e["status"]) for e in listed] == [(started["id"], "running")]


def test_live_results_count_the_carts_given_each_arm(journey: Any) -> None:
    # Signed in on the journey's clock: the session must not come from its future.
    with journey.at(timedelta(0)):
        csrf = _signed_in(journey)
        experiment_id = _start(journey, csrf).get_json()["id"]
    for n in range(30):
        journey.checkout(checkout_id=f"chk_{n}", token=f"tok_{n}", phone=f"+91987650{n:04d}")
    journey.run(timedelta(minutes=16))

    with journey.at(timedelta(minutes=17)):
        results = journey.client.get(f"/api/experiments/{experiment_id}").get_json()

    arms = {arm["name"]: arm for arm in results["arms"]}
    assert sum(arm["eligible"] for arm in arms.values()) == 30
    assert arms["Holdout (no messages)"]["messaged"] == 0
    assert arms["₹0 off"]["messaged"] == arms["₹0 off"]["eligible"]
    assert results["sample_ratio"]["p_value"] is None  # fewer than 100 carts: not judged yet


def test_an_experiment_that_cannot_start_gets_a_reason_per_field_and_saves_nothing(journey: Any) -> None:
    csrf = _signed_in(journey)
    body = {
        "name": "Bad",
        "arms": [
            {"name": "a", "control": True},
            {"name": "b", "overrides": {"steps": [{"delay_minutes": 2}]}},
            {"name": "c", "overrides": {"quiet_hours_enabled": False}},
        ],
    }

    response = _start(journey, csrf, body)

    assert response.status_code == 422
    fields = response.get_json()["fields"]
    assert "arms.1.overrides.steps.0.delay_minutes" in fields
    assert fields["arms.2.overrides.quiet_hours_enabled"] == "an arm may change only steps and inactivity"
    with journey.runtime.database.session() as session:
        assert not session.exec(select(Experiment)).all() and not session.exec(select(ExperimentArm)).all()


def test_malformed_or_mistyped_requests_are_4xx_with_a_reason(journey: Any) -> None:
    csrf = _signed_in(journey)
    headers = {"X-CSRF-Token": csrf}
    malformed = journey.client.post(
        "/api/experiments", data=b"{nope", content_type="application/json", headers=headers
    )
    assert malformed.status_code == 400 and "body" in malformed.get_json()["fields"]
    for body, field in (
        ([], "body"),
        ({"name": 5, "arms": []}, "name"),
        ({"name": "x", "arms": "ab"}, "arms"),
        ({"name": "x", "arms": [{"name": "a", "weight": "3"}]}, "arms.0.weight"),
        (
            {"name": "x", "arms": [{"name": "a", "control": True}, {"name": "b"}], "holdout_share": 1.5},
            "holdout_share",
        ),
        (
            {"name": "x", "planned_per_arm": 5, "arms": [{"name": "a", "control": True}, {"name": "b"}]},
            "planned_per_arm",
        ),
    ):
        response = _start(journey, csrf, body)
        assert 400 <= response.status_code < 500, body
        assert field in response.get_json()["fields"], (body, response.get_json())
    assert journey.client.post("/api/experiments", json=BODY).status_code == 403  # no CSRF token


def test_a_stopped_experiment_lets_the_next_one_start(journey: Any) -> None:
    csrf = _signed_in(journey)
    first = _start(journey, csrf).get_json()["id"]
    assert _start(journey, csrf).status_code == 422  # one at a time

    stopped = journey.client.post(f"/api/experiments/{first}/stop", headers={"X-CSRF-Token": csrf})

    assert stopped.status_code == 200 and stopped.get_json()["status"] == "stopped"
    assert _start(journey, csrf).status_code == 201
    missing = journey.client.post("/api/experiments/999/stop", headers={"X-CSRF-Token": csrf})
    assert missing.status_code == 404


def test_the_csv_has_a_row_per_arm_and_no_formula_in_a_name(journey: Any) -> None:
    csrf = _signed_in(journey)
    body = {
        "name": "CSV",
        "arms": [{"name": "=HYPERLINK(1)", "control": True}, {"name": "b", "overrides": OFFER}],
    }
    experiment_id = _start(journey, csrf, body).get_json()["id"]

    response = journey.client.get(f"/api/experiments/{experiment_id}.csv")

    assert response.status_code == 200 and response.mimetype == "text/csv"
    lines = response.get_data(as_text=True).splitlines()
    assert lines[0].startswith("arm,control,holdout,eligible")
    assert lines[1].startswith("'=HYPERLINK(1)") and lines[2].startswith("b,")


def test_promoting_an_arm_makes_its_settings_the_stores_in_the_audit_trail(journey: Any) -> None:
    from sequences.models import SettingsChange

    csrf = _signed_in(journey)
    started = _start(journey, csrf).get_json()
    offer_arm = next(arm for arm in started["arms"] if arm["name"] == "₹100 off")
    holdout = next(arm for arm in started["arms"] if arm["holdout"])
    base = f"/api/experiments/{started['id']}/arms"
    headers = {"X-CSRF-Token": csrf}

    refused = journey.client.post(f"{base}/{holdout['id']}/promote", headers=headers)
    assert refused.status_code == 422 and "holdout" in refused.get_json()["fields"]["arm"]
    assert journey.client.post(f"{base}/999/promote", headers=headers).status_code == 404
    assert journey.client.post(f"{base}/{offer_arm['id']}/promote").status_code == 403  # no CSRF token

    response = journey.client.post(f"{base}/{offer_arm['id']}/promote", headers=headers)

    assert response.status_code == 200, response.get_json()
    promoted = response.get_json()
    assert promoted["status"] == "stopped" and promoted["promoted_arm_id"] == offer_arm["id"]
    settings = journey.client.get("/api/settings").get_json()["settings"]
    assert len(settings["steps"]) == 1 and settings["steps"][0]["offer"]["value"] == "100"
    with journey.runtime.database.session() as session:
        audit = session.exec(select(SettingsChange)).all()
    assert len(audit) == 1 and "promoted “₹100 off”" in audit[0].actor


def test_the_plan_gives_the_carts_per_arm_and_the_days_at_the_stores_volume(journey: Any) -> None:
    with journey.at(timedelta(0)):
        _signed_in(journey)
    for n in range(56):
        journey.checkout(checkout_id=f"chk_{n}", token=f"tok_{n}", phone=f"+91987650{n:04d}")
    journey.run(timedelta(minutes=16))

    with journey.at(timedelta(minutes=20)):
        plan = journey.client.get("/api/experiments/plan?baseline_rate=0.08&mde=0.02&arms=3").get_json()
        bad = journey.client.get("/api/experiments/plan?baseline_rate=8&mde=0.02")
        missing = journey.client.get("/api/experiments/plan?mde=0.02")

    assert plan["carts_per_arm"] > 6_000 and plan["carts_in_all"] == 3 * plan["carts_per_arm"]
    assert plan["eligible_per_day"] == 2.0  # 56 carts over the last 28 days
    assert plan["days"] == -(-plan["carts_in_all"] // 2)
    assert bad.status_code == 422 and "0.08 for 8 %" in bad.get_json()["fields"]["baseline_rate"]
    assert missing.status_code == 422 and missing.get_json()["fields"]["baseline_rate"] == "required"


def test_the_experiments_page_shows_each_arm_and_its_ranges(journey: Any) -> None:
    with journey.at(timedelta(0)):
        csrf = _signed_in(journey)
        started = _start(journey, csrf).get_json()
    for n in range(30):
        journey.checkout(checkout_id=f"chk_{n}", token=f"tok_{n}", phone=f"+91987650{n:04d}")
    journey.run(timedelta(minutes=16))

    with journey.at(timedelta(minutes=20)):
        page = journey.client.get("/admin/experiments").get_data(as_text=True)
        other = journey.client.get("/admin/experiments?id=999").get_data(as_text=True)

    assert "Does ₹100 off pay?" in page and 'data-arm="Holdout (no messages)"' in page
    assert 'id="lift-rate-holdout"' in page and "not enough carts yet" in page
    assert "holdout" in page.lower() and "Net revenue per cart" in page
    # An id that is not this store's shows the latest of its own.
    assert f'data-experiment="{started["id"]}"' in other


def test_the_calibration_gives_each_offer_levels_net_revenue_per_cart(journey: Any) -> None:
    from tests.support.experiments import seed_experiment

    with journey.at(timedelta(0)):
        csrf = _signed_in(journey)
        seed_experiment(journey.runtime, 1, per_arm=120)
        response = journey.client.get("/api/experiments/calibration", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200
    found = response.get_json()
    arms = {level["source"].split(" · ")[1]: level for level in found["experiments"]}
    assert set(arms) == {"₹0 off", "₹100 off"}
    assert arms["₹100 off"]["carts"] == 120 and arms["₹100 off"]["interval"] is not None
    assert set(arms["₹100 off"]) >= {"offer", "net_revenue_per_cart", "recovered"}
    # The seeded carts were never messaged: no history level, so no best yet.
    assert found["history"] == [] and found["best"] is None


def test_auto_promotion_is_asked_for_with_true_or_false_only(journey: Any) -> None:
    csrf = _signed_in(journey)

    refused = _start(journey, csrf, BODY | {"auto_promote": "yes"})
    started = _start(journey, csrf, BODY | {"auto_promote": True})

    assert refused.status_code == 422 and "auto_promote" in refused.get_json()["fields"]
    assert started.status_code == 201 and started.get_json()["auto_promote"] is True


def test_the_dashboard_splits_the_newest_experiments_funnel_by_arm(journey: Any) -> None:
    from tests.support.experiments import seed_experiment

    with journey.at(timedelta(0)):
        csrf = _signed_in(journey)
        seed_experiment(journey.runtime, 1, per_arm=120, rates=(0.1, 0.2, 0.05))
        found = journey.client.get(
            "/api/dashboard",
            query_string={"from": "2026-11-01", "to": "2026-11-30"},
            headers={"X-CSRF-Token": csrf},
        ).get_json()
        page = journey.client.get("/admin").get_data(as_text=True)
    arms = {arm["name"]: arm for arm in found["experiment_funnel"]["arms"]}
    assert [arms[name]["carts"] for name in ("₹0 off", "₹100 off", "Holdout (no messages)")] == [120, 120, 30]
    assert arms["Holdout (no messages)"]["messaged"] == 0
    assert sum(arm["recovered"] for arm in arms.values()) > 0
    assert 'id="arm-funnel"' in page and 'data-arm="₹100 off"' in page


def test_a_store_that_never_ran_an_experiment_has_no_split_funnel(journey: Any) -> None:
    with journey.at(timedelta(0)):
        csrf = _signed_in(journey)
        found = journey.client.get(
            "/api/dashboard",
            query_string={"from": "2026-11-01", "to": "2026-11-30"},
            headers={"X-CSRF-Token": csrf},
        ).get_json()
    assert found["experiment_funnel"] is None
