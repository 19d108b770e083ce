"""The demo store's blueprint and the runtime its views use (a leaf: the views import it)."""

from __future__ import annotations

from flask import Blueprint, current_app

from sequences.runtime import FLASK_EXTENSION, Runtime

bp = Blueprint("demo_store", __name__, url_prefix="/demo-store")


def get_runtime() -> Runtime:
    runtime: Runtime = current_app.extensions[FLASK_EXTENSION]
    return runtime
