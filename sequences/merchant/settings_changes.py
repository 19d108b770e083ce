"""A merchant changes their settings: validate, save with an audit entry, re-plan open carts.

Validation answers field by field (dotted paths such as ``steps.1.offer.value``) in words a
merchant understands, and nothing is written unless everything is valid. A save writes the
settings and its ``SettingsChange`` row in one transaction; then every cart with steps still
to send is re-planned under the new timing by a job (the send itself always takes the offer
and copy configured at that moment, so nothing waits on the job to be right). ``history``
reads those rows back, newest first: who changed what, and when.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any
from zoneinfo import available_timezones

from pydantic import ValidationError
from redis.exceptions import RedisError
from rq.exceptions import DuplicateJobError
from sqlmodel import col, select

from sequences import queue
from sequences.db import lock_cart_with_contact
from sequences.engine import policy, steps
from sequences.experiments import assignment
from sequences.merchant.store_settings import COLLECT_PROBLEMS, Problem, StepSetting, StoreSettings
from sequences.models import TERMINAL_CART_STATUSES, Cart, SettingsChange, Store
from sequences.runtime import Runtime
from sequences.whatsapp.health import MERCHANT, pause_store, resume_store

log = logging.getLogger("cartback.settings")
# The replan's queueing is reported with the other schedules' (same logger as before it moved here).
schedule_log = logging.getLogger("cartback.scheduling")

# Carts re-planned per transaction: short transactions keep the worker's sends flowing.
REPLAN_BATCH = 200
# Entries the settings history shows unless asked for fewer.
HISTORY_LIMIT = 50
MERCHANT_PAUSE_REASON = "paused by the merchant in settings"
# Pydantic's error types, in the merchant's words ({…} from the error's context).
_MESSAGES = {
    "missing": "is required",
    "greater_than": "must be more than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "decimal_parsing": "must be a number, like 100 or 99.50",
    "decimal_type": "must be a number, like 100 or 99.50",
    "decimal_max_places": "can have at most {decimal_places} decimal places",
    "finite_number": "must be a number, like 100 or 99.50",
    "bool_parsing": "must be on or off",
    "bool_type": "must be on or off",
    "time_parsing": "must be a time of day, like 21:00",
    "time_type": "must be a time of day, like 21:00",
    "literal_error": "must be one of {expected}",
    "too_short": "needs at least {min_length}",
    "too_long": "can have at most {max_length}",
    "extra_forbidden": "is not a setting",
    "dict_type": "must be an object",
    "list_type": "must be a list",
    "string_type": "must be text",
}


class SettingsRejected(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Saved:
    changes: list[dict[str, Any]]
    # Open carts whose remaining steps follow the new settings (re-planned by a job).
    replan_needed: bool


def _problem(error: Any) -> Problem:
    field = ".".join(str(part) for part in error["loc"]) or "settings"
    template = _MESSAGES.get(error["type"])
    if template is None:
        return Problem(field, str(error["msg"]).removeprefix("Value error, "))
    try:
        return Problem(field, template.format(**error.get("ctx", {})))
    except (KeyError, IndexError):
        return Problem(field, str(error["msg"]))


@cache
def _zones() -> frozenset[str]:
    # Looked up by name in the tz database's list: a directory name ("Asia") or an absurdly
    # long one is simply unknown, never an OSError.
    return frozenset(available_timezones())


def validate(payload: Any) -> tuple[StoreSettings, str | None, bool | None]:
    """The new settings, time zone and paused flag from an API payload, or SettingsRejected."""
    if not isinstance(payload, dict):
        raise SettingsRejected([Problem("settings", "send the settings as a JSON object")])
    payload = dict(payload)
    timezone = payload.pop("timezone", None)
    paused = payload.pop("sending_paused", None)
    problems: list[Problem] = []
    if timezone is not None and (not isinstance(timezone, str) or timezone not in _zones()):
        problems.append(Problem("timezone", "is not a time zone we know, e.g. Asia/Kolkata"))
    if paused is not None and not isinstance(paused, bool):
        problems.append(Problem("sending_paused", "must be true or false"))
    unknown = sorted(set(payload) - set(StoreSettings.model_fields))
    problems.extend(Problem(name, "is not a setting") for name in unknown)
    settings: StoreSettings | None = None
    try:
        settings = StoreSettings.model_validate(payload, context={COLLECT_PROBLEMS: True})
        problems.extend(settings.problems())
    except ValidationError as exc:
        problems.extend(_problem(error) for error in exc.errors())
        # The rules across fields are checked for whatever parts are valid, so the merchant
        # sees every problem at once rather than one round at a time.
        problems.extend(_partial_problems(payload, {p.field for p in problems}))
    if problems:
        raise SettingsRejected(problems)
    assert settings is not None
    return settings, (str(timezone) if timezone is not None else None), paused


def _partial_problems(payload: dict[str, Any], reported: set[str]) -> list[Problem]:
    collect = {COLLECT_PROBLEMS: True}
    timing = {key: payload[key] for key in ("steps", "inactivity_minutes") if key in payload}
    found: list[Problem] = []
    try:
        found = StoreSettings.model_validate(timing, context=collect).problems()
    except ValidationError:
        raw_steps = payload.get("steps")
        for index, raw in enumerate(raw_steps if isinstance(raw_steps, list) else []):
            try:
                found.extend(StepSetting.model_validate(raw, context=collect).problems(f"steps.{index}"))
            except ValidationError:
                continue
    return [problem for problem in found if problem.field not in reported]


def as_payload(store: Store, settings: StoreSettings) -> dict[str, Any]:
    """What the settings page edits (also what ``validate`` accepts back)."""
    return {
        **settings.to_stored(),
        "timezone": store.timezone,
        "sending_paused": store.sending_paused,
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves by dotted path; an empty dict or list has none (its contents appear as added)."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(value, list):
        flat = {}
        for index, item in enumerate(value):
            flat.update(_flatten(item, f"{prefix}.{index}"))
        return flat
    return {prefix: value}


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    old, new = _flatten(before), _flatten(after)
    return [
        {"field": field, "from": old.get(field), "to": new.get(field)}
        for field in sorted(set(old) | set(new))
        if old.get(field) != new.get(field)
    ]


# Settings whose change moves when steps are due (offers and copy are read at send time).
_TIMING = ("inactivity_minutes", "steps", "quiet_hours", "timezone")


def save(runtime: Runtime, store_id: int, payload: Any, actor: str) -> Saved:
    settings, timezone, paused = validate(payload)
    now = runtime.now()
    with runtime.database.locked_session() as session:
        # Locked: two saves at once apply one after the other, each diffed against the other's result.
        store = session.exec(select(Store).where(Store.id == store_id).with_for_update()).first()
        if store is None:
            raise SettingsRejected([Problem("store", "this store is not connected")])
        before = as_payload(store, runtime.store_settings(store))
        store.settings = settings.to_stored()
        store.timezone = timezone or store.timezone
        # Only a change of the switch acts: a page loaded before cartback paused the store (spam,
        # quality, token) must not resume it, nor re-label that pause as the merchant's.
        if paused is True and not store.sending_paused:
            pause_store(store, MERCHANT, MERCHANT_PAUSE_REASON, now)
        elif paused is False and store.sending_paused:
            resume_store(store, now)
        changes = diff(before, as_payload(store, settings))
        if not changes:
            session.rollback()
            return Saved([], replan_needed=False)
        store.updated_at = now
        session.add(SettingsChange(store_id=store_id, actor=actor, changes=changes, created_at=now))
        session.commit()
    log.info("settings saved", extra={"store_id": store_id, "fields": [c["field"] for c in changes]})
    replan = any(change["field"].startswith(_TIMING) for change in changes)
    return Saved(changes, replan_needed=replan)


@dataclass(frozen=True)
class HistoryEntry:
    """One save of the settings: when, by whom (an id for the audit trail), what changed."""

    at: datetime
    by: str
    # As ``diff`` made them: {"field": dotted path, "from": old value, "to": new value}.
    changes: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "by": self.by, "changes": self.changes}


def history(runtime: Runtime, store_id: int, limit: int = HISTORY_LIMIT) -> list[HistoryEntry]:
    """The store's latest settings changes, newest first."""
    with runtime.database.session() as session:
        rows = session.exec(
            select(SettingsChange)
            .where(SettingsChange.store_id == store_id)
            .order_by(col(SettingsChange.id).desc())
            .limit(limit)
        ).all()
        return [HistoryEntry(at=row.created_at, by=row.actor, changes=row.changes) for row in rows]


