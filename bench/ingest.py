"""(a) Signed-webhook ingest through gunicorn, as a ratio to a bare Flask "hello" app.

Both apps run under the same gunicorn settings on free loopback ports and get the same wrk
load. The ingest requests are distinct, correctly signed checkout deliveries (unique delivery
id, different body): identical ones would hit the duplicate fast path and flatter the figure.
After the run the database and Redis are checked, so errors are never counted as speed.
No worker runs: deliveries pile up pending in the database, as they would behind slow workers
(ingest queues nothing in Redis; workers drain pending deliveries, sequences.engine.intake).
"""

from __future__ import annotations

import itertools
import json
import statistics
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from bench.environment import PYTHON, REPO, STORE_SECRET, STORE_SLUG, BenchEnv, make_store
from bench.open_loop import OpenLoopResult, http_request, run_open_loop
from bench.processes import (
    HOST,
    REGISTRY,
    Child,
    children_of,
    free_port,
    http_ready,
    tree_cpu_seconds,
    wait_until,
)
from bench.profiling import Profiler
from bench.report import Section, millis, say
from bench.wrk import POOL_SCRIPT, STATIC_SCRIPT, WrkResult, ensure_wrk, run_wrk, write_script, wrk_version
from demo.connector import sign
from sequences.models import WebhookDelivery
from sequences.runtime import QUEUE_NAME, Runtime
from sequences.stores.spool import collect

TOPIC = "checkouts/update"
ABOUT = """
Signed-webhook ingest: `POST /webhooks/demo` (HMAC check, store lookup, payload validation,
one insert committed to the web process's own SQLite spool, 200 "accepted"; no RQ job: workers
move spooled deliveries into `webhook_delivery`, under its de-duplication keys, and drain them
in batches) served by
`gunicorn --workers 2 --worker-class sync`, against a bare Flask app returning "hello" served
the same way in the same run, measured before and after the ingest run (the baseline is their
mean; the machine's load drifts). wrk: 2 threads, 32 connections, a 2 s warm-up then 10 s measured,
`--latency`. Every ingest request is a distinct, correctly signed delivery (unique
`X-Demo-Webhook-Id`, different checkout id and `updated_at`), pre-generated into a data file
that a wrk Lua script cycles through without repeating. Afterwards the bench checks that wrk
saw no errors or non-2xx answers, that `webhook_delivery` holds a pending row for every answered
request once the spools are moved in (as a worker's drain does; its time is printed) and that
Redis holds no job. No worker runs. The CPU time the server's processes used per
request (from /proc) is shown too: it is much steadier than req/s when other work shares the
machine. The same pair is also measured with gthread
workers (`--threads 4`, the Procfile's setting) for comparison; sync is the headline. Target:
ingest ≥ 0.5× hello (the issue measured ~6,000 req/s hello and ~1,900 for a naive handler,
0.32×, on this 2-core machine). wrk shares the CPUs with the server, for both apps alike.
"""


@dataclass(frozen=True)
class IngestConfig:
    threads: int = 2
    connections: int = 32
    warmup_s: int = 2
    duration_s: int = 10
    # Distinct deliveries generated; the warm-up uses the first `warmup_pool`, the measured
    # run the rest, each split between wrk's threads: more than 10 s could use even at 8,000/s
    # (spooled ingest runs at ~6,000/s here; 100,000 wrapped once under gthread).
    pool: int = 200_000
    warmup_pool: int = 40_000
    worker_classes: tuple[str, ...] = ("sync", "gthread")
    gthread_threads: int = 4
    # Measure hello again after the sync ingest run and use the mean as the baseline.
    bracket_headline: bool = True
    # The open-loop run (bench.open_loop): a fixed request rate, latency from the due time.
    open_rate: int = 500
    open_warmup_s: int = 2
    open_duration_s: int = 10
    open_senders: int = 64


@dataclass(frozen=True)
class Measured:
    warmup: WrkResult
    main: WrkResult
    # CPU seconds the web server (master and workers) used during the measured run.
    server_cpu_s: float

    @property
    def cpu_per_request_ms(self) -> float:
        return self.server_cpu_s / self.main.requests * 1000 if self.main.requests else float("nan")


