"""Sign-in links to the standalone admin: issued, redeemed once, within their lifetime, for
their own store only; signing out ends the sign-in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest
import time_machine
from itsdangerous import URLSafeTimedSerializer
from sqlmodel import select

from sequences.merchant.sign_in import (
    ALREADY_USED,
    EXPIRED,
    LOGIN_LINK_LIFETIME,
    LOGIN_SALT,
    MANGLED,
    NOT_VALID,
    STORE_GONE,
    Refused,
    SignedIn,
    find_store,
    issue_login_link,
    redeem,
    sign_out,
    still_signed_in,
)
from sequences.models import AdminLogin, Store, StoreStatus
from sequences.runtime import Runtime
from tests.support.factories import make_store

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def _token(link: str) -> str:
    return parse_qs(urlparse(link).fragment)["token"][0]


def _store_id(runtime: Runtime, slug: str = "demo-bazaar") -> int:
    store = make_store(runtime, slug)
    assert store.id is not None
    return store.id


def test_a_link_signs_in_to_its_store_and_keeps_the_token_out_of_the_query(runtime: Runtime) -> None:
    store_id = _store_id(runtime)

    link = issue_login_link(runtime, store_id, "cli")
    signed_in = redeem(runtime, _token(link))

    assert link.startswith(f"{runtime.settings.app_url}/admin/login#token=")
    assert urlparse(link).query == ""
    assert isinstance(signed_in, SignedIn)
    assert (signed_in.store_id, signed_in.issued_by) == (store_id, "cli")
    assert still_signed_in(runtime, store_id, signed_in.login_id)


def test_only_the_nonces_hash_is_stored(runtime: Runtime) -> None:
    link = issue_login_link(runtime, _store_id(runtime), "cli")

    with runtime.database.session() as session:
        login = session.exec(select(AdminLogin)).one()

    assert login.nonce_sha256 not in link and len(login.nonce_sha256) == 64


@pytest.mark.postgres
def test_a_link_signs_in_once(runtime: Runtime) -> None:
    token = _token(issue_login_link(runtime, _store_id(runtime), "cli"))

    first = redeem(runtime, token)
    second = redeem(runtime, token)

    assert isinstance(first, SignedIn)
    assert second == Refused(ALREADY_USED)


def test_a_link_past_its_lifetime_is_refused(runtime: Runtime) -> None:
    store_id = _store_id(runtime)
    with time_machine.travel(T0, tick=False):
        token = _token(issue_login_link(runtime, store_id, "cli"))
    with time_machine.travel(T0 + LOGIN_LINK_LIFETIME + timedelta(minutes=1), tick=False):
        late = redeem(runtime, token)
    with time_machine.travel(T0 + LOGIN_LINK_LIFETIME - timedelta(minutes=1), tick=False):
        in_time = redeem(runtime, token)

    assert late == Refused(EXPIRED)
    # Refusing the late attempt did not spend the link.
    assert isinstance(in_time, SignedIn)


def test_an_altered_or_foreign_token_is_refused(runtime: Runtime) -> None:
    store_id = _store_id(runtime)
    token = _token(issue_login_link(runtime, store_id, "cli"))
    signer = URLSafeTimedSerializer(runtime.settings.link_keys, salt=LOGIN_SALT)
    login_id, _nonce = signer.loads(token)

    assert redeem(runtime, token[:-3] + "abc") == Refused(MANGLED)
    assert redeem(runtime, "") == Refused(MANGLED)
    # Well signed, but naming a login that is not there, or the right login with another nonce.
    assert redeem(runtime, signer.dumps([999_999, "x"])) == Refused(NOT_VALID)
    assert redeem(runtime, signer.dumps([login_id, "guessed"])) == Refused(NOT_VALID)
    # None of the failures spent the real link.
    assert isinstance(redeem(runtime, token), SignedIn)


def test_a_link_signs_in_only_to_its_own_store(runtime: Runtime) -> None:
    mine, theirs = _store_id(runtime, "mine"), _store_id(runtime, "theirs")

    signed_in = redeem(runtime, _token(issue_login_link(runtime, mine, "cli")))

    assert isinstance(signed_in, SignedIn) and signed_in.store_id == mine
    assert not still_signed_in(runtime, theirs, signed_in.login_id)


def test_a_link_to_a_store_that_left_signs_no_one_in(runtime: Runtime) -> None:
    store_id = _store_id(runtime)
    token = _token(issue_login_link(runtime, store_id, "cli"))
    with runtime.database.session() as session:
        store = session.get(Store, store_id)
        assert store is not None
        store.status = StoreStatus.UNINSTALLED

    assert redeem(runtime, token) == Refused(STORE_GONE)


def test_signing_out_ends_the_sign_in(runtime: Runtime) -> None:
    store_id = _store_id(runtime)
    signed_in = redeem(runtime, _token(issue_login_link(runtime, store_id, "cli")))
    assert isinstance(signed_in, SignedIn)

    sign_out(runtime, signed_in.login_id)

    assert not still_signed_in(runtime, store_id, signed_in.login_id)


@pytest.mark.parametrize("reference", ["id", "platform id", "padded platform id"])
def test_a_store_is_found_by_its_id_or_platform_id(runtime: Runtime, reference: str) -> None:
    store_id = _store_id(runtime, "kurta-corner")
    text = {"id": str(store_id), "platform id": "kurta-corner", "padded platform id": " kurta-corner "}

    found = find_store(runtime, text[reference])

    assert found is not None and found.id == store_id
    assert find_store(runtime, "no-such-store") is None


def test_a_sign_in_waits_for_another_writer_instead_of_failing_on_sqlite(
    runtime: Runtime, monkeypatch
) -> None:
    # SQLite, in WAL: a transaction that read before another connection committed cannot write
    # ("database is locked" at once, whatever the busy timeout). The cloud demo's sign-in hit
    # it while the worker wrote (HTTP 500): redeem reads the link, then marks it used.
    import sqlite3

    from sqlalchemy.engine import make_url

    from sequences.merchant import sign_in

    if not runtime.database.sqlite:
        pytest.skip("SQLite's snapshot rule")
    store_id = _store_id(runtime)
    token = _token(issue_login_link(runtime, store_id, "cli"))
    real_hash = sign_in._nonce_hash
    wrote: list[bool] = []

    def another_process_writes(nonce: str) -> str:
        # Between redeem's read and its write, as a worker's commit would land.
        other = sqlite3.connect(make_url(runtime.database.url).database, timeout=0, isolation_level=None)
        try:
            other.execute("CREATE TABLE IF NOT EXISTS another_writer (n INTEGER)")
            other.execute("INSERT INTO another_writer VALUES (1)")
            wrote.append(True)
        except sqlite3.OperationalError:
            wrote.append(False)  # redeem holds the write lock: the other writer waits its turn
        finally:
            other.close()
        return real_hash(nonce)

    monkeypatch.setattr(sign_in, "_nonce_hash", another_process_writes)
    assert isinstance(redeem(runtime, token), SignedIn)
    assert wrote == [False]
