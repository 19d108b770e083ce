"""(g) Merchant admin: the dashboard and the carts lists with a million carts in PostgreSQL.

A private PostgreSQL (tests/servers.py's throwaway server: initdb, fsync off, run as the
``postgres`` user under root) gets the app's migrations, one big store and a few small ones,
and a year of carts written with COPY as the engine would have left them. The app runs in this
process (Flask's test client, signed in with a cookie session); every view is timed against
``GET /healthz`` through the same client.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse
from zoneinfo import ZoneInfo

import psycopg
from flask.testing import FlaskClient
from sqlalchemy import Engine, event

from app import create_app
from app.admin.session import issue_login_link
from app.dbmigrate import upgrade
from app.wiring import build_runtime
from bench.admin_seed import AdminConfig, libpq_url, seed
from bench.admin_seed import quick as quick  # bench.run asks each benchmark for quick()
from bench.environment import BenchEnv, make_store, private_postgres
from bench.report import Section, percentile, say
from sequences.config import Settings
from sequences.merchant.rollups import rebuild
from sequences.models import (
    Store,
)
from sequences.runtime import Runtime
from tests.servers import create_database, find_postgres_binaries

ABOUT = """
Merchant admin at scale. A private PostgreSQL (the test suite's throwaway server: PostgreSQL's
defaults, shared_buffers 128 MB, with fsync off), migrated with the app's Alembic migrations, gets
1,000,000 carts written with binary COPY (foreign-key triggers off while loading): 95% in one store
(the one measured), the rest in 3 small ones, arriving uniformly over the last 365 days in time
order. 10% were never abandoned (so ~70,000 abandoned carts fall in the dashboard's default 30
days); 70% have a contact (~600,000 contacts, some with several carts, phone_last4 filled);
abandoned carts without one are unreachable (~27%). Of the reachable: ~13% recovered (orders, some
with a discount, a few refunded or cancelled, half verified), 3% opted out (consent event, contact
marked), 8% converted without help, the rest expired (or still recovering in the last 2 days).
1.4 messages per reachable cart (1, 2 or 3 steps), each with its ledger step and the components and
preview sequences/engine/messages.py renders (~1.5 KB a row), failed, sent, delivered, read and clicked in
realistic shares, 0.86 INR per delivered one; one line per cart; timeline events. Then VACUUM
ANALYZE. The app runs in the bench process (Flask's test client, signed in to the big store with a
cookie session): a warm-up, then sequential requests per view, lookups cycling through different
carts, contacts and search terms (the whole-year dashboard: 5 requests). Baseline: `GET /healthz`
through the same client. Target from the issue: dashboard and lists in ≤ 300 ms. One more request
per view runs with every SQL statement timed (shown below); for the dashboards and any view over
target the statements and their `EXPLAIN (ANALYZE, BUFFERS)` plans go to
bench/results/admin-plans.txt (git-ignored).
"""
TITLE = "(g) merchant admin"
TARGET_MS = 300.0  # the issue's target for the dashboard and lists, per request
TARGET = f"target ≤ {TARGET_MS:.0f} ms"
METRICS_TARGET_MS = 50.0  # issue 18: a scrape of /metrics over this data set
METRICS_TARGET = f"target ≤ {METRICS_TARGET_MS:.0f} ms"
METRICS_TOKEN = "bench-metrics-token"
YEAR = "worst case; the target is for the default view"
EXPLAIN_FROM_S = 0.02  # statements slower than this get their plan written (seconds)
DATABASE = "cartback_bench"
PLANS = Path(__file__).resolve().parent / "results" / "admin-plans.txt"

# -- measuring ----------------------------------------------------------------------------------


@contextmanager
def sql_log(engine: Engine) -> Iterator[list[tuple[float, str, Any]]]:
    """Every statement the engine runs meanwhile: (seconds, SQL, parameters)."""
    log: list[tuple[float, str, Any]] = []
    started: list[float] = []

    def before(*_args: Any) -> None:
        started.append(time.perf_counter())

    def after(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        log.append((time.perf_counter() - started.pop(), statement, parameters))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield log
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


@dataclass(frozen=True)
class View:
    name: str
    paths: list[str]  # cycled, so lookups hit different rows
    reference: str = TARGET
    rounds: int | None = None  # fewer for a view that takes seconds


def _sample(connection: psycopg.Connection[Any], sql: str, store_id: int, n: int) -> list[str]:
    rows = connection.execute(sql + " ORDER BY random() LIMIT %s", (store_id, n)).fetchall()
    if not rows:
        raise RuntimeError(f"no rows for {sql!r}: is the data set empty?")
    return [str(row[0]) for row in rows]


def _views(
    client: FlaskClient, database_url: str, store_id: int, today: date, config: AdminConfig
) -> list[View]:
    n = config.warmup + config.rounds
    with psycopg.connect(libpq_url(database_url)) as connection:
        connection.execute("SELECT setseed(0.42)")
        last4 = _sample(connection, "SELECT phone_last4 FROM contact WHERE store_id = %s", store_id, n)
        checkouts = _sample(connection, "SELECT platform_cart_id FROM cart WHERE store_id = %s", store_id, n)
        recovered = _sample(
            connection, "SELECT id FROM cart WHERE store_id = %s AND status = 'recovered'", store_id, n
        )
        contacts = _sample(connection, "SELECT id FROM contact WHERE store_id = %s", store_id, n)
    page_two = urlencode({"before": _get(client, "/api/carts").get_json()["next"]})
    year = urlencode({"from": (today - timedelta(days=365)).isoformat(), "to": today.isoformat()})
    return [
        View("GET /healthz (baseline)", ["/healthz"], "baseline"),
        View("GET /api/dashboard (last 30 days)", ["/api/dashboard"]),
        View("GET /api/dashboard (a whole year)", [f"/api/dashboard?{year}"], YEAR, max(3, config.rounds // 6)),
        View("GET /admin (dashboard page, SVG charts)", ["/admin"]),
        View("GET /api/carts (newest 50)", ["/api/carts"]),
        View("GET /api/carts?before= (page 2)", [f"/api/carts?{page_two}"]),
        View("GET /api/carts?q= (last 4 digits)", [f"/api/carts?q={q}" for q in last4]),
        View("GET /api/carts?q= (checkout id)", [f"/api/carts?q={q}" for q in checkouts]),
        View("GET /api/carts/<id> (recovered cart)", [f"/api/carts/{i}" for i in recovered]),
        View("GET /api/contacts/<id>", [f"/api/contacts/{i}" for i in contacts]),
        View("GET /metrics (Prometheus scrape)", ["/metrics"], METRICS_TARGET),
        View("GET /admin/carts?q= (last 4 digits)", [f"/admin/carts?q={q}" for q in last4]),
    ]  # fmt: skip


def _get(client: FlaskClient, path: str) -> Any:
    # The scrape carries the metrics token; the admin's views their cookie session.
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"} if path == "/metrics" else {}
    response = client.get(path, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path}: {response.status_code} {response.get_data(as_text=True)[:300]}")
    return response


def _timed(client: FlaskClient, view: View, config: AdminConfig) -> tuple[float, float]:
    """p50 and p95 in seconds, after a warm-up; each request waits for the one before."""
    warmup, rounds = (1, view.rounds) if view.rounds else (config.warmup, config.rounds)
    for i in range(warmup):
        _get(client, view.paths[i % len(view.paths)])
    durations = []
    for i in range(warmup, warmup + rounds):
        began = time.perf_counter()
        _get(client, view.paths[i % len(view.paths)])
        durations.append(time.perf_counter() - began)
    durations.sort()
    return percentile(durations, 50), percentile(durations, 95)


def _ms(value_s: float) -> str:
    return f"{value_s * 1000:.1f} ms" if value_s < 0.1 else f"{value_s * 1000:,.0f} ms"


def _table_of(statement: str) -> str:
    found = re.search(r"\bFROM\s+(\w+)(?=\s|$)", statement)
    return found.group(1) if found else statement.split()[0]


def _plans(engine: Engine, name: str, log: list[tuple[float, str, Any]]) -> str:
    """The view's statements by time, and EXPLAIN (ANALYZE, BUFFERS) of the slow ones."""
    ranked = sorted(log, key=lambda entry: -entry[0])
    out = [f"## {name}", "", *(f"- {_ms(spent)}: FROM {_table_of(sql)}" for spent, sql, _ in ranked), ""]
    for spent, statement, parameters in ranked[: max(1, sum(1 for e in ranked if e[0] >= EXPLAIN_FROM_S))]:
        with engine.connect() as connection:
            plan = connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).all()
        out += [f"### {_ms(spent)}", "", statement, str(parameters), "", *(str(row[0]) for row in plan), ""]
    return "\n".join(out)


