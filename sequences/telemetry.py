"""The service's own measurements, in Prometheus' terms, across every web and worker process.

``prometheus_client`` in multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` names a directory
the processes of a host share (``cartback web`` and ``cartback worker`` default it to one under
the system's temporary directory): each process writes its samples to memory-mapped files there
and ``/metrics`` (``app.ops``) sums them. Without it, each process reports its own.

What is measured, and where:

- webhook ingest time by platform and outcome (``app.webhooks.platforms``);
- step lateness: from a step's due time to its hand-over to the transport (``engine``);
- Meta and platform API latency by operation, and errors by operation and code (the Graph API
  HTTP client's hooks; ``stores.access.call_platform``);
- click-to-redirect time by outcome (``app.links``).

Metric objects live in the instance's own registry (never the global one), so tests and
benchmarks may build any number of runtimes in one process.
"""

from __future__ import annotations

import glob
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

# Seconds. Webhook ingest and redirects are answered in milliseconds; API calls take up to the
# HTTP timeouts (10-30 s); step lateness is seconds when healthy and minutes when not.
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
API_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENESS_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
ENV = "PROMETHEUS_MULTIPROC_DIR"
# A Graph API path's node ids are digits, its version "v25.0"; edges are words.
_NODE_ID = re.compile(r"^\d+$")
_VERSION = re.compile(r"^v\d+(\.\d+)?$")
_STARTED = "cartback_started"


def multiprocess_dir() -> str | None:
    return os.environ.get(ENV) or None


def forget_dead_processes(directory: str) -> int:
    """Remove the sample files of processes no longer alive (a restart, a crash), so their
    live gauges vanish; counters of the dead restart from zero, which Prometheus expects."""
    removed = 0
    for path in glob.glob(os.path.join(directory, "*_*.db")):
        pid = Path(path).stem.rsplit("_", 1)[-1]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            os.remove(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Telemetry:
    """The histograms and counters one process records into."""

    def __init__(self, directory: str | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, values

        directory = directory or multiprocess_dir()
        if directory:
            Path(directory).mkdir(parents=True, exist_ok=True)
            os.environ[ENV] = directory
            # prometheus_client picks its value store when first imported; it may have been
            # imported before the directory was known (a library, a test).
            values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        self.directory = directory
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.webhook_ingest = Histogram(
            "cartback_webhook_ingest_seconds",
            "Time to answer a platform webhook, by platform and outcome.",
            ["platform", "outcome"],
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        self.step_lateness = Histogram(
            "cartback_step_lateness_seconds",
            "From a recovery step's due time to its hand-over to the transport.",
            ["transport"],
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.api_latency = Histogram(
            "cartback_api_request_seconds",
            "Calls to Meta's Graph API and the store platforms, by service and operation.",
            ["service", "operation"],
            buckets=API_BUCKETS,
            registry=registry,
        )
        self.api_errors = Counter(
            "cartback_api_errors",
            "Failed calls to Meta and the store platforms, by service, operation and error code.",
            ["service", "operation", "code"],
            registry=registry,
        )
        self.click_redirect = Histogram(
            "cartback_click_redirect_seconds",
            "From a recovery link's click to the redirect answered, by outcome.",
            ["outcome"],
            buckets=FAST_BUCKETS,
            registry=registry,
        )

    # -- recording ----------------------------------------------------------------------------

    @contextmanager
    def api_call(self, service: str, operation: str) -> Iterator[dict[str, str]]:
        """Time a call; the caller sets ``outcome["code"]`` when it failed (else it counts as
        an error of type "exception" if one escapes)."""
        outcome: dict[str, str] = {}
        started = time.perf_counter()
        try:
            yield outcome
        except BaseException as exc:
            outcome.setdefault("code", type(exc).__name__)
            raise
        finally:
            self.api_latency.labels(service, operation).observe(time.perf_counter() - started)
            if "code" in outcome:
                self.api_errors.labels(service, operation, outcome["code"]).inc()

    def instrument_graph_client(self, client: httpx.Client) -> None:
        """Time every Graph API call of this client and count Meta's error codes."""
        client.event_hooks["request"].append(_stamp)
        client.event_hooks["response"].append(self._graph_response)

    def _graph_response(self, response: httpx.Response) -> None:
        request = response.request
        started = request.extensions.get(_STARTED)
        operation = graph_operation(request)
        if started is not None:
            self.api_latency.labels("meta", operation).observe(time.perf_counter() - started)
        if response.status_code >= 400:
            self.api_errors.labels("meta", operation, _graph_error_code(response)).inc()

    # -- exposition ---------------------------------------------------------------------------

    def collectors(self) -> list[Any]:
        """What a scrape reports of the processes: every process's files in multiprocess mode,
        else this one's registry."""
        if self.directory:
            from prometheus_client import CollectorRegistry
            from prometheus_client.multiprocess import MultiProcessCollector

            merged = CollectorRegistry()
            MultiProcessCollector(merged, path=self.directory)  # type: ignore[no-untyped-call]
            return [merged]
        return [self.registry]


def _stamp(request: httpx.Request) -> None:
    request.extensions[_STARTED] = time.perf_counter()


def graph_operation(request: httpx.Request) -> str:
    """``POST messages``, ``GET phone_numbers``, ``GET node``: the edge, never an id (ids would
    make a label value per number, template and upload: ``upload:<session id>`` is ``upload``)."""
    parts = [part for part in request.url.path.split("/") if part]
    last = (parts[-1] if parts else "").split(":", 1)[0]
    edge = "node" if not last or _NODE_ID.match(last) or _VERSION.match(last) else last
    return f"{request.method} {edge}"


def _graph_error_code(response: httpx.Response) -> str:
    """Meta's error code (131026, 190...) when the body says it, else the HTTP status."""
    try:
        response.read()
        error = response.json().get("error") or {}
        code = error.get("code")
    except (ValueError, AttributeError, httpx.HTTPError):
        code = None
    return str(code) if isinstance(code, int) else f"http_{response.status_code}"