def generate_deliveries(path: Path, count: int, secret: str) -> None:
    """One line per delivery: id, signature, body (compact JSON, shaped like tests/support/factories)."""
    started = time.monotonic()
    base = datetime.now(UTC) - timedelta(hours=1)
    with path.open("w") as out:
        for i in range(count):
            updated = (base + timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z")
            payload = {
                "id": f"chk_{i}",
                "token": f"tok_{i}",
                "updated_at": updated,
                "currency": "INR",
                "subtotal_price": "2198.00",
                "total_price": "2198.00",
                "abandoned_checkout_url": f"http://{HOST}/demo-store/checkout/tok_{i}",
                "completed_at": None,
                # Distinct valid Indian mobiles: +91 98xxxxxxxx.
                "phone": f"+9198{i:08d}",
                "email": f"shopper{i}@example.in",
                "customer": {"id": f"cust_{i}", "first_name": "Asha"},
                "buyer_accepts_marketing": True,
                "line_items": [
                    {
                        "product_id": "p0",
                        "variant_id": "v0",
                        "title": "Handloom Cotton Kurta",
                        "variant_title": "M",
                        "quantity": 1,
                        "price": "1499.00",
                        "image_url": f"http://{HOST}/demo-store/images/p0.svg",
                    },
                    {
                        "product_id": "p1",
                        "variant_id": "v1",
                        "title": "Block-print Dupatta",
                        "variant_title": "M",
                        "quantity": 1,
                        "price": "699.00",
                        "image_url": f"http://{HOST}/demo-store/images/p1.svg",
                    },
                ],
            }
            body = json.dumps(payload, separators=(",", ":"))
            out.write(f"bench-{i:07d}\t{sign(body.encode(), secret)}\t{body}\n")
    say(
        f"  generated {count:,} signed deliveries in {time.monotonic() - started:.1f} s "
        f"({path.stat().st_size / count:.0f} bytes a line)"
    )


def start_gunicorn(
    app_spec: str, *, port: int, worker_class: str, threads: int, environ: dict[str, str], log: Path
) -> Child:
    argv = [
        PYTHON,
        "-m",
        "gunicorn",
        app_spec,
        "--bind",
        f"{HOST}:{port}",
        "--workers",
        "2",
        "--worker-class",
        worker_class,
        "--log-level",
        "warning",
        "--error-logfile",
        "-",
    ]
    if worker_class == "gthread":
        argv += ["--threads", str(threads)]
    return REGISTRY.spawn(f"gunicorn {app_spec}", argv, env=environ, cwd=REPO, log_path=log)


def _post_one(url: str, delivery_id: str, body: bytes, secret: str) -> dict[str, object]:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Demo-Shop": STORE_SLUG,
            "X-Demo-Topic": TOPIC,
            "X-Demo-Webhook-Id": delivery_id,
            "X-Demo-Hmac-Sha256": sign(body, secret),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, object] = json.loads(response.read())
        return answer


def _load(
    wrk: str,
    url: str,
    workdir: Path,
    name: str,
    config: IngestConfig,
    *,
    pool: Path | None,
    server: Child,
    profile: bool,
) -> Measured:
    """A warm-up run then the measured run; with a pool, each run gets its own slice of it."""
    script = write_script(
        workdir / ("pool.lua" if pool else "static.lua"), POOL_SCRIPT if pool else STATIC_SCRIPT
    )

    def args(first: int, last: int) -> list[str] | None:
        if pool is None:
            return None
        return [str(pool), str(first), str(last), str(config.threads), STORE_SLUG, TOPIC]

    stem = name.replace("/", "-")

    def load(duration_s: int, first: int, last: int, log: str) -> WrkResult:
        return run_wrk(
            wrk,
            url,
            script=script,
            script_args=args(first, last),
            threads=config.threads,
            connections=config.connections,
            duration_s=duration_s,
            log_path=workdir / log,
        )

    warmup = load(config.warmup_s, 0, config.warmup_pool, f"wrk-{stem}-warmup.txt")
    web_workers = children_of(server.pid)
    # One of the two web workers, for most of the measured run.
    profiler = (
        Profiler(stem, web_workers[0], max(1, config.duration_s - 2)) if profile and web_workers else None
    )
    cpu_before = tree_cpu_seconds([server])
    main = load(config.duration_s, config.warmup_pool, config.pool, f"wrk-{stem}.txt")
    measured = Measured(warmup, main, tree_cpu_seconds([server]) - cpu_before)
    if profiler:
        profiler.finish()
    say(
        f"  {name}: {main.rps:,.0f} req/s, p50 {millis(main.p50_us)}, p99 {millis(main.p99_us)}, "
        f"server CPU {measured.cpu_per_request_ms:.2f} ms/request, errors {main.errors} "
        f"(warm-up {warmup.rps:,.0f} req/s)"
    )
    return measured


