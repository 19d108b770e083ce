"""Helpers to drive a cart through the engine with a frozen clock and a burst worker."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import time_machine
from flask.testing import FlaskClient
from sqlmodel import col, select

from sequences.models import Cart, CartEvent, ConsentEvent, Message, RecoveryStep, SandboxOutboxMessage
from sequences.runtime import Runtime
from tests.support.factories import checkout_payload, send_webhook

# A Saturday 14:30 IST: far from quiet hours for the first steps.
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


class Journey:
    def __init__(self, client: FlaskClient, runtime: Runtime, drain: Callable[[], int]) -> None:
        self.client, self.runtime, self._drain = client, runtime, drain

    def at(self, moment: datetime | timedelta) -> time_machine.travel:
        return time_machine.travel(T0 + moment if isinstance(moment, timedelta) else moment, tick=False)

    def run(self, moment: datetime | timedelta) -> int:
        """Advance the clock to ``moment`` and run every job due by then."""
        with self.at(moment):
            return self._drain()

    def webhook(self, moment: datetime | timedelta, topic: str, payload: Any, **options: Any) -> Any:
        with self.at(moment):
            response = send_webhook(self.client, topic, payload, **options)
            self._drain()
        return response

    def checkout(self, moment: datetime | timedelta = timedelta(0), **fields: Any) -> Any:
        when = T0 + moment if isinstance(moment, timedelta) else moment
        return self.webhook(
            moment, fields.pop("topic", "checkouts/update"), checkout_payload(updated_at=when, **fields)
        )

    # -- what a merchant or shopper would see ---------------------------------------------

    def outbox(self) -> list[SandboxOutboxMessage]:
        with self.runtime.database.session() as session:
            return list(
                session.exec(select(SandboxOutboxMessage).order_by(col(SandboxOutboxMessage.id))).all()
            )

    def cart(self, platform_cart_id: str = "chk_1") -> Cart:
        with self.runtime.database.session() as session:
            cart = session.exec(select(Cart).where(Cart.platform_cart_id == platform_cart_id)).one()
            return cart

    def steps(self, platform_cart_id: str = "chk_1") -> list[RecoveryStep]:
        cart = self.cart(platform_cart_id)
        with self.runtime.database.session() as session:
            return list(
                session.exec(
                    select(RecoveryStep)
                    .where(RecoveryStep.cart_id == cart.id)
                    .order_by(col(RecoveryStep.step_number))
                ).all()
            )

    def messages(self) -> list[Message]:
        with self.runtime.database.session() as session:
            return list(session.exec(select(Message).order_by(col(Message.id))).all())

    def events(self, platform_cart_id: str = "chk_1") -> list[str]:
        cart = self.cart(platform_cart_id)
        with self.runtime.database.session() as session:
            return [
                event.kind
                for event in session.exec(
                    select(CartEvent).where(CartEvent.cart_id == cart.id).order_by(col(CartEvent.id))
                ).all()
            ]

    def consent_events(self) -> list[ConsentEvent]:
        with self.runtime.database.session() as session:
            return list(session.exec(select(ConsentEvent).order_by(col(ConsentEvent.id))).all())

    def link_path(self, index: int = 0) -> str:
        link: str = self.outbox()[index].buttons[0]["url"]
        return link.removeprefix(self.runtime.settings.app_url)
