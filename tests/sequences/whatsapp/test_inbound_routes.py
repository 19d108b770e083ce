"""whatsapp.inbound routes each Meta event type through a mapping, to modules kept apart:
statuses, replies (shopper messages and preferences) and account events."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

from channels.whatsapp.webhook_events import Event
from sequences.whatsapp import inbound

ROOT = Path(__file__).resolve().parents[3]


def test_every_meta_event_type_has_a_route():
    assert set(inbound._ROUTES) == set(get_args(Event))


def test_confirmations_do_not_import_inbound():
    tree = ast.parse((ROOT / "sequences" / "whatsapp" / "confirmations.py").read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module is not None
    }
    assert not any(module.startswith("sequences.whatsapp.inbound") for module in imported)
