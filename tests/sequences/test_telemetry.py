"""Telemetry: Meta's calls timed and their errors counted by code, and the multiprocess mode
that sums every process's samples for one scrape."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from sequences.telemetry import Telemetry, forget_dead_processes, graph_operation

ROOT = Path(__file__).resolve().parents[2]


def test_meta_calls_are_timed_by_operation_and_refusals_counted_by_meta_code(cloud):
    telemetry = cloud.runtime.telemetry
    cloud.graph.fail_next(131048)
    cloud.checkout()
    cloud.run(timedelta(minutes=15))
    registry = telemetry.registry
    sends = registry.get_sample_value(
        "cartback_api_request_seconds_count", {"service": "meta", "operation": "POST messages"}
    )
    assert sends is not None and sends >= 1
    assert (
        registry.get_sample_value(
            "cartback_api_errors_total", {"service": "meta", "operation": "POST messages", "code": "131048"}
        )
        == 1
    )
    # Set-up calls were timed too (the template push).
    assert registry.get_sample_value(
        "cartback_api_request_seconds_count", {"service": "meta", "operation": "POST message_templates"}
    )


@pytest.mark.parametrize(
    ("method", "url", "operation"),
    [
        ("POST", "https://graph.facebook.com/v25.0/1234567890/messages", "POST messages"),
        ("GET", "https://graph.facebook.com/v25.0/1234567890", "GET node"),
        (
            "GET",
            "https://graph.facebook.com/v25.0/998877/message_templates?limit=100",
            "GET message_templates",
        ),
        ("GET", "http://127.0.0.1:5001/v25.0/", "GET node"),
        ("POST", "https://graph.facebook.com/v25.0/upload:MTphdHRhY2htZW50Ojlm?sig=x", "POST upload"),
    ],
)
def test_a_graph_operation_is_named_by_its_edge_never_by_an_id(method, url, operation):
    assert graph_operation(httpx.Request(method, url)) == operation


_CHILD = """
import sys
from sequences.telemetry import Telemetry
telemetry = Telemetry(sys.argv[1])
telemetry.step_lateness.labels("cloud").observe(float(sys.argv[2]))
telemetry.api_errors.labels("shopify", "read_orders", "unavailable").inc()
"""


def test_every_process_s_samples_are_summed_and_the_dead_s_can_be_forgotten(tmp_path):
    directory = str(tmp_path / "metrics")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    for seconds in ("0.4", "75"):
        subprocess.run([sys.executable, "-c", _CHILD, directory, seconds], check=True, env=env, cwd=ROOT)

    from prometheus_client import generate_latest

    previous = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    try:
        reader = Telemetry(directory)
        text = b"".join(generate_latest(c) for c in reader.collectors()).decode()
    finally:
        if previous is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = previous
        from prometheus_client import values

        values.ValueClass = values.get_value_class()
    assert 'cartback_step_lateness_seconds_count{transport="cloud"} 2.0' in text
    assert 'cartback_step_lateness_seconds_bucket{le="1.0",transport="cloud"} 1.0' in text
    assert (
        'cartback_api_errors_total{code="unavailable",operation="read_orders",service="shopify"} 2.0' in text
    )
    # Both children have exited: their files go, as at a restart.
    files = list(Path(directory).glob("*.db"))
    assert len(files) >= 2
    assert forget_dead_processes(directory) == len(files)
    assert list(Path(directory).glob("*.db")) == []
