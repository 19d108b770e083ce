"""The dashboard's figures, kept per store and 15 minutes of abandonment as carts and messages change.

A period's dashboard then sums at most 96 rows a day (``DashboardCartBucket`` and
``DashboardMessageBucket``), whether the store has a hundred carts or a million.

How they stay exact: every flush that changes a counted column of a cart or a message notes
its bucket (the store, and the 15 minutes its cart was abandoned in). Just before the
transaction commits, each noted bucket is **recounted** from its own rows (a few dozen at most,
through the ``(store_id, abandoned_at)`` indexes) and written, in the same transaction.
Recounting rather than adding deltas keeps the figures right whatever changed (a refund, a late
status, a deleted row, an attribute whose old value was never loaded). Recounts of one bucket
are serialised by locking its row first; on PostgreSQL's READ COMMITTED the recount that waited
then sees the other transaction's rows, and on SQLite writers are serialised anyway.

Bulk ``UPDATE`` statements bypass the ORM and are not seen: one that changes a counted column
must call ``mark``. ``rebuild`` recounts a whole store (``cartback dashboard rebuild``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import (
    Integer,
    Numeric,
    and_,
    bindparam,
    case,
    cast,
    delete,
    event,
    func,
    inspect,
    or_,
    update,
)
from sqlalchemy import insert as sql_insert
from sqlalchemy import select as sql_select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import SessionTransaction
from sqlalchemy.sql.expression import FunctionElement
from sqlmodel import Session, col

from sequences.models import (
    Cart,
    CartStatus,
    DashboardCartBucket,
    DashboardMessageBucket,
    Message,
    MessageStatus,
    UTCDateTime,
)
from sequences.store_settings import MAX_STEPS

# Every time zone's offset is a multiple of 15 minutes (India +5:30, Nepal +5:45), so a bucket
# lies in one store day whatever the store's zone, and a zone change needs no recount.
BUCKET_SECONDS = 900
BUCKET = timedelta(seconds=BUCKET_SECONDS)
# Amounts are stored with at most 4 decimals: so are their exact sums.
EXACT = Decimal("0.0001")
ZERO = Decimal(0)
# Days recounted per transaction by ``rebuild`` (a busy store: ~70,000 carts a month).
REBUILD_DAYS = 7

# The columns each figure reads: a flush changing none of them leaves the bucket alone.
CART_COUNTED = frozenset(
    {
        "store_id",
        "abandoned_at",
        "status",
        "first_message_at",
        "order_cancelled_at",
        "order_verified_at",
        "order_total_store",
        "order_refunded",
        "discount_given",
        "recovered_step",
    }
)
MESSAGE_COUNTED = frozenset(
    {
        "store_id",
        "cart_abandoned_at",
        "step_number",
        "status",
        "sent_at",
        "delivered_at",
        "read_at",
        "clicked_at",
        "cost",
        "cost_currency",
    }
)
CARTS, MESSAGES = "carts", "messages"
ALL_TIME = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2101, 1, 1, tzinfo=UTC))
_NOTED = "cartback.dashboard_buckets"


def bucket_start(at: datetime) -> datetime:
    return datetime.fromtimestamp(int(at.timestamp()) // BUCKET_SECONDS * BUCKET_SECONDS, UTC)


class bucket_number(FunctionElement[Any]):
    """Seconds since the epoch // BUCKET_SECONDS, computed by the database for grouping."""

    inherit_cache = True


@compiles(bucket_number, "postgresql")
def _bucket_number_pg(element: Any, compiler: Any, **kw: Any) -> str:
    (column,) = list(element.clauses)
    return f"CAST(floor(extract(epoch FROM {compiler.process(column, **kw)}) / {BUCKET_SECONDS}) AS BIGINT)"


@compiles(bucket_number, "sqlite")
def _bucket_number_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    (column,) = list(element.clauses)
    return f"(CAST(strftime('%s', {compiler.process(column, **kw)}) AS INTEGER) / {BUCKET_SECONDS})"


def _from_number(number: Any) -> datetime:
    return datetime.fromtimestamp(int(number) * BUCKET_SECONDS, UTC)