def _sign_in(client: FlaskClient, runtime: Runtime, store_id: int) -> None:
    link = issue_login_link(runtime, store_id, "bench")
    # The token travels in the link's #fragment (tests/support/admin.py signs in the same way).
    token = parse_qs(urlparse(link).fragment)["token"][0]
    response = client.post("/admin/login", data={"token": token})
    if response.status_code != 303:
        raise RuntimeError(f"sign-in refused: {response.status_code} {response.get_data(as_text=True)[:300]}")


def measure(
    runtime: Runtime, database_url: str, store_id: int, config: AdminConfig, section: Section
) -> None:
    runtime.settings = runtime.settings.with_overrides(metrics_token=METRICS_TOKEN)
    client = create_app(runtime=runtime).test_client()
    _sign_in(client, runtime, store_id)
    with runtime.database.session() as session:
        store = session.get(Store, store_id)
        assert store is not None
        today = datetime.now(UTC).astimezone(ZoneInfo(store.timezone)).date()
    views = _views(client, database_url, store_id, today, config)
    board = _get(client, "/api/dashboard").get_json()
    section.note(
        f"the default 30 days hold {board['carts']['abandoned']:,} abandoned carts and "
        f"{board['messages']['sent']:,} messages sent (from /api/dashboard)"
    )
    baseline, slow, plans = 0.0, [], []
    for view in views:
        p50, p95 = _timed(client, view, config)
        if not baseline:
            baseline = p50
            section.add(view.name, f"p50 {_ms(p50)} · p95 {_ms(p95)}", view.reference)
            continue
        result = f"p50 {_ms(p50)} · p95 {_ms(p95)} ({p50 / baseline:,.0f}× /healthz)"
        section.add(view.name, result, view.reference + (f"; {view.rounds} requests" if view.rounds else ""))
        over = p95 * 1000 > (METRICS_TARGET_MS if view.reference == METRICS_TARGET else TARGET_MS)
        if over and view.reference in (TARGET, METRICS_TARGET):
            slow.append(view.name)
        # Once more with every SQL statement timed: where the request's time goes.
        with sql_log(runtime.database.engine) as log:
            began = time.perf_counter()
            _get(client, view.paths[0])
            total = time.perf_counter() - began
        spent, statement, _ = max(log, key=lambda entry: entry[0])
        section.note(
            f"{view.name}: {len(log)} SQL statements, {_ms(sum(e[0] for e in log))} of {_ms(total)} in SQL; "
            f"slowest {_ms(spent)} (FROM {_table_of(statement)})"
        )
        if "dashboard" in view.name or over:
            plans.append(_plans(runtime.database.engine, view.name, log))
    if slow:
        section.note(f"p95 above target: {', '.join(slow)}")
    PLANS.parent.mkdir(exist_ok=True)
    PLANS.write_text("\n".join(plans))
    say(f"  statements and EXPLAIN (ANALYZE, BUFFERS) plans of the slow views: {PLANS}")


