"""Bulk-insert abandoned carts with their recovery steps, as the engine would have left them.

Rows go in through SQLAlchemy core in a few large statements (seconds for 10,000 carts,
where the ORM would take minutes). Each cart has its own consenting contact (so the
per-contact frequency cap never skips a step), one line, status ``abandoned``, last activity
15 minutes before its step 1, and the step rows ``steps.plan`` would write for the store's
settings (step 1 due at the given time, steps 2 and 3 hours later). ``next_wake_at`` is step
1's due time: the schedule the workers claim from (engine.dispatch).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table

from bench.report import say
from sequences.engine import policy
from sequences.models import Cart, CartLine, CartStatus, Contact, RecoveryStep, StepStatus, Store
from sequences.runtime import Runtime

PRICE = Decimal("1499.00")
# Rows per INSERT round: large enough to be fast, small enough to stay under SQLite's limits.
CHUNK = 2_000


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


def seed_abandoned_carts(
    runtime: Runtime, store: Store, step1_due: Sequence[datetime], *, first_id: int = 1
) -> list[tuple[int, datetime]]:
    """One cart per due time (ids first_id.. in a fresh database: pass the next free id when
    seeding a second store); returns (cart id, step 1 due)."""
    assert store.id is not None
    settings = runtime.store_settings(store)
    inactivity = policy.scaled(settings.inactivity_minutes, runtime.time_scale)
    now = datetime.now(UTC)
    contacts: list[dict[str, Any]] = []
    carts: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    step_rows: list[dict[str, Any]] = []
    planned_ids: list[tuple[int, datetime]] = []
    for index, due in enumerate(step1_due, start=first_id):
        last_activity = due - inactivity
        contacts.append(
            dict(
                id=index,
                store_id=store.id,
                phone_e164=f"+9197{index:08d}",
                first_name="Asha",
                email=None,
                platform_customer_id=f"cust_{index}",
                marketing_consent=True,
                consent_source="checkout_checkbox",
                opted_out_at=None,
                created_at=now,
                updated_at=now,
            )
        )
        carts.append(
            dict(
                id=index,
                store_id=store.id,
                platform_cart_id=f"chk_{index}",
                platform_cart_token=f"tok_{index}",
                contact_id=index,
                status=CartStatus.ABANDONED.value,
                status_reason=None,
                currency="INR",
                subtotal=PRICE,
                total=PRICE,
                checkout_url=f"{runtime.settings.app_url}/demo-store/checkout/tok_{index}",
                line_count=1,
                platform_updated_at=last_activity,
                last_activity_at=last_activity,
                abandoned_at=due,
                first_message_at=None,
                closed_at=None,
                next_wake_at=due,
                order_platform_id=None,
                order_total=None,
                order_currency=None,
                ordered_at=None,
                created_at=now,
                updated_at=now,
            )
        )
        lines.append(
            dict(
                cart_id=index,
                position=0,
                platform_product_id="p0",
                platform_variant_id="v0",
                title="Handloom Cotton Kurta",
                variant_title="M",
                quantity=1,
                unit_price=PRICE,
                image_url=f"{runtime.settings.app_url}/demo-store/images/p0.svg",
            )
        )
        for planned in policy.plan_steps(last_activity, settings, store.timezone, runtime.time_scale):
            step_rows.append(
                dict(
                    store_id=store.id,
                    cart_id=index,
                    step_number=planned.step_number,
                    status=StepStatus.SCHEDULED.value if planned.due_at else StepStatus.SKIPPED.value,
                    reason=planned.skip_reason,
                    due_at=planned.due_at,
                    offer=planned.offer.model_dump(mode="json") if planned.offer else None,
                    attempted_at=None,
                    sent_at=None,
                    checkout_url=None,
                )
            )
        planned_ids.append((index, due))
    started = time.monotonic()
    with runtime.database.engine.begin() as connection:
        for model, rows in ((Contact, contacts), (Cart, carts), (CartLine, lines), (RecoveryStep, step_rows)):
            for offset in range(0, len(rows), CHUNK):
                connection.execute(_table(model).insert(), rows[offset : offset + CHUNK])
        if connection.dialect.name == "postgresql":
            # Explicit ids leave the id sequences behind: move them past what was written, so
            # rows the app inserts later (contacts of new shoppers) do not collide.
            for model in (Contact, Cart):
                name = _table(model).name
                connection.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))"
                )
    say(
        f"  seeded {len(carts):,} abandoned carts ({len(step_rows):,} step rows) in {time.monotonic() - started:.1f} s"
    )
    return planned_ids