def _count(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


class exact_sum(FunctionElement[Any]):
    """The sum of amounts, 0 when none: exact numeric on PostgreSQL; on SQLite (which sums the
    stored text as a float) printed back to text with the 4 decimals amounts are stored with."""

    inherit_cache = True


@compiles(exact_sum, "postgresql")
def _exact_sum_pg(element: Any, compiler: Any, **kw: Any) -> str:
    (amount,) = list(element.clauses)
    return f"coalesce(sum({compiler.process(amount, **kw)}), 0)"


@compiles(exact_sum, "sqlite")
def _exact_sum_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    (amount,) = list(element.clauses)
    return f"printf('%.4f', coalesce(sum({compiler.process(amount, **kw)}), 0))"


def _amount(column: Any) -> Any:
    # Stored as text on SQLite (exact decimals): cast for arithmetic on both backends.
    return cast(column, Numeric(18, 4))


def exact(value: Any) -> Decimal:
    """A summed amount as an exact Decimal (SQLite sums the stored text as a float; the error is
    far below the 4 decimals amounts are stored with)."""
    if value is None:
        return ZERO
    return Decimal(str(value)).quantize(EXACT)


# What the dashboard counts, defined once: the recount, the rebuild and the tests use these.
_recovered = and_(col(Cart.status) == CartStatus.RECOVERED, col(Cart.order_cancelled_at).is_(None))
_messaged = col(Cart.first_message_at).is_not(None)
_revenue = _amount(col(Cart.order_total_store)) - func.coalesce(_amount(col(Cart.order_refunded)), 0)
CART_FIGURES: dict[str, Any] = {
    "abandoned": func.count(),
    "reachable": _count(
        or_(col(Cart.status) != CartStatus.UNREACHABLE, col(Cart.first_message_at).is_not(None))
    ),
    "recovered": _count(_recovered),
    "messaged": _count(_messaged),
    # Opted out while their sequence ran (a STOP reply, a Stop promotions tap): what our
    # messages cost in goodwill. Counted per cart, so periods add up.
    "opted_out": _count(and_(_messaged, col(Cart.status) == CartStatus.OPTED_OUT)),
    **{
        f"recovered_step_{step}": _count(and_(_recovered, col(Cart.recovered_step) == step))
        for step in range(1, MAX_STEPS + 1)
    },
    "revenue": exact_sum(case((_recovered, _revenue), else_=None)),
    "revenue_verified": exact_sum(
        case((and_(_recovered, col(Cart.order_verified_at).is_not(None)), _revenue), else_=None)
    ),
    "discounts": exact_sum(case((_recovered, _amount(col(Cart.discount_given))), else_=None)),
}
CART_MONEY = ("revenue", "revenue_verified", "discounts")
_CART_ZERO = {name: ZERO if name in CART_MONEY else 0 for name in CART_FIGURES}
_was_sent = col(Message.sent_at).is_not(None)
MESSAGE_FIGURES: dict[str, Any] = {
    "sent": _count(_was_sent),
    "delivered": _count(
        and_(_was_sent, or_(col(Message.delivered_at).is_not(None), col(Message.read_at).is_not(None)))
    ),
    "read": _count(and_(_was_sent, col(Message.read_at).is_not(None))),
    "clicked": _count(and_(_was_sent, col(Message.clicked_at).is_not(None))),
    "failed": _count(col(Message.status) == MessageStatus.FAILED),
    "priced": _count(col(Message.cost).is_not(None)),
    "cost": exact_sum(_amount(col(Message.cost))),
}
MESSAGE_MONEY = ("cost",)
_cost_currency = func.coalesce(col(Message.cost_currency), "")

CartKey = datetime
MessageKey = tuple[datetime, int, str]


def count_carts(
    session: Session, store_id: int, start: datetime, end: datetime
) -> dict[CartKey, dict[str, Any]]:
    """The cart figures of each bucket in [start, end), counted from the carts themselves."""
    number = bucket_number(col(Cart.abandoned_at))
    rows = session.execute(
        sql_select(number, *CART_FIGURES.values())
        .where(col(Cart.store_id) == store_id, col(Cart.abandoned_at) >= start, col(Cart.abandoned_at) < end)
        .group_by(number)
    ).all()
    return {_from_number(row[0]): _figures(CART_FIGURES, CART_MONEY, row[1:]) for row in rows}


def count_messages(
    session: Session, store_id: int, start: datetime, end: datetime
) -> dict[MessageKey, dict[str, Any]]:
    """The message figures of each (bucket, step, cost currency) in [start, end)."""
    number = bucket_number(col(Message.cart_abandoned_at))
    rows = session.execute(
        sql_select(number, col(Message.step_number), _cost_currency, *MESSAGE_FIGURES.values())
        .where(
            col(Message.store_id) == store_id,
            col(Message.cart_abandoned_at) >= start,
            col(Message.cart_abandoned_at) < end,
        )
        .group_by(number, col(Message.step_number), _cost_currency)
    ).all()
    return {
        (_from_number(row[0]), int(row[1]), str(row[2])): _figures(MESSAGE_FIGURES, MESSAGE_MONEY, row[3:])
        for row in rows
    }


def _figures(names: dict[str, Any], money: tuple[str, ...], values: Iterable[Any]) -> dict[str, Any]:
    return {
        name: exact(value) if name in money else int(value) for name, value in zip(names, values, strict=True)
    }


def stored_carts(
    session: Session, store_id: int, start: datetime = ALL_TIME[0], end: datetime = ALL_TIME[1]
) -> dict[CartKey, dict[str, Any]]:
    """The kept cart figures of each bucket in [start, end)."""
    table = DashboardCartBucket
    rows = session.execute(
        sql_select(col(table.bucket_start), *(getattr(table, name) for name in CART_FIGURES)).where(
            col(table.store_id) == store_id, col(table.bucket_start) >= start, col(table.bucket_start) < end
        )
    ).all()
    return {row[0]: _figures(CART_FIGURES, CART_MONEY, row[1:]) for row in rows}


def stored_messages(
    session: Session, store_id: int, start: datetime = ALL_TIME[0], end: datetime = ALL_TIME[1]
) -> dict[MessageKey, dict[str, Any]]:
    table = DashboardMessageBucket
    rows = session.execute(
        sql_select(
            col(table.bucket_start),
            col(table.step_number),
            col(table.cost_currency),
            *(getattr(table, name) for name in MESSAGE_FIGURES),
        ).where(
            col(table.store_id) == store_id, col(table.bucket_start) >= start, col(table.bucket_start) < end
        )
    ).all()
    return {(row[0], row[1], row[2]): _figures(MESSAGE_FIGURES, MESSAGE_MONEY, row[3:]) for row in rows}


def differences(session: Session, store_id: int) -> list[str]:
    """Where the kept figures differ from a recount of the store's carts and messages (none,
    unless something changed a counted column behind the ORM's back)."""
    found = []
    # A bucket whose carts are all gone keeps its row, all zero.
    kept_carts = {
        at: figures for at, figures in stored_carts(session, store_id).items() if figures != _CART_ZERO
    }
    counted_carts = count_carts(session, store_id, *ALL_TIME)
    for at in sorted(kept_carts.keys() | counted_carts.keys()):
        if kept_carts.get(at) != counted_carts.get(at):
            found.append(
                f"carts abandoned {at:%Y-%m-%d %H:%M}: kept {kept_carts.get(at)}, counted {counted_carts.get(at)}"
            )
    kept, counted = stored_messages(session, store_id), count_messages(session, store_id, *ALL_TIME)
    for key in sorted(kept.keys() | counted.keys()):
        if kept.get(key) != counted.get(key):
            found.append(
                f"messages {key[0]:%Y-%m-%d %H:%M} step {key[1]} {key[2] or 'unpriced'}:"
                f" kept {kept.get(key)}, counted {counted.get(key)}"
            )
    return found


def mark(session: Session, kind: str, store_id: int, abandoned_at: datetime | None) -> None:
    """Recount this bucket before the transaction commits (for changes the ORM does not see)."""
    if abandoned_at is not None:
        noted: dict[tuple[int, datetime], set[str]] = session.info.setdefault(_NOTED, {})
        noted.setdefault((store_id, bucket_start(abandoned_at)), set()).add(kind)


def forget_store(session: Session, store_id: int | None) -> None:
    """Nothing to recount for a store whose rows this transaction deleted."""
    noted: dict[tuple[int, datetime], set[str]] = session.info.get(_NOTED, {})
    for key in [key for key in noted if key[0] == store_id]:
        del noted[key]


def _note_flushed(session: OrmSession, _flush_context: Any) -> None:
    """After each flush (the changed attributes' history is still there): note the buckets."""
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, Cart):
            kind, time_column, counted = CARTS, "abandoned_at", CART_COUNTED
        elif isinstance(obj, Message):
            kind, time_column, counted = MESSAGES, "cart_abandoned_at", MESSAGE_COUNTED
        else:
            continue
        state = inspect(obj)
        if obj in session.dirty and not any(state.attrs[name].history.has_changes() for name in counted):
            continue
        # The bucket it is in now, and the one it left if its time (or store) changed.
        times = state.attrs[time_column].history
        stores = state.attrs["store_id"].history
        for store_id in {*stores.added, *stores.unchanged, *stores.deleted} - {None}:
            for at in {*times.added, *times.unchanged, *times.deleted} - {None}:
                mark(session, kind, store_id, at)  # type: ignore[arg-type]


