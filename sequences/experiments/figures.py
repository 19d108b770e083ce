"""An experiment's results kept per arm as its carts and messages change, so that reading them
costs a few rows however many carts the experiment has (``ExperimentArmFigures``).

What one assigned cart counts in its arm (``Outcome``): it is eligible; messaged, read,
clicked when any of its messages was; recovered when its order came by the end of the store's
attribution window from the moment it became eligible (``counts_until``) and was not
cancelled, in every arm alike (an order needs no message to count, or the holdout could never
show what happens without cartback); opted out; the recovered order less refunds, the discount
it used, what its messages cost. And per shopper, on their first cart in the experiment: their
orders over the next 90 days (``ShopperOrder``, whichever cart they came from or none), and
whether they abandoned another cart meanwhile.

How the figures stay exact, in the transaction that changes the carts and messages:

- Before each flush, every cart or message whose counted columns change (ORM objects), and
  every cart a Core statement changed (``touch``, called beside ``rollups.count_change``), is
  noted; so is the shopper of a new order or of a cart just abandoned (``touch_contacts``).
- Just before commit, after the dashboard's buckets (the lock order, sequences.db): the noted
  carts' assignments are locked by id, then what each counts is read again from its cart and
  messages, in a statement of its own so it sees every change committed while it waited for
  the locks. Where that differs from what the assignment last counted (kept on it), the
  difference goes to the arm's figures, split in ``SHARDS`` rows by cart id so that
  concurrent commits seldom wait on one row.

A recount from the carts (``recount``) gives the same figures: every test ends by checking it
(tests/conftest.py), and ``rebuild`` puts a recount in place of what is kept.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import bindparam, event, exists, func, inspect, update
from sqlalchemy import delete as sql_delete
from sqlalchemy import select as sql_select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import SessionTransaction, aliased, sessionmaker
from sqlmodel import Session, col

from sequences.db import Database, table_of
from sequences.merchant import rollups
from sequences.merchant.rollups import exact, exact_add, exact_sum
from sequences.models import (
    Cart,
    CartStatus,
    ExperimentArmFigures,
    ExperimentAssignment,
    Message,
    ShopperOrder,
)

# Rows per arm in ExperimentArmFigures: a commit locks the shards of the carts it changed, so
# with 8 the busy send path's batches (many carts each) still wait for one another now and
# then, but never all on one row; a read sums 8 rows per arm.
SHARDS = 8
# The columns an outcome reads: a change to any other leaves the figures alone.
CART_COLUMNS = frozenset(
    {"status", "ordered_at", "order_total_store", "order_refunded", "order_cancelled_at", "discount_given"}
)
MESSAGE_COLUMNS = frozenset({"cart_id", "sent_at", "read_at", "clicked_at", "cost"})
# A shopper's cart abandoned: their first cart's "abandoned again" may change.
ABANDONED = frozenset({"abandoned_at"})
# Carts per statement when reading outcomes again (an IN list).
CHUNK = 500
ZERO = Decimal(0)
_TOUCHED = "cartback.experiment_carts"
_TOUCHED_CONTACTS = "cartback.experiment_contacts"
COUNTS = ("eligible", "messaged", "read", "clicked", "recovered", "opted_out", "shoppers", "abandoned_again")
MONEY = ("revenue", "discounts", "messaging_cost", "customer_value")
SQUARES = ("revenue_squares", "spend_squares", "revenue_spend", "customer_value_squares")
ASSIGNMENT = table_of(ExperimentAssignment)
FIGURES = table_of(ExperimentArmFigures)


@dataclass(frozen=True)
class Outcome:
    """What one assigned cart counts in its arm (the columns kept on its assignment)."""

    counted: bool = False
    messaged: bool = False
    read: bool = False
    clicked: bool = False
    recovered: bool = False
    opted_out: bool = False
    revenue: Decimal = ZERO
    discount: Decimal = ZERO
    messaging_cost: Decimal = ZERO
    # Zero and False unless ``shopper``: the shopper's first cart in the experiment.
    shopper: bool = False
    customer_value: Decimal = ZERO
    abandoned_again: bool = False

    def figures(self) -> dict[str, Any]:
        """Its share of the arm's figures."""
        if not self.counted:
            return dict.fromkeys(COUNTS, 0) | dict.fromkeys(MONEY, ZERO) | dict.fromkeys(SQUARES, 0.0)
        revenue, spend = float(self.revenue), float(self.discount + self.messaging_cost)
        value = float(self.customer_value)
        return {
            "eligible": 1,
            "messaged": int(self.messaged),
            "read": int(self.read),
            "clicked": int(self.clicked),
            "recovered": int(self.recovered),
            "opted_out": int(self.opted_out),
            "revenue": self.revenue,
            "discounts": self.discount,
            "messaging_cost": self.messaging_cost,
            "revenue_squares": revenue * revenue,
            "spend_squares": spend * spend,
            "revenue_spend": revenue * spend,
            "shoppers": int(self.shopper),
            "customer_value": self.customer_value,
            "customer_value_squares": value * value,
            "abandoned_again": int(self.abandoned_again),
        }


