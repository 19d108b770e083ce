"""Real Redis and PostgreSQL servers for the test session.

Loaded as a pytest plugin from ``tests/conftest.py``::

    pytest_plugins = ["tests.servers"]

Fixtures (session-scoped):

* ``redis_url``    -> ``redis://127.0.0.1:PORT/0``
* ``postgres_url`` -> ``postgresql+psycopg://cartback@127.0.0.1:PORT/cartback_test``

Helpers for tests that want their own database on the session server:
``create_database(postgres_url, name)`` and ``drop_database(url)``.

Each server runs on a free 127.0.0.1 port in its own temporary directory (data,
socket and log), in its own process group, and is stopped at the end of the
session, on Ctrl-C (pytest still runs session teardown) and, as a last resort,
from ``atexit`` and via the kernel's parent-death signal if pytest is killed.
The binaries come from the system; ``make test`` installs them through
``tools/ensure-test-services``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.rows import TupleRow
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy.engine import make_url

from app.local_redis import find_redis_server, redis_server_argv

__all__ = [
    "create_database",
    "drop_database",
    "postgres_url",
    "redis_url",
]

# Loopback only: the one address pytest-socket lets tests connect to.
HOST = "127.0.0.1"
# Seconds until a server must answer; typical here: redis 0.05 s, postgres
# ~0.1 s after an initdb of ~1 s. Generous for loaded CI machines.
REDIS_START_TIMEOUT = 10.0
POSTGRES_START_TIMEOUT = 20.0
# Seconds initdb may take (it writes ~40 MB).
INITDB_TIMEOUT = 120.0
# Seconds a server gets to shut down cleanly before its group is SIGKILLed.
STOP_TIMEOUT = 10.0
POSTGRES_USER = "cartback"
POSTGRES_DATABASE = "cartback_test"
# Debian's postgresql package creates this system user; PostgreSQL refuses to
# run as root, so that is who runs initdb/postgres when the tests run as root.
POSTGRES_SYSTEM_USER = "postgres"
ALLOW_NO_POSTGRES_ENV = "CARTBACK_ALLOW_NO_POSTGRES"
INSTALL_HINT = "`make test` installs it (tools/ensure-test-services runs `apt-get install {package}`)"
# Picking a port by binding to port 0 and closing the socket leaves a small
# window in which another process can grab it; retrying with a new port makes
# that race harmless.
PORT_ATTEMPTS = 3
# Characters of a server log quoted in a failure message.
LOG_TAIL_CHARS = 4000
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_UNIX_SOCKET_PATH = 107
# Holds the pid of the pytest process owning a server temp dir.
OWNER_FILE = "owner.pid"


class ServerStartError(Exception):
    """A server could not be started; the message includes its log."""


class PortInUse(ServerStartError):
    """The picked port was taken before the server could bind it."""


class NotOurServer(Exception):
    """Something answers on the port, but it is not the server we started.

    Happens when the picked port was grabbed by e.g. a parallel pytest-xdist
    worker's server: ours is about to exit with "address already in use",
    and we must not mistake the other one for it.
    """


# --------------------------------------------------------------------------
# Process management
# --------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
try:
    # Resolved once in the parent so the post-fork hook does no dynamic loading.
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux/glibc: atexit is the fallback
    _prctl = None


def _parent_death_signal(sig: signal.Signals) -> Callable[[], None] | None:
    """Return a preexec hook making the kernel send ``sig`` if pytest dies.

    Covers the case no Python cleanup can: pytest being SIGKILLed (OOM killer,
    CI timeout). Popen runs the hook after switching user, which matters
    because a credential change clears the parent-death signal.
    """
    prctl = _prctl
    if prctl is None:
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return hook


@dataclass
class ServerProcess:
    """A server subprocess that leads its own process group."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: signal.Signals
    stop_timeout: float = STOP_TIMEOUT
    _stopped: bool = field(default=False, init=False)

    def log_tail(self) -> str:
        return read_tail(self.log_path)

    def _exited_unreaped(self, timeout: float) -> bool:
        """Wait for the leader to exit WITHOUT reaping it.

        While the leader is an unreaped zombie its pid, and so the process
        group id, cannot be reused, which makes the killpg() sweep below safe.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # already reaped by Popen.poll()
                return True
            if info is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop gracefully, then SIGKILL whatever is left of the group."""
        if self._stopped:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(self.stop_signal)
            self._exited_unreaped(self.stop_timeout)
            # Children (PostgreSQL backends, anything the server forked) or a
            # leader that ignored the polite signal.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        # Only now: if a second Ctrl-C interrupted the above, the atexit
        # backstop must still be able to finish the job.
        self._stopped = True


_live_servers: list[ServerProcess] = []


