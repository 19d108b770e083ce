"""The operator's files shipped in deploy/: the Prometheus alert rules pass promtool (syntax and
their own unit tests), and the rules and the Grafana dashboard name only metrics cartback
exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "cartback-rules.yml"
RULES_TESTS = ROOT / "deploy" / "prometheus" / "cartback-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "cartback-dashboard.json"
METRIC = re.compile(r"\bcartback_[a-z0-9_]+")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def _promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if found is None:
        pytest.fail("promtool is missing: `make test` installs it (Debian's prometheus package)")
    return found


def test_the_alert_rules_pass_promtool_check():
    result = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alert_rules_fire_on_their_unit_tests():
    result = subprocess.run(
        [_promtool(), "test", "rules", str(RULES_TESTS)], capture_output=True, text=True, cwd=RULES.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _exposed(client, runtime) -> set[str]:
    """Every metric name a scrape shows, after a journey has recorded each kind of sample."""
    from prometheus_client.parser import text_string_to_metric_families

    token = "ops-files-token"
    runtime.settings = runtime.settings.with_overrides(metrics_token=token)
    text = client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).get_data(as_text=True)
    names = {family.name for family in text_string_to_metric_families(text)}
    # Histograms and counters are declared in every process, samples or not.
    for family in runtime.telemetry.registry.collect():
        names.add(family.name)
    return names


def _base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_the_rules_and_the_dashboard_name_only_metrics_cartback_exposes(messaged_journey, client, runtime):
    exposed = _exposed(client, runtime)
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])] + [
        variable.get("query", "") for variable in dashboard["templating"]["list"]
    ]
    named = {_base(name) for text in [RULES.read_text(), *expressions] for name in METRIC.findall(text)}
    assert named, "no cartback metric named at all"
    assert sorted(named - exposed) == []
    # Every panel has a unique id and a place on the grid; the store variable feeds the business rows.
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and all("gridPos" in panel for panel in dashboard["panels"])
    assert any("$store" in expr for expr in expressions)
