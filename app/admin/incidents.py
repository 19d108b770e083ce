"""The incident log: what cartback's alert rules found for this store, open and closed, with
the merchant's postmortem notes. Every route is scoped to the signed-in store (another store's
incident is a 404); the open ones are also the banner on every admin page (``pages``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from sqlmodel import col, select

from app.admin.pages import render_admin
from app.admin.session import MerchantSession, api_view, page_view
from app.admin.settings import json_request_body, rejection
from app.current import get_runtime
from sequences.merchant.settings_changes import SettingsRejected
from sequences.merchant.store_settings import Problem
from sequences.models import Incident

bp = Blueprint("admin_incidents", __name__)

# Incidents listed, newest first; a note's longest length (a postmortem, not a document).
LIST_LIMIT = 100
MAX_NOTE = 4000
NOT_FOUND = "no such incident for this shop"


def as_json(incident: Incident) -> dict[str, Any]:
    return {
        "id": incident.id,
        "rule": incident.rule,
        "severity": incident.severity,
        "status": incident.status,
        "title": incident.title,
        "action": incident.action,
        "evidence": incident.evidence,
        "opened_at": incident.opened_at.isoformat(),
        "ended_at": incident.ended_at.isoformat() if incident.ended_at else None,
        "note": incident.note,
        "notified": {"opened": incident.opened_notice, "closed": incident.closed_notice},
    }


def _incidents(store_id: int) -> list[Incident]:
    with get_runtime().database.session() as session:
        return list(
            session.exec(
                select(Incident)
                .where(Incident.store_id == store_id)
                .order_by(col(Incident.opened_at).desc(), col(Incident.id).desc())
                .limit(LIST_LIMIT)
            ).all()
        )


@bp.get("/api/incidents")
@api_view
def incidents_list(merchant: MerchantSession) -> Any:
    return jsonify(incidents=[as_json(incident) for incident in _incidents(merchant.store_id)])


@bp.put("/api/incidents/<int(max=2147483647):incident_id>/note")
@api_view
def incident_note(merchant: MerchantSession, incident_id: int) -> Any:
    try:
        body = json_request_body()
        note = body.get("note") if isinstance(body, dict) else None
        if not isinstance(note, str) or len(note) > MAX_NOTE:
            raise SettingsRejected([Problem("note", f"text of at most {MAX_NOTE} characters")])
    except SettingsRejected as rejected:
        status = 400 if rejected.problems and rejected.problems[0].field == "body" else 422
        return rejection(rejected.problems, status)
    runtime = get_runtime()
    with runtime.database.session() as session:
        incident = session.get(Incident, incident_id)
        if incident is None or incident.store_id != merchant.store_id:
            return jsonify(error=NOT_FOUND), 404
        incident.note, incident.note_at = note.strip() or None, runtime.now()
        session.commit()
        session.refresh(incident)
        return jsonify(as_json(incident))


@bp.get("/admin/incidents")
@page_view
def incidents_page(merchant: MerchantSession) -> Any:
    return render_admin(
        "admin/incidents.html", merchant, "incidents", incidents=_incidents(merchant.store_id)
    )
