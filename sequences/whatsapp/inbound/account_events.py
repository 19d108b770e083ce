"""Meta's account events: our templates' status and quality, and the number's quality and
throughput. Each carries Meta's time and never overwrites a newer word."""

from __future__ import annotations

from sqlmodel import select

from channels.whatsapp.templates import TEMPLATE_NAMES
from channels.whatsapp.webhook_events import PhoneQualityEvent, TemplateEvent
from sequences.models import Store, TemplateStatus, WhatsAppAccount, WhatsAppTemplate
from sequences.runtime import Runtime
from sequences.whatsapp import health

# Meta's template events mapped to what we store; FLAGGED templates still send.
_TEMPLATE_EVENTS = {
    "APPROVED": TemplateStatus.APPROVED,
    "REINSTATED": TemplateStatus.APPROVED,
    "REJECTED": TemplateStatus.REJECTED,
    "PAUSED": TemplateStatus.PAUSED,
    "DISABLED": TemplateStatus.DISABLED,
    "PENDING_DELETION": TemplateStatus.DISABLED,
    "DELETED": TemplateStatus.DISABLED,
    "PENDING": TemplateStatus.PENDING,
}


def apply_template(runtime: Runtime, store_ids: list[int], event: TemplateEvent) -> bool:
    """Status and quality of our templates; the merchant's other templates are not ours to track."""
    if not store_ids or event.name not in TEMPLATE_NAMES:
        return False
    language = event.language.split("_")[0]
    with runtime.database.locked_session() as session:
        for store_id in store_ids:
            if event.quality is not None:
                # Quality is a separate word from status: it does not move the status's clock.
                template = session.exec(
                    select(WhatsAppTemplate).where(
                        WhatsAppTemplate.store_id == store_id,
                        WhatsAppTemplate.name == event.name,
                        WhatsAppTemplate.language == language,
                    )
                ).first()
                if template is not None:
                    template.quality_score = event.quality[:16]
                continue
            status = _TEMPLATE_EVENTS.get((event.event or "").upper())
            if status is None:
                continue  # FLAGGED and other notices: the template still sends
            reason = event.reason if event.reason and event.reason != "NONE" else None
            health.set_template_status(
                session,
                store_id,
                event.name,
                language,
                status,
                reason=reason,
                at=event.at,
                platform_template_id=event.template_id,
            )
    return True


def apply_phone_quality(runtime: Runtime, event: PhoneQualityEvent) -> bool:
    """FLAGGED (quality turned RED) pauses, UNFLAGGED lifts a quality pause; an older event
    arriving late, or one naming another number of the same account, changes nothing."""
    digits = "".join(ch for ch in event.display_phone_number if ch.isdigit())
    applied = False
    with runtime.database.locked_session() as session:
        accounts = session.exec(select(WhatsAppAccount).where(WhatsAppAccount.waba_id == event.waba_id)).all()
        for account in accounts:
            ours = "".join(ch for ch in (account.display_phone_number or "") if ch.isdigit())
            if ours and ours != digits:
                continue
            if not ours and len(accounts) != 1:
                continue  # cannot tell which number it names
            if account.quality_at is not None and event.at <= account.quality_at:
                continue
            if event.event == "THROUGHPUT_UPGRADE":
                account.messages_per_second = max(account.messages_per_second, 1000)
            elif event.event in ("FLAGGED", "UNFLAGGED"):
                account.quality_rating = "RED" if event.event == "FLAGGED" else "GREEN"
                account.quality_at = event.at
                store = session.get(Store, account.store_id)
                assert store is not None
                health.quality_changed(store, account.quality_rating, runtime.now())
            else:
                continue
            account.updated_at = runtime.now()
            applied = True
    return applied
