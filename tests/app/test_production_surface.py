"""What production never serves: the sandbox outbox, the demo store and its platform.

The outbox lists every store's messages and its reply form opts any shopper out; the demo
store is a simulation with its own bearer-token API. Both are development tools: production
refuses the sandbox transport at startup and mounts neither.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from app import create_app
from app.wiring import build_runtime
from sequences.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_ENV = {
    "CARTBACK_ENV": "production",
    "SECRET_KEY": "production-secret",
    "ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "DATABASE_URL": "postgresql://db.invalid/cartback",
    "REDIS_URL": "redis://redis.invalid:6379/0",
    "APP_URL": "https://cartback.example",
}


def test_production_refuses_the_sandbox_transport_with_what_to_set():
    with pytest.raises(ConfigError, match="WHATSAPP_TRANSPORT=cloud"):
        Settings.from_env({**PRODUCTION_ENV, "WHATSAPP_TRANSPORT": "sandbox"})
    assert Settings.from_env(PRODUCTION_ENV).whatsapp_transport == "cloud"


def test_the_app_factory_refuses_production_settings_with_the_sandbox(settings):
    with pytest.raises(ConfigError, match="sandbox"):
        create_app(settings=settings.with_overrides(environment="production", whatsapp_transport="sandbox"))


@pytest.fixture
def production_client(settings, database, redis_conn):
    production = settings.with_overrides(environment="production", whatsapp_transport="cloud")
    runtime = build_runtime(production, database=database, redis=redis_conn)
    return create_app(runtime=runtime).test_client()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/outbox"),
        ("GET", "/outbox.json"),
        ("POST", "/outbox/1/reply"),
        ("GET", "/demo-store/"),
        ("POST", "/demo-store/api/checkouts"),
    ],
)
def test_production_serves_no_outbox_and_no_demo_store(production_client, method, path):
    response = production_client.open(path, method=method, data={"text": "STOP"})

    assert response.status_code == 404


def test_production_knows_no_demo_platform(production_client):
    response = production_client.post("/webhooks/demo", data=b"{}", content_type="application/json")

    assert response.status_code == 404
    assert "demo" not in response.json["error"].split("configured:")[1]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli.main", *args],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cartback_web_refuses_to_start_production_on_the_sandbox(tmp_path):
    result = _cli("web", env={**PRODUCTION_ENV, "WHATSAPP_TRANSPORT": "sandbox"})

    assert result.returncode != 0
    assert "WHATSAPP_TRANSPORT=cloud" in result.stderr
    assert "Traceback" not in result.stderr


def test_cartback_demo_refuses_to_run_in_production(tmp_path):
    result = _cli("demo", "--port", "1", env=PRODUCTION_ENV)

    assert result.returncode == 2
    assert "refused with CARTBACK_ENV=production" in result.stderr


def test_outside_production_a_reply_to_an_absurd_outbox_id_is_404(client):
    response = client.post("/outbox/99999999999999999999/reply", data={"text": "STOP"})

    assert response.status_code == 404