def _count_buckets(runtime: Runtime, store_ids: list[int]) -> float:
    """COPY bypasses the engine that keeps the dashboard's buckets: count them, as an operator
    would after a restore."""
    began = time.monotonic()
    for store_id in store_ids:
        rebuild(runtime.database.session, store_id, progress=None)
        say(f"  dashboard buckets of store {store_id} counted ({time.monotonic() - began:.0f} s)")
    with psycopg.connect(libpq_url(runtime.settings.database_url), autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE dashboard_cart_bucket, dashboard_message_bucket")
    return time.monotonic() - began


def run(env: BenchEnv, config: AdminConfig | None = None) -> Section:
    config = config or AdminConfig()
    section = Section("admin", TITLE, ABOUT)
    if find_postgres_binaries() is None:
        section.skipped = "PostgreSQL not installed (make test installs it)"
        say(f"(g) merchant admin: skipped, {section.skipped}")
        return section
    say(f"(g) merchant admin: {config.carts:,} carts in PostgreSQL, {config.rounds} requests per view")
    with private_postgres() as server_url:
        database_url = create_database(server_url, DATABASE)
        upgrade(database_url)
        path = env.root / "admin"
        path.mkdir(parents=True, exist_ok=True)
        env.flush_redis()
        environ = env.app_environ(instance=path, database_url=database_url, app_port=8000)
        runtime = build_runtime(Settings.from_env(environ))
        try:
            stores = [make_store(runtime)] + [
                make_store(runtime, f"bench-small-{n}", f"whsec-small-{n}")
                for n in range(config.small_stores)
            ]
            store_ids = [store.id for store in stores if store.id is not None]
            seeded = seed(database_url, store_ids, config)
            counts = seeded.counts
            section.add(
                "data set",
                f"{counts['cart']:,} carts, {counts['contact']:,} contacts, {counts['message']:,} messages",
                f"{seeded.measured_store_carts:,} carts in the measured store; database {seeded.size}",
            )
            section.add(
                "seeding",
                f"{(seeded.write_s + seeded.vacuum_s) / 60:.1f} min",
                f"{sum(counts.values()):,} rows in {len(counts)} tables written in {seeded.write_s:.0f} s "
                f"(COPY busy {seeded.copy_s:.0f} s), VACUUM ANALYZE {seeded.vacuum_s:.0f} s",
            )
            rebuild_s = _count_buckets(runtime, store_ids)
            section.add(
                "dashboard rebuild",
                f"{rebuild_s:.0f} s",
                "`cartback dashboard rebuild` over the whole data set: its 15-minute buckets counted from "
                "the carts and messages (live, the engine keeps them as it writes)",
            )
            measure(runtime, database_url, store_ids[0], config, section)
        finally:
            runtime.database.dispose()
            runtime.redis.close()
            runtime.http.close()
            runtime.whatsapp_http.close()
    return section
