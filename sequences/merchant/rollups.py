"""The dashboard's figures, kept per store and 15 minutes of abandonment as carts and messages change.

A period's dashboard then sums at most 96 rows a day (``DashboardCartBucket`` and
``DashboardMessageBucket``), whether the store has a hundred carts or a million.

How they stay exact, in the transaction that changes the rows:

- Before each flush, every cart or message whose counted columns change (or that is inserted
  or deleted) gives its bucket a delta: what it counted before, taken away, and what it counts
  now, added. "Before" is read again from the database, locking the row on PostgreSQL as the
  UPDATE about to run would: this session's copy may predate another transaction's committed
  change, and a delta from it would count that change twice.
- Just before commit the deltas are added to the bucket rows (INSERT … ON CONFLICT DO UPDATE
  SET figure = figure + delta), bucket by bucket in key order, the cart row first (it is the
  bucket's lock). Constant work per change, however many carts share the 15 minutes.
- Changes the ORM does not see (bulk ``UPDATE`` statements) call ``mark``: that bucket is
  recounted from its rows instead, under the same lock, an absolute count.

The hooks are installed on a ``Database``'s sessions by ``keep_figures``, which the runtime's
builder calls (app.wiring.build_runtime): importing this module changes no session.

``rebuild`` recounts a whole store (``cartback dashboard rebuild``); every test ends by checking
that the kept figures equal a recount (tests/conftest.py).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
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
from sqlalchemy.orm import SessionTransaction, sessionmaker
from sqlalchemy.sql.expression import FunctionElement
from sqlmodel import Session, col

from sequences.db import Database
from sequences.merchant.store_settings import MAX_STEPS
from sequences.models import (
    DASHBOARD_CART_COLUMNS,
    DASHBOARD_MESSAGE_COLUMNS,
    Cart,
    CartStatus,
    DashboardCartBucket,
    DashboardMessageBucket,
    Message,
    MessageStatus,
    UTCDateTime,
)

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
# (The same columns the (store_id, abandoned_at) indexes carry for a recount.)
CART_COUNTED = frozenset({"store_id", "abandoned_at", *DASHBOARD_CART_COLUMNS})
MESSAGE_COUNTED = frozenset({"store_id", "cart_abandoned_at", *DASHBOARD_MESSAGE_COLUMNS} - {"contact_id"})
CARTS, MESSAGES = "carts", "messages"
ALL_TIME = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2101, 1, 1, tzinfo=UTC))
_NOTED = "cartback.dashboard_recounts"
_DELTAS = "cartback.dashboard_deltas"


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


class exact_add(FunctionElement[Any]):
    """A kept amount plus a delta: on SQLite (text amounts, added as floats) printed back to
    text with 4 decimals, so the error never accumulates."""

    inherit_cache = True


@compiles(exact_add, "postgresql")
def _exact_add_pg(element: Any, compiler: Any, **kw: Any) -> str:
    kept, delta = list(element.clauses)
    return f"({compiler.process(kept, **kw)} + {compiler.process(delta, **kw)})"


@compiles(exact_add, "sqlite")
def _exact_add_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    kept, delta = list(element.clauses)
    return f"printf('%.4f', {compiler.process(kept, **kw)} + {compiler.process(delta, **kw)})"


def amount(column: Any) -> Any:
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
_revenue = amount(col(Cart.order_total_store)) - func.coalesce(amount(col(Cart.order_refunded)), 0)
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
    "discounts": exact_sum(case((_recovered, amount(col(Cart.discount_given))), else_=None)),
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
    "cost": exact_sum(amount(col(Message.cost))),
}
MESSAGE_MONEY = ("cost",)
_MESSAGE_ZERO = {name: ZERO if name in MESSAGE_MONEY else 0 for name in MESSAGE_FIGURES}
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


def in_buckets(table: Any, store_id: int | None, start: datetime, end: datetime) -> Any:
    """The kept rows of one store's buckets in [start, end)."""
    return and_(
        col(table.store_id) == store_id, col(table.bucket_start) >= start, col(table.bucket_start) < end
    )


