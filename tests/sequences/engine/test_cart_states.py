"""The cart state machine (sequences.engine.cart_states): its table against DESIGN.md's cart
states, its moves, and a scan proving no other module writes a cart's status."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import create_engine, update
from sqlmodel import Session, SQLModel, col, select

from sequences.engine import cart_states
from sequences.engine.cart_states import TRANSITIONS, IllegalCartTransition
from sequences.models import TERMINAL_CART_STATUSES, Cart, CartStatus

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)

# DESIGN.md, section "Cart states", verbatim (DESIGN.md lives outside the repository).
DESIGN_CART_STATES = """\
`active` -> `abandoned` (inactivity passed, reachable) -> `recovering` (>= 1 message sent) ->
one of `recovered` (order after a message, within the attribution window), `converted_unassisted`
(bought before any message), `opted_out`, `unreachable` (no phone or no consent), `expired`
(sequence over, no order). Terminal states never go back to sending."""

A, AB, RG = CartStatus.ACTIVE, CartStatus.ABANDONED, CartStatus.RECOVERING
RD, CU, OO = CartStatus.RECOVERED, CartStatus.CONVERTED_UNASSISTED, CartStatus.OPTED_OUT
UR, EX = CartStatus.UNREACHABLE, CartStatus.EXPIRED

# Every move the engine makes that DESIGN's main path does not draw, and the code that makes it.
# A new edge in the table fails the test until it is listed here (and DESIGN.md corrected).
BEYOND_DESIGN: dict[tuple[CartStatus, CartStatus], str] = {
    (A, RG): "a send confirmed (or uncertain) after the shopper came back (sending, inbound)",
    (A, RD): "an order within the window on a cart re-opened after a message (tracking)",
    (A, CU): "checkout completed or ordered before the abandonment (tracking)",
    (A, OO): "the contact opted out before the abandonment (sending, consent)",
    (A, UR): "no phone or no consent when the inactivity passed (sending)",
    (A, EX): "deleted, store uninstalled, replaced, or ordered in another checkout (tracking, sending)",
    (AB, A): "the shopper is back (tracking: a newer snapshot)",
    (AB, RD): "an order within the window after a send the sweep called uncertain (tracking)",
    (AB, CU): "bought before any message went out (tracking)",
    (AB, OO): "opted out before the first message (consent)",
    (AB, UR): "the first message was undeliverable (sending, inbound)",
    (AB, EX): "sequence over with every step skipped, deleted, uninstalled, replaced (tracking, sending)",
    (RD, UR): "a send in flight when the order came back undeliverable (sending)",
    (CU, RD): "the checkout completed while a send was in flight, then the order came (tracking)",
    (CU, CU): "checkout completed before any message, then its order (tracking)",
    (CU, UR): "a send in flight when the checkout completed came back undeliverable (sending)",
    (OO, UR): "a send in flight when the shopper opted out came back undeliverable (sending)",
    (UR, A): "a never-messaged unreachable cart gets a phone from a later snapshot (tracking)",
    (UR, RD): "an order within the window after an undeliverable message (tracking)",
    (UR, CU): "an order on a cart that had nobody to message (tracking)",
    (UR, UR): "a second send in flight came back undeliverable too (sending)",
    (EX, RD): "an order within the attribution window after the sequence ended (tracking)",
    (EX, CU): "an order on an expired cart outside the window or never messaged (tracking)",
    (EX, UR): "a send in flight when the cart expired came back undeliverable (sending)",
}


def design_path() -> list[list[str]]:
    """The main path's stages, in order; the last stage is the terminal states."""
    path = DESIGN_CART_STATES.split("Terminal states")[0]
    return [re.findall(r"`(\w+)`", stage) for stage in path.split("->")]


def design_edges() -> set[tuple[CartStatus, CartStatus]]:
    stages = design_path()
    return {
        (CartStatus(before), CartStatus(after))
        for here, there in pairwise(stages)
        for before in here
        for after in there
    }


def table_edges() -> set[tuple[CartStatus, CartStatus]]:
    return {(before, after) for before, targets in TRANSITIONS.items() for after in targets}


# -- (a) the table against DESIGN.md ---------------------------------------------------------


def test_the_design_text_parses_into_its_main_path():
    assert design_path() == [
        ["active"],
        ["abandoned"],
        ["recovering"],
        ["recovered", "converted_unassisted", "opted_out", "unreachable", "expired"],
    ]


def test_every_state_in_design_is_a_cart_status_and_every_cart_status_is_in_design():
    named = set(re.findall(r"`(\w+)`", DESIGN_CART_STATES))
    assert named == {status.value for status in CartStatus}
    assert set(TRANSITIONS) == set(CartStatus)


