"""The app on the cloud transport against the fake Graph API: a driver for WhatsApp journeys."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient
from sqlmodel import select

from sequences.models import Store
from sequences.runtime import Runtime
from tests.support.journey import Journey
from tests.support.whatsapp import APP_SECRET, sign

SHOPPER = "919876543210"


class CloudJourney(Journey):
    def __init__(self, client: FlaskClient, runtime: Runtime, drain: Callable[[], int], graph: Any) -> None:
        super().__init__(client, runtime, drain)
        self.graph = graph

    @property
    def store_id(self) -> int:
        with self.runtime.database.session() as session:
            store_id = session.exec(select(Store.id)).one()
        assert store_id is not None
        return store_id

    def store(self) -> Store:
        with self.runtime.database.session() as session:
            return session.exec(select(Store)).one()

    def sent(self) -> list[Any]:
        """Template messages the fake Graph API accepted (confirmations excluded)."""
        return [message for message in self.graph.sent_messages if message.type == "template"]

    def deliver(self, body: dict[str, Any]) -> Any:
        """POST a Meta delivery to our webhook, signed like Meta signs, then run due jobs."""
        raw = json.dumps(body).encode()
        response = self.client.post(
            "/webhooks/whatsapp",
            data=raw,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(raw, APP_SECRET)},
        )
        self._drain()
        return response
