"""Keeping the merchant's number healthy: pause sending before Meta has to.

A store's sending pauses when the number's quality turns RED, when Meta answers with an error
that every further send would worsen (spam, policy, token, billing: ``errors.STORE_STOPPERS``),
or when too many of the latest sends failed. Every pause carries a reason the merchant can
read and who made it (``Store.pause_source``). The merchant resumes; a quality pause also
lifts itself when the quality recovers.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlmodel import Session, col, select

from channels.whatsapp.errors import NOT_HEALTH_SIGNALS, TEMPLATE_DISABLED, TEMPLATE_PAUSED
from sequences.models import Message, MessageStatus, Store, TemplateStatus, WhatsAppTemplate
from sequences.runtime import Runtime

log = logging.getLogger("cartback.whatsapp.health")

MERCHANT = "merchant"
QUALITY = "quality"
WHATSAPP_ERROR = "whatsapp_error"
FAILURE_RATE = "failure_rate"
# The latest this many finished sends are judged together...
FAILURE_RATE_WINDOW = 20
# ...and sending pauses when at least this share of them failed. A shopper's own opt-out or
# cap, and Meta's "slow down", are not signs of trouble and do not count (NOT_HEALTH_SIGNALS).
FAILURE_RATE_LIMIT = 0.5
FINISHED = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ, MessageStatus.FAILED)


def pause_store(store: Store, source: str, reason: str, now: datetime) -> bool:
    """Pause (keeping an earlier pause and its reason); True when this call paused it."""
    # A merchant's own pause takes over a system one: recovering quality must not lift it.
    if store.sending_paused and not (source == MERCHANT and store.pause_source != MERCHANT):
        return False
    store.sending_paused, store.pause_source, store.pause_reason, store.paused_at = True, source, reason, now
    store.updated_at = now
    log.warning("store sending paused", extra={"store_id": store.id, "source": source})
    return True


def resume_store(store: Store, now: datetime) -> bool:
    if not store.sending_paused:
        return False
    store.sending_paused, store.pause_source, store.pause_reason, store.paused_at = False, None, None, None
    store.updated_at = now
    log.info("store sending resumed", extra={"store_id": store.id})
    return True


def switch_sending(runtime: Runtime, store_id: int, *, paused: bool) -> None:
    """The merchant's pause switch (``/api/whatsapp/pause`` and ``resume``), in one locked write."""
    with runtime.database.locked_session() as session:
        store = session.get(Store, store_id)
        assert store is not None
        if paused:
            pause_store(store, MERCHANT, "paused by the merchant", runtime.now())
        else:
            resume_store(store, runtime.now())


def quality_changed(store: Store, rating: str, now: datetime) -> None:
    """RED pauses; GREEN or YELLOW lifts a pause that quality made (and only that one)."""
    if rating == "RED":
        pause_store(
            store,
            QUALITY,
            "the number's quality rating is RED (shoppers blocked or reported messages): sending paused "
            "until it recovers",
            now,
        )
    elif rating in ("GREEN", "YELLOW") and store.pause_source == QUALITY:
        resume_store(store, now)


def check_failure_rate(session: Session, store: Store, now: datetime) -> bool:
    """Pause when the latest sends mostly failed; True when it paused."""
    assert store.id is not None
    latest = session.exec(
        select(Message.status, Message.error_code)
        .where(Message.store_id == store.id, col(Message.status).in_(list(FINISHED)))
        .where(col(Message.transport) != "sandbox")
        .order_by(col(Message.id).desc())
        .limit(FAILURE_RATE_WINDOW)
    ).all()
    if len(latest) < FAILURE_RATE_WINDOW:
        return False
    failed = sum(
        1 for status, code in latest if status == MessageStatus.FAILED and code not in NOT_HEALTH_SIGNALS
    )
    if failed / len(latest) < FAILURE_RATE_LIMIT:
        return False
    return pause_store(
        store,
        FAILURE_RATE,
        f"{failed} of the last {len(latest)} WhatsApp messages failed: check the number and templates, "
        "then resume sending",
        now,
    )


def template_status_after(code: int | str | None) -> str:
    """What a template refused by Meta with ``code`` is until Meta says otherwise, whether the
    refusal came in the send's answer or in a failed status later."""
    return {str(TEMPLATE_PAUSED): TemplateStatus.PAUSED, str(TEMPLATE_DISABLED): TemplateStatus.DISABLED}.get(
        str(code), TemplateStatus.FAILING
    )


def set_template_status(
    session: Session,
    store_id: int,
    name: str,
    language: str,
    status: str,
    *,
    reason: str | None,
    at: datetime,
    platform_template_id: str | None = None,
) -> WhatsAppTemplate:
    """Record what Meta (or a refused send) says of a template; an older word changes nothing."""
    template = session.exec(
        select(WhatsAppTemplate).where(
            WhatsAppTemplate.store_id == store_id,
            WhatsAppTemplate.name == name,
            WhatsAppTemplate.language == language,
        )
    ).first()
    if template is None:
        template = WhatsAppTemplate(store_id=store_id, name=name, language=language, updated_at=at)
        session.add(template)
    elif template.status_at is not None and at < template.status_at:
        return template
    template.status, template.reason, template.status_at, template.updated_at = status, reason, at, at
    template.platform_template_id = platform_template_id or template.platform_template_id
    if status != TemplateStatus.APPROVED:
        log.warning("template not usable", extra={"store_id": store_id, "template": name, "status": status})
    return template
