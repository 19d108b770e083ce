"""Shared fixtures: real Redis (and PostgreSQL where a test asks for it), a real app."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from rq import SimpleWorker
from sqlmodel import SQLModel, select

from app import create_app
from app.wiring import build_runtime
from sequences.config import Settings
from sequences.db import Database
from sequences.engine.intake import drain_deliveries
from sequences.experiments import figures as experiment_figures
from sequences.merchant import rollups
from sequences.models import Experiment, Store
from sequences.runtime import Runtime

pytest_plugins = ["tests.servers"]

TEST_ENCRYPTION_KEY = Fernet.generate_key().decode()
TEST_APP_URL = "http://localhost"


def all_tables_metadata() -> SQLModel:
    import demo.store.models  # noqa: F401 - registers the demo platform's tables
    import sequences.models  # noqa: F401

    return SQLModel  # type: ignore[return-value]


@pytest.fixture
def redis_conn(redis_url: str) -> Iterator[Redis]:
    connection = Redis.from_url(redis_url)
    connection.flushdb()
    yield connection
    connection.flushdb()
    connection.close()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """SQLite by default; tests marked ``postgres`` run on both (see pytest_generate_tests)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield f"sqlite:///{tmp_path}/cartback.db"
        return
    from tests.servers import create_database, drop_database

    postgres_url: str = request.getfixturevalue("postgres_url")
    name = f"t_{abs(hash(request.node.nodeid)) % 10**10}"
    url = create_database(postgres_url, name)
    yield url
    drop_database(url)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("postgres")
    if "database_url" in metafunc.fixturenames and marker:
        # postgres(only=True): behaviour SQLite cannot show (it runs one writer at a time).
        backends = ["postgresql"] if marker.kwargs.get("only") else ["sqlite", "postgresql"]
        metafunc.parametrize("database_url", backends, indirect=True)


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Any) -> Settings:
    return Settings(
        environment="test",
        database_url=database_url,
        redis_url=redis_url,
        secret_key="test-secret-key",
        encryption_keys=(TEST_ENCRYPTION_KEY,),
        app_url=TEST_APP_URL,
        instance_path=str(tmp_path),
    )


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database_url)
    all_tables_metadata().metadata.create_all(database.engine)
    yield database
    # Whatever the test did, the dashboard's kept figures equal a recount (sequences.merchant.rollups).
    with database.session() as session:
        kept_wrong: dict[Any, list[str]] = {
            store_id: problems
            for store_id in session.exec(select(Store.id)).all()
            if (problems := rollups.differences(session, store_id))  # type: ignore[arg-type]
        }
        # And so do the experiments' (sequences.experiments.figures).
        kept_wrong |= {
            f"experiment {experiment_id}": problems
            for experiment_id in session.exec(select(Experiment.id)).all()
            if (problems := experiment_figures.differences(session, experiment_id))  # type: ignore[arg-type]
        }
    database.dispose()
    assert not kept_wrong, f"kept figures wrong: {kept_wrong}"


class _LateWsgi:
    """Lets the runtime's HTTP client reach the app that is built after it."""

    def __init__(self) -> None:
        self.app: Flask | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)


@pytest.fixture
def app_and_runtime(
    settings: Settings, database: Database, redis_conn: Redis
) -> Iterator[tuple[Flask, Runtime]]:
    late = _LateWsgi()
    http = httpx.Client(transport=httpx.WSGITransport(app=late))
    runtime = build_runtime(settings, database=database, redis=redis_conn, http=http)
    app = create_app(runtime=runtime)
    late.app = app
    yield app, runtime
    http.close()


@pytest.fixture
def app(app_and_runtime: tuple[Flask, Runtime]) -> Flask:
    return app_and_runtime[0]


@pytest.fixture
def runtime(app_and_runtime: tuple[Flask, Runtime]) -> Runtime:
    return app_and_runtime[1]


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _drain_queue(runtime: Runtime) -> int:
    """Drain the deliveries, run every job and every cart moment that is due now (scheduled
    jobs included) in this process, with the runtime jobs run with (the last app built
    installs its own), as a worker would; returns how many deliveries, jobs and carts ran."""
    from rq.registry import ScheduledJobRegistry

    from sequences import runtime as runtime_module
    from sequences.engine.dispatch import dispatch_due

    queue = runtime.queue
    registry = ScheduledJobRegistry(queue=queue)
    ran = 0
    for _ in range(50):
        current = runtime_module.current()
        deliveries = drain_deliveries(current, limit=1000)
        if registry.get_jobs_to_schedule():
            from rq.scheduler import RQScheduler

            scheduler = RQScheduler([queue], connection=runtime.redis)
            scheduler.acquire_locks()
            scheduler.enqueue_scheduled_jobs()
            scheduler.release_locks()
        jobs = queue.count
        if jobs:
            SimpleWorker([queue], connection=runtime.redis).work(burst=True)
        carts = dispatch_due(current, limit=1000)
        if not deliveries and not jobs and not carts:
            break
        ran += deliveries + jobs + carts
    return ran


@pytest.fixture
def drain(runtime: Runtime) -> Callable[[], int]:
    return lambda: _drain_queue(runtime)


