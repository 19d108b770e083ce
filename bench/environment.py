"""What every benchmark shares: the temp dir, the private Redis, keys, fresh databases.

Each scenario gets its own SQLite database (the embedded default, WAL) in its own instance
folder and an empty Redis, so no benchmark measures the leftovers of another.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet

from app.dbmigrate import upgrade
from app.wiring import build_runtime
from bench.processes import HOST, RedisServer
from sequences.config import ENVIRONMENT_PREFIXES, Settings, generate_secret_key
from sequences.merchant.store_settings import StoreSettings
from sequences.models import Store
from sequences.runtime import Runtime

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
STORE_SLUG = "bench-bazaar"
STORE_SECRET = "whsec-bench-bazaar"
# Inherited variables that would change what the app processes do; the bench sets its own.
_APP_VARIABLE_PREFIXES = ENVIRONMENT_PREFIXES


@dataclass
class Scenario:
    """One benchmark's instance folder, database and the environment of its app processes."""

    name: str
    path: Path
    database_url: str
    environ: dict[str, str]
    _runtime: Runtime | None = field(default=None, init=False)

    @property
    def runtime(self) -> Runtime:
        """The engine's runtime in the bench process itself (seeding, scheduling alarms)."""
        if self._runtime is None:
            self._runtime = build_runtime(Settings.from_env(self.environ))
        return self._runtime

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.database.dispose()
            self._runtime.redis.close()
            self._runtime.http.close()
            self._runtime = None


@dataclass
class BenchEnv:
    root: Path
    redis: RedisServer
    secret_key: str = field(default_factory=generate_secret_key)
    encryption_key: str = field(default_factory=lambda: Fernet.generate_key().decode())
    # Attach py-spy to one app process per benchmark (bench.profiling).
    profile: bool = False

    def flush_redis(self) -> None:
        client = self.redis.client()
        try:
            client.flushall()
        finally:
            client.close()

    def app_environ(
        self, *, instance: Path, database_url: str, app_port: int, extra: Mapping[str, str] = {}
    ) -> dict[str, str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(_APP_VARIABLE_PREFIXES)}
        environ.update(
            CARTBACK_ENV="development",
            DATABASE_URL=database_url,
            REDIS_URL=self.redis.url,
            SECRET_KEY=self.secret_key,
            ENCRYPTION_KEY=self.encryption_key,
            APP_URL=f"http://{HOST}:{app_port}",
            CARTBACK_INSTANCE_PATH=str(instance),
            WHATSAPP_TRANSPORT="sandbox",
            # The app processes import the repository's packages (and bench.hello_app).
            PYTHONPATH=str(REPO)
            + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""),
        )
        environ.update(extra)
        return environ

    @contextmanager
    def scenario(
        self, name: str, *, app_port: int = 8000, extra: Mapping[str, str] = {}
    ) -> Iterator[Scenario]:
        """A fresh database with the schema and a demo store, and an empty Redis."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=False)
        database_url = f"sqlite:///{path / 'cartback.db'}"
        upgrade(database_url)
        self.flush_redis()
        scenario = Scenario(
            name,
            path,
            database_url,
            self.app_environ(instance=path, database_url=database_url, app_port=app_port, extra=extra),
        )
        try:
            yield scenario
        finally:
            scenario.close()


def make_store(runtime: Runtime, slug: str = STORE_SLUG, secret: str = STORE_SECRET) -> Store:
    """A demo-platform store as tests/support/factories.make_store makes it: quiet hours off, default steps."""
    settings = StoreSettings(quiet_hours_enabled=False)
    store = Store(
        platform="demo",
        platform_store_id=slug,
        name=f"Store {slug}",
        timezone="Asia/Kolkata",
        api_base_url=f"{runtime.settings.app_url}/demo-store",
        storefront_url=f"{runtime.settings.app_url}/demo-store/",
        access_token_ciphertext=runtime.secrets.encrypt(f"token-{slug}"),
        webhook_secret_ciphertext=runtime.secrets.encrypt(secret),
        settings=settings.to_stored(),
    )
    with runtime.database.session() as session:
        session.add(store)
    assert store.id is not None
    return store
