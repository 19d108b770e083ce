"""(h) experiments: the statistics as shipped, simulated; and the results page's analysis for a
store with 1,000,000 carts on PostgreSQL."""

from __future__ import annotations

import json
import secrets
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from app import create_app
from app.dbmigrate import upgrade
from app.wiring import build_runtime
from bench.admin import _sign_in
from bench.admin_seed import AdminConfig, libpq_url, seed
from bench.environment import STORE_SECRET, STORE_SLUG, BenchEnv, private_postgres
from bench.report import Section, say
from sequences.config import Settings
from sequences.experiments import figures as experiment_figures
from sequences.experiments.results import experiment_results
from sequences.experiments.stats import plan_rates
from sequences.merchant.store_settings import StoreSettings
from sequences.models import Experiment, Store
from tests.servers import create_database
from tests.support.simulation import LOOKS, net_revenue, simulate

TITLE = "(h) experiments"
ABOUT = f"""
The statistics as shipped (sequences/experiments/stats.py), simulated: many experiments, each
read at {LOOKS} looks spread from 100 carts per arm to the planned number, as a merchant opening
the results page every day would. "Ever declared a winner" is the share of A/A experiments (both
arms the same) whose interval excluded zero at any look: a fixed-sample test read that often
declares about a quarter. "Found" is the share of experiments with a true lift equal to the
planned minimum detectable effect (8 % against 10 %) in which the better arm was declared by the
planned number of carts. "Coverage" is the share whose interval held the true difference at every
look. Net revenue per cart is zero-inflated and long-tailed (log-normal orders, 1 in 100 above
₹11,000). Then the results page's analysis: a store's 1,000,000 carts seeded into PostgreSQL as
bench (g) seeds them, its abandoned reachable carts assigned to a three-arm experiment (₹0 off,
₹100 off, a 10 % holdout), and `GET /api/experiments/<id>` (one statement over the assignments,
carts and messages, plus the intervals) timed; baseline `GET /healthz` in the same run.
"""
TARGET_MS = 300.0


@dataclass(frozen=True)
class ExperimentsConfig:
    experiments: int = 2_000
    carts: int = 1_000_000
    warmup: int = 2
    rounds: int = 10
    seed: int = 20261207


def quick() -> ExperimentsConfig:
    return ExperimentsConfig(experiments=200, carts=20_000, warmup=1, rounds=3)


def _simulate(config: ExperimentsConfig, section: Section) -> None:
    baseline, mde = 0.08, 0.02
    planned = plan_rates(baseline, mde).carts_per_arm
    shape = (config.experiments, planned)
    rng = np.random.default_rng(config.seed)
    began = time.monotonic()
    say(f"  simulating {config.experiments:,} experiments × {LOOKS} looks, {planned:,} carts per arm")
    aa_rate = simulate(
        (rng.random(shape) < baseline) * 1.0,
        (rng.random(shape) < baseline) * 1.0,
        rate=True,
        planned=planned,
        truth=0.0,
    )
    lift = simulate(
        (rng.random(shape) < baseline) * 1.0,
        (rng.random(shape) < baseline + mde) * 1.0,
        rate=True,
        planned=planned,
        truth=mde,
    )
    aa_net = simulate(
        net_revenue(rng, shape, baseline),
        net_revenue(rng, shape, baseline),
        rate=False,
        planned=planned,
        truth=0.0,
    )
    elapsed = time.monotonic() - began
    count = f"{config.experiments:,} experiments × {LOOKS} looks"
    section.add(
        "A/A, recovery rate: ever declared a winner",
        f"**{aa_rate['declared']:.1%}**",
        f"{count}; target ≤ 5 %",
    )
    section.add(
        "A/A, net revenue per cart (long tail): ever declared a winner",
        f"**{aa_net['declared']:.1%}**",
        f"{count}; target ≤ 5 %",
    )
    section.add(
        "lift = planned effect: found by the planned carts",
        f"**{lift['found']:.1%}**",
        f"8 % against 10 %, {planned:,} carts per arm (the planner's answer); target ≥ 80 %",
    )
    section.add(
        "coverage of the true difference at every look",
        f"**{min(aa_rate['covered'], lift['covered'], aa_net['covered']):.1%}**",
        f"the lowest of the three cases (A/A rate {aa_rate['covered']:.1%}, lift {lift['covered']:.1%}, "
        f"A/A net {aa_net['covered']:.1%}); target ≥ 95 %",
    )
    section.note(f"simulation: {elapsed:.0f} s for {3 * config.experiments * LOOKS:,} interval reads")