@pytest.fixture
def journey(client: FlaskClient, runtime: Runtime, drain: Callable[[], int]) -> Any:
    """A demo-platform store (quiet hours off) and a clock-driving journey over it."""
    from tests.support.factories import make_store
    from tests.support.journey import Journey

    make_store(runtime)
    return Journey(client, runtime, drain)


@pytest.fixture
def messaged_journey(journey: Any) -> Any:
    """The default shopper's cart, abandoned, with its first message already sent."""
    from datetime import timedelta

    journey.checkout()
    journey.run(timedelta(minutes=15))
    return journey


# -- Shopify -------------------------------------------------------------------------------


@pytest.fixture
def fake_shopify() -> Iterator[Any]:
    from tests.fakes.shopify import FakeShopify
    from tests.support.shopify import SHOP

    with FakeShopify() as fake:
        fake.add_shop(SHOP)
        yield fake


@pytest.fixture
def shopify(settings: Settings, database: Database, redis_conn: Redis, fake_shopify: Any) -> Iterator[Any]:
    """The app with Shopify configured against the fake, and a driver for one shop."""
    from tests.support.shopify import ShopifyDriver

    shopify_settings = settings.with_overrides(
        shopify_api_key=fake_shopify.client_id,
        shopify_api_secret=fake_shopify.client_secret,
        shopify_admin_url_template=fake_shopify.admin_url_template(),
    )
    late = _LateWsgi()
    http = httpx.Client(transport=httpx.WSGITransport(app=late))
    runtime = build_runtime(shopify_settings, database=database, redis=redis_conn, http=http)
    app = create_app(runtime=runtime)
    late.app = app

    def _drain() -> int:
        return _drain_queue(runtime)

    yield ShopifyDriver(app.test_client(), runtime, fake_shopify, _drain)
    http.close()


# -- WhatsApp Cloud API --------------------------------------------------------------------


@pytest.fixture
def fake_graph() -> Iterator[Any]:
    from tests.fakes.whatsapp_graph import FakeGraphAPI
    from tests.support.whatsapp import ACCESS_TOKEN, APP_SECRET, PHONE_NUMBER_ID, WABA_ID

    with FakeGraphAPI(app_secret=APP_SECRET) as fake:
        fake.add_account(WABA_ID, PHONE_NUMBER_ID, ACCESS_TOKEN, display_phone_number="+91 90000 00001")
        yield fake


def cloud_app(
    settings: Settings, database: Database, redis_conn: Redis, fake_graph: Any
) -> tuple[Flask, Runtime, httpx.Client]:
    """The app on these settings sending through the cloud transport to the fake Graph API."""
    from channels.whatsapp.cloud import CloudTransport
    from channels.whatsapp.throttle import SendThrottle
    from tests.support.whatsapp import APP_SECRET, VERIFY_TOKEN

    cloud_settings = settings.with_overrides(
        whatsapp_transport="cloud",
        whatsapp_graph_url=fake_graph.url,
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token=VERIFY_TOKEN,
        whatsapp_app_id=fake_graph.app_id,
    )
    late = _LateWsgi()
    http = httpx.Client(transport=httpx.WSGITransport(app=late))
    runtime = build_runtime(cloud_settings, database=database, redis=redis_conn, http=http)
    # Journeys jump hours of frozen time within real seconds: keep Meta's 6 s pair rule for the
    # throttle's own tests and let the same shopper be messaged again here.
    runtime.transport = CloudTransport(
        fake_graph.url, runtime.whatsapp_http, SendThrottle(redis_conn, key="k", pair_interval_ms=1)
    )
    app = create_app(runtime=runtime)
    late.app = app
    return app, runtime, http


@pytest.fixture
def cloud(settings: Settings, database: Database, redis_conn: Redis, fake_graph: Any) -> Iterator[Any]:
    """The app sending through the cloud transport to the fake Graph API; one demo store with
    its WhatsApp number connected and the templates pushed and approved."""
    from sequences.whatsapp.accounts import connect
    from sequences.whatsapp.template_push import push_templates
    from tests.support.cloud import CloudJourney
    from tests.support.factories import make_store
    from tests.support.whatsapp import ACCESS_TOKEN, PHONE_NUMBER_ID, WABA_ID

    app, runtime, http = cloud_app(settings, database, redis_conn, fake_graph)
    store = make_store(runtime)
    assert store.id is not None
    fake_graph.auto_approve = True
    # Set up on the journeys' clock (an hour before their T0): statuses and quality are ordered
    # by time, and a set-up stamped at the real time would outrank every event of a journey.
    import time_machine

    from tests.support.journey import T0

    with time_machine.travel(T0 - timedelta(hours=1), tick=False):
        connect(
            runtime, store.id, waba_id=WABA_ID, phone_number_id=PHONE_NUMBER_ID, access_token=ACCESS_TOKEN
        )
        push_templates(runtime, store.id)
    yield CloudJourney(app.test_client(), runtime, lambda: _drain_queue(runtime), fake_graph)
    http.close()
    runtime.whatsapp_http.close()
