"""gunicorn settings shared by the Procfile (through ``cartback web``), ``make web`` and
``make demo`` (``gunicorn -c python:app.gunicorn_config``): one place says how a web process
logs.

- Access lines go to stdout as JSON, with URL secrets and personal data redacted
  (``app.access_log``).
- The app's own logs (``cartback.*``, Flask's) get the JSON, redacting handler before any
  worker forks; without it Python's last-resort handler would print warnings and tracebacks
  unredacted.
"""

from __future__ import annotations

from typing import Any

from app.logs import configure_logging

# How to name this module on gunicorn's command line.
CONFIG_SPEC = "python:app.gunicorn_config"

accesslog = "-"
logger_class = "app.access_log.RedactingAccessLogger"


def on_starting(server: Any) -> None:
    configure_logging()
