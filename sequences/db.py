"""Database engines and sessions shared by the web and worker processes, and the row locks.

Two engines over one database: ``engine`` for reads and ordinary writes, ``lock_engine`` for
transactions that must exclude each other per cart. On PostgreSQL both are the same engine and
the cart lock is ``SELECT ... FOR UPDATE`` on the cart row. SQLite has no row locks, so its lock
engine starts every transaction with ``BEGIN IMMEDIATE`` (the write lock is taken up front, so
two senders can never both read "not sent yet").

The one lock order (PostgreSQL; SQLite's single write lock cannot deadlock). A transaction
takes row locks in these tiers, and never waits for a lock of an earlier tier while it holds
one of a later tier:

1. The row that claims its unit of work: the webhook delivery being applied
   (``tracking.process_delivery``). A transaction holding contacts or carts never waits for
   another delivery's row: an erasure skips the deliveries being applied at that moment
   (``privacy.erasure``), which then apply after it.
2. Contacts, by id ascending when several (``lock_contact``; ``privacy.requests`` locks the
   matching contacts in one ordered statement).
3. Carts, by id ascending when several (``lock_cart``, ``lock_carts_of``). A cart's contact is
   locked before the cart (``lock_cart_with_contact``); code that locks a cart alone (a
   click, the sweep) must not lock a contact afterwards. Under a contact's lock, more of that
   contact's carts may follow the one in hand whatever their ids (an order closing the
   shopper's other carts, an opt-out after a failed send): whoever else locks several of them
   holds that contact too, so waits for it first.
4. The rows of a cart (steps, messages, lines, events), after the cart.
5. The store row, when a transaction holding carts writes it (a send or a status pausing the
   store, an uninstall); the settings page locks it with nothing else held.
6. The dashboard's bucket rows, just before commit, in key order (``merchant.rollups``).
7. The experiment assignments of the carts and shoppers the transaction changed, by id
   ascending, just before commit and after the buckets (``experiments.figures``).
8. The experiments' arm figure rows, in key order, last (``experiments.figures``).

Locks are only ever taken in the same tier as the ones held (in that tier's order) or a later
one, so two transactions that meet wait for each other in one direction and PostgreSQL never
sees a cycle. Where a transaction finds out only after locking that it needed an earlier lock
(the cart changed contact while it waited), it lets go of what it took in a savepoint before
waiting again: PostgreSQL releases row locks taken after a savepoint when the savepoint is
rolled back (docs, "Explicit Locking": "Row-level locks are released at transaction end or
during savepoint rollback"). Tests: tests/sequences/test_lock_order.py.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, Table, bindparam, create_engine, event, inspect, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool
from sqlmodel import Session, col, select

from sequences.models import Cart, Contact

T = TypeVar("T")

# How long SQLite waits for a lock before giving up, in milliseconds. Web and worker share
# the file; a sender holds the lock only for a few milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 15_000
# PostgreSQL connections a process may open beyond its 10 kept ones (see Database).
POOL_OVERFLOW = 20


# Pauses between tries at SQLite's write lock held by another process: from 0.1 ms, doubling
# to 2 ms. SQLite's own busy handler sleeps 1, 2, 5, 10... ms, long beside the ~0.1 ms one
# insert holds the lock, so two web processes writing deliveries lost most of a core to it.
FIRST_BUSY_PAUSE_S = 0.0001
LAST_BUSY_PAUSE_S = 0.002


def retry_while_busy(attempt: Callable[[], T]) -> T:
    """``attempt()`` (one statement, nothing written when it fails busy) until SQLite's write
    lock is free, for at most SQLITE_BUSY_TIMEOUT_MS."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = FIRST_BUSY_PAUSE_S
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, LAST_BUSY_PAUSE_S)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def normalise_url(url: str) -> str:
    """Accept the URLs hosting platforms hand out (``postgres://``) and pick psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        # A pool per process; connections are cheap and WAL lets readers run beside a writer.
        poolclass=NullPool if parsed.database in (None, "", ":memory:") else None,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so BEGIN is emitted when we say.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """The engines for one database URL; made once per process."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalise_url(url)
        self.sqlite = is_sqlite(self.url)
        if self.sqlite:
            self.engine = _sqlite_engine(self.url, immediate=False)
            self.lock_engine = _sqlite_engine(self.url, immediate=True)
        else:
            # A worker's threads each hold a connection while they work: `--threads 8` runs 8
            # batches and 8 job loops beside the dispatcher and the intake (18), past
            # SQLAlchemy's default 5 + 10. Opened only when needed, closed when idle beyond 10.
            self.engine = create_engine(
                self.url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=POOL_OVERFLOW
            )
            self.lock_engine = self.engine
        self._writer_lock = threading.Lock()
        self._writer: Any = None
        self._writer_pid = 0
        self._on_dispose: list[Callable[[], None]] = []
        # Every unit of work comes from here, so session hooks (the dashboard's kept figures,
        # sequences.merchant.rollups.keep_figures) are installed on it, explicitly, by whoever
        # builds the runtime: importing a module changes no session.
        self.sessions: sessionmaker[Session] = sessionmaker(class_=Session, expire_on_commit=False)

    def session(self) -> AbstractContextManager[Session]:
        """A unit of work: committed on success, rolled back on error."""
        return _unit_of_work(self.sessions, self.engine)

    def locked_session(self) -> AbstractContextManager[Session]:
        """A unit of work that may take cart locks (``lock_cart``); committed on success."""
        return _unit_of_work(self.sessions, self.lock_engine)

    def schema_problem(self) -> str | None:
        """None when cartback's tables exist; otherwise what to do about it."""
        if inspect(self.engine).has_table("cart"):
            return None
        return "the database has no cartback tables yet: run `cartback db upgrade`"

    @contextmanager
    def sqlite_writer(self) -> Iterator[Any]:
        """SQLite: this process's connection for writes outside the ORM (a webhook delivery),
        one thread at a time.

        SQLite has one writer, so threads that would wait in its busy handler (sleeping 1-100 ms
        between tries) queue on a lock here and are handed the turn at once. The connection
        stays open: taking one from the pool and giving it back (a rollback) was a tenth of a
        delivery's CPU. Opened again in a forked child, which must not share it.

        Its busy timeout is 0: another process holding the write lock raises SQLITE_BUSY at
        once, and the caller retries at its own pace (``retry_while_busy``)."""
        assert self.sqlite
        with self._writer_lock:
            if self._writer is None or self._writer_pid != os.getpid():
                writer = self.engine.raw_connection()
                # Never back to the pool, even when dropped (a forked child replacing its
                # parent's): a session drawing a connection that does not wait for the lock
                # failed with "database is locked" (the cloud demo's sign-in, HTTP 500).
                writer.detach()
                writer.execute("PRAGMA busy_timeout=0")
                self._writer, self._writer_pid = writer, os.getpid()
            yield self._writer

    def on_dispose(self, closer: Callable[[], None]) -> None:
        """Call ``closer`` when the database is disposed: what a process keeps open beside the
        engines for this database (its delivery spool, sequences.stores.spool)."""
        self._on_dispose.append(closer)

    def dispose(self) -> None:
        closers, self._on_dispose = self._on_dispose, []
        for closer in closers:
            closer()
        with self._writer_lock:
            if self._writer is not None and self._writer_pid == os.getpid():
                self._writer.close()
            self._writer = None
        self.engine.dispose()
        if self.lock_engine is not self.engine:
            self.lock_engine.dispose()