def _stop_all_servers() -> None:
    # Backstop for sessions that end without fixture teardown (e.g. a second
    # Ctrl-C during teardown, or an exception in pytest itself).
    while _live_servers:
        _live_servers.pop().stop()


atexit.register(_stop_all_servers)


def _spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    stop_signal: signal.Signals,
    death_signal: signal.Signals,
    cwd: Path,
    env: dict[str, str] | None = None,
    user: int | None = None,
    group: int | None = None,
    extra_groups: list[int] | None = None,
) -> ServerProcess:
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            # Own session/process group: the terminal's Ctrl-C does not hit
            # the server mid-test, and teardown can killpg() the whole tree.
            start_new_session=True,
            user=user,
            group=group,
            extra_groups=extra_groups,
            # Only calls the pre-resolved prctl(); no locks or imports, so
            # it is safe after fork even if pytest has other threads.
            preexec_fn=_parent_death_signal(death_signal),
        )
    server = ServerProcess(name, proc, log_path, stop_signal)
    _live_servers.append(server)
    return server


def _release(server: ServerProcess) -> None:
    server.stop()
    if server in _live_servers:
        _live_servers.remove(server)


def _wait_until_ready(
    server: ServerProcess,
    check: Callable[[], object],
    not_ready: tuple[type[Exception], ...],
    timeout: float,
    port_in_use_pattern: str,
) -> None:
    """Call ``check`` until it stops raising, the server dies, or time runs out."""

    def raise_if_exited() -> None:
        if server.proc.poll() is None:
            return
        tail = server.log_tail()
        message = (
            f"{server.name} exited with status {server.proc.returncode} "
            f"during startup. Log ({server.log_path}):\n{tail}"
        )
        if re.search(port_in_use_pattern, tail, re.IGNORECASE):
            raise PortInUse(message)
        raise ServerStartError(message)

    retryable: tuple[type[Exception], ...] = (NotOurServer, *not_ready)
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        raise_if_exited()
        try:
            check()
            return
        except retryable as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            # A server that died is a better diagnosis than a timeout.
            raise_if_exited()
            raise ServerStartError(
                f"{server.name} not ready after {timeout:.0f}s "
                f"(last error: {last_error!r}). Log ({server.log_path}):\n"
                f"{server.log_tail()}"
            )
        time.sleep(0.05)


def _start_with_port_retry(
    start: Callable[[int], ServerProcess],
) -> tuple[ServerProcess, int]:
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_port()
        try:
            return start(port), port
        except PortInUse:
            if attempt == PORT_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def read_tail(path: Path, limit: int = LOG_TAIL_CHARS) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<could not read {path}: {exc}>"
    if len(text) > limit:
        return "...\n" + text[-limit:]
    return text or "<empty>"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove_stale_workdirs(parent: Path, prefix: str) -> None:
    """Delete temp dirs left by sessions that died without teardown.

    A SIGKILLed or SIGTERMed pytest cannot clean up (the servers themselves
    get the parent-death signal), and a PostgreSQL cluster is ~40 MB.
    """
    for path in parent.glob(f"{prefix}*"):
        try:
            pid = int((path / OWNER_FILE).read_text())
        except (OSError, ValueError):  # not ours, or still being set up
            continue
        if not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def _make_workdir(prefix: str, parent: str | None = None) -> Path:
    base = Path(parent or tempfile.gettempdir())
    _remove_stale_workdirs(base, prefix)
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    (workdir / OWNER_FILE).write_text(f"{os.getpid()}\n")
    return workdir


def _failure(message: str) -> BaseException:
    """What ``pytest.fail(message)`` raises, for ``raise ... from None``.

    pytrace=False and no exception chain: the message (with the server log)
    is the useful part, not this module's stack or the wrapped exception.
    """
    return pytest.fail.Exception(message, pytrace=False)


# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------


