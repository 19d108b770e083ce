"""(f) WhatsApp Cloud API: dispatch through the cloud transport against a fake Graph API that
answers in 100 ms, and the opt-out latency from Meta's webhook to suppression.

The fake Graph API (tests/fakes/whatsapp_graph.py, threaded, the same strict checks the tests
use) runs in the bench process. The number is set to 1,000 messages/s so the token bucket
does not cap the figure: the question is what the workers reach.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlmodel import select

from bench.environment import BenchEnv, make_store
from bench.ingest import start_gunicorn
from bench.processes import free_port, http_ready, wait_until
from bench.report import Section, percentile, say
from bench.seed import seed_abandoned_carts
from bench.workers import (
    cpu_seconds,
    send_rates,
    start_workers,
    status_summary,
    step_one_times,
    stop_workers,
    wait_for_sent,
)
from channels.whatsapp.templates import DEFINITIONS
from sequences.models import Contact, Store, TemplateStatus, WhatsAppAccount
from sequences.runtime import Runtime
from sequences.whatsapp import health
from sequences.whatsapp.accounts import connect
from tests.fakes import whatsapp_webhooks as hooks
from tests.fakes.whatsapp_graph import FakeGraphAPI

WABA_ID, PHONE_NUMBER_ID = "102290129340398", "106540352242922"
ACCESS_TOKEN = "EAAG-bench-system-user-token-0123456789"
APP_SECRET = "bench-meta-app-secret-0123456789abcdef"
# Meta's per-number ceilings (DESIGN.md, throughput): default and upgraded.
META_DEFAULT_MPS, META_UPGRADED_MPS = 80, 1000

ABOUT = """
Cloud dispatch: abandoned carts whose step 1 is already due, sent by `cartback worker --threads 32`
processes through the cloud transport to a fake Graph API on 127.0.0.1 that waits 100 ms before
each answer (Meta's order of magnitude), validating every payload against the approved template.
A worker that waited for each answer in turn would send at most 10 messages/s; the job loops in
threads keep up to 32 sends in flight per process. The share of Meta's 80 and 1,000 messages/s
per number is what one number's sending would reach. Opt-out latency: signed "STOP" deliveries
POSTed one at a time to `/webhooks/whatsapp` (gunicorn, 2 workers), each for a shopper with an
open sequence; the response comes after the opt-out is committed and the pending steps are
cancelled, so the request time is the time to suppression. Baseline: `GET /healthz` on the same
server in the same run.
"""


@dataclass(frozen=True)
class CloudConfig:
    steps: int = 2_000
    worker_counts: tuple[int, ...] = (1, 2)
    threads: int = 32
    latency_s: float = 0.1
    timeout_s: float = 60.0
    optouts: int = 300


def quick() -> CloudConfig:
    return CloudConfig(steps=200, worker_counts=(1,), threads=8, timeout_s=30.0, optouts=30)


def _fake_graph(latency_s: float) -> FakeGraphAPI:
    fake = FakeGraphAPI(app_secret=APP_SECRET, latency_seconds=latency_s)
    fake.start()
    fake.add_account(
        WABA_ID,
        PHONE_NUMBER_ID,
        ACCESS_TOKEN,
        display_phone_number="+91 90000 00001",
        throughput_level="HIGH",
    )
    for template in DEFINITIONS:
        payload = template.creation_payload(
            store_name="Store bench", app_url="http://127.0.0.1", header_handle="4::bench"
        )
        fake.add_template(
            WABA_ID, template.name, template.language, payload["category"], payload["components"]
        )
    return fake


def _connect_store(runtime: Runtime) -> int:
    store = make_store(runtime)
    assert store.id is not None
    connect(runtime, store.id, waba_id=WABA_ID, phone_number_id=PHONE_NUMBER_ID, access_token=ACCESS_TOKEN)
    now = datetime.now(UTC)
    with runtime.database.locked_session() as session:
        account = session.exec(select(WhatsAppAccount)).one()
        account.messages_per_second = META_UPGRADED_MPS
        for template in DEFINITIONS:
            health.set_template_status(
                session,
                store.id,
                template.name,
                template.language,
                TemplateStatus.APPROVED,
                reason=None,
                at=now,
            )
    return store.id


def _environ(fake: FakeGraphAPI) -> dict[str, str]:
    return {
        "WHATSAPP_TRANSPORT": "cloud",
        "WHATSAPP_GRAPH_URL": fake.url,
        "WHATSAPP_APP_SECRET": APP_SECRET,
    }


def _dispatch(
    env: BenchEnv, config: CloudConfig, fake: FakeGraphAPI, workers_n: int, section: Section
) -> float:
    tag = f"{workers_n} worker{'s' if workers_n > 1 else ''} × {config.threads} threads"
    with env.scenario(f"cloud-dispatch-{workers_n}", extra=_environ(fake)) as scenario:
        runtime = scenario.runtime
        _connect_store(runtime)
        with runtime.database.session() as session:
            stored = session.exec(select(Store)).one()
        due = datetime.now(UTC) - timedelta(seconds=1)
        seed_abandoned_carts(runtime, stored, [due] * config.steps)
        accepted_before = len(fake.sent_messages)
        started = datetime.now(UTC)
        workers = start_workers(scenario, workers_n, threads=config.threads)
        try:
            wait_until(
                lambda: int(runtime.redis.scard("rq:workers")) >= workers_n * config.threads,
                timeout=60,
                child=workers[0],
                what="worker threads to register",
            )
            cpu_before, wall_before = cpu_seconds(workers), time.monotonic()
            wait_for_sent(runtime, workers, config.steps, timeout_s=config.timeout_s, label=f"cloud/{tag}")
            cpu = cpu_seconds(workers) - cpu_before
            wall = time.monotonic() - wall_before
        finally:
            stop_workers(workers)
        times = step_one_times(runtime)
    rates = send_rates(times, started)
    if rates is None:
        section.note(f"cloud/{tag}: nothing was sent ({status_summary(times)})")
        return 0.0
    sent, rate, steady = rates.sent, rates.rate, rates.steady
    accepted = len(fake.sent_messages) - accepted_before
    section.add(
        f"{tag}: messages/s",
        f"{rate:,.0f}",
        f"{sent:,} sent ({accepted:,} accepted by the fake) from worker start",
    )
    section.add(
        f"{tag}: steady messages/s",
        f"{steady:,.0f}",
        f"{steady / META_DEFAULT_MPS:.0%} of 80/s, {steady / META_UPGRADED_MPS:.1%} of 1,000/s",
    )
    section.add(
        f"{tag}: worker CPU per message",
        f"{cpu / max(rates.decisions, 1) * 1000:.1f} ms",
        f"workers busy {cpu / (wall * workers_n):.0%} of their wall time",
    )
    section.note(f"cloud/{tag}: ledger {status_summary(times)}")
    return steady


def _optout_latency(env: BenchEnv, config: CloudConfig, fake: FakeGraphAPI, section: Section) -> None:
    port = free_port()
    with env.scenario("cloud-optout", app_port=port, extra=_environ(fake)) as scenario:
        runtime = scenario.runtime
        _connect_store(runtime)
        with runtime.database.session() as session:
            store = session.exec(select(Store)).one()
        later = datetime.now(UTC) + timedelta(hours=1)  # open sequences, nothing due during the run
        seed_abandoned_carts(runtime, store, [later] * config.optouts)
        with runtime.database.session() as session:
            phones = [c.phone_e164 for c in session.exec(select(Contact).order_by(Contact.id)).all()]
        server = start_gunicorn(
            "app:create_app()",
            port=port,
            worker_class="gthread",
            threads=4,
            environ=scenario.environ,
            log=scenario.path / "gunicorn.log",
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until(http_ready(f"{base}/healthz"), timeout=30, child=server, what="gunicorn to answer")
            with httpx.Client(base_url=base, timeout=10) as client:
                baseline = _timed([lambda: client.get("/healthz") for _ in range(config.optouts)])
                posts = [_stop_post(client, phone, n) for n, phone in enumerate(phones)]
                stops = _timed(posts)
        finally:
            server.stop()
        with runtime.database.session() as session:
            suppressed = sum(1 for c in session.exec(select(Contact)).all() if c.opted_out_at is not None)
    base_p50, base_p99 = percentile(baseline, 50), percentile(baseline, 99)
    stop_p50, stop_p99 = percentile(stops, 50), percentile(stops, 99)
    section.add(
        "opt-out, webhook to suppression: p50",
        f"{stop_p50 * 1000:.1f} ms",
        f"{stop_p50 / base_p50:.1f}× GET /healthz ({base_p50 * 1000:.1f} ms)",
    )
    section.add(
        "opt-out, webhook to suppression: p99",
        f"{stop_p99 * 1000:.1f} ms",
        f"{stop_p99 / base_p99:.1f}× GET /healthz ({base_p99 * 1000:.1f} ms); {suppressed:,}/{len(phones):,} suppressed",
    )


def _stop_post(client: httpx.Client, phone: str, n: int) -> Any:
    body = hooks.text_message(
        WABA_ID,
        PHONE_NUMBER_ID,
        "919000000001",
        phone.lstrip("+"),
        f"wamid.bench-stop-{n}",
        "STOP",
        int(time.time()),
    )
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": hooks.sign(raw, APP_SECRET)}

    def post() -> httpx.Response:
        response = client.post("/webhooks/whatsapp", content=raw, headers=headers)
        response.raise_for_status()
        return response

    return post


def _timed(calls: list[Any]) -> list[float]:
    durations = []
    for call in calls:
        began = time.perf_counter()
        call()
        durations.append(time.perf_counter() - began)
    return sorted(durations)


def run(env: BenchEnv, config: CloudConfig | None = None) -> Section:
    config = config or CloudConfig()
    section = Section("cloud", "(f) WhatsApp Cloud API", ABOUT)
    fake = _fake_graph(config.latency_s)
    try:
        say(
            f"(f) cloud dispatch, {config.steps:,} steps due now, fake Graph API answering in {config.latency_s * 1000:.0f} ms"
        )
        for workers_n in config.worker_counts:
            began = time.monotonic()
            _dispatch(env, config, fake, workers_n, section)
            say(f"  ({time.monotonic() - began:.0f} s)")
        say(f"(f) opt-out latency, {config.optouts} STOP deliveries")
        _optout_latency(env, config, fake, section)
    finally:
        fake.stop()
    return section