@contextmanager
def _unit_of_work(sessions: sessionmaker[Session], engine: Engine) -> Iterator[Session]:
    with sessions(bind=engine) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


# Attempts at locking a cart's contact before giving up: each retry means the cart changed
# contact between the peek and the lock, which a shopper does once per checkout at most.
LOCK_ATTEMPTS = 3


def lock_cart(session: Session, cart_id: int) -> Cart | None:
    """Load the cart holding its lock until the transaction ends.

    Use inside ``Database.locked_session``: on SQLite the IMMEDIATE transaction already holds
    the database write lock; on PostgreSQL the row lock serialises senders per cart. The row is
    read as locked, even if this session loaded it earlier (``populate_existing``): a copy from
    before the lock may predate another transaction's committed change.
    """
    statement = select(Cart).where(Cart.id == cart_id).with_for_update()
    return session.exec(statement.execution_options(populate_existing=True)).first()


def lock_carts_of(session: Session, contact_ids: Iterable[int]) -> list[Cart]:
    """Lock every cart of these contacts, by id ascending (the lock order), in one statement.

    The caller holds the contacts' locks. A cart that moved to another contact while this
    waited for it is not returned (PostgreSQL checks the condition again on the row it has
    locked; that lock stays, in this tier's order, until the transaction ends).
    """
    ids = sorted(set(contact_ids))
    if not ids:
        return []
    statement = select(Cart).where(col(Cart.contact_id).in_(ids)).order_by(col(Cart.id)).with_for_update()
    return list(session.exec(statement.execution_options(populate_existing=True)).all())


