"""Child processes of a bench run: start them in their own process group, always stop them.

Every process the bench starts (redis-server, gunicorn, rq workers, wrk) goes through
``REGISTRY``. Each leads its own session, so the terminal's Ctrl-C reaches only the bench
process, which then stops the children in order (``stop_all`` from ``run``'s ``finally``, with
``atexit`` as a backstop). Children also get the kernel's parent-death signal, so they go
away even if the bench itself is SIGKILLed. Stopping signals the whole group, which catches
what the children forked (gunicorn's workers, the rq scheduler process).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from app.local_redis import find_redis_server, redis_server_argv

# Loopback only: the bench never sends traffic anywhere else.
HOST = "127.0.0.1"
# Seconds a child gets to exit after SIGTERM before its group is SIGKILLed. rq workers finish
# the job in hand (warm shutdown); gunicorn waits for its workers.
STOP_TIMEOUT = 10.0
LOG_TAIL_CHARS = 3000

_PR_SET_PDEATHSIG = 1
try:
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux/glibc: atexit is the only backstop
    _prctl = None


def _parent_death_hook() -> Callable[[], None] | None:
    prctl = _prctl
    if prctl is None:
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    return hook


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def find_executable(name: str, *fallbacks: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    return next((path for path in fallbacks if os.access(path, os.X_OK)), None)


def read_tail(path: Path | None, limit: int = LOG_TAIL_CHARS) -> str:
    if path is None:
        return "<no log>"
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<could not read {path}: {exc}>"
    return ("...\n" + text[-limit:]) if len(text) > limit else (text or "<empty>")


@dataclass
class Child:
    """A child process leading its own process group."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path | None
    _stopped: bool = field(default=False, init=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self) -> str:
        return read_tail(self.log_path)

    def _exited_unreaped(self, timeout: float) -> bool:
        # Wait WITHOUT reaping: while the leader is an unreaped zombie its pid (the group id)
        # cannot be reused, so the killpg() sweep below cannot hit a stranger.
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # already reaped
                return True
            if info is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def terminate(self) -> None:
        """Ask the whole group to stop (rq: warm shutdown; gunicorn: graceful)."""
        if not self._stopped and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the group, wait, then SIGKILL whatever is left of it."""
        if self._stopped:
            return
        if self.proc.returncode is None:
            self.terminate()
            self._exited_unreaped(timeout)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._stopped = True


class Registry:
    """Every child of this bench run, so one call can stop them all."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
    ) -> Child:
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                preexec_fn=_parent_death_hook(),
            )
        finally:
            if log_path:
                log.close()  # type: ignore[union-attr]
        child = Child(name, proc, log_path)
        self._children.append(child)
        return child

    def stop(self, child: Child, timeout: float = STOP_TIMEOUT) -> None:
        child.stop(timeout)
        if child in self._children:
            self._children.remove(child)

    def stop_many(self, children: Sequence[Child], timeout: float = STOP_TIMEOUT) -> None:
        """Signal them all first, so they shut down in parallel, then wait for each."""
        for child in children:
            child.terminate()
        for child in children:
            self.stop(child, timeout)

    def stop_all(self) -> None:
        # Newest first: app processes before the redis-server they talk to.
        while self._children:
            self._children.pop().stop()


REGISTRY = Registry()
atexit.register(REGISTRY.stop_all)


def stop_all_uninterrupted() -> None:
    """Stop every child; a second Ctrl-C while doing so must not leave orphans behind."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        REGISTRY.stop_all()
    finally:
        signal.signal(signal.SIGINT, previous)


def wait_until(
    check: Callable[[], bool], *, timeout: float, child: Child | None = None, what: str = "condition"
) -> None:
    """Poll ``check`` until it is true; fail early with the log if ``child`` died."""
    deadline = time.monotonic() + timeout
    while True:
        if child is not None and not child.alive():
            raise RuntimeError(
                f"{child.name} exited with status {child.proc.returncode} while waiting for {what}. "
                f"Log ({child.log_path}):\n{child.log_tail()}"
            )
        if check():
            return
        if time.monotonic() >= deadline:
            tail = f" Log ({child.log_path}):\n{child.log_tail()}" if child else ""
            raise TimeoutError(f"{what} not reached after {timeout:.0f}s.{tail}")
        time.sleep(0.05)


def http_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # loopback URL built by us
                return bool(response.status < 500)
        except urllib.error.HTTPError as error:
            return error.code < 500
        except (urllib.error.URLError, OSError):
            return False

    return check


def children_of(pid: int) -> list[int]:
    """Direct children (gunicorn's workers, the rq scheduler); Linux /proc only."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(part) for part in text.split()]


def tree_cpu_seconds(children: Sequence[Child]) -> float:
    """CPU time (user + system) of these processes and their direct children, from /proc.

    CPU per request or per message is far steadier than a rate on a shared, noisy machine,
    and comparing it with wall time tells "busy" from "waiting" (locks, sleeps, I/O).
    """
    pids = [c.pid for c in children if c.alive()]
    return pids_cpu_seconds(pids + [grandchild for pid in pids for grandchild in children_of(pid)])


def pids_cpu_seconds(pids: Sequence[int]) -> float:
    """CPU time (user + system) of these processes, from /proc; a process gone counts 0."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # utime and stime are fields 14 and 15 of stat; here counted after "pid (comm)".
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


@dataclass
class RedisServer:
    child: Child
    port: int
    version: str

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=30)


def start_redis(workdir: Path, attempts: int = 3) -> RedisServer:
    """A private redis-server on a free port: no persistence, so it measures memory only."""
    binary = find_redis_server()
    if binary is None:
        raise RuntimeError("redis-server not found; `make bench` installs it via tools/ensure-test-services")
    workdir.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    # Picking a free port and binding it later is racy: retry with a new port.
    for _attempt in range(attempts):
        port = free_port()
        child = REGISTRY.spawn(
            "redis-server",
            redis_server_argv(binary, port, workdir, HOST),
            cwd=workdir,
            log_path=workdir / f"redis-{port}.log",
        )
        client = redis.Redis(host=HOST, port=port, socket_connect_timeout=1, socket_timeout=1)

        def ours(client: redis.Redis = client, child: Child = child) -> bool:
            try:
                return int(client.info("server")["process_id"]) == child.pid
            except redis.exceptions.ConnectionError:
                return False

        try:
            wait_until(ours, timeout=10, child=child, what="redis-server to answer")
            version = str(client.info("server")["redis_version"])
            return RedisServer(child, port, version)
        except (RuntimeError, TimeoutError) as exc:
            last_error = exc
            REGISTRY.stop(child)
        finally:
            client.close()
    raise RuntimeError(f"could not start redis-server: {last_error}")
