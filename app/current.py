"""The runtime of the app serving the current request (a leaf: every view imports it)."""

from __future__ import annotations

from flask import current_app

from sequences.runtime import FLASK_EXTENSION, Runtime

EXTENSION_KEY = FLASK_EXTENSION


def get_runtime() -> Runtime:
    runtime: Runtime = current_app.extensions[EXTENSION_KEY]
    return runtime