def stored_carts(
    session: Session, store_id: int, start: datetime = ALL_TIME[0], end: datetime = ALL_TIME[1]
) -> dict[CartKey, dict[str, Any]]:
    """The kept cart figures of each bucket in [start, end)."""
    table = DashboardCartBucket
    rows = session.execute(
        sql_select(col(table.bucket_start), *(getattr(table, name) for name in CART_FIGURES)).where(
            in_buckets(table, store_id, start, end)
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
        ).where(in_buckets(table, store_id, start, end))
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
    # A group of messages that counts nothing yet (queued) needs no row.
    kept, counted = (
        {key: figures for key, figures in found_rows.items() if any(figures.values())}
        for found_rows in (stored_messages(session, store_id), count_messages(session, store_id, *ALL_TIME))
    )
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


# -- keeping the figures as rows change ----------------------------------------------------------
#
# What one cart or message adds to its bucket's figures, in Python: the same definitions as
# CART_FIGURES and MESSAGE_FIGURES (every test ends by checking the two agree, in conftest).


def _cart_share(row: Any) -> tuple[tuple[int, datetime], dict[str, Any]] | None:
    if row["abandoned_at"] is None:
        return None
    recovered = row["status"] == CartStatus.RECOVERED and row["order_cancelled_at"] is None
    messaged = row["first_message_at"] is not None
    revenue = ZERO
    if recovered and row["order_total_store"] is not None:
        revenue = row["order_total_store"] - (row["order_refunded"] or ZERO)
    share = {
        "abandoned": 1,
        "reachable": int(row["status"] != CartStatus.UNREACHABLE or messaged),
        "recovered": int(recovered),
        "messaged": int(messaged),
        "opted_out": int(messaged and row["status"] == CartStatus.OPTED_OUT),
        **{
            f"recovered_step_{step}": int(recovered and row["recovered_step"] == step)
            for step in range(1, MAX_STEPS + 1)
        },
        "revenue": revenue,
        "revenue_verified": revenue if row["order_verified_at"] is not None else ZERO,
        "discounts": (row["discount_given"] or ZERO) if recovered else ZERO,
    }
    return (row["store_id"], bucket_start(row["abandoned_at"])), share


def _message_share(row: Any) -> tuple[tuple[int, datetime, int, str], dict[str, Any]] | None:
    if row["cart_abandoned_at"] is None:
        return None
    sent = row["sent_at"] is not None
    share = {
        "sent": int(sent),
        "delivered": int(sent and (row["delivered_at"] is not None or row["read_at"] is not None)),
        "read": int(sent and row["read_at"] is not None),
        "clicked": int(sent and row["clicked_at"] is not None),
        "failed": int(row["status"] == MessageStatus.FAILED),
        "priced": int(row["cost"] is not None),
        "cost": row["cost"] if row["cost"] is not None else ZERO,
    }
    key = (
        row["store_id"],
        bucket_start(row["cart_abandoned_at"]),
        int(row["step_number"]),
        row["cost_currency"] or "",
    )
    return key, share


_SHARES: dict[type, tuple[str, frozenset[str], Callable[[Any], Any]]] = {
    Cart: (CARTS, CART_COUNTED, _cart_share),
    Message: (MESSAGES, MESSAGE_COUNTED, _message_share),
}


def count_change(
    session: OrmSession, model: type, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> None:
    """A cart or message row written with a Core statement (the ORM's hooks do not see it):
    its counted columns ``before`` (None: inserted) and ``after`` (None: deleted), as read and
    written under the row's lock in this transaction. Added to its bucket at commit."""
    kind, _counted, share = _SHARES[model]
    if before is not None:
        _add(session, kind, share(before), -1)
    if after is not None:
        _add(session, kind, share(after), +1)


def counted_values(obj: Any) -> dict[str, Any]:
    """The columns of a cart or message that its bucket's figures read."""
    _kind, counted, _share = _SHARES[type(obj)]
    return {name: getattr(obj, name) for name in counted}


def _add(session: OrmSession, kind: str, share: Any, sign: int) -> None:
    if share is None:
        return
    key, figures = share
    pending: dict[tuple[str, Any], dict[str, Any]] = session.info.setdefault(_DELTAS, {})
    totals = pending.setdefault((kind, key), {})
    for name, value in figures.items():
        totals[name] = totals.get(name, 0) + sign * value


def _collect_changes(session: OrmSession, _flush_context: Any, _instances: Any) -> None:
    """Before each flush: what each changing cart or message takes from its bucket and adds.

    The old values are read again from the database (locking the row on PostgreSQL, as the
    UPDATE about to run would): the copy in this session may be older than another
    transaction's committed change, and a delta from it would count that change twice."""
    for obj in session.new:
        if type(obj) in _SHARES:
            kind, counted, share = _SHARES[type(obj)]
            _add(session, kind, share({name: getattr(obj, name) for name in counted}), +1)
    dirty: list[Any] = list(session.dirty)
    gone: list[Any] = list(session.deleted)
    model: Any
    for model, (kind, counted, share) in _SHARES.items():
        changed = {
            obj.id: obj
            for obj in dirty
            if type(obj) is model
            and obj.id is not None
            and any(inspect(obj).attrs[name].history.has_changes() for name in counted)
        }
        deleted = {obj.id: obj for obj in gone if type(obj) is model and obj.id is not None}
        if not changed and not deleted:
            continue
        columns = [getattr(model, name) for name in counted]
        query = sql_select(col(model.id), *columns).where(
            col(model.id).in_(sorted(changed.keys() | deleted.keys()))
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        for row in session.connection().execute(query).mappings():
            _add(session, kind, share(row), -1)
            obj = changed.get(row["id"])
            if obj is not None and row["id"] not in deleted:
                state = inspect(obj)
                new = dict(row) | {
                    name: getattr(obj, name) for name in counted if state.attrs[name].history.has_changes()
                }
                _add(session, kind, share(new), +1)


def _apply_noted(session: OrmSession) -> None:
    """Before commit: apply the deltas and recounts, bucket by bucket in key order (so
    concurrent transactions take the bucket locks in one order)."""
    session.flush()
    deltas: dict[tuple[str, Any], dict[str, Any]] = session.info.pop(_DELTAS, {})
    recounts: dict[tuple[int, datetime], set[str]] = session.info.pop(_NOTED, {})
    by_bucket: dict[tuple[int, datetime], dict[tuple[str, Any], dict[str, Any]]] = {}
    for (kind, key), figures in deltas.items():
        if any(figures.values()):
            by_bucket.setdefault((key[0], key[1]), {})[(kind, key)] = figures
    statements = _recount_statements(session.get_bind().dialect.name)
    for store_id, start in sorted(by_bucket.keys() | recounts.keys()):
        changes = by_bucket.get((store_id, start), {})
        if (store_id, start) in recounts:
            # A recount is absolute: it takes in this transaction's deltas too.
            kinds = recounts[(store_id, start)] | {kind for kind, _key in changes}
            recount_bucket(session, store_id, start, kinds)  # type: ignore[arg-type]
            continue
        # The cart row first, even with nothing to add: it is the bucket's lock.
        cart_delta = changes.get((CARTS, (store_id, start)), {})
        session.execute(
            statements.add_carts,
            {"store_id": store_id, "start": start}
            | {name: cart_delta.get(name, zero) for name, zero in _CART_ZERO.items()},
        )
        for (kind, key), figures in sorted(changes.items()):
            if kind == MESSAGES:
                session.execute(
                    statements.add_messages,
                    {"store_id": store_id, "start": start, "step_number": key[2], "cost_currency": key[3]}
                    | {name: figures.get(name, zero) for name, zero in _MESSAGE_ZERO.items()},
                )


def _forget_noted(session: OrmSession, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_NOTED, None)
        session.info.pop(_DELTAS, None)


def _savepoint_undone(session: OrmSession, previous_transaction: SessionTransaction) -> None:
    """A savepoint rolled back: its deltas are unknown among the others, so every bucket with
    a pending delta is recounted instead (a recount is absolute)."""
    if previous_transaction.nested:
        for kind, key in session.info.pop(_DELTAS, {}):
            mark(session, kind, key[0], key[1])  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Recount:
    """A bucket's recount as prepared statements (built once per dialect: executing them then
    hits SQLAlchemy's compiled cache, which matters in every committing transaction)."""

    lock: Any
    carts: Any
    clear_messages: Any
    messages: Any
    add_carts: Any
    add_messages: Any


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
    add_carts = _adding(maker, table, keys, CART_FIGURES, CART_MONEY)
    add_messages = _adding(
        maker, table_m, [*keys, "step_number", "cost_currency"], MESSAGE_FIGURES, MESSAGE_MONEY
    )
    return _Recount(lock, carts, clear_messages, messages, add_carts, add_messages)


def _adding(
    maker: Callable[..., Any], table: Any, keys: list[str], figures: dict[str, Any], money: tuple[str, ...]
) -> Any:
    """INSERT the deltas as a new row, or add them to the row there (under its lock)."""
    values = {name: bindparam(name, type_=table.c[name].type) for name in (*keys, *figures)}
    values["bucket_start"] = bindparam("start", type_=UTCDateTime())
    insert = maker(table).values(**values)
    return insert.on_conflict_do_update(
        index_elements=keys,
        set_={
            name: exact_add(table.c[name], insert.excluded[name])
            if name in money
            else table.c[name] + insert.excluded[name]
            for name in figures
        },
    )


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
        in_range = in_buckets(table_m, store_id, start, end)
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
                    in_buckets(DashboardCartBucket, store_id, start, end)
                )
            ).scalars()
            starts = sorted(counted.keys() | set(existing))
            if starts:
                # The live recount's lock, taken on every bucket of the week in key order; the
                # week is then counted again, so a change committed meanwhile is in it.
                session.execute(
                    _recount_statements(session.get_bind().dialect.name).lock,
                    [{"store_id": store_id, "start": at} for at in starts],
                )
            result.buckets += len(starts)
            result.changed += _write(session, store_id, start, end, {CARTS, MESSAGES})
        if progress:
            done = (end - first) / (last - first)
            progress(
                f"store {store_id}: {done:.0%} ({start.date()} to {end.date()}), {result.changed} buckets fixed"
            )
        start = end
    return result


_LISTENERS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("before_flush", _collect_changes),
    ("before_commit", _apply_noted),
    ("after_transaction_end", _forget_noted),
    ("after_soft_rollback", _savepoint_undone),
)


# The sessionmakers whose sessions keep the figures. Not ``event.contains``: SQLAlchemy's
# registry keys a listener by the id() of its target and keeps the key after the target is
# gone, so a new sessionmaker at a dead one's address looked registered and kept nothing.
_KEEPING: weakref.WeakSet[sessionmaker[Any]] = weakref.WeakSet()


def keep_figures(database: Database) -> None:
    """Keep the dashboard's figures in every transaction of ``database``'s sessions.

    Called where the runtime is built (app.wiring.build_runtime); safe to call again.
    """
    if database.sessions in _KEEPING:
        return
    for name, listener in _LISTENERS:
        event.listen(database.sessions, name, listener)
    _KEEPING.add(database.sessions)


def keeps_figures(database: Database) -> bool:
    return database.sessions in _KEEPING