def _hello(env: BenchEnv, wrk: str, config: IngestConfig, worker_class: str) -> Measured:
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix=f"hello-{worker_class}-", dir=env.root))
    environ = env.app_environ(instance=workdir, database_url="sqlite://", app_port=port)
    server = start_gunicorn(
        "bench.hello_app:app",
        port=port,
        worker_class=worker_class,
        threads=config.gthread_threads,
        environ=environ,
        log=workdir / "gunicorn.log",
    )
    try:
        wait_until(http_ready(f"http://{HOST}:{port}/"), timeout=30, child=server, what="hello app")
        return _load(
            wrk,
            f"http://{HOST}:{port}/",
            workdir,
            f"hello/{worker_class}",
            config,
            pool=None,
            server=server,
            profile=env.profile,
        )
    finally:
        REGISTRY.stop(server)


def _ingest(
    env: BenchEnv, wrk: str, config: IngestConfig, worker_class: str, pool: Path, section: Section
) -> Measured:
    port = free_port()
    with env.scenario(f"ingest-{worker_class}", app_port=port) as scenario:
        runtime = scenario.runtime
        make_store(runtime)
        server = start_gunicorn(
            "app:create_app()",
            port=port,
            worker_class=worker_class,
            threads=config.gthread_threads,
            environ=scenario.environ,
            log=scenario.path / "gunicorn.log",
        )
        url = f"http://{HOST}:{port}/webhooks/demo"
        try:
            wait_until(
                http_ready(f"http://{HOST}:{port}/healthz"), timeout=30, child=server, what="cartback web"
            )
            # One delivery by hand first: a misconfiguration (signature, store, payload) fails
            # loudly here instead of being measured as a fast error path. Its own delivery id
            # and checkout id, so it collides with nothing in the pool.
            with pool.open() as lines:
                checkout = lines.readline().split("\t", 2)[2].strip().encode()
            checkout = checkout.replace(b'"id":"chk_0"', b'"id":"chk_preflight"')
            answer = _post_one(url, "bench-preflight", checkout, STORE_SECRET)
            if answer.get("status") != "accepted":
                raise RuntimeError(f"a valid signed delivery was not accepted: {answer}")
            measured = _load(
                wrk,
                url,
                scenario.path,
                f"ingest/{worker_class}",
                config,
                pool=pool,
                server=server,
                profile=env.profile,
            )
        finally:
            REGISTRY.stop(server)
        # Every answered request must have been a stored delivery, and none may queue a job.
        rows = _stored_rows(runtime, f"ingest/{worker_class}")
        queued = int(runtime.redis.llen(f"rq:queue:{QUEUE_NAME}"))
        answered = measured.warmup.requests + measured.main.requests
        sent = measured.warmup.sent + measured.main.sent
        errors = measured.warmup.errors + measured.main.errors
        wraps = measured.warmup.wrapped + measured.main.wrapped
        # The preflight delivery is a row too; requests in flight when wrk stopped may be
        # stored without wrk counting an answer, hence a range rather than equality.
        stored = rows - 1
        say(
            f"  ingest/{worker_class}: {stored:,} deliveries stored, {queued:,} jobs queued, "
            f"{answered:,} answers counted by wrk, {errors} errors, {wraps} pool wraps"
        )
        if errors or wraps or not (answered - errors <= stored <= sent) or queued:
            section.note(
                f"ingest/{worker_class} NOT CLEAN: {errors} wrk errors/non-2xx, {wraps} pool wraps, "
                f"{stored:,} rows for {answered:,} answers ({sent:,} sent), {queued:,} jobs queued in Redis; "
                "the figure may include error or duplicate answers"
            )
        else:
            section.note(
                f"ingest/{worker_class}: every answered request was a stored delivery, no job queued "
                f"({stored:,} rows), no wrk errors, no repeated delivery"
            )
        return measured