def test_the_terminal_states_are_designs_last_stage():
    assert {CartStatus(name) for name in design_path()[-1]} == TERMINAL_CART_STATUSES
    assert frozenset(CartStatus) - TERMINAL_CART_STATUSES == cart_states.OPEN_CART_STATUSES


def test_every_edge_of_designs_main_path_is_allowed():
    assert design_edges() - table_edges() == set()


def test_no_terminal_state_goes_back_to_sending():
    sending = {CartStatus(name) for stage in design_path()[1:-1] for name in stage}
    assert sending == {AB, RG}
    assert {(before, after) for before, after in table_edges() if before in TERMINAL_CART_STATUSES} & {
        (terminal, state) for terminal in TERMINAL_CART_STATUSES for state in sending
    } == set()


def test_only_a_never_messaged_unreachable_cart_reopens_and_nothing_returns_to_abandoned_but_active():
    reopening = {
        (before, after) for before, after in table_edges() if after in cart_states.OPEN_CART_STATUSES
    }
    assert {edge for edge in reopening if edge[0] in TERMINAL_CART_STATUSES} == {(UR, A)}
    assert {before for before, after in reopening if after == AB} == {A}
    assert {before for before, after in reopening if after == RG} == {A, AB}


def test_an_opted_out_cart_never_counts_an_order():
    assert TRANSITIONS[OO] & {RD, CU} == frozenset()


def test_every_move_beyond_designs_main_path_is_listed_with_its_reason():
    assert table_edges() - design_edges() == set(BEYOND_DESIGN)


def test_every_state_is_reachable_from_active():
    seen, frontier = {A}, [A]
    while frontier:
        for after in TRANSITIONS[frontier.pop()]:
            if after not in seen:
                seen.add(after)
                frontier.append(after)
    assert seen == set(CartStatus)


# -- (b) nobody else writes a cart's status ---------------------------------------------------

WRITTEN = {"status", "status_reason", "closed_at"}
# Only Cart has these columns: any write of them is a cart's.
CART_ONLY = {"status_reason", "closed_at"}


def _mentions_cart_status(node: ast.AST | None) -> bool:
    return node is not None and any(
        isinstance(found, ast.Attribute)
        and isinstance(found.value, ast.Name)
        and found.value.id == "CartStatus"
        for found in ast.walk(node)
    )


def _flatten(target: ast.expr) -> list[ast.expr]:
    if isinstance(target, ast.Tuple | ast.List):
        return [leaf for element in target.elts for leaf in _flatten(element)]
    if isinstance(target, ast.Starred):
        return _flatten(target.value)
    return [target]


def _is_cart_write(owner: ast.expr, attribute: str, value: ast.AST | None) -> bool:
    return attribute in CART_ONLY or "cart" in ast.unparse(owner).lower() or _mentions_cart_status(value)


def _updates_carts(call: ast.Call) -> bool:
    """``update(Cart)...values(...)`` or ``Cart(...)``."""
    if isinstance(call.func, ast.Name):
        return call.func.id == "Cart"
    if isinstance(call.func, ast.Attribute) and call.func.attr == "values":
        return any(
            isinstance(inner, ast.Call)
            and isinstance(inner.func, ast.Name)
            and inner.func.id == "update"
            and any(isinstance(arg, ast.Name) and arg.id == "Cart" for arg in inner.args)
            for inner in ast.walk(call.func.value)
        )
    return False