OUTCOME_COLUMNS = tuple(field.name for field in fields(Outcome))


def shard_of(cart_id: int) -> int:
    return cart_id % SHARDS


def _outcomes(session: Session, where: Any) -> Iterator[tuple[int, int, int, Outcome]]:
    """(assignment id, arm id, cart id, outcome) of the assignments ``where`` selects, counted
    from their carts and messages."""
    carts = sql_select(col(ExperimentAssignment.cart_id)).where(where)
    messages = (
        sql_select(
            col(Message.cart_id).label("cart_id"),
            func.count(col(Message.sent_at)).label("sent"),
            func.count(col(Message.read_at)).label("reads"),
            func.count(col(Message.clicked_at)).label("clicks"),
            exact_sum(rollups.amount(col(Message.cost))).label("cost"),
        )
        .where(col(Message.cart_id).in_(carts))
        .group_by(col(Message.cart_id))
        .subquery()
    )
    assignment, earlier, later = ExperimentAssignment, aliased(ExperimentAssignment), aliased(Cart)
    # The shopper's first cart in this experiment; their orders and later carts within 90 days.
    first = ~exists().where(
        col(earlier.experiment_id) == col(assignment.experiment_id),
        col(earlier.contact_id) == col(assignment.contact_id),
        col(earlier.id) < col(assignment.id),
    )
    value = (
        sql_select(exact_sum(rollups.amount(col(ShopperOrder.total_store))))
        .where(
            col(ShopperOrder.contact_id) == col(assignment.contact_id),
            col(ShopperOrder.ordered_at) >= col(assignment.assigned_at),
            col(ShopperOrder.ordered_at) <= col(assignment.value_until),
        )
        .scalar_subquery()
    )
    again = exists().where(
        col(later.contact_id) == col(assignment.contact_id),
        col(later.id) != col(assignment.cart_id),
        col(later.abandoned_at) > col(assignment.assigned_at),
        col(later.abandoned_at) <= col(assignment.value_until),
    )
    rows = session.execute(
        sql_select(
            col(ExperimentAssignment.id),
            col(ExperimentAssignment.arm_id),
            col(ExperimentAssignment.cart_id),
            col(ExperimentAssignment.counts_until),
            col(Cart.status),
            col(Cart.ordered_at),
            col(Cart.order_cancelled_at),
            col(Cart.order_total_store),
            col(Cart.order_refunded),
            col(Cart.discount_given),
            messages.c.sent,
            messages.c.reads,
            messages.c.clicks,
            messages.c.cost,
            first,
            value,
            again,
        )
        .join(Cart, col(Cart.id) == col(ExperimentAssignment.cart_id))
        .outerjoin(messages, messages.c.cart_id == col(ExperimentAssignment.cart_id))
        .where(where)
    ).all()
    for row in rows:
        (assignment_id, arm_id, cart_id, counts_until, status, ordered_at, cancelled_at, total) = row[:8]
        refunded, discount, sent, reads, clicks, cost, shopper, customer_value, abandoned_again = row[8:]
        recovered = ordered_at is not None and ordered_at <= counts_until and cancelled_at is None
        yield (
            assignment_id,
            arm_id,
            cart_id,
            Outcome(
                counted=True,
                messaged=bool(sent),
                read=bool(reads),
                clicked=bool(clicks),
                recovered=recovered,
                opted_out=status == CartStatus.OPTED_OUT,
                revenue=(total or ZERO) - (refunded or ZERO) if recovered else ZERO,
                discount=(discount or ZERO) if recovered else ZERO,
                messaging_cost=exact(cost),
                shopper=bool(shopper),
                customer_value=exact(customer_value) if shopper else ZERO,
                abandoned_again=bool(shopper and abandoned_again),
            ),
        )


def touch(session: OrmSession, cart_ids: Iterable[int | None]) -> None:
    """These carts (or their messages, or their assignments) were changed by a Core statement
    the ORM's hooks do not see: what they count is read again before commit."""
    noted: set[int] = session.info.setdefault(_TOUCHED, set())
    noted.update(cart_id for cart_id in cart_ids if cart_id is not None)