def _start_redis(binary: str, workdir: Path, port: int) -> ServerProcess:
    server = _spawn(
        "redis-server",
        redis_server_argv(binary, port, workdir, HOST),
        workdir / "redis.log",
        stop_signal=signal.SIGTERM,
        death_signal=signal.SIGTERM,
        cwd=workdir,
    )

    def ping() -> None:
        client = redis.Redis(
            host=HOST,
            port=port,
            socket_connect_timeout=1,
            socket_timeout=1,
            # No client-side retries: the loop retries, and must get back to
            # checking whether the server process died.
            retry=Retry(NoBackoff(), 0),
        )
        try:
            pid = client.info("server")["process_id"]
        finally:
            client.close()
        if pid != server.proc.pid:
            raise NotOurServer(f"redis-server pid {pid} answers on port {port}")

    try:
        _wait_until_ready(
            server,
            ping,
            # BusyLoadingError subclasses ConnectionError.
            (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError),
            REDIS_START_TIMEOUT,
            r"address already in use",
        )
    except BaseException:  # includes KeyboardInterrupt during startup
        _release(server)
        raise
    return server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a throwaway redis-server running for the whole test session."""
    binary = find_redis_server()
    if binary is None:
        raise _failure(
            "redis-server not found on PATH or at /usr/bin/redis-server; "
            + INSTALL_HINT.format(package="redis-server")
        )

    workdir = _make_workdir("cartback-redis-")
    server: ServerProcess | None = None
    try:
        try:
            server, port = _start_with_port_retry(lambda p: _start_redis(binary, workdir, p))
        except ServerStartError as exc:
            raise _failure(f"could not start redis-server ({binary}): {exc}") from None
        yield f"redis://{HOST}:{port}/0"
    finally:
        if server is not None:
            _release(server)
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresBinaries:
    initdb: str
    postgres: str


def _version_key(bindir: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,); numeric so 9.6 < 10 < 15.
    version = Path(bindir).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version))


def find_postgres_binaries() -> PostgresBinaries | None:
    """Highest Debian-packaged version first, then whatever is on PATH."""
    bindirs = sorted(
        {str(Path(p).parent) for p in glob.glob("/usr/lib/postgresql/*/bin/postgres")},
        key=_version_key,
        reverse=True,
    )
    for bindir in bindirs:
        initdb = os.path.join(bindir, "initdb")
        postgres = os.path.join(bindir, "postgres")
        if os.access(initdb, os.X_OK) and os.access(postgres, os.X_OK):
            return PostgresBinaries(initdb=initdb, postgres=postgres)
    initdb_path = shutil.which("initdb")
    postgres_path = shutil.which("postgres")
    if initdb_path and postgres_path:
        return PostgresBinaries(initdb=initdb_path, postgres=postgres_path)
    return None


@dataclass(frozen=True)
class RunAs:
    """Credentials for the PostgreSQL processes (None = run as ourselves)."""

    uid: int | None = None
    gid: int | None = None
    groups: list[int] | None = None


def _postgres_identity() -> RunAs:
    if os.geteuid() != 0:
        return RunAs()
    try:
        entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        raise _failure(
            f"running as root, so PostgreSQL must run as the "
            f"'{POSTGRES_SYSTEM_USER}' system user, which does not exist; "
            + INSTALL_HINT.format(package="postgresql")
        ) from None
    # Equivalent of `setpriv --reuid --regid --init-groups`, done by Popen
    # itself so the postmaster is our direct child (no runuser/su wrapper in
    # between that would swallow or delay our signals).
    return RunAs(
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        groups=os.getgrouplist(entry.pw_name, entry.pw_gid),
    )


def _postgres_tmp_parent() -> str | None:
    """A parent directory the postgres user can traverse.

    mkdtemp() under it is chowned to that user, but every ancestor must be
    searchable too; a TMPDIR under /root would not be.
    """
    parent = Path(tempfile.gettempdir()).resolve()
    for directory in (parent, *parent.parents):
        if not directory.stat().st_mode & 0o001:
            return "/tmp"
    return None


def _postgres_env(home: Path) -> dict[str, str]:
    # Drop PG* variables (PGDATA, PGPORT, PGHOST, ...) that would silently
    # override our settings; HOME points at the temp dir because /root is not
    # readable by the postgres user.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["HOME"] = str(home)
    return env


def _initdb(binaries: PostgresBinaries, workdir: Path, run_as: RunAs) -> Path:
    datadir = workdir / "data"
    log_path = workdir / "initdb.log"
    argv = [
        binaries.initdb,
        "-D",
        str(datadir),
        "-A",
        "trust",
        "-U",
        POSTGRES_USER,
        "--no-sync",  # throwaway cluster: skip fsync, saves seconds
        "-E",
        "UTF8",
        # Fixed C locale: does not depend on which locales the host has
        # generated, and sorting is the same on every machine.
        "--locale=C",
    ]
    with open(log_path, "wb") as log:
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=_postgres_env(workdir),
            user=run_as.uid,
            group=run_as.gid,
            extra_groups=run_as.groups,
            timeout=INITDB_TIMEOUT,
            check=False,
        )
    if result.returncode != 0:
        raise ServerStartError(
            f"initdb failed with status {result.returncode}. Log ({log_path}):\n{read_tail(log_path)}"
        )
    return datadir


def _start_postgres(
    binaries: PostgresBinaries,
    workdir: Path,
    datadir: Path,
    run_as: RunAs,
    port: int,
) -> ServerProcess:
    socket_dir = workdir / "socket"
    socket_dir.mkdir(exist_ok=True)
    if run_as.uid is not None and run_as.gid is not None:
        os.chown(socket_dir, run_as.uid, run_as.gid)
    # Tests connect over TCP only; a Unix socket path too long for
    # sun_path (deep TMPDIR) would abort startup, so then go TCP-only.
    socket_path = socket_dir / f".s.PGSQL.{port}"
    socket_setting = str(socket_dir) if len(str(socket_path)) <= MAX_UNIX_SOCKET_PATH else ""

    server = _spawn(
        "postgres",
        [
            binaries.postgres,
            "-D",
            str(datadir),
            "-p",
            str(port),
            "-c",
            f"listen_addresses={HOST}",
            "-k",
            socket_setting,
            # Durability is worthless for a throwaway database; speed is not.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ],
        workdir / "postgres.log",
        # SIGINT = "fast" shutdown: disconnect clients and exit, without
        # waiting for them as SIGTERM ("smart") would.
        stop_signal=signal.SIGINT,
        # SIGQUIT = "immediate" shutdown, also takes the backends down.
        death_signal=signal.SIGQUIT,
        cwd=workdir,
        env=_postgres_env(workdir),
        user=run_as.uid,
        group=run_as.gid,
        extra_groups=run_as.groups,
    )

    def connect() -> None:
        with psycopg.connect(
            host=HOST,
            port=port,
            user=POSTGRES_USER,
            dbname="postgres",
            connect_timeout=2,
        ) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
        if row is None or Path(str(row[0])) != datadir:
            raise NotOurServer(f"PostgreSQL for {row} answers on port {port}")

    try:
        _wait_until_ready(
            server,
            connect,
            # Refused connections and "the database system is starting up".
            (psycopg.OperationalError,),
            POSTGRES_START_TIMEOUT,
            r"could not (bind|create listen socket)|address already in use",
        )
    except BaseException:
        _release(server)
        raise
    return server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of database ``cartback_test`` on a throwaway PostgreSQL server."""
    binaries = find_postgres_binaries()
    if binaries is None:
        message = (
            "PostgreSQL server binaries (initdb, postgres) not found under "
            "/usr/lib/postgresql/*/bin or on PATH; " + INSTALL_HINT.format(package="postgresql")
        )
        if os.environ.get(ALLOW_NO_POSTGRES_ENV) == "1":
            pytest.skip(f"{message} ({ALLOW_NO_POSTGRES_ENV}=1)")
        raise _failure(message)

    run_as = _postgres_identity()
    workdir = _make_workdir("cartback-pg-", _postgres_tmp_parent())
    server: ServerProcess | None = None
    try:
        if run_as.uid is not None and run_as.gid is not None:
            os.chown(workdir, run_as.uid, run_as.gid)
        try:
            datadir = _initdb(binaries, workdir, run_as)
            server, port = _start_with_port_retry(
                lambda p: _start_postgres(binaries, workdir, datadir, run_as, p)
            )
        except (ServerStartError, subprocess.TimeoutExpired) as exc:
            raise _failure(f"could not start PostgreSQL ({binaries.postgres}): {exc}") from None
        base_url = f"postgresql+psycopg://{POSTGRES_USER}@{HOST}:{port}/postgres"
        yield create_database(base_url, POSTGRES_DATABASE)
    finally:
        if server is not None:
            _release(server)
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------
# Database helpers
# --------------------------------------------------------------------------


def _admin_connection(url: str) -> psycopg.Connection[TupleRow]:
    """Autocommit connection to the maintenance database of ``url``'s server.

    CREATE/DROP DATABASE cannot run inside a transaction, and a database
    cannot be dropped while we are connected to it.
    """
    parsed = make_url(url)
    return psycopg.connect(
        host=parsed.host or HOST,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        dbname="postgres",
        autocommit=True,
        connect_timeout=5,
    )


def create_database(postgres_url: str, name: str) -> str:
    """Create empty database ``name`` on the server of ``postgres_url``.

    Returns the URL of the new database (same driver, host, port, user).
    """
    with _admin_connection(postgres_url) as conn:
        # template0: guaranteed pristine even if someone modified template1.
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    return make_url(postgres_url).set(database=name).render_as_string(hide_password=False)


def drop_database(database_url: str, name: str | None = None) -> None:
    """Drop database ``name`` (default: the one ``database_url`` points at).

    Open connections to it (e.g. an engine's pool) are terminated first.
    Missing databases are ignored so this is safe in teardown code.
    """
    target = name if name is not None else make_url(database_url).database
    if not target or target == "postgres":
        raise ValueError(f"refusing to drop database {target!r}")
    with _admin_connection(database_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target)))