def _store_at_0011(database_url: str, runtime: Any) -> int:
    """The demo store bench.environment.make_store makes, in SQL: the live Store model has
    columns migration 0011's schema does not (0016's platform_failing_since)."""
    settings = json.dumps(StoreSettings(quiet_hours_enabled=False).to_stored())
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        row = connection.execute(
            "INSERT INTO store (platform, platform_store_id, name, status, currency, locale, timezone,"
            " default_region, api_base_url, storefront_url, access_token_ciphertext, webhook_secret_ciphertext,"
            " sending_paused, settings, created_at, updated_at) VALUES ('demo', %s, %s, 'active', 'INR', 'en_IN',"
            " 'Asia/Kolkata', 'IN', %s, %s, %s, %s, false, %s, now(), now()) RETURNING id",
            (
                STORE_SLUG,
                f"Store {STORE_SLUG}",
                f"{runtime.settings.app_url}/demo-store",
                f"{runtime.settings.app_url}/demo-store/",
                runtime.secrets.encrypt(f"token-{STORE_SLUG}"),
                runtime.secrets.encrypt(STORE_SECRET),
                settings,
            ),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _start_at_0011(database_url: str, store_id: int) -> int:
    """“Does ₹100 off pay?” as start_experiment writes it (₹0 off 45, ₹100 off 45, a 10 %
    holdout), in SQL: the schema is migration 0011's, which the live models have outgrown."""
    offer = json.dumps({"steps": [{"delay_minutes": 15, "offer": {"kind": "fixed", "value": "100"}}]})
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        row = connection.execute(
            "INSERT INTO experiment (store_id, name, status, metric, planned_per_arm, assignment_key,"
            " started_at, created_at) VALUES (%s, 'Does ₹100 off pay?', 'running', 'net_revenue_per_cart',"
            " 300000, %s, now(), now()) RETURNING id",
            (store_id, secrets.token_hex(32)),
        ).fetchone()
        assert row is not None
        for position, (name, weight, control, holdout, overrides) in enumerate(
            (
                ("₹0 off", 45, True, False, "{}"),
                ("₹100 off", 45, False, False, offer),
                ("Holdout (no messages)", 10, False, True, "{}"),
            )
        ):
            connection.execute(
                "INSERT INTO experiment_arm (experiment_id, name, weight, is_control, is_holdout, overrides,"
                " position) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (row[0], name, weight, control, holdout, overrides, position),
            )
    return int(row[0])


def _assign_all(database_url: str, experiment_id: int, store_id: int) -> int:
    """Every abandoned reachable cart of the store into an arm (by cart id: 45/45/10), as the
    engine would have assigned them; returns how many."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        arms = [
            row[0]
            for row in connection.execute(
                "SELECT id FROM experiment_arm WHERE experiment_id = %s ORDER BY position", (experiment_id,)
            ).fetchall()
        ]
        connection.execute(
            "INSERT INTO experiment_assignment "
            "(experiment_id, arm_id, store_id, cart_id, contact_id, assigned_at, counts_until) "
            "SELECT %s, CASE WHEN id %% 20 < 9 THEN %s WHEN id %% 20 < 18 THEN %s ELSE %s END, "
            "store_id, id, contact_id, abandoned_at, abandoned_at + interval '7 days' "
            "FROM cart WHERE store_id = %s AND abandoned_at IS NOT NULL AND contact_id IS NOT NULL "
            "AND status <> 'unreachable'",
            (experiment_id, arms[0], arms[1], arms[2], store_id),
        )
        connection.execute("VACUUM ANALYZE experiment_assignment")
        row = connection.execute(
            "SELECT count(*) FROM experiment_assignment WHERE experiment_id = %s", (experiment_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def _timed_ms(call: object, config: ExperimentsConfig) -> tuple[float, float]:
    assert callable(call)
    for _ in range(config.warmup):
        call()
    times = []
    for _ in range(config.rounds):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]


def _analysis(env: BenchEnv, config: ExperimentsConfig, section: Section) -> None:
    say(f"  seeding {config.carts:,} carts into PostgreSQL for the analysis")
    with private_postgres() as server_url:
        database_url = create_database(server_url, "cartback_bench_experiments")
        # The schema before the experiments' kept figures: the carts are assigned in bulk as
        # a store running an experiment before them would have them, then migration 0012
        # counts them, as it would on that store's upgrade.
        upgrade(database_url, "0011")
        path = env.root / "experiments"
        path.mkdir(parents=True, exist_ok=True)
        env.flush_redis()
        runtime = build_runtime(
            Settings.from_env(env.app_environ(instance=path, database_url=database_url, app_port=8000))
        )
        try:
            store_id = _store_at_0011(database_url, runtime)
            seed(
                database_url, [store_id], AdminConfig(carts=config.carts, small_stores=0, big_store_share=1.0)
            )
            experiment_id = _start_at_0011(database_url, store_id)
            assigned = _assign_all(database_url, experiment_id, store_id)
            # Nothing of the runtime's may hold a table the migrations alter.
            runtime.database.dispose()
            began = time.perf_counter()
            upgrade(database_url)
            counted_in = time.perf_counter() - began
            say(f"  migrations 0012-0014 counted {assigned:,} assignments in {counted_in:.1f} s")
            section.note(
                f"migrations 0012-0014 counted the {assigned:,} assignments into their arms' kept figures"
                f" (and each shopper's 90-day value) in {counted_in:.1f} s"
            )
            with runtime.database.session() as session:
                experiment = session.get(Experiment, experiment_id)
                assert experiment is not None
            with runtime.database.session() as session:
                wrong = experiment_figures.differences(session, experiment.id)
            if wrong:
                raise RuntimeError(f"kept figures differ from a recount: {wrong}")
            client = create_app(runtime=runtime).test_client()
            _sign_in(client, runtime, store_id)

            def results() -> None:
                with runtime.database.session() as session:
                    held = session.get(Experiment, experiment.id)
                    shop = session.get(Store, store_id)
                    assert held is not None and shop is not None
                    experiment_results(session, held, runtime.store_settings(shop))

            def api() -> None:
                response = client.get(f"/api/experiments/{experiment.id}")
                if response.status_code != 200:
                    raise RuntimeError(f"/api/experiments answered {response.status_code}")

            def healthz() -> None:
                client.get("/healthz")

            base50, base95 = _timed_ms(healthz, config)
            section.add("GET /healthz (baseline)", f"p50 {base50:.1f} ms · p95 {base95:.1f} ms", "baseline")
            p50, p95 = _timed_ms(api, config)
            section.add(
                f"GET /api/experiments/<id> ({assigned:,} carts in 3 arms)",
                f"**{p50:,.0f} ms** p50 · p95 {p95:,.0f} ms ({p50 / max(base50, 0.001):,.0f}× /healthz)",
                f"{config.carts:,} carts in the store; target ≤ {TARGET_MS:.0f} ms",
            )
            r50, r95 = _timed_ms(results, config)
            section.add(
                "analysis alone (experiment_results)", f"p50 {r50:.0f} ms · p95 {r95:.0f} ms", "in process"
            )
        finally:
            runtime.database.dispose()
            runtime.redis.close()
            runtime.http.close()
            runtime.whatsapp_http.close()


def run(env: BenchEnv, config: ExperimentsConfig | None = None) -> Section:
    config = config or ExperimentsConfig()
    section = Section("experiments", TITLE, ABOUT)
    say(f"{TITLE}: simulation, then the analysis at {config.carts:,} carts")
    _simulate(config, section)
    _analysis(env, config, section)
    return section