def touch_contacts(session: OrmSession, contact_ids: Iterable[int | None]) -> None:
    """These shoppers ordered or abandoned a cart (by a Core statement): their first carts'
    customer value and "abandoned again" are read again before commit."""
    noted: set[int] = session.info.setdefault(_TOUCHED_CONTACTS, set())
    noted.update(contact_id for contact_id in contact_ids if contact_id is not None)


def _collect(session: OrmSession, _flush_context: Any, _instances: Any) -> None:
    """Before each flush: the carts and shoppers whose outcome may change with it."""
    noted: set[int] = session.info.setdefault(_TOUCHED, set())
    shoppers: set[int] = session.info.setdefault(_TOUCHED_CONTACTS, set())
    for obj in session.new:
        if isinstance(obj, Message | ExperimentAssignment) and obj.cart_id is not None:
            noted.add(obj.cart_id)
        elif isinstance(obj, ShopperOrder):
            shoppers.add(obj.contact_id)
    for obj in session.deleted:
        if isinstance(obj, Message | ExperimentAssignment) and obj.cart_id is not None:
            noted.add(obj.cart_id)
    for obj in session.dirty:
        if isinstance(obj, Cart) and obj.id is not None and _changes(obj, CART_COLUMNS):
            noted.add(obj.id)
        if isinstance(obj, Cart) and obj.contact_id is not None and _changes(obj, ABANDONED):
            shoppers.add(obj.contact_id)
        elif isinstance(obj, Message) and obj.cart_id is not None and _changes(obj, MESSAGE_COLUMNS):
            noted.add(obj.cart_id)


def _changes(obj: Any, columns: frozenset[str]) -> bool:
    attributes = inspect(obj).attrs
    return any(attributes[name].history.has_changes() for name in columns)


def _apply(session: OrmSession) -> None:
    """Before commit (after the dashboard's buckets): bring the noted carts' arms up to date."""
    session.flush()
    noted: set[int] = session.info.pop(_TOUCHED, set())
    shoppers: set[int] = session.info.pop(_TOUCHED_CONTACTS, set())
    if noted or shoppers:
        refresh(session, noted, shoppers)  # type: ignore[arg-type]


def _forget(session: OrmSession, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_TOUCHED, None)
        session.info.pop(_TOUCHED_CONTACTS, None)


def refresh(session: Session, cart_ids: Iterable[int], contact_ids: Iterable[int] = ()) -> None:
    """Count again the assignments of these carts, and of these shoppers, and add what changed
    to their arms' figures."""
    carts, contacts = sorted(set(cart_ids)), sorted(set(contact_ids))
    found: set[int] = set()
    for ids, column in ((carts, ASSIGNMENT.c.cart_id), (contacts, ASSIGNMENT.c.contact_id)):
        for start in range(0, len(ids), CHUNK):
            found.update(
                session.execute(
                    sql_select(ASSIGNMENT.c.id).where(column.in_(ids[start : start + CHUNK]))
                ).scalars()
            )
    if not found:
        return
    postgresql = session.get_bind().dialect.name == "postgresql"
    kept: dict[int, tuple[int, int, int, Outcome]] = {}
    assignment_ids = sorted(found)
    for start in range(0, len(assignment_ids), CHUNK):
        # The assignments' locks, by id ascending (sequences.db's lock order), before their
        # outcomes are read: a later statement sees what a transaction we waited for committed.
        lock = (
            sql_select(
                ASSIGNMENT.c.id,
                ASSIGNMENT.c.experiment_id,
                ASSIGNMENT.c.arm_id,
                ASSIGNMENT.c.cart_id,
                *(ASSIGNMENT.c[name] for name in OUTCOME_COLUMNS),
            )
            .where(ASSIGNMENT.c.id.in_(assignment_ids[start : start + CHUNK]))
            .order_by(ASSIGNMENT.c.id)
        )
        for row in session.execute(lock.with_for_update() if postgresql else lock):
            kept[row[0]] = (row[1], row[2], row[3], _stored(row[4:]))
    if not kept:
        return
    changed: list[dict[str, Any]] = []
    deltas: dict[tuple[int, int, int], dict[str, Any]] = {}
    for start in range(0, len(assignment_ids), CHUNK):
        where = col(ExperimentAssignment.id).in_(assignment_ids[start : start + CHUNK])
        for assignment_id, arm_id, cart_id, outcome in _outcomes(session, where):
            experiment_id, _arm, _cart, before = kept[assignment_id]
            if outcome == before:
                continue
            changed.append({"id": assignment_id} | {name: getattr(outcome, name) for name in OUTCOME_COLUMNS})
            delta = deltas.setdefault((arm_id, shard_of(cart_id), experiment_id), {})
            old, new = before.figures(), outcome.figures()
            for name, value in new.items():
                delta[name] = delta.get(name, 0) + value - old[name]
    if changed:
        _update_assignments(session, changed)
    _add(session, deltas)


