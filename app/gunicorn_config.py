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
from sequences.config import ConfigError, Settings
from sequences.telemetry import forget_dead_processes

# How to name this module on gunicorn's command line.
CONFIG_SPEC = "python:app.gunicorn_config"

accesslog = "-"
logger_class = "app.access_log.RedactingAccessLogger"


def on_starting(server: Any) -> None:
    configure_logging()
    directory = _metrics_dir()
    if directory:
        # Samples of processes from an earlier run: their gauges must not linger.
        forget_dead_processes(directory)


def child_exit(server: Any, worker: Any) -> None:
    """A web worker ended: its live gauges go (prometheus_client's multiprocess bookkeeping)."""
    directory = _metrics_dir()
    if directory:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, directory)  # type: ignore[no-untyped-call]


def _metrics_dir() -> str:
    try:
        return Settings.from_env().metrics_dir
    except ConfigError:
        return ""  # create_app says what is wrong, in every worker
