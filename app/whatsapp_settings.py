"""The WhatsApp part of the merchant's settings, as JSON under ``/api/whatsapp`` (the settings
page calls these; the CLI's `cartback whatsapp …` does the same from a terminal).

Authenticated like every ``/api/`` call from the embedded app: the App Bridge session token,
verified for the shop it names; a store only ever sees and changes its own number.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify, request
from sqlmodel import col, select

from app import get_runtime
from app.shopify_home import shopify_connector, verified_store
from sequences.models import Store, WhatsAppAccount, WhatsAppTemplate
from sequences.whatsapp.accounts import AccountError, check, connect
from sequences.whatsapp.health import MERCHANT, pause_store, resume_store

bp = Blueprint("whatsapp_settings", __name__)
CONNECT_FIELDS = ("waba_id", "phone_number_id", "access_token")


def _store_id() -> tuple[int | None, Any]:
    connector = shopify_connector()
    if connector is None:
        abort(404)
    _result, store_id, failure = verified_store(connector, check_token=False)
    return store_id, failure


def _state(store_id: int) -> dict[str, Any]:
    with get_runtime().database.session() as session:
        store = session.get(Store, store_id)
        account = session.exec(select(WhatsAppAccount).where(WhatsAppAccount.store_id == store_id)).first()
        templates = session.exec(
            select(WhatsAppTemplate)
            .where(WhatsAppTemplate.store_id == store_id)
            .order_by(col(WhatsAppTemplate.language), col(WhatsAppTemplate.name))
        ).all()
    assert store is not None
    return {
        "sending": {"paused": store.sending_paused, "reason": store.pause_reason, "by": store.pause_source},
        "number": None
        if account is None
        else {
            # Never the token: it is stored encrypted and only ever sent to Meta.
            "waba_id": account.waba_id,
            "phone_number_id": account.phone_number_id,
            "display_phone_number": account.display_phone_number,
            "verified_name": account.verified_name,
            "default_language": account.default_language,
            "quality_rating": account.quality_rating,
            "messages_per_second": account.messages_per_second,
            "checked_at": account.checked_at.isoformat() if account.checked_at else None,
            "problem": account.check_problem,
        },
        "templates": [
            {
                "name": t.name,
                "language": t.language,
                "status": t.status,
                "reason": t.reason,
                "quality": t.quality_score,
            }
            for t in templates
        ],
    }


@bp.get("/api/whatsapp")
def show() -> Any:
    store_id, failure = _store_id()
    if failure is not None:
        return failure
    assert store_id is not None
    return jsonify(_state(store_id))


@bp.put("/api/whatsapp")
def save() -> Any:
    """Connect (or replace) the number, then check it with Meta; errors name the field."""
    store_id, failure = _store_id()
    if failure is not None:
        return failure
    assert store_id is not None
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error="send a JSON object with waba_id, phone_number_id and access_token"), 400
    missing = [
        name for name in CONNECT_FIELDS if not isinstance(body.get(name), str) or not body[name].strip()
    ]
    if missing:
        return jsonify(error="missing fields", fields={name: "required" for name in missing}), 422
    language = body.get("default_language", "en")
    try:
        connect(
            get_runtime(),
            store_id,
            waba_id=body["waba_id"],
            phone_number_id=body["phone_number_id"],
            access_token=body["access_token"],
            default_language=language if isinstance(language, str) else "",
        )
    except AccountError as exc:
        return jsonify(error=str(exc)), 422
    report = check(get_runtime(), store_id)
    return jsonify(
        check={"ok": report.ok, "problems": report.problems, "done": report.done}, **_state(store_id)
    )


@bp.post("/api/whatsapp/check")
def verify() -> Any:
    store_id, failure = _store_id()
    if failure is not None:
        return failure
    assert store_id is not None
    report = check(get_runtime(), store_id)
    return jsonify(ok=report.ok, problems=report.problems, facts=report.facts, done=report.done)


@bp.post("/api/whatsapp/pause")
def pause() -> Any:
    return _set_sending(paused=True)


@bp.post("/api/whatsapp/resume")
def resume() -> Any:
    return _set_sending(paused=False)


def _set_sending(*, paused: bool) -> Any:
    store_id, failure = _store_id()
    if failure is not None:
        return failure
    runtime = get_runtime()
    with runtime.database.locked_session() as session:
        store = session.get(Store, store_id)
        assert store is not None
        if paused:
            pause_store(store, MERCHANT, "paused by the merchant", runtime.now())
        else:
            resume_store(store, runtime.now())
    assert store_id is not None
    return jsonify(_state(store_id)["sending"])
