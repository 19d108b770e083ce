"""`cartback worker` processes for tests, started as production starts them and always stopped.

Each worker is a real ``python -m app.cli.main worker`` (or a launcher beside this module) in a
session of its own, with the test's database, Redis and keys in its environment and its
stderr (the structured logs) in a file. ``WorkerFleet.stop_all`` stops every one of them, the
whole process group, whatever the test did; the kernel's parent-death signal stops them if
pytest itself is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from sequences.config import ENVIRONMENT_PREFIXES, Settings

ROOT = Path(__file__).resolve().parents[2]
# Variables inherited from the shell that would change what the workers do; set here instead.
_APP_VARIABLE_PREFIXES = ENVIRONMENT_PREFIXES
# Seconds a worker gets to finish its batch after SIGTERM (rq's warm shutdown) before SIGKILL.
STOP_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 3000
CLI = ("-m", "app.cli.main", "worker")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux/glibc: stop_all is the only way out
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)

    return hook


def worker_environ(settings: Settings, *, application_name: str | None = None) -> dict[str, str]:
    """The environment of a worker using the test's database, Redis and keys.

    ``application_name`` names the worker's PostgreSQL connections (pg_stat_activity), so a
    test can tell which process holds a transaction open.
    """
    database_url = settings.database_url
    if application_name is not None:
        database_url = make_url(database_url).update_query_dict({"application_name": application_name})
        database_url = database_url.render_as_string(hide_password=False)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(_APP_VARIABLE_PREFIXES)}
    environ.update(
        CARTBACK_ENV="test",
        CARTBACK_INSTANCE_PATH=settings.instance_path,
        DATABASE_URL=database_url,
        REDIS_URL=settings.redis_url,
        SECRET_KEY=settings.secret_key,
        ENCRYPTION_KEY=",".join(settings.encryption_keys),
        APP_URL=settings.app_url,
        WHATSAPP_TRANSPORT="sandbox",
        # The workers import this checkout's packages, as pytest does.
        PYTHONPATH=str(ROOT)
        + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""),
    )
    return environ


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    terminated: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as the kernel's OOM killer or a lost machine would: no shutdown at all."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def terminate(self) -> None:
        """SIGTERM once: rq's warm shutdown (a second SIGTERM would make it a cold one)."""
        if self.process.poll() is None and not self.terminated:
            self.terminated = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        if self.process.poll() is None:
            self.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        # Whatever it left in its group goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def log_entries(self) -> list[dict[str, Any]]:
        """The worker's structured log lines (rq's own plain lines left out)."""
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    entries.append(json.loads(line))
        return entries

    def log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace")
        return text[-LOG_TAIL_CHARS:] or "<empty>"


@dataclass
class WorkerFleet:
    """The worker processes of one test; ``stop_all`` is called from the fixture's finally."""

    settings: Settings
    log_dir: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def start(
        self,
        count: int,
        *,
        threads: int = 1,
        command: Sequence[str] = CLI,
        name_connections: bool = False,
        extra_environ: Mapping[str, str] | None = None,
    ) -> list[WorkerProcess]:
        """``count`` workers running ``python <command> --threads <threads>``."""
        started = []
        for _ in range(count):
            name = f"worker-{len(self.workers) + 1}"
            environ = worker_environ(self.settings, application_name=name if name_connections else None)
            environ.update(extra_environ or {})
            log_path = self.log_dir / f"{name}.log"
            with log_path.open("wb") as log_file:
                process = subprocess.Popen(
                    [sys.executable, *command, "--threads", str(threads)],
                    cwd=ROOT,
                    env=environ,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    # Only prctl runs between fork and exec: no lock of this process is taken.
                    preexec_fn=_die_with_parent(),
                )
            worker = WorkerProcess(name, process, log_path)
            self.workers.append(worker)
            started.append(worker)
        return started

    def by_name(self, name: str) -> WorkerProcess:
        return next(worker for worker in self.workers if worker.name == name)

    def check_alive(self, workers: Sequence[WorkerProcess] | None = None) -> None:
        for worker in workers if workers is not None else self.workers:
            if not worker.alive():
                raise AssertionError(
                    f"{worker.name} exited with status {worker.process.returncode}:\n{worker.log_tail()}"
                )

    def wait_until(
        self, condition: Callable[[], bool], *, timeout: float, what: str, poll: float = 0.1
    ) -> float:
        """Poll ``condition`` until it holds; fails (with the workers' logs) after ``timeout``
        seconds or when a worker that should be running has died. Returns the seconds waited."""
        started = time.monotonic()
        while not condition():
            self.check_alive([worker for worker in self.workers if worker.process.returncode is None])
            if time.monotonic() - started > timeout:
                tails = "\n".join(f"--- {worker.name}:\n{worker.log_tail()}" for worker in self.workers)
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
            time.sleep(poll)
        return time.monotonic() - started

    def stop_all(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM to every worker at once, then SIGKILL to whatever still runs ``timeout``
        seconds later (their process groups included)."""
        for worker in self.workers:
            worker.terminate()
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            worker.stop(timeout=max(deadline - time.monotonic(), 0.0))