def _stored(values: Sequence[Any]) -> Outcome:
    """What an assignment last counted, as kept on it."""
    (counted, messaged, read, clicked, recovered, opted_out, revenue, discount, cost) = values[:9]
    shopper, customer_value, abandoned_again = values[9:]
    return Outcome(
        counted=bool(counted),
        messaged=bool(messaged),
        read=bool(read),
        clicked=bool(clicked),
        recovered=bool(recovered),
        opted_out=bool(opted_out),
        revenue=revenue,
        discount=discount,
        messaging_cost=cost,
        shopper=bool(shopper),
        customer_value=customer_value,
        abandoned_again=bool(abandoned_again),
    )


def _update_assignments(session: Session, rows: list[dict[str, Any]]) -> None:
    statement = (
        update(ASSIGNMENT)
        .where(ASSIGNMENT.c.id == bindparam("row_id"))
        .values({name: bindparam(f"new_{name}") for name in OUTCOME_COLUMNS})
    )
    session.execute(
        statement,
        [{"row_id": row["id"], **{f"new_{name}": row[name] for name in OUTCOME_COLUMNS}} for row in rows],
    )


def _add(session: Session, deltas: dict[tuple[int, int, int], dict[str, Any]]) -> None:
    """The deltas onto the figure rows, in key order (the lock order)."""
    statement = _adding(session.get_bind().dialect.name)
    for (arm_id, shard, experiment_id), figures in sorted(deltas.items()):
        if any(figures.values()):
            session.execute(
                statement, {"arm_id": arm_id, "shard": shard, "experiment_id": experiment_id} | figures
            )


@cache
def _adding(dialect: str) -> Any:
    """INSERT the deltas as a new row, or add them to the row there (under its lock)."""
    maker: Any = postgresql_insert if dialect == "postgresql" else sqlite_insert
    names = ("arm_id", "shard", "experiment_id", *COUNTS, *MONEY, *SQUARES)
    insert = maker(FIGURES).values({name: bindparam(name, type_=FIGURES.c[name].type) for name in names})
    return insert.on_conflict_do_update(
        index_elements=["arm_id", "shard"],
        set_={
            name: exact_add(FIGURES.c[name], insert.excluded[name])
            if name in MONEY
            else FIGURES.c[name] + insert.excluded[name]
            for name in (*COUNTS, *MONEY, *SQUARES)
        },
    )


# -- reading, recounting -----------------------------------------------------------------------


def arm_figures(session: Session, experiment_id: int) -> dict[int, dict[str, Any]]:
    """Each arm's kept figures (arms with no cart yet are absent)."""
    rows = session.execute(
        sql_select(
            FIGURES.c.arm_id,
            *(func.sum(FIGURES.c[name]) for name in COUNTS),
            *(exact_sum(rollups.amount(FIGURES.c[name])) for name in MONEY),
            *(func.sum(FIGURES.c[name]) for name in SQUARES),
        )
        .where(FIGURES.c.experiment_id == experiment_id)
        .group_by(FIGURES.c.arm_id)
    ).all()
    return {int(row[0]): _figures(row[1:]) for row in rows}


