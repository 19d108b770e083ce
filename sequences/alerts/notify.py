"""Telling people about incidents: the merchant by email (their alert address, through the
operator's SMTP server), the operator through an Alertmanager-compatible webhook.

Each incident is announced once when it opens and once when it closes (the job ids are per
incident and event); a store gets at most MAX_EMAILS_PER_HOUR alert emails an hour, so a bad
day is a few emails, not a flood (the admin's incident log has them all). What each notice did
is written on the incident.
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import httpx
from redis.exceptions import RedisError

from sequences.merchant.store_settings import StoreSettings
from sequences.models import Incident, IncidentStatus, Store
from sequences.runtime import Runtime

log = logging.getLogger("cartback.alerts")

MAX_EMAILS_PER_HOUR = 6
EMAIL_COUNT_KEY = "cartback:alert-emails:{store_id}:{hour}"
SMTP_TIMEOUT_S = 15
WEBHOOK_TIMEOUT_S = 10
# Alertmanager's "no end yet" (its webhook payload's zero time).
ZERO_TIME = "0001-01-01T00:00:00Z"


def _iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else ZERO_TIME


def _evidence_lines(incident: Incident) -> list[str]:
    return [f"  {key.replace('_', ' ')}: {value}" for key, value in sorted(incident.evidence.items())]


def build_email(runtime: Runtime, incident: Incident, store: Store, to: str, event: str) -> EmailMessage:
    settings = runtime.settings
    message = EmailMessage()
    resolved = event == "closed"
    message["Subject"] = f"[cartback] {store.name}: {'Resolved: ' if resolved else ''}{incident.title}"
    message["From"] = settings.smtp_from
    message["To"] = to
    message["Date"] = format_datetime(runtime.now())
    message["Message-ID"] = make_msgid(domain="cartback")
    link = f"{settings.app_url}/admin/incidents"
    lines = (
        [
            f"Resolved: {incident.title}",
            "",
            f"It began {_iso(incident.opened_at)} and ended {_iso(incident.ended_at)}.",
        ]
        if resolved
        else [
            incident.title,
            "",
            "What to do:",
            f"  {incident.action}",
            "",
            f"Since {_iso(incident.opened_at)}. What cartback saw:",
            *_evidence_lines(incident),
        ]
    )
    lines += ["", f"Your incident log (and a place for your notes): {link}", "", "— cartback"]
    message.set_content("\n".join(lines))
    return message


def send_email(runtime: Runtime, message: EmailMessage) -> None:
    settings = runtime.settings
    if settings.smtp_security == "tls":
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            settings.smtp_host,
            settings.smtp_port,
            timeout=SMTP_TIMEOUT_S,
            context=ssl.create_default_context(),
        )
    else:
        client = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT_S)
    with client:
        if settings.smtp_security == "starttls":
            client.starttls(context=ssl.create_default_context())
        if settings.smtp_username:
            client.login(settings.smtp_username, settings.smtp_password)
        client.send_message(message)


def _email_allowed(runtime: Runtime, store_id: int) -> bool:
    hour = int(runtime.now().timestamp() // 3600)
    key = EMAIL_COUNT_KEY.format(store_id=store_id, hour=hour)
    try:
        count = int(runtime.redis.incr(key))
        runtime.redis.expire(key, 7200)
    except RedisError:
        return True  # better one email too many than a missed incident
    return count <= MAX_EMAILS_PER_HOUR


def alertmanager_payload(runtime: Runtime, incident: Incident, store: Store | None) -> dict[str, Any]:
    """One alert in Alertmanager's webhook format (version 4), as its receivers expect."""
    firing = incident.status == IncidentStatus.OPEN
    labels = {
        "alertname": incident.rule,
        "severity": incident.severity,
        "scope": incident.scope,
        "service": "cartback",
        **({"store": store.platform_store_id} if store is not None else {}),
    }
    annotations = {"summary": incident.title, "action": incident.action, "incident_id": str(incident.id)}
    fingerprint = hashlib.sha256(f"{incident.scope}|{incident.rule}|{incident.id}".encode()).hexdigest()[:16]
    status = "firing" if firing else "resolved"
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{incident.rule}", scope="{incident.scope}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "cartback",
        "groupLabels": {"alertname": incident.rule},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": runtime.settings.app_url,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": _iso(incident.opened_at),
                "endsAt": _iso(incident.ended_at) if not firing else ZERO_TIME,
                "generatorURL": f"{runtime.settings.app_url}/admin/incidents",
                "fingerprint": fingerprint,
            }
        ],
    }


CHANNELS = ("email", "webhook")


def notify(runtime: Runtime, incident_id: int, event: str, channel: str) -> str:
    """Announce the incident's opening or closing on one channel (each retries on its own);
    raises on a failure worth retrying."""
    with runtime.database.session() as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            return "incident gone"
        store = session.get(Store, incident.store_id) if incident.store_id is not None else None
        settings = runtime.store_settings(store) if store is not None else StoreSettings()
        session.expunge(incident)
        if store is not None:
            session.expunge(store)
    error: str | None = None
    if channel == "email":
        outcome, error = _email(runtime, incident, store, settings, event)
    else:
        outcome, error = _webhook(runtime, incident, store)
    if outcome is None and error is None:
        return "nothing to do"
    _record(runtime, incident_id, event, f"{channel}: {error or outcome}")
    if error:
        raise RuntimeError(f"{channel}: {error}")  # the job's retries try again
    return outcome or ""


def _email(
    runtime: Runtime, incident: Incident, store: Store | None, settings: StoreSettings, event: str
) -> tuple[str | None, str | None]:
    if store is None or store.id is None:
        return None, None  # the operator's incidents go to the webhook
    if not settings.alert_email:
        return "no alert email set", None
    if not runtime.settings.smtp_host:
        return "email not configured (SMTP_HOST)", None
    if not _email_allowed(runtime, store.id):
        return f"held back: over {MAX_EMAILS_PER_HOUR} alert emails this hour", None
    try:
        send_email(runtime, build_email(runtime, incident, store, settings.alert_email, event))
    except (smtplib.SMTPException, OSError) as exc:
        return None, f"failed ({type(exc).__name__})"
    return "sent", None


def _webhook(runtime: Runtime, incident: Incident, store: Store | None) -> tuple[str | None, str | None]:
    url = runtime.settings.alertmanager_webhook_url
    if not url:
        return None, None
    try:
        # Its own connection, not the platforms' client: the operator's receiver is no platform.
        response = httpx.post(
            url, json=alertmanager_payload(runtime, incident, store), timeout=WEBHOOK_TIMEOUT_S
        )
    except httpx.HTTPError as exc:
        return None, f"failed ({type(exc).__name__})"
    if response.status_code >= 300:
        return None, f"answered {response.status_code}"
    return "sent", None


def _record(runtime: Runtime, incident_id: int, event: str, outcome: str) -> None:
    with runtime.database.session() as session:
        stored = session.get(Incident, incident_id)
        if stored is None:
            return
        if event == "opened":
            stored.opened_notice = "; ".join(filter(None, [stored.opened_notice, outcome]))
        else:
            stored.closed_notice = "; ".join(filter(None, [stored.closed_notice, outcome]))
        session.commit()
