"""The merchant's settings as JSON under ``/api/settings`` (the settings page calls these).

Every endpoint answers for the session's own store only; a bad value gets 422 with one
message per field and nothing is saved.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request

from app.admin.session import MerchantSession, api_view
from app.current import get_runtime
from connectors.base import MalformedPayload
from connectors.untrusted_json import load_untrusted_json
from sequences.merchant.preview import PreviewRefused, render_preview, send_test_message
from sequences.merchant.settings_changes import (
    HISTORY_LIMIT,
    SettingsRejected,
    as_payload,
    enqueue_replan,
    history,
    save,
    validate,
)
from sequences.merchant.store_settings import Problem
from sequences.models import Store

bp = Blueprint("admin_settings", __name__)


def rejection(problems: list[Problem], status: int = 422) -> Response:
    response = jsonify(
        error="some settings need changing: nothing was saved",
        fields={problem.field: problem.message for problem in problems},
    )
    response.status_code = status
    return response


def json_request_body() -> Any:
    """The request's JSON with exact decimals (money is never a float)."""
    if not request.is_json:
        raise SettingsRejected([Problem("body", "send JSON (Content-Type: application/json)")])
    try:
        return load_untrusted_json(
            request.get_data(cache=True) or b"null", parse_float=_number, parse_int=_integer
        )
    except MalformedPayload as exc:
        # Shown beside the field name: "body: is not valid JSON (...)".
        raise SettingsRejected([Problem("body", str(exc).removeprefix("body "))]) from None


# Longest number we read from JSON: settings are minutes, hours and rupee amounts; a
# 1e10000000 would take pydantic seconds to turn into an int.
MAX_NUMBER_CHARS = 24
MAX_EXPONENT = 12


def _number(text: str) -> Decimal:
    value = Decimal(text)
    if len(text) > MAX_NUMBER_CHARS or abs(value.adjusted()) > MAX_EXPONENT:
        raise ValueError("number too large")
    return value


def _integer(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError("number too large")
    return int(text)


def _store(merchant: MerchantSession) -> Store:
    with get_runtime().database.session() as session:
        store = session.get(Store, merchant.store_id)
        assert store is not None
        session.expunge(store)
        return store


def _history_json(store_id: int, limit: int = HISTORY_LIMIT) -> list[dict[str, Any]]:
    """The settings history as the API and the settings page show it."""
    return [entry.as_json() for entry in history(get_runtime(), store_id, limit)]


@bp.get("/api/settings")
@api_view
def show(merchant: MerchantSession) -> Any:
    store = _store(merchant)
    return jsonify(
        settings=as_payload(store, get_runtime().store_settings(store)),
        sending={"paused": store.sending_paused, "reason": store.pause_reason, "by": store.pause_source},
        history=_history_json(merchant.store_id, 10),
    )


@bp.put("/api/settings")
@api_view
def update(merchant: MerchantSession) -> Any:
    runtime = get_runtime()
    try:
        saved = save(runtime, merchant.store_id, json_request_body(), merchant.actor)
    except SettingsRejected as rejected:
        status = 400 if rejected.problems and rejected.problems[0].field == "body" else 422
        return rejection(rejected.problems, status)
    if saved.replan_needed:
        enqueue_replan(runtime, merchant.store_id)
    store = _store(merchant)
    return jsonify(
        saved=True,
        changes=saved.changes,
        settings=as_payload(store, runtime.store_settings(store)),
        sending={"paused": store.sending_paused, "reason": store.pause_reason, "by": store.pause_source},
    )


@bp.get("/api/settings/history")
@api_view
def show_history(merchant: MerchantSession) -> Any:
    return jsonify(history=_history_json(merchant.store_id))


def _preview_request() -> tuple[Any, int, str | None]:
    body = json_request_body()
    if not isinstance(body, dict):
        raise SettingsRejected([Problem("body", "send a JSON object")])
    step = body.get("step", 0)
    if not isinstance(step, int) or isinstance(step, bool):
        raise SettingsRejected([Problem("step", "must be a step index (0 for step 1)")])
    language = body.get("language")
    return body.get("settings"), step, language if isinstance(language, str) else None


@bp.post("/api/settings/preview")
@api_view
def preview(merchant: MerchantSession) -> Any:
    """The message a step would send now, from the settings as typed (not yet saved)."""
    runtime = get_runtime()
    try:
        raw, step, language = _preview_request()
        settings, _timezone, _paused = validate(raw)
        with runtime.database.session() as session:
            store = session.get(Store, merchant.store_id)
            assert store is not None
            shown = render_preview(runtime, session, store, settings, step, language)
    except SettingsRejected as rejected:
        return rejection(rejected.problems)
    except PreviewRefused as refused:
        return rejection([refused.problem], refused.status)
    message = shown.rendered
    return jsonify(
        source=shown.source,
        template=message.template_name,
        language=message.language,
        preview=message.preview,
        html=render_template("admin/_message_preview.html", preview=message.preview, source=shown.source),
    )


@bp.post("/api/settings/test-message")
@api_view
def test_message(merchant: MerchantSession) -> Any:
    runtime = get_runtime()
    try:
        body = json_request_body()
        raw, step, language = _preview_request()
        settings, _timezone, _paused = validate(raw)
        sent = send_test_message(runtime, merchant.store_id, settings, step, language, body.get("phone"))
    except SettingsRejected as rejected:
        return rejection(rejected.problems)
    except PreviewRefused as refused:
        return rejection([refused.problem], refused.status)
    return jsonify(sent=True, **sent)
