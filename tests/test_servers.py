"""The session servers from tests/servers.py are real and usable."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from tests.servers import create_database, drop_database


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_engine(postgres_url)
    yield engine
    engine.dispose()


def test_redis_url_shape(redis_url: str) -> None:
    assert redis_url.startswith("redis://127.0.0.1:")
    assert redis_url.endswith("/0")


def test_redis_set_get(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.set("cartback:test", "hello")
        assert client.get("cartback:test") == b"hello"
        assert client.delete("cartback:test") == 1
    finally:
        client.close()


def test_postgres_url_shape(postgres_url: str) -> None:
    url = make_url(postgres_url)
    assert url.drivername == "postgresql+psycopg"
    assert url.host == "127.0.0.1"
    assert url.username == "cartback"
    assert url.database == "cartback_test"


def test_postgres_select_1(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("select 1")).scalar_one() == 1
        assert conn.execute(text("select current_database()")).scalar_one() == "cartback_test"


def test_postgres_create_table(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("create table servers_probe (id serial primary key, name text not null)"))
        conn.execute(text("insert into servers_probe (name) values ('a'), ('b')"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("select name from servers_probe order by id")).scalars().all()
        assert rows == ["a", "b"]
    finally:
        with engine.begin() as conn:
            conn.execute(text("drop table servers_probe"))


def test_create_and_drop_database(postgres_url: str, engine: Engine) -> None:
    name = f"probe_{uuid.uuid4().hex[:12]}"
    url = create_database(postgres_url, name)
    assert make_url(url).database == name
    probe = create_engine(url)
    try:
        with probe.begin() as conn:
            conn.execute(text("create table t (x int)"))
            conn.execute(text("insert into t values (42)"))
            assert conn.execute(text("select x from t")).scalar_one() == 42
            # The new database starts empty: no tables from cartback_test.
            tables = conn.execute(
                text("select count(*) from pg_tables where schemaname = 'public'")
            ).scalar_one()
            assert tables == 1
    finally:
        # Pool still holds a connection: drop_database must cope (FORCE).
        drop_database(url)
        probe.dispose()
    with engine.connect() as conn:
        exists = conn.execute(
            text("select count(*) from pg_database where datname = :n"), {"n": name}
        ).scalar_one()
    assert exists == 0


def test_drop_database_refuses_maintenance_db(postgres_url: str) -> None:
    with pytest.raises(ValueError):
        drop_database(postgres_url, "postgres")
