"""Webhook deliveries spooled per web process on SQLite, moved into the database by the workers.

Why: SQLite drops a connection's whole page cache whenever another connection has committed
since that connection's last transaction. With two web processes inserting deliveries in turn,
every insert read again the pages of ``webhook_delivery``, its six indexes and the store it
refers to: ~0.2 ms of a delivery's ~0.45 ms of server CPU, the gap to half a bare Flask
"hello" (bench/README.md (a)). A file only one process writes keeps its cache warm. So on a
file-backed SQLite database each web process appends its deliveries to a spool of its own (one
table, no index: an insert touches a page or two), and the workers move them into
``webhook_delivery`` in batches (``collect``, called by ``intake.drain_deliveries`` before it
claims), where the delivery's unique keys drop one already received. On PostgreSQL ingest
inserts into ``webhook_delivery`` itself.

Layout: ``<database file>.spool/<pid>-<random>.sqlite``, with a ``.lock`` file beside it that its
process holds (``flock``) for as long as it lives; a spool whose lock can be taken belongs to
nobody and is removed once collected to its end.

Invariants:
- A delivery is answered "accepted" only once committed to its spool.
- Collecting is idempotent: rows leave a spool only after the database transaction holding them
  committed. A collector that dies in between leaves them to be collected again, and the unique
  keys drop the second copy; two collectors reading the same rows insert them once.
- Replays change nothing: a delivery spooled twice (the platform retried, or two processes got
  it) becomes one row.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import secrets
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from sqlalchemy.engine import make_url

from sequences.db import Database, retry_while_busy

log = logging.getLogger("cartback.spool")

TABLE = "spooled_delivery"
SUFFIX = ".sqlite"
LOCK_SUFFIX = ".lock"
# Rows moved per database transaction: one SQLite write lock held for a few milliseconds.
COLLECT_BATCH = 500
# A collector's wait for the spool's write lock, held by its web process ~0.05 ms per delivery.
COLLECTOR_BUSY_TIMEOUT_S = 5.0


def spool_directory(database: Database) -> Path | None:
    """Where this database's spools live; None where ingest inserts directly (PostgreSQL, or
    an in-memory SQLite database, which no other process can see)."""
    if not database.sqlite:
        return None
    path = make_url(database.url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path).with_name(Path(path).name + ".spool")


def _connect(path: Path, *, busy_timeout_s: float, create: bool = False) -> sqlite3.Connection:
    """A connection to a spool; unless ``create``, one that is gone raises OperationalError
    instead of being made again, empty, by the attempt."""
    mode = "rwc" if create else "rw"
    connection = sqlite3.connect(
        # A URI, for its mode: a "#" or "?" in the path must not end it.
        f"file:{quote(str(path))}?mode={mode}",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
        timeout=busy_timeout_s,
    )
    connection.execute("PRAGMA journal_mode=WAL")
    # As the main database (sequences.db): a process crash loses nothing committed.
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


class OwnSpool:
    """This process's spool: its file, its lock and its one connection (threads take turns)."""

    def __init__(self, directory: Path, columns: Sequence[str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(6)}"
        # The lock first: a collector only looks at spools that have a database file, and by
        # then its owner holds the lock.
        self._lock_file: IO[str] = (directory / (name + LOCK_SUFFIX)).open("w")
        fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = directory / (name + SUFFIX)
        # Busy timeout 0: a collector deleting rows holds the lock for a moment, and the caller
        # retries at its own pace (retry_while_busy) rather than SQLite's 1-100 ms sleeps.
        self._connection = _connect(self.path, busy_timeout_s=0, create=True)
        quoted = ", ".join(_quote(column) for column in columns)
        # AUTOINCREMENT: a seq is never handed out twice. Reused once the spool was emptied, a
        # collector that read rows before another emptied it deleted the next delivery under
        # the old number (found on a second read; test_spool).
        self._connection.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (seq INTEGER PRIMARY KEY AUTOINCREMENT, {quoted})"
        )
        # Column names from the delivery table's own insert (sequences.stores.deliveries), quoted.
        self._insert = f"INSERT INTO {TABLE} ({quoted}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608
        self._turn = threading.Lock()
        self.pid = os.getpid()

    def append(self, parameters: Sequence[Any]) -> None:
        """Commit one delivery's row (the bound parameters of the database's own insert)."""
        with self._turn:
            retry_while_busy(lambda: self._connection.execute(self._insert, parameters))

    def close(self) -> None:
        self._connection.close()
        self._lock_file.close()


class _Spools:
    """The spool of each database this process writes deliveries to, opened on first use and
    again in a forked child (a spool has one writer)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, tuple[Database, OwnSpool | None]] = {}
        # A forked child's copies of its parent's spools: never used, and never closed, which
        # would close the parent's files under it (its flock lives as long as any copy).
        self._inherited: list[OwnSpool] = []

    def own(self, database: Database, columns: Sequence[str]) -> OwnSpool | None:
        """This process's spool for ``database``; None when it has none (``spool_directory``)."""
        with self._lock:
            found = self._open.get(id(database))
            if (
                found is not None
                and found[0] is database
                and (found[1] is None or found[1].pid == os.getpid())
            ):
                return found[1]
            if found is not None and found[1] is not None:
                self._inherited.append(found[1])
            directory = spool_directory(database)
            spool = OwnSpool(directory, columns) if directory is not None else None
            if found is None:
                database.on_dispose(lambda: self.close(database))
            self._open[id(database)] = (database, spool)
            return spool

    def close(self, database: Database) -> None:
        with self._lock:
            found = self._open.pop(id(database), None)
        if found is not None and found[1] is not None and found[1].pid == os.getpid():
            found[1].close()


SPOOLS = _Spools()