def _recount_noted(session: OrmSession) -> None:
    """Before commit: recount every noted bucket, in key order (locks taken in one order)."""
    session.flush()
    noted: dict[tuple[int, datetime], set[str]] = session.info.pop(_NOTED, {})
    for (store_id, start), kinds in sorted(noted.items()):
        recount_bucket(session, store_id, start, kinds)  # type: ignore[arg-type]


def _forget_noted(session: OrmSession, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_NOTED, None)


def _lock(session: Session, store_id: int, starts: list[datetime]) -> None:
    """Create or lock the cart rows of these buckets: the lock every recount of them takes."""
    if not starts:
        return
    maker = _insert_for(session)
    table = DashboardCartBucket.__table__  # type: ignore[attr-defined]
    statement = maker(table).values(
        [{"store_id": store_id, "bucket_start": start} | _CART_ZERO for start in sorted(starts)]
    )
    # A no-op update rather than DO NOTHING: it takes the existing row's lock.
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["store_id", "bucket_start"], set_={"abandoned": table.c.abandoned}
        )
    )


@dataclass(frozen=True)
class _Recount:
    """A bucket's recount as prepared statements (built once per dialect: executing them then
    hits SQLAlchemy's compiled cache, which matters in every committing transaction)."""

    lock: Any
    carts: Any
    clear_messages: Any
    messages: Any


