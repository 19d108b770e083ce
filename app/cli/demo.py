"""`make demo`: Redis, migrations, web, worker, a seeded demo store and a shopper's journey.

Everything runs on this machine against the embedded default (SQLite). Ctrl-C stops every
process this command started.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import webbrowser
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from redis import Redis
from redis.exceptions import RedisError
from sqlmodel import select

from app.gunicorn_config import CONFIG_SPEC
from app.local_redis import DEBIAN_REDIS_SERVER, find_redis_server, redis_server_argv
from sequences.runtime import Runtime

DEMO_TIME_SCALE = "60"
READY_TIMEOUT_SECONDS = 30
# How long each process gets to stop cleanly on Ctrl-C before it is killed.
STOP_TIMEOUT_SECONDS = 10


class DemoError(RuntimeError):
    """Something the person running the demo must fix; the message says what."""


class Processes:
    def __init__(self) -> None:
        self.running: list[tuple[str, subprocess.Popen[bytes], Path | None]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str], log_path: Path | None
    ) -> subprocess.Popen[bytes]:
        stdout = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - lives as long as the child
        process = subprocess.Popen(
            argv, env=env, stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.running.append((name, process, log_path))
        return process

    def check(self) -> None:
        for name, process, log_path in self.running:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:] if log_path and log_path.exists() else ""
                raise DemoError(
                    f"the {name} process stopped (exit {process.returncode}). Last log lines:\n{tail}"
                )

    def stop_all(self) -> None:
        """Newest first, each given time to finish: the worker lets go of Redis before Redis stops."""
        for _name, process, _log in reversed(self.running):
            if process.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _step(message: str) -> None:
    print(f"==> {message}", flush=True)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _redis_answers(redis_url: str) -> bool:
    try:
        return bool(Redis.from_url(redis_url, socket_connect_timeout=1).ping())
    except RedisError:
        return False


def ensure_redis(redis_url: str, processes: Processes, workdir: Path) -> None:
    if _redis_answers(redis_url):
        _step(f"Redis is reachable at {redis_url}")
        return
    parts = urlsplit(redis_url)
    host, port = parts.hostname or "localhost", parts.port or 6379
    if host not in ("localhost", "127.0.0.1", "::1"):
        raise DemoError(
            f"Redis at {redis_url} is not reachable; start it or unset REDIS_URL to use a local one."
        )
    binary = find_redis_server()
    if binary is None:
        if os.geteuid() != 0:
            raise DemoError("Redis is not installed. Install it with: sudo apt-get install -y redis-server")
        _step("Installing Redis (apt-get install redis-server)…")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        result = subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], env=env)
        if result.returncode != 0:
            raise DemoError(
                "apt-get could not install redis-server; install it by hand and run make demo again."
            )
        subprocess.run(["service", "redis-server", "stop"], check=False, capture_output=True)
        binary = find_redis_server() or DEBIAN_REDIS_SERVER
        if _redis_answers(redis_url):
            # The package's own service is up and could not be stopped: use it.
            _step(f"Redis is reachable at {redis_url}")
            return
    _step(f"Starting redis-server on {host}:{port}")
    processes.start(
        "redis",
        redis_server_argv(binary, port, workdir),
        dict(os.environ),
        workdir / "redis.log",
    )
    client = Redis.from_url(redis_url, socket_connect_timeout=1)
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        processes.check()
        try:
            client.ping()
            return
        except RedisError:
            time.sleep(0.2)
    raise DemoError(
        f"redis-server did not answer within {READY_TIMEOUT_SECONDS} s; see {workdir / 'redis.log'}"
    )


def _wait_http(url: str, processes: Processes) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        processes.check()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise DemoError(f"{url} did not answer within {READY_TIMEOUT_SECONDS} s")


def run_demo(port: int = 8000, play: bool = True, wait_forever: bool = True) -> int:
    from dotenv import load_dotenv

    load_dotenv(override=False)
    if os.environ.get("CARTBACK_ENV", "").strip() == "production":
        # The demo serves a simulated store and, by default, the sandbox outbox: neither may
        # face real shoppers (create_app refuses both in production too).
        print(
            "cartback demo: refused with CARTBACK_ENV=production. The demo runs a simulated store and a "
            "sandbox outbox; unset CARTBACK_ENV (or set it to development) to play it.",
            file=sys.stderr,
        )
        return 2
    base_url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.setdefault("CARTBACK_TIME_SCALE", DEMO_TIME_SCALE)
    env.setdefault("APP_URL", base_url)
    env.setdefault("WHATSAPP_TRANSPORT", "sandbox")
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    # /metrics names stores and their revenue, so even the demo's needs a token.
    env.setdefault("METRICS_TOKEN", secrets.token_urlsafe(18))
    env["PYTHONUNBUFFERED"] = "1"
    instance = Path(env.get("CARTBACK_INSTANCE_PATH", "instance")).resolve()
    logs = instance / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            k: env[k]
            for k in ("CARTBACK_TIME_SCALE", "APP_URL", "WHATSAPP_TRANSPORT", "REDIS_URL", "METRICS_TOKEN")
        }
    )

    processes = Processes()
    stop = {"requested": False}

    def _on_signal(signum: int, _frame: object) -> None:
        stop["requested"] = True
        raise KeyboardInterrupt

    # Explicit handlers: a shell that starts us in the background may have set SIGINT to
    # "ignore", and Python keeps that; Ctrl-C and `kill` must always stop everything.
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        from app.dbmigrate import upgrade
        from app.wiring import build_runtime
        from demo.store.seed import seed_demo_store
        from sequences.config import Settings

        if not _port_free("127.0.0.1", port):
            raise DemoError(
                f"port {port} is already in use; run `make demo PORT=8010` (or stop what uses it)."
            )
        ensure_redis(env["REDIS_URL"], processes, logs)
        settings = Settings.from_env(env)
        _step(f"Applying migrations to {settings.database_url}")
        upgrade(settings.database_url)
        runtime = build_runtime(settings)
        store = seed_demo_store(runtime)
        _step(f"Demo store ready: {store.name} (simulation)")
        cloud = None
        if settings.whatsapp_transport == "cloud":
            from demo.cloud import CloudDemoError, prepare_cloud_demo

            assert store.id is not None
            try:
                cloud = prepare_cloud_demo(runtime, store.id, env, _step)
            except CloudDemoError as exc:
                raise DemoError(str(exc)) from None

        python = sys.executable
        _step(f"Starting the web process on {base_url} (log: {logs / 'web.log'})")
        processes.start(
            "web",
            [
                python,
                "-m",
                "gunicorn",
                "app:create_app()",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--worker-class",
                "gthread",
                "--config",
                CONFIG_SPEC,
            ],
            env,
            logs / "web.log",
        )
        _step(f"Starting a worker (log: {logs / 'worker.log'})")
        processes.start("worker", [python, "-m", "app.cli.main", "worker"], env, logs / "worker.log")
        _wait_http(f"{base_url}/healthz", processes)

        print(f"\n  Demo store : {base_url}/demo-store/")
        if cloud is None:
            print(f"  Outbox     : {base_url}/outbox   (the WhatsApp messages, sandboxed)")
        else:
            print(f"  WhatsApp   : Cloud API at {settings.whatsapp_graph_url}")
        print(f"  Metrics    : curl -H 'Authorization: Bearer {env['METRICS_TOKEN']}' {base_url}/metrics\n")
        print(
            f"  Time runs {env['CARTBACK_TIME_SCALE']}x faster: 15 minutes of quiet take "
            f"{15 * 60 / float(env['CARTBACK_TIME_SCALE']):.0f} seconds.\n",
            flush=True,
        )

        if play:
            from demo.store.journey import play_journey

            started = time.monotonic()

            def say(line: str) -> None:
                processes.check()
                print(f"  [{time.monotonic() - started:5.1f}s] {line}", flush=True)

            result = play_journey(base_url, runtime.database, say, cloud=cloud)
            print(
                f"\n  Journey complete in {result.elapsed_s:.0f} s: cart {result.cart_id} recovered.\n",
                flush=True,
            )
            assert store.id is not None
            print(f"  Reconciled : {reconcile_now(runtime, store.id)}", flush=True)
            open_dashboard(base_url, runtime, store.id)
            print(f"  Experiment : {announce_experiment(runtime, store.id)}\n", flush=True)
        if not wait_forever:
            return 0
        print("  Everything keeps running; open the URLs above. Press Ctrl-C to stop.", flush=True)
        while True:
            processes.check()
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopping…", flush=True)
        return 0
    except DemoError as exc:
        print(f"\nDemo stopped: {exc}", file=sys.stderr, flush=True)
        return 1
    except Exception as exc:
        from demo.store.journey import JourneyFailed

        if not isinstance(exc, JourneyFailed):
            raise
        print(f"\nThe shopper's journey did not finish: {exc}", file=sys.stderr, flush=True)
        print(f"Logs: {logs / 'web.log'} and {logs / 'worker.log'}", file=sys.stderr, flush=True)
        return 1
    finally:
        processes.stop_all()
        if processes.running:
            print("All demo processes stopped.", flush=True)


Callback = Callable[[str], None]


# The dashboard figures the demo reads back after the journey (data-figure attributes).
_FIGURE = re.compile(r'data-figure="([a-z-]+)"><strong>([^<]*)</strong>')


def reconcile_now(runtime: Runtime, store_id: int) -> str:
    """What the merchant's "Reconcile now" does: the store confirms the order it just took, so
    the dashboard counts it as reconciled revenue, not pending."""
    from sequences.models import RunTrigger
    from sequences.reconciliation import report, runs

    run = runs.open_run(runtime, store_id, RunTrigger.COMMAND, enqueue=False)
    assert run.id is not None
    done = runs.execute(runtime, run.id)
    if done is None:
        return "a weekly run is under way; the dashboard shows its result when it ends"
    return (report.summary_lines(done) or ["nothing to reconcile"])[0]


def open_dashboard(base_url: str, runtime: Runtime, store_id: int) -> dict[str, str]:
    """Sign in to the store's admin as the merchant would, read the dashboard, print a link.

    The demo's own sign-in uses one link; the merchant gets a fresh one (each works once).
    """
    from app.admin.session import issue_login_link

    link = issue_login_link(runtime, store_id, "demo")
    token = link.partition("token=")[2]
    with httpx.Client(base_url=base_url, timeout=10, follow_redirects=True) as browser:
        page = browser.post("/admin/login", data={"token": token})
    figures = dict(_FIGURE.findall(page.text)) if page.status_code == 200 else {}
    if not figures:
        raise DemoError(f"the dashboard did not open after the journey (HTTP {page.status_code})")
    recovered, sent = figures.get("recovered", "?"), figures.get("sent", "?")
    print(
        f"  Dashboard  : {recovered} cart{'' if recovered == '1' else 's'} recovered, "
        f"{html.unescape(figures.get('revenue', '?'))} recovered revenue reconciled "
        f"(+ {html.unescape(figures.get('pending-revenue', '?'))} pending), "
        f"{sent} message{'' if sent == '1' else 's'} sent (last 30 days)",
        flush=True,
    )
    fresh = issue_login_link(runtime, store_id, "demo")
    print(f"  Open it    : {fresh}\n               (a one-time sign-in link, valid 30 minutes)\n", flush=True)
    if os.environ.get("DISPLAY") or sys.platform == "darwin":
        webbrowser.open(fresh)
    return figures


DEMO_EXPERIMENT = "Does ₹100 off in the first message pay?"


def announce_experiment(runtime: Runtime, store_id: int) -> str:
    """Start the demo store's experiment (once: a rerun finds it running) and say what it does."""
    from sequences.experiments.manage import ArmSpec, ExperimentError, start_experiment, with_holdout
    from sequences.experiments.results import experiment_results
    from sequences.models import Experiment, ExperimentStatus, Store

    first_offer = {"steps": [{"delay_minutes": 15, "offer": {"kind": "fixed", "value": "100"}}]}
    arms = with_holdout(
        [ArmSpec("Today's reminders", control=True), ArmSpec("₹100 off first", overrides=first_offer)]
    )
    # A rerun of the demo finds one running already: that is the one described.
    with contextlib.suppress(ExperimentError):
        start_experiment(runtime, store_id, DEMO_EXPERIMENT, arms, planned_per_arm=6_148)
    with runtime.database.session() as session:
        experiment = session.exec(
            select(Experiment).where(
                Experiment.store_id == store_id, Experiment.status == ExperimentStatus.RUNNING
            )
        ).first()
        store = session.get(Store, store_id)
        if experiment is None or store is None:
            return "none running"
        results = experiment_results(session, experiment, runtime.store_settings(store))
    total = sum(arm.weight for arm in results.arms) or 1
    shares = ", ".join(
        f"{arm.weight * 100 // total} % {arm.name.lower() if not arm.holdout else 'the holdout (no message)'}"
        for arm in results.arms
    )
    carts = sum(arm.eligible for arm in results.arms)
    return (
        f"“{experiment.name}” is running on the demo store: new abandoned carts are split {shares}; "
        f"{carts} cart{'' if carts == 1 else 's'} in it so far, results at /admin/experiments."
    )
