"""The WhatsApp part of the merchant's settings, as JSON under ``/api/whatsapp`` (the settings
page calls these; the CLI's `cartback whatsapp …` does the same from a terminal).

Authenticated like every ``/api/`` call (``app.admin.session``: App Bridge's session token or
the standalone admin's cookie); a store only ever sees and changes its own number. Every write
is a service's (``sequences.whatsapp.accounts`` and ``health``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from sqlmodel import col, select

from app.admin.session import MerchantSession, api_view
from app.current import get_runtime
from sequences.models import Store, WhatsAppAccount, WhatsAppTemplate
from sequences.whatsapp.accounts import AccountError, check, connect
from sequences.whatsapp.health import switch_sending

bp = Blueprint("whatsapp_settings", __name__)
CONNECT_FIELDS = ("waba_id", "phone_number_id", "access_token")


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
            "messaging_limit_tier": account.messaging_limit_tier,
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
@api_view
def show(merchant: MerchantSession) -> Any:
    store_id = merchant.store_id
    return jsonify(_state(store_id))


@bp.put("/api/whatsapp")
@api_view
def save(merchant: MerchantSession) -> Any:
    """Connect (or replace) the number, then check it with Meta; errors name the field."""
    store_id = merchant.store_id
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
@api_view
def verify(merchant: MerchantSession) -> Any:
    store_id = merchant.store_id
    report = check(get_runtime(), store_id)
    return jsonify(ok=report.ok, problems=report.problems, facts=report.facts, done=report.done)


@bp.post("/api/whatsapp/pause")
@api_view
def pause(merchant: MerchantSession) -> Any:
    return _set_sending(merchant, paused=True)


@bp.post("/api/whatsapp/resume")
@api_view
def resume(merchant: MerchantSession) -> Any:
    return _set_sending(merchant, paused=False)


def _set_sending(merchant: MerchantSession, *, paused: bool) -> Any:
    store_id = merchant.store_id
    switch_sending(get_runtime(), store_id, paused=paused)
    return jsonify(_state(store_id)["sending"])
