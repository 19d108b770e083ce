"""tracking.apply_event routes each connector event type to its handler through a mapping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from connectors.base import Ignored, WebhookEvent
from sequences.engine import tracking


def test_every_event_type_a_connector_can_produce_has_a_handler():
    assert set(tracking._HANDLERS) == set(get_args(WebhookEvent))


def test_an_ignored_event_is_applied_as_ignored_with_its_reason():
    applied = tracking.apply_event(None, None, None, Ignored("topic not handled"))  # type: ignore[arg-type]
    assert applied.outcome == "ignored: topic not handled"


def test_a_type_without_a_handler_is_applied_as_ignored_as_before():
    @dataclass(frozen=True)
    class Unheard:
        reason: str

    event: Any = Unheard("a topic added later")
    assert tracking.apply_event(None, None, None, event).outcome == "ignored: a topic added later"  # type: ignore[arg-type]
