"""Database engines and sessions shared by the web and worker processes.

Two engines over one database: ``engine`` for reads and ordinary writes, ``lock_engine`` for
transactions that must exclude each other per cart. On PostgreSQL both are the same engine and
the cart lock is ``SELECT ... FOR UPDATE`` on the cart row. SQLite has no row locks, so its lock
engine starts every transaction with ``BEGIN IMMEDIATE`` (the write lock is taken up front, so
two senders can never both read "not sent yet").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool
from sqlmodel import Session, col, select

from sequences.models import Cart, Contact

# How long SQLite waits for a lock before giving up, in milliseconds. Web and worker share
# the file; a sender holds the lock only for a few milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 15_000


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
            self.engine = create_engine(self.url, echo=echo, pool_pre_ping=True)
            self.lock_engine = self.engine
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

    def dispose(self) -> None:
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


def lock_cart(session: Session, cart_id: int) -> Cart | None:
    """Load the cart holding its lock until the transaction ends.

    Use inside ``Database.locked_session``: on SQLite the IMMEDIATE transaction already holds
    the database write lock; on PostgreSQL the row lock serialises senders per cart.
    """
    statement = select(Cart).where(Cart.id == cart_id).with_for_update()
    return session.exec(statement).first()


def lock_contact(session: Session, contact_id: int) -> Contact | None:
    return session.exec(select(Contact).where(Contact.id == contact_id).with_for_update()).first()


def lock_cart_with_contact(session: Session, cart_id: int) -> tuple[Cart | None, Contact | None]:
    """Lock the cart's contact, then the cart: the one lock order every writer uses.

    Opt-outs lock the contact and then its carts; senders and trackers lock contact then cart,
    so PostgreSQL never sees two transactions wait on each other in opposite orders.
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
    for _attempt in range(3):
        peek = session.exec(select(Cart.contact_id).where(Cart.id == cart_id)).first()
        contact = lock_contact(session, peek) if peek is not None else None
        cart = lock_cart(session, cart_id)
        if cart is None or cart.contact_id == (contact.id if contact else None):
            return cart, contact
    raise RuntimeError(f"cart {cart_id} kept changing contact while being locked")
