"""Tell the platform a shopper opted out of WhatsApp marketing (Shopify: the customer's
WhatsApp marketing consent becomes UNSUBSCRIBED).

The local opt-out is already committed and binding before this runs; this only keeps the
merchant's customer record truthful. Transient failures are retried by RQ and then by the
sweep for a day; a refusal is recorded on the consent event and not retried.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from connectors.base import PlatformError, SyncsOptOuts
from sequences.models import ConsentEvent, Contact, OptOutSync, Store, StoreStatus
from sequences.runtime import Runtime
from sequences.stores.access import call_platform

log = logging.getLogger("cartback.optout_sync")

# After this, a sync still failing for transient reasons is given up (and shown as failed).
GIVE_UP_AFTER = timedelta(days=1)


def _finish(runtime: Runtime, event_id: int, state: OptOutSync, detail: str | None) -> str:
    with runtime.database.session() as session:
        event = session.get(ConsentEvent, event_id)
        if event is not None and event.platform_sync == OptOutSync.PENDING:
            event.platform_sync, event.platform_sync_detail = state, detail
            session.commit()
    log.info("opt-out sync finished", extra={"consent_event_id": event_id, "state": state.value})
    return state.value


def sync_opt_out(runtime: Runtime, event_id: int) -> str:
    with runtime.database.session() as session:
        event = session.get(ConsentEvent, event_id)
        if event is None or event.platform_sync != OptOutSync.PENDING:
            return "nothing to do"
        contact = session.get(Contact, event.contact_id)
        store = session.get(Store, event.store_id)
        customer_id = contact.platform_customer_id if contact else None
        created_at, store_id = event.created_at, event.store_id
        syncer = runtime.connectors.capable(store.platform if store else None, SyncsOptOuts)
        active = store is not None and store.status == StoreStatus.ACTIVE
    if not customer_id or syncer is None:
        return _finish(runtime, event_id, OptOutSync.SKIPPED, "the platform has no customer record to update")
    if not active:
        return _finish(runtime, event_id, OptOutSync.SKIPPED, "store uninstalled cartback")
    try:
        call_platform(
            runtime,
            store_id,
            lambda _, access: syncer.sync_opt_out(access, customer_id),
            operation="sync_opt_out",
        )
    except PlatformError as exc:
        if exc.retryable and runtime.now() - created_at < GIVE_UP_AFTER:
            raise  # RQ retries; the sweep re-queues what is still pending after that
        return _finish(runtime, event_id, OptOutSync.FAILED, exc.reason[:500])
    return _finish(runtime, event_id, OptOutSync.DONE, None)