def replan_store(runtime: Runtime, store_id: int) -> int:
    """Re-time the unsent steps of every open cart of the store; returns the carts touched."""

    touched, after_id = 0, 0
    while True:
        with runtime.database.session() as session:
            cart_ids = list(
                session.exec(
                    select(Cart.id)
                    .where(
                        Cart.store_id == store_id,
                        col(Cart.id) > after_id,
                        col(Cart.next_wake_at).is_not(None),
                        col(Cart.status).not_in(list(TERMINAL_CART_STATUSES)),
                    )
                    .order_by(col(Cart.id))
                    .limit(REPLAN_BATCH)
                ).all()
            )
        if not cart_ids:
            return touched
        for cart_id in cart_ids:
            assert cart_id is not None
            if _replan_cart(runtime, store_id, cart_id) is not None:
                touched += 1
        after_id = cart_ids[-1] or after_id


def _replan_cart(runtime: Runtime, store_id: int, cart_id: int) -> Any:
    """One cart, in its own short transaction, locked in the order every writer uses (contact,
    then cart): a sender or an opt-out working on the same shopper never waits in a cycle."""
    with runtime.database.locked_session() as session:
        cart, _contact = lock_cart_with_contact(session, cart_id)
        store = session.get(Store, store_id)
        if (
            cart is None
            or store is None
            or cart.status in TERMINAL_CART_STATUSES
            or cart.next_wake_at is None
        ):
            return None
        # A cart in an experiment's arm keeps the arm's settings: the store's change is not its.
        resolved = assignment.cart_settings(session, cart_id, store_id, runtime.store_settings(store))
        settings, arm = resolved.settings, resolved.arm
        wake = policy.abandoned_at(cart.last_activity_at, settings, runtime.time_scale)
        if steps.steps_of(session, cart_id):
            planned = steps.next_due(
                steps.plan(
                    session, cart, store, settings, runtime.time_scale, holdout=bool(arm and arm.holdout)
                )
            )
            wake = planned.due_at if planned and planned.due_at else cart.next_wake_at
        # The cart's own loop decides what is due; an earlier alarm only makes it look.
        cart.next_wake_at = min(wake, cart.next_wake_at)
        alarm = cart.next_wake_at
        session.commit()
    return alarm


def enqueue_replan(runtime: Runtime, store_id: int) -> bool:
    """Re-time the store's open carts after a settings change; inline when Redis is down
    (then no worker is sending either, and the new timing must not be lost)."""
    options = queue.JobOptions(f"replan-{store_id}-{math.ceil(runtime.now().timestamp())}", "settings replan")
    try:
        queue.enqueue(runtime.queue, queue.REPLAN_STORE, store_id, options=options)
    except DuplicateJobError:
        return True
    except RedisError as exc:
        schedule_log.warning("replan not queued; running it now", extra={"error": type(exc).__name__})
        replan_store(runtime, store_id)
        return False
    return True