@cache
def _recount_statements(dialect: str) -> _Recount:
    maker: Callable[..., Any] = postgresql_insert if dialect == "postgresql" else sqlite_insert
    store_id, start, end = (
        bindparam("store_id", type_=Integer()),
        bindparam("start", type_=UTCDateTime()),
        bindparam("end", type_=UTCDateTime()),
    )
    table = DashboardCartBucket.__table__  # type: ignore[attr-defined]
    keys = ["store_id", "bucket_start"]
    # A no-op update rather than DO NOTHING: it takes the existing row's lock.
    lock = (
        maker(table)
        .values(store_id=store_id, bucket_start=start, **_CART_ZERO)
        .on_conflict_do_update(index_elements=keys, set_={"abandoned": table.c.abandoned})
    )
    counted = sql_select(store_id, start, *CART_FIGURES.values()).where(
        col(Cart.store_id) == store_id, col(Cart.abandoned_at) >= start, col(Cart.abandoned_at) < end
    )
    upsert = maker(table).from_select([*keys, *CART_FIGURES], counted)
    carts = upsert.on_conflict_do_update(
        index_elements=keys, set_={name: upsert.excluded[name] for name in CART_FIGURES}
    )
    table_m = DashboardMessageBucket.__table__  # type: ignore[attr-defined]
    clear_messages = delete(table_m).where(table_m.c.store_id == store_id, table_m.c.bucket_start == start)
    grouped = (
        sql_select(store_id, start, col(Message.step_number), _cost_currency, *MESSAGE_FIGURES.values())
        .where(
            col(Message.store_id) == store_id,
            col(Message.cart_abandoned_at) >= start,
            col(Message.cart_abandoned_at) < end,
        )
        .group_by(col(Message.step_number), _cost_currency)
    )
    messages = sql_insert(table_m).from_select(
        [*keys, "step_number", "cost_currency", *MESSAGE_FIGURES], grouped
    )
    return _Recount(lock, carts, clear_messages, messages)


def recount_bucket(session: Session, store_id: int, start: datetime, kinds: Iterable[str]) -> None:
    """Lock the bucket, then recount it in the database: one statement per table."""
    statements = _recount_statements(session.get_bind().dialect.name)
    bucket = {"store_id": store_id, "start": start, "end": start + BUCKET}
    session.execute(statements.lock, bucket)
    if CARTS in kinds:
        session.execute(statements.carts, bucket)
    if MESSAGES in kinds:
        session.execute(statements.clear_messages, bucket)
        session.execute(statements.messages, bucket)


