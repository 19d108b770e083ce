"""The shape DESIGN.md fixes: dependency direction, nothing at import, fail-fast config."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from sequences.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(package: str) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update((str(path.relative_to(ROOT)), alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((str(path.relative_to(ROOT)), node.module))
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("sequences", ("flask", "app")),
        ("connectors", ("flask", "app", "sequences", "rq", "sqlmodel", "sqlalchemy", "redis")),
    ],
)
def test_dependencies_point_one_way(package, forbidden):
    offenders = sorted(
        f"{path} imports {module}"
        for path, module in imported_modules(package)
        if module.split(".")[0] in forbidden
    )
    assert offenders == []


def test_sequences_use_only_the_connector_base():
    offenders = sorted(
        f"{path} imports {module}"
        for path, module in imported_modules("sequences")
        if module.startswith("connectors.") and module != "connectors.base"
    )
    assert offenders == []


def test_importing_the_packages_opens_no_connection_and_touches_no_file(tmp_path):
    code = (
        "import socket, builtins\n"
        "def refuse(*a, **k): raise SystemExit('network at import')\n"
        "socket.socket.connect = refuse\n"
        "import app, app.webhooks.platforms, app.links, app.outbox, app.ops, app.cli.main, app.worker, app.wiring\n"
        "import sequences.jobs, sequences.engine.sending, demo.connector\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_production_refuses_to_start_without_its_secrets():
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"CARTBACK_ENV": "production", "DATABASE_URL": "postgresql://x/y"})
    for name in ("SECRET_KEY", "ENCRYPTION_KEY", "REDIS_URL", "APP_URL"):
        assert name in str(refused.value)


def test_a_bad_encryption_key_is_explained():
    with pytest.raises(ConfigError, match="Fernet"):
        Settings.from_env({"SECRET_KEY": "x", "ENCRYPTION_KEY": "too-short"})


def test_development_generates_keys_once_and_reuses_them(tmp_path):
    first = Settings.from_env({"CARTBACK_INSTANCE_PATH": str(tmp_path)})
    second = Settings.from_env({"CARTBACK_INSTANCE_PATH": str(tmp_path)})
    assert first.secret_key == second.secret_key and first.encryption_keys == second.encryption_keys
    assert (tmp_path / "dev-secrets.env").stat().st_mode & 0o077 == 0


def test_the_demo_time_scale_is_refused_in_production():
    from cryptography.fernet import Fernet

    env = {
        "CARTBACK_ENV": "production",
        "SECRET_KEY": "s",
        "ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "DATABASE_URL": "postgresql://db/cartback",
        "REDIS_URL": "redis://redis:6379/0",
        "APP_URL": "https://cartback.example",
    }
    assert Settings.from_env(env).is_production
    with pytest.raises(ConfigError, match="CARTBACK_TIME_SCALE"):
        Settings.from_env({**env, "CARTBACK_TIME_SCALE": "60"})


def test_half_a_shopify_configuration_is_explained(tmp_path):
    with pytest.raises(ConfigError, match="SHOPIFY_API_SECRET is missing"):
        Settings.from_env({"CARTBACK_INSTANCE_PATH": str(tmp_path), "SHOPIFY_API_KEY": "client-id"})