def cart_status_writes(source: str) -> list[str]:
    """Every place in ``source`` that writes a cart's status, reason or close time."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in (leaf for each in targets for leaf in _flatten(each)):
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr in WRITTEN
                    and _is_cart_write(target.value, target.attr, node.value)
                ):
                    found.append(f"line {node.lineno}: {ast.unparse(target)} = ...")
        elif isinstance(node, ast.Dict):
            # A row for a Core statement: {"status": CartStatus.X, ...}.
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "status" and _mentions_cart_status(value):
                    found.append(f"line {node.lineno}: {{'status': {ast.unparse(value)}}}")
        elif isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "status" and _mentions_cart_status(keyword.value):
                    found.append(f"line {node.lineno}: status={ast.unparse(keyword.value)}")
                elif keyword.arg in WRITTEN and _updates_carts(node):
                    found.append(f"line {node.lineno}: {keyword.arg}= in {ast.unparse(node.func)}(...)")
            if (
                isinstance(node.func, ast.Name)
                and node.func.id == "setattr"
                and len(node.args) == 3
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in WRITTEN
                and _is_cart_write(node.args[0], str(node.args[1].value), node.args[2])
            ):
                found.append(f"line {node.lineno}: setattr(..., {node.args[1].value!r}, ...)")
    return found


# The writes the engine made before the state machine had a home (one of each shape).
OLD_WRITES = [
    "cart.status, cart.status_reason, cart.closed_at, cart.next_wake_at = status, reason, now, None",
    "cart.status, cart.status_reason, cart.closed_at = CartStatus.ACTIVE, None, None",
    "cart.status = CartStatus.ACTIVE  # the shopper is back",
    "cart.status, cart.abandoned_at = CartStatus.ABANDONED, inactive_at",
    "cart.status = CartStatus.RECOVERING",
    (
        "cart.status, cart.status_reason, cart.closed_at, cart.next_wake_at = (\n"
        "    CartStatus.OPTED_OUT, f'opted out ({source})', now, None)"
    ),
    (
        "cart.status, cart.status_reason = (CartStatus.UNREACHABLE, 'number cannot receive WhatsApp messages')\n"
        "cart.closed_at, cart.next_wake_at = now, None"
    ),
    (
        "session.exec(update(Cart).where(col(Cart.id) == other.id).values(\n"
        "    status=CartStatus.EXPIRED, status_reason='replaced', closed_at=now, next_wake_at=None))"
    ),
    (
        "session.exec(update(Cart).where(col(Cart.store_id) == store.id)\n"
        "    .values(status=CartStatus.EXPIRED, status_reason='store uninstalled cartback', next_wake_at=None))"
    ),
    "session.exec(update(Cart).where(col(Cart.id) == 1).values(status='expired'))",
    "other.status = CartStatus.EXPIRED",
    "held.closed_at = now",
    "Cart(store_id=1, status='abandoned')",
    "setattr(cart, 'status', 'expired')",
    "session.execute(update(CART), [{'id': cart.id, 'status': CartStatus.ABANDONED}])",
]
# Writes of other things' statuses, and reads of a cart's, that the scan must leave alone.
NOT_CART_WRITES = [
    "message.status = MessageStatus.SENT",
    "step.status, step.reason = StepStatus.SKIPPED, skip",
    "store.status = StoreStatus.UNINSTALLED",
    "delivery.status = DeliveryStatus.IGNORED if isinstance(event, Ignored) else DeliveryStatus.PROCESSED",
    "session.exec(update(RecoveryStep).where(x).values(status=StepStatus.CANCELLED, reason='uninstalled'))",
    "jsonify(id=cart.id, status=cart.status, status_reason=cart.status_reason)",
    "if cart.status == CartStatus.ABANDONED:\n    cart_states.reopen(cart)",
    "self.problem, self.status = problem, status",
    "rows.append({'id': step.id, 'status': StepStatus.SENT})",
]


@pytest.mark.parametrize("source", OLD_WRITES)
def test_the_scan_finds_every_shape_of_cart_status_write_the_engine_used_to_make(source):
    assert cart_status_writes(source) != []


@pytest.mark.parametrize("source", NOT_CART_WRITES)
def test_the_scan_leaves_other_statuses_and_reads_alone(source):
    assert cart_status_writes(source) == []


def test_only_the_state_machine_writes_a_carts_status():
    machine = ROOT / "sequences" / "engine" / "cart_states.py"
    assert cart_status_writes(machine.read_text()) != []  # the scan sees the machine's own writes
    offenders = [
        f"{path.relative_to(ROOT)} {write}"
        for package in ("sequences", "app", "demo")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != machine
        for write in cart_status_writes(path.read_text())
    ]
    assert offenders == []


# -- (c) the moves ---------------------------------------------------------------------------


def make_cart(status: CartStatus, **fields: object) -> Cart:
    cart = Cart(
        store_id=1,
        platform_cart_id=f"checkout-{status}",
        currency="INR",
        subtotal=Decimal("1499.00"),
        total=Decimal("1499.00"),
        platform_updated_at=NOW,
        last_activity_at=NOW,
        **fields,
    )
    cart.status = status
    return cart


def test_abandon_moves_an_active_cart_and_records_when():
    cart = make_cart(A)
    cart_states.abandon(cart, NOW)
    assert (cart.status, cart.abandoned_at) == (AB, NOW)


@pytest.mark.parametrize("status", sorted(set(CartStatus) - {A}))
def test_only_an_active_cart_is_abandoned(status):
    cart = make_cart(status)
    with pytest.raises(IllegalCartTransition, match=f"{status} -> abandoned"):
        cart_states.abandon(cart, NOW)
    assert cart.status == status and cart.abandoned_at is None


@pytest.mark.parametrize("status", [A, AB])
def test_an_open_cart_starts_recovering(status):
    cart = make_cart(status)
    cart_states.start_recovering(cart)
    assert cart.status == RG


@pytest.mark.parametrize("status", sorted(TERMINAL_CART_STATUSES | {RG}))
def test_a_recovering_or_closed_cart_cannot_start_recovering(status):
    cart = make_cart(status)
    with pytest.raises(IllegalCartTransition):
        cart_states.start_recovering(cart)
    assert cart.status == status


def test_the_shopper_coming_back_reopens_an_abandoned_cart():
    cart = make_cart(AB)
    cart_states.reopen(cart)
    assert (cart.status, cart.status_reason, cart.closed_at) == (A, None, None)


def test_an_unreachable_cart_reopens_without_its_reason_or_close_time():
    cart = make_cart(UR, status_reason="no phone number", closed_at=NOW)
    cart_states.reopen(cart)
    assert (cart.status, cart.status_reason, cart.closed_at) == (A, None, None)


@pytest.mark.parametrize("status", [A, RG, RD, CU, OO, EX])
def test_no_other_cart_reopens(status):
    cart = make_cart(status, status_reason="kept", closed_at=NOW)
    with pytest.raises(IllegalCartTransition, match=f"{status} -> active"):
        cart_states.reopen(cart)
    assert (cart.status, cart.status_reason, cart.closed_at) == (status, "kept", NOW)


@pytest.mark.parametrize("status", sorted(cart_states.OPEN_CART_STATUSES))
@pytest.mark.parametrize("closed", sorted(TERMINAL_CART_STATUSES))
def test_an_open_cart_closes_in_any_terminal_state_with_its_reason_and_no_alarm(status, closed):
    cart = make_cart(status, next_wake_at=NOW)
    cart_states.close(cart, closed, "why", NOW)
    assert (cart.status, cart.status_reason, cart.closed_at, cart.next_wake_at) == (closed, "why", NOW, None)


@pytest.mark.parametrize("status", sorted(TERMINAL_CART_STATUSES))
def test_a_send_answered_undeliverable_marks_any_cart_unreachable(status):
    cart = make_cart(status)
    cart_states.close(cart, UR, "number cannot receive messages", NOW)
    assert cart.status == UR


@pytest.mark.parametrize(
    ("status", "closed"),
    [(RD, RD), (RD, CU), (RD, EX), (OO, RD), (OO, CU), (OO, OO), (EX, EX), (EX, OO), (CU, EX)],
)
def test_a_closed_cart_does_not_close_again_otherwise(status, closed):
    cart = make_cart(status, status_reason="kept", closed_at=NOW, next_wake_at=NOW)
    with pytest.raises(IllegalCartTransition, match=f"{status} -> {closed}"):
        cart_states.close(cart, closed, "why", NOW)
    assert (cart.status, cart.status_reason, cart.next_wake_at) == (status, "kept", NOW)


@pytest.mark.parametrize("status", sorted(cart_states.OPEN_CART_STATUSES))
def test_close_refuses_an_open_status(status):
    cart = make_cart(A)
    with pytest.raises(IllegalCartTransition):
        cart_states.close(cart, status, "why", NOW)
    assert cart.status == A


def test_a_status_the_machine_does_not_know_goes_nowhere():
    cart = make_cart(A)
    cart.status = "archived"
    assert not cart_states.may_move("archived", EX)
    with pytest.raises(IllegalCartTransition, match=r"archived -> expired .*nothing"):
        cart_states.close(cart, EX, "why", NOW)


@pytest.fixture
def one_cart_per_status():
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        for status in CartStatus:
            session.add(make_cart(status, status_reason=None, next_wake_at=NOW))
        session.commit()
    yield engine
    engine.dispose()


def _rows(engine):
    with Session(engine) as session:
        return {
            CartStatus(row.platform_cart_id.removeprefix("checkout-")): (
                row.status,
                row.status_reason,
                row.closed_at,
                row.next_wake_at,
            )
            for row in session.exec(select(Cart)).all()
        }


@pytest.mark.parametrize("closed_at", [NOW, None])
def test_a_bulk_close_expires_the_open_carts_only(one_cart_per_status, closed_at):
    with Session(one_cart_per_status) as session:
        session.exec(cart_states.close_all(update(Cart), EX, "store uninstalled cartback", closed_at))
        session.commit()
    rows = _rows(one_cart_per_status)
    for status, (now_status, reason, closed, wake) in rows.items():
        if status in cart_states.OPEN_CART_STATUSES:
            assert (now_status, reason, closed, wake) == (EX, "store uninstalled cartback", closed_at, None)
        else:
            assert (now_status, reason, closed, wake) == (status, None, None, NOW)


def test_a_bulk_close_keeps_the_callers_own_conditions(one_cart_per_status):
    with Session(one_cart_per_status) as session:
        only = col(Cart.platform_cart_id) == f"checkout-{AB}"
        session.exec(cart_states.close_all(update(Cart).where(only), EX, "replaced", NOW))
        session.commit()
    closed = {status for status, row in _rows(one_cart_per_status).items() if row[1] == "replaced"}
    assert closed == {AB}


def test_a_bulk_close_refuses_an_open_status():
    with pytest.raises(IllegalCartTransition):
        cart_states.close_all(update(Cart), AB, "why", NOW)
