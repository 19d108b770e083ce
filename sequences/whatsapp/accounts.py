"""A store's WhatsApp number: connecting it, checking it against the Graph API, using it.

``check`` answers the merchant's question "will my messages go out?" in words: the token is
accepted, the number exists and belongs to the WhatsApp Business Account, Meta will send our
app the webhooks, and the number's quality. It also keeps the stored quality and throughput
current (a RED rating pauses sending; recovering lifts that pause).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import or_
from sqlmodel import col, select

from channels.transport import Sender
from channels.whatsapp.graph import GraphClient, GraphError, GraphUnreachable
from channels.whatsapp.templates import LANGUAGES
from sequences.models import Store, StoreStatus, WhatsAppAccount
from sequences.runtime import Runtime
from sequences.whatsapp import health

# The sweep re-reads each number's quality this often: Meta's quality webhooks for numbers are
# being retired (2026), so cartback asks rather than waits to be told.
RECHECK_EVERY = timedelta(hours=1)
# Numbers re-checked per sweep (each is three Graph calls).
RECHECK_BATCH = 20
# Meta's ids are decimal numbers (WABA, phone number): well under this many digits.
MAX_META_ID = 32
# System-user tokens are URL-safe text; anything else cannot even be put in a header.
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9._|~-]+")
PHONE_FIELDS = (
    "display_phone_number,verified_name,quality_rating,code_verification_status,throughput,"
    # The daily messaging limit (Graph v24.0+; messaging_limit_tier before).
    "whatsapp_business_manager_messaging_limit"
)
# Meta's throughput levels: STANDARD is 80 messages/s, HIGH (an upgraded number) 1,000.
THROUGHPUT_BY_LEVEL = {"STANDARD": 80, "HIGH": 1000}
NEW_CREDENTIALS_HELP = (
    "create a system-user token with whatsapp_business_messaging and whatsapp_business_management "
    "in Meta Business Settings, then connect the number again"
)


log = logging.getLogger("cartback.whatsapp.accounts")


class AccountError(ValueError):
    """What the merchant typed cannot work; the message says which field and why."""


def sender_for(runtime: Runtime, account: WhatsAppAccount) -> Sender:
    return Sender(
        account.phone_number_id,
        runtime.secrets.decrypt(account.access_token_ciphertext),
        account.messages_per_second,
    )


def graph_for(runtime: Runtime, account: WhatsAppAccount) -> GraphClient:
    token = runtime.secrets.decrypt(account.access_token_ciphertext)
    return GraphClient(runtime.settings.whatsapp_graph_url, token, runtime.whatsapp_http)


def connect(
    runtime: Runtime,
    store_id: int,
    *,
    waba_id: str,
    phone_number_id: str,
    access_token: str,
    default_language: str = "en",
) -> WhatsAppAccount:
    """Store (or replace) the store's number; the token is encrypted before it is written."""
    waba_id, phone_number_id, access_token = waba_id.strip(), phone_number_id.strip(), access_token.strip()
    if not _meta_id(waba_id):
        raise AccountError("the WhatsApp Business Account id is a number (WhatsApp Manager > Account tools)")
    if not _meta_id(phone_number_id):
        raise AccountError(
            "the phone number id is a number (WhatsApp Manager > Phone numbers), not the phone number"
        )
    if len(access_token) < 20 or not TOKEN_SHAPE.fullmatch(access_token):
        raise AccountError("the access token looks incomplete: paste the whole system-user token")
    if default_language not in LANGUAGES:
        raise AccountError(f"the template language must be one of {', '.join(LANGUAGES)}")
    now = runtime.now()
    with runtime.database.locked_session() as session:
        if session.get(Store, store_id) is None:
            raise AccountError(f"no store {store_id}")
        taken = session.exec(
            select(WhatsAppAccount.store_id).where(WhatsAppAccount.phone_number_id == phone_number_id)
        ).first()
        if taken is not None and taken != store_id:
            raise AccountError("this phone number is already connected to another store")
        account = session.exec(select(WhatsAppAccount).where(WhatsAppAccount.store_id == store_id)).first()
        if account is None:
            account = WhatsAppAccount(
                store_id=store_id,
                waba_id=waba_id,
                phone_number_id=phone_number_id,
                access_token_ciphertext="",
                created_at=now,
            )
            session.add(account)
        if account.phone_number_id != phone_number_id:
            # Another number: nothing known about the old one applies to it.
            account.display_phone_number = account.verified_name = account.quality_at = None
            account.quality_rating, account.messages_per_second = "UNKNOWN", 80
        account.waba_id, account.phone_number_id = waba_id, phone_number_id
        account.access_token_ciphertext = runtime.secrets.encrypt(access_token)
        account.default_language, account.updated_at = default_language, now
        account.checked_at = account.check_problem = None
    return account


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(runtime: Runtime, store_id: int, *, subscribe: bool = True) -> CheckReport:
    report = CheckReport()
    with runtime.database.session() as session:
        account = session.exec(select(WhatsAppAccount).where(WhatsAppAccount.store_id == store_id)).first()
    if account is None:
        report.problems.append("no WhatsApp number is connected: run `cartback whatsapp connect` first")
        return report
    graph = graph_for(runtime, account)
    phone: dict[str, Any] = {}
    try:
        phone = graph.get(account.phone_number_id, fields=PHONE_FIELDS)
        numbers = graph.get(f"{account.waba_id}/phone_numbers", fields="id,display_phone_number")
        if account.phone_number_id not in {str(item.get("id")) for item in numbers.get("data", [])}:
            report.problems.append(
                f"phone number id {account.phone_number_id} does not belong to WhatsApp Business Account "
                f"{account.waba_id}: check both ids in WhatsApp Manager"
            )
        apps = graph.get(f"{account.waba_id}/subscribed_apps")
        subscribed = bool(apps.get("data"))
        if not subscribed and subscribe:
            graph.post(f"{account.waba_id}/subscribed_apps")
            subscribed = True
            report.done.append("subscribed cartback to the account's webhooks")
        if not subscribed:
            report.problems.append("Meta will not send this account's webhooks to cartback (not subscribed)")
    except GraphError as error:
        report.problems.append(_explain(error, account))
    except GraphUnreachable as error:
        report.problems.append(f"could not reach Meta's Graph API ({error}); try again in a minute")
    quality = str(phone.get("quality_rating") or "UNKNOWN").upper()
    level = str((phone.get("throughput") or {}).get("level") or "").upper()
    tier = str(phone.get("whatsapp_business_manager_messaging_limit") or "").upper() or None
    report.facts = {
        "display_phone_number": phone.get("display_phone_number"),
        "verified_name": phone.get("verified_name"),
        "quality_rating": quality if phone else None,
        "throughput_level": level or None,
        "messaging_limit": tier,
    }
    if quality == "RED":
        report.problems.append("the number's quality rating is RED: sending stays paused until it recovers")
    now = runtime.now()
    with runtime.database.locked_session() as session:
        stored = session.get(WhatsAppAccount, account.id)
        store = session.get(Store, store_id)
        assert stored is not None and store is not None
        stored.checked_at, stored.check_problem = now, "; ".join(report.problems) or None
        if phone:
            stored.display_phone_number = phone.get("display_phone_number") or stored.display_phone_number
            stored.verified_name = phone.get("verified_name") or stored.verified_name
            stored.quality_rating, stored.quality_at = quality, now
            stored.messages_per_second = THROUGHPUT_BY_LEVEL.get(level, stored.messages_per_second)
            stored.messaging_limit_tier = tier or stored.messaging_limit_tier
            health.quality_changed(store, quality, now)
    return report


