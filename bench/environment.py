"""What every benchmark shares: the temp dir, the private Redis and PostgreSQL, keys, fresh databases.

Each scenario gets a database of its own, SQLite (the embedded default, WAL) in its instance
folder or a new database on the run's private PostgreSQL server (started on first use,
tests/servers.py's throwaway server: fsync off, as a test server), and an empty Redis, so no
benchmark measures the leftovers of another.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from app.dbmigrate import upgrade
from app.wiring import build_runtime
from bench.processes import HOST, RedisServer
from sequences.config import ENVIRONMENT_PREFIXES, Settings, generate_secret_key
from sequences.merchant.store_settings import StoreSettings
from sequences.models import Store
from sequences.runtime import Runtime
from tests.servers import create_database, drop_database, find_postgres_binaries, postgres_url

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
STORE_SLUG = "bench-bazaar"
STORE_SECRET = "whsec-bench-bazaar"
# The databases a scenario can run on; their names are the rows' labels.
POSTGRESQL, SQLITE = "PostgreSQL", "SQLite"
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
    _postgres: str | None = field(default=None, init=False)
    _stack: ExitStack = field(default_factory=ExitStack, init=False)

    def has_postgres(self) -> bool:
        return find_postgres_binaries() is not None

    def postgres_server(self) -> str:
        """URL of the run's private PostgreSQL server (its maintenance database), started once."""
        if self._postgres is None:
            self._postgres = self._stack.enter_context(private_postgres())
        return self._postgres

    def close(self) -> None:
        """Stop what the run started here (the PostgreSQL server)."""
        self._stack.close()
        self._postgres = None

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
        self, name: str, *, app_port: int = 8000, extra: Mapping[str, str] = {}, database: str = SQLITE
    ) -> Iterator[Scenario]:
        """A fresh database (SQLite or PostgreSQL) with the schema, and an empty Redis."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=False)
        if database == POSTGRESQL:
            database_url = create_database(
                self.postgres_server(), "bench_" + re.sub(r"[^a-z0-9_]", "_", name.lower())
            )
        else:
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
            if database == POSTGRESQL:
                drop_database(database_url)


@contextmanager
def private_postgres() -> Iterator[str]:
    """tests/servers.py's throwaway server outside pytest; its fixture reports with pytest.fail."""
    # The session fixture's own generator: pytest wraps it so that calling it directly fails.
    fixture: Callable[[], Iterator[str]] = postgres_url.__wrapped__  # type: ignore[attr-defined]
    try:
        with contextmanager(fixture)() as url:
            yield url
    except pytest.fail.Exception as exc:
        raise RuntimeError(str(exc)) from None


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
