"""Seeding the admin benchmark: a year of carts written to PostgreSQL with binary COPY, as the
engine would have left them (see bench/admin.py's ABOUT for the data set's shape)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from bench.environment import STORE_SLUG
from bench.report import say
from sequences.engine.messages import render_step_message
from sequences.models import (
    Cart,
    CartEvent,
    CartLine,
    CartStatus,
    ConsentEvent,
    Contact,
    Message,
    MessageStatus,
    RecoveryStep,
    StepStatus,
    Store,
)

# The data set's shape (shares of all carts, unless said otherwise).
CONTACT_SHARE = 0.70
NEW_CONTACT_SHARE = 6 / 7  # ~700,000 carts with a contact, ~600,000 contacts
NEVER_ABANDONED = 0.10
# Outcomes of reachable carts: recovered ~8% of all carts, opted out ~2%, converted ~5%.
RECOVERED, OPTED_OUT, CONVERTED = 0.127, 0.032, 0.08
MESSAGES_CUMULATIVE = (0.7, 0.9, 1.0)  # 1, 2 or 3 steps messaged: 1.4 on average
STEP_AFTER = (timedelta(0), timedelta(hours=6), timedelta(hours=24))  # after abandonment
STILL_RECOVERING = timedelta(days=2)
COST = Decimal("0.86")  # INR per delivered marketing message (tests/support/admin.py's rate)
ERRORS = ("131049", "131026", "131050")
CHUNK = 20_000  # carts per COPY round and commit
PRODUCTS = (
    ("Handloom Cotton Kurta", "M", Decimal("1499.00")),
    ("Block-print Saree", None, Decimal("2899.00")),
    ("Brass Diya Set", "Set of 4", Decimal("649.00")),
    ("Silk Dupatta", None, Decimal("1199.00")),
    ("Jute Tote Bag", None, Decimal("399.00")),
)
NAMES = ("Asha", "Ravi", "Meena", "Kabir", "Priya", "Arjun", "Divya", "Rahul", None)
# COPY column lists, checked against the models before seeding.
COLUMNS: dict[Any, tuple[str, ...]] = {
    Contact: ("id", "store_id", "phone_e164", "first_name", "email", "platform_customer_id",
              "marketing_consent", "consent_source", "consent_observed_at", "phone_last4",
              "created_at", "updated_at"),
    Cart: ("id", "store_id", "platform_cart_id", "platform_cart_token", "contact_id", "status",
           "status_reason", "currency", "subtotal", "total", "checkout_url", "line_count",
           "platform_updated_at", "last_activity_at", "abandoned_at", "first_message_at", "closed_at",
           "next_wake_at", "order_platform_id", "order_total", "order_currency", "order_total_store",
           "ordered_at", "order_financial_status", "order_refunded", "order_cancelled_at",
           "order_verified_at", "discount_given", "recovered_step", "created_at", "updated_at"),
    CartLine: ("id", "cart_id", "position", "platform_product_id", "platform_variant_id", "title",
               "variant_title", "quantity", "unit_price", "image_url"),
    RecoveryStep: ("id", "store_id", "cart_id", "step_number", "status", "reason", "due_at",
                   "attempted_at", "sent_at"),
    Message: ("id", "store_id", "cart_id", "step_id", "contact_id", "step_number", "cart_abandoned_at",
              "transport", "template_name", "language", "components", "preview", "status",
              "provider_message_id", "error_code", "pricing_category", "billable", "cost",
              "cost_currency", "created_at", "sent_at", "delivered_at", "read_at", "failed_at",
              "clicked_at"),
    ConsentEvent: ("id", "store_id", "contact_id", "kind", "source", "evidence", "platform_sync",
                   "created_at"),
    CartEvent: ("id", "store_id", "cart_id", "kind", "detail", "created_at"),
}  # fmt: skip


@dataclass(frozen=True)
class AdminConfig:
    carts: int = 1_000_000
    big_store_share: float = 0.95
    small_stores: int = 3
    days: int = 365
    warmup: int = 3
    rounds: int = 30
    seed: int = 20261128


def quick() -> AdminConfig:
    return AdminConfig(carts=20_000, warmup=2, rounds=10)


def _message_json() -> tuple[str, str, str]:
    """A message's template, components and preview as sequences/engine/messages.py renders them (~1 KB
    of JSON), with placeholders for what differs from one message to the next."""
    now = datetime.now(UTC)
    rendered = render_step_message(
        store=Store(platform="demo", platform_store_id=STORE_SLUG, name=f"Store {STORE_SLUG}"),
        cart=Cart(store_id=0, platform_cart_id="", currency="INR", subtotal=PRODUCTS[0][2],
                  total=PRODUCTS[0][2], platform_updated_at=now, last_activity_at=now),
        lines=[CartLine(cart_id=0, title="@ITEM@", unit_price=PRODUCTS[0][2], image_url="@IMAGE@")],
        contact=Contact(store_id=0, phone_e164="+919800000000", first_name="@NAME@"),
        offer=None,
        link_url="https://cartback.example/r/@TOKEN@",
        link_token="@TOKEN@",
    )  # fmt: skip
    components = json.dumps(rendered.components, ensure_ascii=False)
    return rendered.template_name, components, json.dumps(rendered.preview, ensure_ascii=False)


def _check_columns() -> None:
    """Every NOT NULL column is written (COPY bypasses the models' defaults), no unknown one."""
    for model, columns in COLUMNS.items():
        table = model.__table__
        unknown = set(columns) - set(table.columns.keys())
        missing = {c.name for c in table.columns if not c.nullable and c.server_default is None} - set(
            columns
        )
        if unknown or missing:
            raise RuntimeError(f"{table.name}: COPY columns unknown {unknown}, missing {missing}")


_COLUMN_SETS = {model: frozenset(columns) for model, columns in COLUMNS.items()}


def _row(table: Any, **values: Any) -> tuple[Any, ...]:
    if not values.keys() <= _COLUMN_SETS[table]:
        raise KeyError(f"{table.__tablename__}: no COPY column {sorted(values.keys() - _COLUMN_SETS[table])}")
    return tuple(map(values.get, COLUMNS[table]))


class Seeder:
    """Rows for carts in arrival order, as the engine would have left them; ``take`` hands
    them over for COPY."""

    def __init__(self, config: AdminConfig, store_ids: Sequence[int], now: datetime) -> None:
        self.config, self.store_ids, self.now = config, store_ids, now
        self.template, self.components, self.preview = _message_json()
        self.rng = random.Random(config.seed)
        self.start = now - timedelta(days=config.days)
        self.rows: dict[Any, list[tuple[Any, ...]]] = {model: [] for model in COLUMNS}
        self.ids: dict[Any, int] = dict.fromkeys(COLUMNS, 0)
        self.pools: dict[int, list[int]] = {store_id: [] for store_id in store_ids}
        self.opted_out: set[int] = set()
        self.per_store: dict[int, int] = dict.fromkeys(store_ids, 0)

    def _id(self, model: Any) -> int:
        self.ids[model] += 1
        return self.ids[model]

    def _add(self, model: Any, **values: Any) -> int:
        if "id" not in values:
            values["id"] = self._id(model)
        self.rows[model].append(_row(model, **values))
        return int(values["id"])

    def _contact(self, store_id: int, at: datetime) -> int:
        pool = self.pools[store_id]
        if pool and self.rng.random() > NEW_CONTACT_SHARE:
            return self.rng.choice(pool)
        contact_id = self._id(Contact)
        # An affine map of the id onto 8 digits: unique, spread-out numbers.
        phone = f"+9198{(contact_id * 7_919_113 + 12_345_678) % 10**8:08d}"
        self._add(
            Contact,
            id=contact_id,
            store_id=store_id,
            phone_e164=phone,
            first_name=self.rng.choice(NAMES),
            email=f"shopper{contact_id}@example.com" if self.rng.random() < 0.4 else None,
            platform_customer_id=str(7_000_000_000_000 + contact_id) if self.rng.random() < 0.5 else None,
            marketing_consent=True,
            consent_source="checkout_checkbox",
            consent_observed_at=at,
            # The ORM event that fills it does not run for COPY.
            phone_last4=phone[-4:],
            created_at=at,
            updated_at=at,
        )
        pool.append(contact_id)
        return contact_id

    def cart(self, index: int) -> None:
        rng, config = self.rng, self.config
        at = self.start + timedelta(days=config.days) * ((index + rng.random()) / config.carts)
        big = rng.random() < config.big_store_share or len(self.store_ids) == 1
        store_id = self.store_ids[0] if big else rng.choice(self.store_ids[1:])
        self.per_store[store_id] += 1
        cart_id = self._id(Cart)
        product = rng.randrange(len(PRODUCTS))
        title, variant, price = PRODUCTS[product]
        quantity = 1 if rng.random() < 0.8 else 2
        total = price * quantity
        abandoned = rng.random() >= NEVER_ABANDONED
        activity = at - timedelta(minutes=15) if abandoned else at
        contact_id = self._contact(store_id, activity) if rng.random() < CONTACT_SHARE else None
        token = f"{rng.getrandbits(128):032x}"
        cart: dict[str, Any] = dict(
            id=cart_id,
            store_id=store_id,
            platform_cart_id=str(30_000_000_000_000 + cart_id),
            platform_cart_token=token,
            contact_id=contact_id,
            status=CartStatus.ACTIVE,
            currency="INR",
            subtotal=total,
            total=total,
            checkout_url=f"https://store-{store_id}.example/checkouts/{token}",
            line_count=1,
            platform_updated_at=activity,
            last_activity_at=activity,
            abandoned_at=at if abandoned else None,
            created_at=activity - timedelta(minutes=rng.randint(1, 120)),
            updated_at=at,
        )
        self._add(
            CartLine,
            cart_id=cart_id,
            position=0,
            platform_product_id=f"p{product}",
            platform_variant_id=f"v{product}",
            title=title,
            variant_title=variant,
            quantity=quantity,
            unit_price=price,
            image_url=f"https://store-{store_id}.example/images/{cart_id % 5}.jpg",
        )
        if abandoned and (contact_id is None or contact_id in self.opted_out):
            reason = "no WhatsApp consent" if contact_id is None else "the shopper opted out"
            cart.update(status=CartStatus.UNREACHABLE, status_reason=reason, closed_at=at)
            self._event(store_id, cart_id, "cart_unreachable", at, reason=reason)
        elif abandoned:
            assert contact_id is not None
            self._event(store_id, cart_id, "cart_abandoned", at)
            self._reachable(cart, contact_id, title)
        self._add(Cart, **cart)

    def _reachable(self, cart: dict[str, Any], contact_id: int, title: str) -> None:
        rng, now = self.rng, self.now
        at: datetime = cart["abandoned_at"]
        store_id, cart_id = cart["store_id"], cart["id"]
        outcome = rng.random()
        draw = rng.random()
        wanted = 1 + next(n for n, p in enumerate(MESSAGES_CUMULATIVE) if draw < p)
        times = [at + STEP_AFTER[n] for n in range(wanted) if at + STEP_AFTER[n] <= now]
        if not times:  # abandoned minutes ago: step 1 is due
            cart.update(status=CartStatus.ABANDONED, next_wake_at=at)
            self._add(
                RecoveryStep, store_id=store_id, cart_id=cart_id, step_number=1, status="scheduled", due_at=at
            )
            return
        recovered = outcome < RECOVERED
        sent: list[datetime] = []
        for step, sent_at in enumerate(times, start=1):
            last = step == len(times)
            ok = self._message(cart, contact_id, step, sent_at, title, clicked=recovered and last)
            if ok:
                sent.append(sent_at)
        cart["first_message_at"] = sent[0] if sent else None
        after = min(times[-1] + timedelta(minutes=rng.randint(5, 600)), now)
        if recovered:
            discount = Decimal("100.00") if len(times) > 1 and rng.random() < 0.5 else None
            paid = cart["total"] - (discount or 0)
            refund = rng.random()
            cart.update(
                status=CartStatus.RECOVERED,
                order_platform_id=str(5_000_000_000_000 + cart_id),
                order_total=paid,
                order_currency="INR",
                order_total_store=paid,
                ordered_at=after,
                closed_at=after,
                order_financial_status="partially_refunded" if refund < 0.03 else "paid",
                order_refunded=(paid / 2).quantize(Decimal("0.01")) if refund < 0.03 else None,
                order_cancelled_at=after + timedelta(hours=3) if 0.03 <= refund < 0.04 else None,
                order_verified_at=after + timedelta(days=1) if rng.random() < 0.5 and after < now - timedelta(days=1) else None,
                discount_given=discount,
                recovered_step=len(times),
            )  # fmt: skip
            self._event(store_id, cart_id, "cart_recovered", after, revenue=str(paid), currency="INR")
        elif outcome < RECOVERED + OPTED_OUT:
            cart.update(status=CartStatus.OPTED_OUT, closed_at=after)
            self.opted_out.add(contact_id)
            self._add(
                ConsentEvent,
                store_id=store_id,
                contact_id=contact_id,
                kind="opt_out",
                source="stop_button",
                evidence='{"text": "STOP"}',
                platform_sync="skipped",
                created_at=after,
            )
            self._event(store_id, cart_id, "opted_out", after, source="stop_button")
        elif outcome < RECOVERED + OPTED_OUT + CONVERTED:
            cart.update(
                status=CartStatus.CONVERTED_UNASSISTED,
                order_platform_id=str(5_000_000_000_000 + cart_id),
                order_total=cart["total"],
                order_currency="INR",
                ordered_at=after,
                closed_at=after,
            )
            self._event(store_id, cart_id, "converted_unassisted", after)
        elif now - at < STILL_RECOVERING and len(times) < len(STEP_AFTER):
            due = at + STEP_AFTER[len(times)]
            cart.update(status=CartStatus.RECOVERING, next_wake_at=due)
            self._add(
                RecoveryStep, store_id=store_id, cart_id=cart_id, step_number=len(times) + 1, status="scheduled", due_at=due
            )  # fmt: skip
        else:
            closed = min(at + timedelta(days=3), now)
            cart.update(status=CartStatus.EXPIRED, closed_at=closed)
            self._event(store_id, cart_id, "cart_expired", closed)

    def _message(
        self, cart: dict[str, Any], contact_id: int, step: int, at: datetime, title: str, *, clicked: bool
    ) -> bool:
        """One message and its ledger step; False when it failed before WhatsApp took it."""
        rng = self.rng
        store_id, cart_id = cart["store_id"], cart["id"]
        fate = 1.0 if clicked else rng.random()
        failed = fate < 0.03
        delivered = None if fate < 0.08 else at + timedelta(seconds=rng.randint(2, 30))
        read = at + timedelta(minutes=rng.randint(1, 240)) if fate >= 0.40 else None
        click = (
            (read or at) + timedelta(minutes=rng.randint(1, 30)) if clicked or rng.random() < 0.05 else None
        )
        step_id = self._add(
            RecoveryStep,
            store_id=store_id,
            cart_id=cart_id,
            step_number=step,
            status=StepStatus.FAILED if failed else StepStatus.SENT,
            due_at=at,
            attempted_at=at,
            sent_at=None if failed else at,
        )
        message_id = self._id(Message)
        fill = {
            "@NAME@": rng.choice(NAMES) or "there",
            "@ITEM@": title,
            "@TOKEN@": f"{message_id}.{rng.getrandbits(96):024x}",
            "@IMAGE@": f"https://store-{store_id}.example/images/{cart_id % 5}.jpg",
        }
        components, preview = self.components, self.preview
        for key, value in fill.items():
            components, preview = components.replace(key, value), preview.replace(key, value)
        status = (
            MessageStatus.FAILED if failed
            else MessageStatus.SENT if delivered is None
            else MessageStatus.READ if read
            else MessageStatus.DELIVERED
        )  # fmt: skip
        self._add(
            Message,
            id=message_id,
            store_id=store_id,
            cart_id=cart_id,
            step_id=step_id,
            contact_id=contact_id,
            step_number=step,
            cart_abandoned_at=cart["abandoned_at"],
            transport="cloud",
            template_name=self.template,
            language="en",
            components=components,
            preview=preview,
            status=status,
            provider_message_id=None if failed else f"wamid.HBgMOTE5OD{message_id:012d}",
            error_code=rng.choice(ERRORS) if failed else None,
            pricing_category=None if delivered is None else "marketing",
            billable=None if delivered is None else True,
            cost=None if delivered is None else COST,
            cost_currency=None if delivered is None else "INR",
            created_at=at,
            sent_at=None if failed else at,
            delivered_at=delivered,
            read_at=read,
            failed_at=at if failed else None,
            clicked_at=click,
        )
        if click is not None:
            self._event(store_id, cart_id, "link_clicked", click, step=step)
        return not failed

    def _event(self, store_id: int, cart_id: int, kind: str, at: datetime, **detail: Any) -> None:
        self._add(
            CartEvent, store_id=store_id, cart_id=cart_id, kind=kind, detail=json.dumps(detail), created_at=at
        )

    def take(self) -> dict[Any, list[tuple[Any, ...]]]:
        """The rows built so far (for the COPY thread); the seeder starts on new lists."""
        rows, self.rows = self.rows, {model: [] for model in COLUMNS}
        return rows


def _copy(
    connection: psycopg.Connection[Any], rows: dict[Any, list[tuple[Any, ...]]], types: dict[Any, list[str]]
) -> float:
    """COPY one batch (binary: ~2-4× faster than text here), parents first, and commit; returns
    the seconds it took."""
    began = time.monotonic()
    with connection.cursor() as cursor:
        for model, batch in rows.items():
            columns = ", ".join(f'"{name}"' for name in COLUMNS[model])
            with cursor.copy(f"COPY {model.__tablename__} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types[model])
                for row in batch:
                    copy.write_row(row)
    connection.commit()
    return time.monotonic() - began


def _column_types(connection: psycopg.Connection[Any]) -> dict[Any, list[str]]:
    """The database's type of every COPY column (binary COPY sends values in exactly that type)."""
    found: dict[Any, list[str]] = {}
    for model, columns in COLUMNS.items():
        types = dict(
            connection.execute(
                "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (model.__tablename__,),
            ).fetchall()
        )
        found[model] = [types[column] for column in columns]
    return found


def libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True)
class Seeded:
    counts: dict[str, int]
    measured_store_carts: int
    write_s: float  # building rows in Python, COPYing the previous batch meanwhile
    copy_s: float  # the COPY thread's busy time
    vacuum_s: float
    size: str


def seed(database_url: str, store_ids: Sequence[int], config: AdminConfig) -> Seeded:
    _check_columns()
    began = time.monotonic()
    copying = 0.0
    seeder = Seeder(config, store_ids, datetime.now(UTC))
    with psycopg.connect(libpq_url(database_url)) as connection, ThreadPoolExecutor(1) as writer:
        # A bulk load of rows built consistent: no per-row foreign-key trigger checks.
        connection.execute("SET session_replication_role = replica")
        types = _column_types(connection)
        # The rows are built in this thread while the previous batch is COPYed in the other
        # (PostgreSQL works on the other CPU meanwhile).
        pending: Future[float] | None = None
        for index in range(config.carts):
            seeder.cart(index)
            if (index + 1) % CHUNK == 0 or index + 1 == config.carts:
                copying += pending.result() if pending else 0.0
                pending = writer.submit(_copy, connection, seeder.take(), types)
                say(f"  built {index + 1:,} / {config.carts:,} carts ({time.monotonic() - began:.0f} s)")
        copying += pending.result() if pending else 0.0
        connection.execute("SET session_replication_role = DEFAULT")
        # Opt-outs are known once their cart is written; the contact rows went in earlier.
        connection.execute(
            "UPDATE contact SET opted_out_at = e.created_at, marketing_consent = false, "
            "consent_changed_at = e.created_at FROM consent_event e "
            "WHERE e.contact_id = contact.id AND e.kind = 'opt_out'"
        )
        for model in COLUMNS:
            name = model.__tablename__
            connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), coalesce(max(id), 1), "
                f"max(id) IS NOT NULL) FROM {name}"
            )
        connection.commit()
        written = time.monotonic()
        say(f"  written in {written - began:.0f} s (COPY busy {copying:.0f} s of it); VACUUM ANALYZE")
        connection.autocommit = True
        connection.execute("VACUUM ANALYZE")
        size = connection.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()
    finished = time.monotonic()
    return Seeded(
        counts={model.__tablename__: seeder.ids[model] for model in COLUMNS},
        measured_store_carts=seeder.per_store[store_ids[0]],
        write_s=written - began,
        copy_s=copying,
        vacuum_s=finished - written,
        size=str(size[0]) if size else "?",
    )
