"""The settings history: every save the merchant made, newest first, for their own store only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import time_machine

from sequences.merchant.settings_changes import HISTORY_LIMIT, as_payload, history, save
from sequences.models import Store
from sequences.runtime import Runtime
from tests.support.factories import make_store

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def _payload(runtime: Runtime, store_id: int, **changes: Any) -> dict[str, Any]:
    with runtime.database.session() as session:
        store = session.get(Store, store_id)
        assert store is not None
        return as_payload(store, runtime.store_settings(store)) | changes


def _save_inactivity(runtime: Runtime, store_id: int, minutes: int, actor: str, at: datetime) -> None:
    with time_machine.travel(at, tick=False):
        save(runtime, store_id, _payload(runtime, store_id, inactivity_minutes=minutes), actor)


def _store_id(runtime: Runtime, slug: str = "demo-bazaar") -> int:
    store = make_store(runtime, slug)
    assert store.id is not None
    return store.id


def test_the_history_lists_saves_newest_first_with_who_and_what(runtime: Runtime) -> None:
    store_id = _store_id(runtime)
    _save_inactivity(runtime, store_id, 12, "admin link 1 (cli)", T0)
    _save_inactivity(runtime, store_id, 10, "Shopify user 7", T0 + timedelta(minutes=5))

    entries = history(runtime, store_id)

    assert [(entry.at, entry.by) for entry in entries] == [
        (T0 + timedelta(minutes=5), "Shopify user 7"),
        (T0, "admin link 1 (cli)"),
    ]
    assert entries[0].changes == [{"field": "inactivity_minutes", "from": 12, "to": 10}]
    assert entries[1].changes == [{"field": "inactivity_minutes", "from": 15, "to": 12}]
    assert entries[0].as_json() == {
        "at": (T0 + timedelta(minutes=5)).isoformat(),
        "by": "Shopify user 7",
        "changes": [{"field": "inactivity_minutes", "from": 12, "to": 10}],
    }


def test_a_save_that_changes_nothing_leaves_no_entry(runtime: Runtime) -> None:
    store_id = _store_id(runtime)

    save(runtime, store_id, _payload(runtime, store_id), "Shopify user 7")

    assert history(runtime, store_id) == []


def test_the_history_keeps_to_its_limit_and_keeps_the_newest(runtime: Runtime) -> None:
    store_id = _store_id(runtime)
    for index, minutes in enumerate((12, 10, 8, 6)):
        _save_inactivity(runtime, store_id, minutes, f"user {index}", T0 + timedelta(minutes=index))

    latest_two = history(runtime, store_id, 2)

    assert [entry.by for entry in latest_two] == ["user 3", "user 2"]
    assert len(history(runtime, store_id)) == 4 <= HISTORY_LIMIT


def test_the_history_shows_only_the_stores_own_changes(runtime: Runtime) -> None:
    mine, theirs = _store_id(runtime, "mine"), _store_id(runtime, "theirs")
    _save_inactivity(runtime, theirs, 10, "their admin", T0)

    assert history(runtime, mine) == []
    assert [entry.by for entry in history(runtime, theirs)] == ["their admin"]