def _explain(error: GraphError, account: WhatsAppAccount) -> str:
    if error.code == 190 or error.http_status == 401:
        return f"Meta refused the access token (expired or revoked): {NEW_CREDENTIALS_HELP}"
    if error.code in (10, 200) or error.http_status == 403:
        return f"the access token has no permission on this number or account: {NEW_CREDENTIALS_HELP}"
    if error.code == 100:
        return (
            f"Meta does not know phone number id {account.phone_number_id} or account {account.waba_id}, "
            f"or the token cannot see them ({error.message}): check the ids in WhatsApp Manager"
        )
    return f"Meta answered with an error: {error}"


def recheck_numbers(runtime: Runtime) -> int:
    """Check the numbers not checked for an hour (quality, token): a RED rating pauses sending
    and a recovered one resumes it without waiting for a webhook."""
    stale = runtime.now() - RECHECK_EVERY
    with runtime.database.session() as session:
        store_ids = session.exec(
            select(WhatsAppAccount.store_id)
            .join(Store, col(Store.id) == col(WhatsAppAccount.store_id))
            .where(Store.status == StoreStatus.ACTIVE)
            .where(or_(col(WhatsAppAccount.checked_at).is_(None), col(WhatsAppAccount.checked_at) < stale))
            .order_by(col(WhatsAppAccount.checked_at).nulls_first())
            .limit(RECHECK_BATCH)
        ).all()
    for store_id in store_ids:
        try:
            check(runtime, store_id, subscribe=False)
        except Exception:  # one broken account must not stop the others' checks
            log.exception("number check failed", extra={"store_id": store_id})
            with runtime.database.locked_session() as session:
                account = session.exec(
                    select(WhatsAppAccount).where(WhatsAppAccount.store_id == store_id)
                ).first()
                if account is not None:
                    account.checked_at, account.check_problem = (
                        runtime.now(),
                        "the check could not run; see the logs",
                    )
    return len(store_ids)


def _meta_id(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) <= MAX_META_ID
