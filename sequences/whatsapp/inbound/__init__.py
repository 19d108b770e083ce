"""Applying Meta's webhook events. Each event is applied in its own transaction, idempotently,
so a delivery Meta retries (for up to 7 days) or a replayed event changes nothing.

``apply_events`` routes each event by its type (``_ROUTES``): message statuses to ``statuses``,
shopper messages and preference changes to ``replies`` (both for the store that owns the
number; a number no installed store owns is acknowledged and dropped), template and number
updates to ``account_events``. A cart a status settles is due at once (its ``next_wake_at``
set to now), and the workers' dispatch takes it from there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlmodel import col, select

from channels.whatsapp.webhook_events import (
    Event,
    InboundEvent,
    PhoneQualityEvent,
    PreferenceEvent,
    StatusEvent,
    TemplateEvent,
)
from sequences.models import Store, StoreStatus, WhatsAppAccount
from sequences.runtime import Runtime
from sequences.whatsapp.inbound import account_events, replies, statuses
from sequences.whatsapp.inbound.applied import Applied

__all__ = ["Applied", "apply_events"]


def apply_events(runtime: Runtime, events: list[Event]) -> Applied:
    result = Applied()
    accounts = _Accounts(runtime)
    for event in events:
        # A type with no route goes where the isinstance chain's last branch sent it.
        route = _ROUTES.get(type(event), _phone_quality)
        if route(runtime, accounts, event, result):
            result.applied += 1
        else:
            result.ignored += 1
    return result


class _Accounts:
    """Number -> store lookups, cached for one delivery (a delivery names few numbers)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._numbers: dict[str, int | None] = {}

    def store_for_number(self, phone_number_id: str) -> int | None:
        if phone_number_id not in self._numbers:
            with self._runtime.database.session() as session:
                self._numbers[phone_number_id] = session.exec(
                    select(WhatsAppAccount.store_id)
                    .join(Store, col(Store.id) == col(WhatsAppAccount.store_id))
                    .where(
                        WhatsAppAccount.phone_number_id == phone_number_id, Store.status == StoreStatus.ACTIVE
                    )
                ).first()
        return self._numbers[phone_number_id]

    def stores_for_waba(self, waba_id: str) -> list[int]:
        with self._runtime.database.session() as session:
            return list(
                session.exec(select(WhatsAppAccount.store_id).where(WhatsAppAccount.waba_id == waba_id)).all()
            )


# (runtime, this delivery's number lookups, the event, the delivery's result) -> applied?
Route = Callable[[Runtime, _Accounts, Any, Applied], bool]
ForNumber = Callable[[Runtime, int, Any, Applied], bool]


def _for_number(apply: ForNumber) -> Route:
    """An event about one of our numbers, applied for the store that owns it."""

    def route(runtime: Runtime, accounts: _Accounts, event: Any, result: Applied) -> bool:
        store_id = accounts.store_for_number(event.phone_number_id)
        # A number no installed store owns: acknowledged and dropped.
        return store_id is not None and apply(runtime, store_id, event, result)

    return route


def _template(runtime: Runtime, accounts: _Accounts, event: TemplateEvent, result: Applied) -> bool:
    return account_events.apply_template(runtime, accounts.stores_for_waba(event.waba_id), event)


def _phone_quality(runtime: Runtime, accounts: _Accounts, event: PhoneQualityEvent, result: Applied) -> bool:
    return account_events.apply_phone_quality(runtime, event)


# Meta's event type -> what applies it (one route per type of the Event union).
_ROUTES: dict[type[Any], Route] = {
    StatusEvent: _for_number(statuses.apply_status),
    InboundEvent: _for_number(replies.apply_message),
    PreferenceEvent: _for_number(replies.apply_preference),
    TemplateEvent: _template,
    PhoneQualityEvent: _phone_quality,
}
