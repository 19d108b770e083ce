"""Alerts become incidents: evaluated every minute (a worker's periodic job), per store and for
the service; one incident per (scope, rule) while its condition holds.

Hysteresis: an incident opens the first time its rule finds the condition, and closes only
once the condition has stayed clear for CLEAR_AFTER; a condition that comes back meanwhile
keeps the same incident (its clear time is forgotten). So a flapping condition is one incident,
and a notification is sent once when it opens and once when it closes (``notify``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis.exceptions import RedisError
from rq.exceptions import DuplicateJobError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from sequences import queue
from sequences.alerts.notify import CHANNELS
from sequences.alerts.rules import SERVICE_RULES, STORE_RULES, Finding, StoreContext
from sequences.models import Incident, IncidentStatus, Store, StoreStatus
from sequences.runtime import Runtime

log = logging.getLogger("cartback.alerts")

# A condition must stay clear this long before its incident closes (flapping is one incident).
CLEAR_AFTER = timedelta(minutes=10)
SERVICE = "service"


def store_scope(store_id: int) -> str:
    return f"store:{store_id}"


@dataclass
class EvaluationReport:
    stores: int = 0
    opened: int = 0
    closed: int = 0
    failed_rules: int = 0

    def __str__(self) -> str:
        return f"{self.stores} stores evaluated: {self.opened} incidents opened, {self.closed} closed" + (
            f", {self.failed_rules} rule evaluations failed (see the logs)" if self.failed_rules else ""
        )


def _enqueue_notice(runtime: Runtime, incident_id: int, event: str) -> None:
    """One job per channel, so a webhook that fails is retried without emailing again."""
    for channel in CHANNELS:
        options = queue.JobOptions(f"notify-incident-{incident_id}-{event}-{channel}", "incident notice")
        with suppress(DuplicateJobError, RedisError):
            queue.enqueue(runtime.queue, queue.NOTIFY_INCIDENT, incident_id, event, channel, options=options)


def apply_finding(
    runtime: Runtime, scope: str, store_id: int | None, rule: str, finding: Finding | None, now: datetime
) -> str | None:
    """Open, refresh, start clearing or close the rule's incident; "opened"/"closed" or None."""
    with runtime.database.session() as session:
        incident = session.exec(
            select(Incident).where(
                Incident.scope == scope, Incident.rule == rule, Incident.status == IncidentStatus.OPEN
            )
        ).first()
        if finding is not None:
            if incident is not None:
                incident.last_seen_at, incident.clear_since = now, None
                incident.title, incident.evidence = finding.title, finding.evidence
                incident.severity, incident.action = finding.severity, finding.action
                session.commit()
                return None
            incident = Incident(
                store_id=store_id,
                scope=scope,
                rule=rule,
                severity=finding.severity,
                title=finding.title,
                evidence=finding.evidence,
                action=finding.action,
                opened_at=now,
                last_seen_at=now,
            )
            session.add(incident)
            try:
                session.commit()
            except IntegrityError:
                return None  # another evaluation opened it a moment ago
            opened_id = incident.id
        else:
            if incident is None:
                return None
            if incident.clear_since is None:
                incident.clear_since = now
                session.commit()
                return None
            if now - incident.clear_since < CLEAR_AFTER:
                return None
            incident.status, incident.ended_at = IncidentStatus.CLOSED, now
            session.commit()
            closed_id = incident.id
    if finding is not None:
        assert opened_id is not None
        log.warning("incident opened", extra={"incident_id": opened_id, "rule": rule, "scope": scope})
        _enqueue_notice(runtime, opened_id, "opened")
        return "opened"
    assert closed_id is not None
    log.info("incident closed", extra={"incident_id": closed_id, "rule": rule, "scope": scope})
    _enqueue_notice(runtime, closed_id, "closed")
    return "closed"


def _count(report: EvaluationReport, event: str | None) -> None:
    if event == "opened":
        report.opened += 1
    elif event == "closed":
        report.closed += 1


def _run(
    rule: Callable[..., Finding | None], report: EvaluationReport, *args: object
) -> tuple[bool, Finding | None]:
    try:
        return True, rule(*args)
    except Exception:  # one broken rule must not silence the others
        log.exception("alert rule failed", extra={"rule": rule.__name__})
        report.failed_rules += 1
        return False, None


def evaluate_store(runtime: Runtime, store: Store, now: datetime, report: EvaluationReport) -> None:
    assert store.id is not None
    with runtime.database.session() as session:
        context = StoreContext(runtime, session, store, now)
        results = [(rule.__name__, _run(rule, report, context)) for rule in STORE_RULES]
    for name, (ran, finding) in results:
        if ran:
            _count(report, apply_finding(runtime, store_scope(store.id), store.id, name, finding, now))


def evaluate_alerts(runtime: Runtime) -> EvaluationReport:
    """Every active store's rules, then the service's."""
    report = EvaluationReport()
    now = runtime.now()
    with runtime.database.session() as session:
        stores = list(
            session.exec(
                select(Store).where(Store.status == StoreStatus.ACTIVE).order_by(col(Store.id))
            ).all()
        )
        for store in stores:
            session.expunge(store)
    for store in stores:
        report.stores += 1
        evaluate_store(runtime, store, now, report)
    with runtime.database.session() as session:
        results = [(rule.__name__, _run(rule, report, session, now)) for rule in SERVICE_RULES]
    for name, (ran, finding) in results:
        if ran:
            _count(report, apply_finding(runtime, SERVICE, None, name, finding, now))
    return report


def open_incidents(session: Session, store_id: int) -> list[Incident]:
    return list(
        session.exec(
            select(Incident)
            .where(Incident.store_id == store_id, Incident.status == IncidentStatus.OPEN)
            .order_by(col(Incident.opened_at))
        ).all()
    )