def _stored_rows(runtime: Runtime, label: str) -> int:
    """Deliveries stored, after moving in what the web processes spooled (SQLite), as the
    workers' drain would: its time is shown, the workers' share of an ingested delivery."""
    began = time.perf_counter()
    collected = collect(runtime.database, limit=10**9)
    took = time.perf_counter() - began
    if collected.moved:
        say(
            f"  {label}: {collected.moved:,} spooled deliveries moved into the database in {took:.1f} s "
            f"({collected.moved / took:,.0f}/s), {collected.moved - collected.inserted:,} dropped as received already"
        )
    with runtime.database.session() as session:
        return int(session.execute(select(func.count()).select_from(WebhookDelivery)).scalar_one())


def _open_loop(
    env: BenchEnv, config: IngestConfig, worker_class: str, pool: Path, section: Section
) -> OpenLoopResult:
    """Ingest at a fixed rate (not saturation), in a fresh database: p99 from the due time."""
    port = free_port()
    warmup = config.open_rate * config.open_warmup_s
    measured = config.open_rate * config.open_duration_s
    requests = []
    with pool.open() as lines:
        for line in itertools.islice(lines, warmup + measured):
            delivery_id, signature, body = line.rstrip("\n").split("\t", 2)
            headers = {
                "Content-Type": "application/json",
                "X-Demo-Shop": STORE_SLUG,
                "X-Demo-Topic": TOPIC,
                "X-Demo-Webhook-Id": delivery_id,
                "X-Demo-Hmac-Sha256": signature,
            }
            requests.append(http_request("/webhooks/demo", HOST, port, headers, body.encode()))
    with env.scenario(f"ingest-{worker_class}-open-loop", app_port=port) as scenario:
        make_store(scenario.runtime)
        server = start_gunicorn(
            "app:create_app()",
            port=port,
            worker_class=worker_class,
            threads=config.gthread_threads,
            environ=scenario.environ,
            log=scenario.path / "gunicorn.log",
        )
        try:
            wait_until(
                http_ready(f"http://{HOST}:{port}/healthz"), timeout=30, child=server, what="cartback web"
            )
            common = dict(rate=config.open_rate, senders=config.open_senders, expect=b'"accepted"')
            run_open_loop(HOST, port, requests[:warmup], duration_s=config.open_warmup_s, **common)
            result = run_open_loop(HOST, port, requests[warmup:], duration_s=config.open_duration_s, **common)
        finally:
            REGISTRY.stop(server)
        rows = _stored_rows(scenario.runtime, f"ingest/{worker_class} open loop")
    say(
        f"  ingest/{worker_class} at {config.open_rate}/s open loop: p50 {millis(result.latency_us(0.5))}, "
        f"p99 {millis(result.latency_us(0.99))}, max {millis(result.latency_us(1.0))}, "
        f"{result.achieved_rate:,.0f} req/s achieved, {result.errors} errors, {rows:,} rows stored "
        f"(sender start lag p99 {millis(result.start_lag_us(0.99))})"
    )
    if result.errors or rows != warmup + measured:
        section.note(
            f"ingest/{worker_class} open loop NOT CLEAN: {result.errors} errors, {rows:,} rows for "
            f"{warmup + measured:,} requests"
        )
    return result


