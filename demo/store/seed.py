"""Install cartback on the demo store (the part a merchant's "Install app" click does)."""

from __future__ import annotations

import logging
import secrets
from decimal import Decimal

from sqlmodel import Session, select

from demo.connector import PLATFORM
from demo.store.models import DEMO_STORE_SLUG
from sequences.merchant.store_settings import Offer, StoreSettings
from sequences.models import Store, StoreStatus
from sequences.runtime import Runtime
from sequences.secrets import SecretBox, SecretUnreadable

log = logging.getLogger("cartback.demo_store")

DEMO_STORE_NAME = "Demo Bazaar"


def demo_settings() -> StoreSettings:
    """Defaults, except: no quiet hours (the demo runs at any hour) and an offer on step 1
    (so the demo shows the discount within a minute): ₹100 off carts of ₹999+, valid 48 h."""
    defaults = StoreSettings()
    hundred_off = Offer(kind="fixed", value=Decimal("100"), min_subtotal=Decimal("999"), valid_hours=48)
    steps = [defaults.steps[0].model_copy(update={"offer": hundred_off}), *defaults.steps[1:]]
    return StoreSettings.model_validate(
        {**defaults.model_dump(), "steps": steps, "quiet_hours_enabled": False}
    )


def find_demo_store(session: Session) -> Store | None:
    return session.exec(
        select(Store).where(Store.platform == PLATFORM, Store.platform_store_id == DEMO_STORE_SLUG)
    ).first()


def _readable(box: SecretBox, ciphertext: str | None) -> bool:
    if not ciphertext:
        return False
    try:
        box.decrypt(ciphertext)
    except SecretUnreadable:
        return False
    return True


def seed_demo_store(runtime: Runtime) -> Store:
    """Create (or refresh) the demo store; idempotent.

    Secrets are generated once and kept encrypted; they are replaced only when the current
    ENCRYPTION_KEY cannot read them. URLs follow APP_URL (it may change between runs).
    Settings are written on creation only, so a merchant's edits in the admin survive.
    """
    app_url = runtime.settings.app_url.rstrip("/")
    now = runtime.now()
    with runtime.database.session() as session:
        store = find_demo_store(session)
        if store is None:
            store = Store(
                platform=PLATFORM,
                platform_store_id=DEMO_STORE_SLUG,
                name=DEMO_STORE_NAME,
                settings=demo_settings().to_stored(),
            )
            session.add(store)
        store.currency, store.locale, store.timezone, store.default_region = (
            "INR",
            "en_IN",
            "Asia/Kolkata",
            "IN",
        )
        store.api_base_url = f"{app_url}/demo-store"
        store.storefront_url = f"{app_url}/demo-store/"
        store.status = StoreStatus.ACTIVE
        if not _readable(runtime.secrets, store.access_token_ciphertext):
            store.access_token_ciphertext = runtime.secrets.encrypt("demo_at_" + secrets.token_urlsafe(32))
        if not _readable(runtime.secrets, store.webhook_secret_ciphertext):
            store.webhook_secret_ciphertext = runtime.secrets.encrypt(secrets.token_urlsafe(32))
        store.updated_at = now
        session.flush()
        session.refresh(store)
    log.info("demo store ready", extra={"store_id": store.id})
    return store