def _insert_for(session: Session) -> Callable[..., Any]:
    """The dialect's INSERT, which has ON CONFLICT."""
    return postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def _write(session: Session, store_id: int, start: datetime, end: datetime, kinds: set[str]) -> int:
    """Replace the kept figures of [start, end) by a recount (rows already locked); returns how
    many buckets' figures were different."""
    changed: set[datetime] = set()
    if CARTS in kinds:
        table = DashboardCartBucket
        counted = count_carts(session, store_id, start, end)
        stored = stored_carts(session, store_id, start, end)
        stale = sorted(
            at for at in stored.keys() | counted.keys() if stored.get(at) != counted.get(at, _CART_ZERO)
        )
        rows = [{"store_id": store_id, "bucket_start": at} | counted[at] for at in stale if at in counted]
        if rows:
            # By primary key, as one executemany.
            session.execute(update(table), rows)
        emptied = [at for at in stale if at not in counted]
        if emptied:
            session.execute(
                delete(table).where(col(table.store_id) == store_id, col(table.bucket_start).in_(emptied))
            )
        changed.update(stale)
    if MESSAGES in kinds:
        table_m = DashboardMessageBucket
        counted_m = count_messages(session, store_id, start, end)
        in_range = and_(
            col(table_m.store_id) == store_id,
            col(table_m.bucket_start) >= start,
            col(table_m.bucket_start) < end,
        )
        stored_m = stored_messages(session, store_id, start, end)
        differing = {
            key[0] for key in stored_m.keys() | counted_m.keys() if stored_m.get(key) != counted_m.get(key)
        }
        if differing:
            changed |= differing
            session.execute(delete(table_m).where(in_range, col(table_m.bucket_start).in_(sorted(differing))))
            rows = [
                {"store_id": store_id, "bucket_start": at, "step_number": step, "cost_currency": currency}
                | figures
                for (at, step, currency), figures in sorted(counted_m.items())
                if at in differing
            ]
            if rows:
                session.execute(sql_insert(table_m), rows)
    return len(changed)


@dataclass
class Rebuilt:
    store_id: int
    buckets: int = 0
    changed: int = 0


def rebuild(
    session_factory: Callable[[], Any],
    store_id: int,
    *,
    progress: Callable[[str], None] | None = None,
) -> Rebuilt:
    """Recount every bucket of a store, a week per transaction, beside live traffic: each
    week's rows are locked before the recount, as a live recount would."""
    with session_factory() as session:
        bounds = session.execute(
            sql_select(func.min(col(Cart.abandoned_at)), func.max(col(Cart.abandoned_at))).where(
                col(Cart.store_id) == store_id
            )
        ).one()
        kept = session.execute(
            sql_select(
                func.min(col(DashboardCartBucket.bucket_start)),
                func.max(col(DashboardCartBucket.bucket_start)),
            ).where(col(DashboardCartBucket.store_id) == store_id)
        ).one()
    times = [at for at in (*bounds, *kept) if at is not None]
    result = Rebuilt(store_id)
    if not times:
        return result
    first = bucket_start(min(times))
    last = bucket_start(max(times)) + BUCKET
    start = first
    while start < last:
        end = min(start + timedelta(days=REBUILD_DAYS), last)
        with session_factory() as session:
            counted = count_carts(session, store_id, start, end)
            existing = session.execute(
                sql_select(col(DashboardCartBucket.bucket_start)).where(
                    col(DashboardCartBucket.store_id) == store_id,
                    col(DashboardCartBucket.bucket_start) >= start,
                    col(DashboardCartBucket.bucket_start) < end,
                )
            ).scalars()
            starts = sorted(counted.keys() | set(existing))
            _lock(session, store_id, starts)
            result.buckets += len(starts)
            result.changed += _write(session, store_id, start, end, {CARTS, MESSAGES})
        if progress:
            done = (end - first) / (last - first)
            progress(
                f"store {store_id}: {done:.0%} ({start.date()} to {end.date()}), {result.changed} buckets fixed"
            )
        start = end
    return result


event.listen(OrmSession, "after_flush", _note_flushed)
event.listen(OrmSession, "before_commit", _recount_noted)
event.listen(OrmSession, "after_transaction_end", _forget_noted)