def lock_contact(session: Session, contact_id: int) -> Contact | None:
    """Load the contact holding its lock, read as locked (see ``lock_cart``)."""
    statement = select(Contact).where(Contact.id == contact_id).with_for_update()
    return session.exec(statement.execution_options(populate_existing=True)).first()


def lock_cart_with_contact(session: Session, cart_id: int) -> tuple[Cart | None, Contact | None]:
    """Lock the cart's contact, then the cart: the lock order (module docstring), retries included.

    The contact is read from the cart before either is locked, so the cart may have moved to
    another contact by the time its lock is granted. Then both locks are let go (each attempt
    takes them in a savepoint, rolled back) before the new contact is waited for: waiting for a
    contact while holding the cart is how two transactions wait on each other for ever. Call it
    before locking the cart any other way in the transaction (a lock held from before a
    savepoint is not released with it).
    """
    bind = session.get_bind()
    if bind.dialect.name == "sqlite":
        # The IMMEDIATE transaction already holds the only lock SQLite has: one query will do.
        row = session.exec(
            select(Cart, Contact)
            .outerjoin(Contact, col(Contact.id) == col(Cart.contact_id))
            .where(Cart.id == cart_id)
        ).first()
        return (row[0], row[1]) if row else (None, None)
    for _attempt in range(LOCK_ATTEMPTS):
        peek = session.exec(select(Cart.contact_id).where(Cart.id == cart_id)).first()
        attempt = session.begin_nested()
        contact = lock_contact(session, peek) if peek is not None else None
        cart = lock_cart(session, cart_id)
        if cart is None or cart.contact_id == (contact.id if contact else None):
            attempt.commit()
            return cart, contact
        # Rolling back to the savepoint releases the cart (and the old contact) before the
        # next attempt waits for the contact the cart has now.
        attempt.rollback()
    raise RuntimeError(f"cart {cart_id} kept changing contact while being locked")


def table_of(model: Any) -> Table:
    """A model's Core table, for statements that bypass the ORM's unit of work."""
    table: Table = model.__table__
    return table


def update_rows(session: Session, table: Table, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """One UPDATE by primary key (``id``), executed for every row: the driver batches them."""
    if not rows:
        return
    statement = (
        update(table)
        .where(table.c.id == bindparam("row_id"))
        .values({name: bindparam(f"new_{name}") for name in columns})
    )
    session.execute(
        statement, [{"row_id": row["id"], **{f"new_{name}": row[name] for name in columns}} for row in rows]
    )


@dataclass(frozen=True)
class LockedCarts:
    """Many carts locked in the one order (``lock_carts_with_contacts``)."""

    contacts: dict[int, Contact]
    # The carts whose contact is the one locked for them.
    carts: dict[int, Cart]
    # Carts that moved to another contact between the peek and the lock: their contact is
    # not held, so the caller leaves them to a path that locks them one by one.
    moved: list[int]


def lock_carts_with_contacts(session: Session, cart_ids: Sequence[int]) -> LockedCarts:
    """``lock_cart_with_contact`` for a batch: the carts' contacts by id, then the carts by id,
    two statements whatever the batch's size. Carts that are gone are left out."""
    peeked = dict(
        session.execute(select(col(Cart.id), col(Cart.contact_id)).where(col(Cart.id).in_(cart_ids))).all()
    )
    contact_ids = sorted({contact_id for contact_id in peeked.values() if contact_id is not None})
    contacts = {
        contact.id: contact
        for contact in session.scalars(
            select(Contact)
            .where(col(Contact.id).in_(contact_ids))
            .order_by(col(Contact.id))
            .with_for_update()
        )
        if contact.id is not None
    }
    carts: dict[int, Cart] = {}
    moved: list[int] = []
    for cart in session.scalars(
        select(Cart).where(col(Cart.id).in_(cart_ids)).order_by(col(Cart.id)).with_for_update()
    ):
        assert cart.id is not None
        if cart.contact_id != peeked.get(cart.id):
            moved.append(cart.id)
        else:
            carts[cart.id] = cart
    return LockedCarts(contacts, carts, moved)