def _report(
    section: Section, config: IngestConfig, worker_class: str, hellos: list[Measured], ingest_run: Measured
) -> None:
    headline = worker_class == "sync"
    ingest = ingest_run.main
    hello_rps = statistics.fmean(h.main.rps for h in hellos)
    hello_p50 = statistics.fmean(h.main.p50_us for h in hellos)
    hello_p99 = statistics.fmean(h.main.p99_us for h in hellos)
    hello_cpu = statistics.fmean(h.cpu_per_request_ms for h in hellos)
    ratio = ingest.rps / hello_rps if hello_rps else float("nan")
    label = worker_class + (f" ×{config.gthread_threads} threads" if worker_class == "gthread" else "")
    each = " / ".join(f"{h.main.rps:,.0f}" for h in hellos)
    section.add(
        f"{label}: hello req/s",
        f"{hello_rps:,.0f}" + (f" (before / after: {each})" if len(hellos) > 1 else ""),
        "~6,000 in the issue" if headline else "",
    )
    section.add(f"{label}: ingest req/s", f"{ingest.rps:,.0f}", "naive ~1,900" if headline else "")
    section.add(
        f"**{label}: ingest / hello**" if headline else f"{label}: ingest / hello",
        f"**{ratio:.2f}×**" if headline else f"{ratio:.2f}×",
        "target ≥ 0.5× (naive 0.32×)" if headline else "",
    )
    section.add(
        f"{label}: p50 latency ingest / hello",
        f"{millis(ingest.p50_us)} / {millis(hello_p50)} ({ingest.p50_us / hello_p50:.1f}×)",
    )
    section.add(
        f"{label}: p99 latency ingest / hello",
        f"{millis(ingest.p99_us)} / {millis(hello_p99)} ({ingest.p99_us / hello_p99:.1f}×)",
    )
    section.add(
        f"{label}: server CPU per request ingest / hello",
        f"{ingest_run.cpu_per_request_ms:.2f} ms / {hello_cpu:.2f} ms "
        f"({ingest_run.cpu_per_request_ms / hello_cpu:.1f}×)",
        "steadier than req/s on a shared machine" if headline else "",
    )


def run(env: BenchEnv, config: IngestConfig | None = None) -> tuple[Section, str]:
    config = config or IngestConfig()
    section = Section("ingest", "(a) webhook ingest", ABOUT)
    wrk = ensure_wrk()
    if wrk is None:
        section.skipped = "wrk not installed (sudo apt-get install wrk)"
        return section, "not installed"
    version = wrk_version(wrk)
    say("(a) webhook ingest vs hello, through gunicorn")
    pool = env.root / "deliveries.tsv"
    generate_deliveries(pool, config.pool, STORE_SECRET)
    for worker_class in config.worker_classes:
        headline = worker_class == "sync"
        # Hello before AND after ingest (sync): the machine's load drifts within a run, and
        # their mean is a fairer baseline than either alone; their spread shows the noise.
        hellos = [_hello(env, wrk, config, worker_class)]
        ingest = _ingest(env, wrk, config, worker_class, pool, section)
        if headline and config.bracket_headline:
            hellos.append(_hello(env, wrk, config, worker_class))
        _report(section, config, worker_class, hellos, ingest)
        _report_open_loop(section, config, worker_class, _open_loop(env, config, worker_class, pool, section))
    return section, version


def _report_open_loop(
    section: Section, config: IngestConfig, worker_class: str, result: OpenLoopResult
) -> None:
    headline = worker_class == "sync"
    label = worker_class + (f" ×{config.gthread_threads} threads" if worker_class == "gthread" else "")
    section.add(
        f"{label}: p99 at {config.open_rate} requests/s",
        millis(result.latency_us(0.99)),
        (
            f"target ≤ 50 ms; open loop, from each request's due time; p50 {millis(result.latency_us(0.5))}, "
            f"max {millis(result.latency_us(1.0))}, {result.errors} errors"
        )
        if headline
        else f"p50 {millis(result.latency_us(0.5))}, max {millis(result.latency_us(1.0))}, {result.errors} errors",
    )


def quick() -> IngestConfig:
    return IngestConfig(
        warmup_s=1,
        duration_s=3,
        pool=30_000,
        warmup_pool=6_000,
        worker_classes=("sync",),
        bracket_headline=False,
        open_warmup_s=1,
        open_duration_s=3,
    )