def _figures(values: Iterable[Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, value in zip((*COUNTS, *MONEY, *SQUARES), values, strict=True):
        found[name] = (
            exact(value) if name in MONEY else float(value or 0) if name in SQUARES else int(value or 0)
        )
    return found


def recount(session: Session, experiment_id: int) -> dict[int, dict[str, Any]]:
    """Each arm's figures counted from its carts and messages."""
    found: dict[int, dict[str, Any]] = {}
    for _assignment_id, arm_id, _cart_id, outcome in _outcomes(
        session, col(ExperimentAssignment.experiment_id) == experiment_id
    ):
        totals = found.setdefault(arm_id, {})
        for name, value in outcome.figures().items():
            totals[name] = totals.get(name, 0) + value
    return {
        arm_id: _figures(totals[name] for name in (*COUNTS, *MONEY, *SQUARES))
        for arm_id, totals in found.items()
    }


def net_revenue(kept: dict[str, Any], margin: Decimal) -> tuple[Decimal, float]:
    """An arm's net revenue and its sum of squares over carts, at gross margin ``margin`` (%).

    Each cart's net revenue is r·m − s (r its revenue, s its discount and messaging cost): its
    sum from the kept sums, its sum of squares from Σr², Σr·s and Σs², so the merchant may
    change the margin at any time."""
    rate = float(margin / 100)
    net = kept["revenue"] * margin / 100 - kept["discounts"] - kept["messaging_cost"]
    squares = rate * rate * kept["revenue_squares"] - 2 * rate * kept["revenue_spend"] + kept["spend_squares"]
    # Never below zero (float cancellation on carts that all net the same).
    return exact(net), max(squares, 0.0)


def differences(session: Session, experiment_id: int) -> list[str]:
    """Where the kept figures differ from a recount (none, unless a change bypassed the hooks).
    The squares are floats added in a different order: equal to a relative 1e-9."""
    empty = _figures([0] * (len(COUNTS) + len(MONEY) + len(SQUARES)))
    kept_figures = {
        arm: figures for arm, figures in arm_figures(session, experiment_id).items() if figures != empty
    }
    counted = recount(session, experiment_id)
    found = []
    for arm_id in sorted(kept_figures.keys() | counted.keys()):
        have, want = kept_figures.get(arm_id, empty), counted.get(arm_id, empty)
        wrong = [
            name
            for name in have
            if (
                abs(have[name] - want[name]) > 1e-9 * max(1.0, abs(want[name]))
                if name in SQUARES
                else have[name] != want[name]
            )
        ]
        if wrong:
            found.append(
                f"experiment {experiment_id} arm {arm_id}: {', '.join(f'{n} kept {have[n]}, counted {want[n]}' for n in wrong)}"
            )
    return found


def rebuild(session: Session, experiment_id: int) -> int:
    """Put a recount in place of the kept figures (the caller commits). Returns how many
    assignments counted something else than what they now count."""
    postgresql = session.get_bind().dialect.name == "postgresql"
    lock = (
        sql_select(ASSIGNMENT.c.id)
        .where(ASSIGNMENT.c.experiment_id == experiment_id)
        .order_by(ASSIGNMENT.c.id)
    )
    session.execute(lock.with_for_update() if postgresql else lock).all()
    stored = {
        row[0]: _stored(row[1:])
        for row in session.execute(
            sql_select(ASSIGNMENT.c.id, *(ASSIGNMENT.c[name] for name in OUTCOME_COLUMNS)).where(
                ASSIGNMENT.c.experiment_id == experiment_id
            )
        )
    }
    changed: list[dict[str, Any]] = []
    totals: dict[tuple[int, int], dict[str, Any]] = {}
    for assignment_id, arm_id, cart_id, outcome in _outcomes(
        session, col(ExperimentAssignment.experiment_id) == experiment_id
    ):
        if stored.get(assignment_id) != outcome:
            changed.append({"id": assignment_id} | {name: getattr(outcome, name) for name in OUTCOME_COLUMNS})
        figures = totals.setdefault((arm_id, shard_of(cart_id)), {})
        for name, value in outcome.figures().items():
            figures[name] = figures.get(name, 0) + value
    if changed:
        _update_assignments(session, changed)
    session.execute(sql_delete(FIGURES).where(FIGURES.c.experiment_id == experiment_id))
    statement = _adding(session.get_bind().dialect.name)
    for (arm_id, shard), figures in sorted(totals.items()):
        session.execute(
            statement, {"arm_id": arm_id, "shard": shard, "experiment_id": experiment_id} | figures
        )
    return len(changed)


def forget_experiments(session: Session, experiment_ids: Any) -> None:
    """The kept figures of experiments being deleted (``experiment_ids``: ids or a select)."""
    session.execute(sql_delete(FIGURES).where(FIGURES.c.experiment_id.in_(experiment_ids)))


_LISTENERS = (("before_flush", _collect), ("before_commit", _apply), ("after_transaction_end", _forget))
_KEEPING: weakref.WeakSet[sessionmaker[Any]] = weakref.WeakSet()


def keep_figures(database: Database) -> None:
    """Keep the experiments' figures in every transaction of ``database``'s sessions.

    After ``rollups.keep_figures`` (its commit hook must run first: the dashboard's bucket
    locks come before the assignments' in the lock order). Safe to call again."""
    if not rollups.keeps_figures(database):
        raise RuntimeError("keep the dashboard's figures first (rollups.keep_figures)")
    if database.sessions in _KEEPING:
        return
    for name, listener in _LISTENERS:
        event.listen(database.sessions, name, listener)
    _KEEPING.add(database.sessions)