@dataclass(frozen=True)
class Collected:
    moved: int  # rows read from spools and offered to the database
    inserted: int  # of them, new deliveries (the rest had been received already)


def collect(database: Database, *, limit: int) -> Collected:
    """Move up to ``limit`` spooled deliveries into ``webhook_delivery``, each spool's in the
    order received (claims go by ``received_at`` across spools), the spools in a random order
    (one kept busy holds back no other); remove the spools of processes that are gone once
    they are empty."""
    moved = inserted = 0
    spools = _spool_files(database)
    random.shuffle(spools)
    for path in spools:
        if moved >= limit:
            break
        try:
            one = _collect_spool(database, path, limit - moved)
        except (sqlite3.Error, OSError) as exc:
            if not path.exists():
                continue  # removed by another collector meanwhile
            # A lock held too long, a file that is not a spool, a database that refuses a row
            # for a reason other than its store: its rows stay; the other spools go on.
            log.warning(
                "spool not collected", extra={"spool": path.name, "error": f"{type(exc).__name__}: {exc}"}
            )
            continue
        moved += one.moved
        inserted += one.inserted
    return Collected(moved, inserted)


def _collect_spool(database: Database, path: Path, limit: int) -> Collected:
    moved = inserted = 0
    connection = _connect(path, busy_timeout_s=COLLECTOR_BUSY_TIMEOUT_S)
    try:
        columns = [
            row[1] for row in connection.execute("PRAGMA table_info(spooled_delivery)") if row[1] != "seq"
        ]
        if columns:
            while moved < limit:
                rows = connection.execute(
                    # The spool's own column names (its table_info), quoted.
                    f"SELECT seq, {', '.join(_quote(c) for c in columns)} FROM {TABLE} ORDER BY seq LIMIT ?",  # noqa: S608
                    (min(COLLECT_BATCH, limit - moved),),
                ).fetchall()
                if not rows:
                    break
                inserted += _insert_into_database(database, columns, [row[1:] for row in rows])
                # Only now: the database holds them (or already did).
                connection.execute("DELETE FROM spooled_delivery WHERE seq <= ?", (rows[-1][0],))
                moved += len(rows)
        if _is_empty(connection):
            _remove_if_orphaned(path, connection)
    finally:
        connection.close()
    return Collected(moved, inserted)


def _is_empty(connection: sqlite3.Connection) -> bool:
    try:
        return connection.execute("SELECT 1 FROM spooled_delivery LIMIT 1").fetchone() is None
    except sqlite3.OperationalError:
        return True  # no table: a process that died before creating it


def _quote(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _insert_into_database(database: Database, columns: list[str], rows: list[Sequence[Any]]) -> int:
    """Insert the rows in one transaction; those already received (any unique key) are
    skipped. A row whose store is gone (its foreign key) is logged and dropped, so it cannot
    hold back the spool behind it; any other refusal (a schema the spool does not fit yet)
    raises, and the rows stay spooled."""
    names = ", ".join(_quote(c) for c in columns)
    marks = ", ".join("?" * len(columns))
    # The spool's own column names (its table_info), quoted.
    sql = f"INSERT INTO webhook_delivery ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING"  # noqa: S608
    with database.sqlite_writer() as writer:
        retry_while_busy(lambda: writer.execute("BEGIN IMMEDIATE"))
        try:
            before = writer.total_changes
            try:
                writer.executemany(sql, rows)
            except sqlite3.IntegrityError:
                writer.execute("ROLLBACK")
                retry_while_busy(lambda: writer.execute("BEGIN IMMEDIATE"))
                before = writer.total_changes
                for row in rows:
                    try:
                        writer.execute(sql, row)
                    except sqlite3.IntegrityError as exc:
                        if "FOREIGN KEY" not in str(exc):
                            raise
                        log.warning("spooled delivery dropped: its store is gone", extra={"error": str(exc)})
            inserted = writer.total_changes - before
            writer.execute("COMMIT")
        except BaseException:
            if writer.in_transaction:
                writer.execute("ROLLBACK")
            raise
    return int(inserted)


def _remove_if_orphaned(path: Path, connection: sqlite3.Connection) -> None:
    """Remove an empty spool whose process is gone: its lock is free, or already removed (the
    lock goes first, so a spool without one is being removed or was left half-removed)."""
    lock_path = path.with_suffix(LOCK_SUFFIX)
    try:
        lock_file: IO[str] | None = lock_path.open("r")
    except FileNotFoundError:
        lock_file = None
    try:
        if lock_file is not None:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # its process is alive and may append again
        # Nobody appends now, but its process may have appended just before it died.
        if not _is_empty(connection):
            return
        # Closed first: a connection closing after the unlink could leave a -wal behind.
        connection.close()
        lock_path.unlink(missing_ok=True)
        for suffix in (SUFFIX, SUFFIX + "-wal", SUFFIX + "-shm"):
            path.with_name(path.stem + suffix).unlink(missing_ok=True)
    finally:
        if lock_file is not None:
            lock_file.close()


def pending_count(database: Database) -> int:
    """Deliveries waiting in spools (a gauge for operators)."""
    total = 0
    for path in _spool_files(database):
        try:
            connection = _connect(path, busy_timeout_s=COLLECTOR_BUSY_TIMEOUT_S)
            try:
                total += connection.execute("SELECT count(*) FROM spooled_delivery").fetchone()[0]
            finally:
                connection.close()
        except sqlite3.Error:
            # Gone meanwhile, not a spool, or not readable: as collect, the others still count.
            continue
    return total


def _spool_files(database: Database) -> list[Path]:
    """Every spool of ``database`` now on disk; none where it has no spools."""
    directory = spool_directory(database)
    if directory is None or not directory.is_dir():
        return []
    return list(directory.glob("*" + SUFFIX))
