"""Privacy requests from the platform: export a customer's data, erase it, delete a store's.

They arrive as webhooks (Shopify's mandatory compliance topics) and are applied in the same
transaction as marking the delivery processed. A customer is matched by the platform's
customer id, phone or email; any one is enough.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, or_
from sqlmodel import Session, SQLModel, col, select

from connectors.base import CustomerDataRequest, CustomerRedact, CustomerRef
from sequences.db import lock_carts_of
from sequences.experiments import figures as experiment_figures
from sequences.merchant import rollups
from sequences.models import (
    AdminLogin,
    Cart,
    CartEvent,
    CartLine,
    ConsentEvent,
    Contact,
    DashboardCartBucket,
    DashboardMessageBucket,
    DataExport,
    Discount,
    Experiment,
    ExperimentArm,
    ExperimentAssignment,
    InboundMessage,
    Incident,
    LinkClick,
    Message,
    ReconciliationRun,
    RecoveryStep,
    SandboxOutboxMessage,
    SettingsChange,
    ShopperOrder,
    Store,
    VariantImage,
    WebhookDelivery,
    WhatsAppAccount,
    WhatsAppTemplate,
)
from sequences.privacy.erasure import ErasureReport, erase_locked
from sequences.runtime import Runtime

log = logging.getLogger("cartback.privacy")


def matching_contacts(
    session: Session, store_id: int, customer: CustomerRef, *, lock: bool = False
) -> list[Contact]:
    conditions = []
    if customer.customer_id:
        conditions.append(col(Contact.platform_customer_id) == customer.customer_id)
    if customer.phone_e164:
        conditions.append(col(Contact.phone_e164) == customer.phone_e164)
    if customer.email:
        conditions.append(col(Contact.email) == customer.email)
    if not conditions:
        return []
    query = select(Contact).where(Contact.store_id == store_id, or_(*conditions)).order_by(col(Contact.id))
    # Locked in id order, in one statement (the lock order, sequences.db): a send in flight
    # finishes first, so its message is there to be erased too.
    return list(session.exec(query.with_for_update() if lock else query).all())


# What an assignment last counted in its arm's figures: bookkeeping, not about the shopper.
ASSIGNMENT_FIGURES = (
    "counted",
    "messaged",
    "read",
    "clicked",
    "recovered",
    "opted_out",
    "revenue",
    "discount",
    "messaging_cost",
    "shopper",
    "customer_value",
    "abandoned_again",
)


def _row(model: SQLModel, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {key: value for key, value in model.model_dump(mode="json").items() if key not in skip}


def export_customer(session: Session, store: Store, request: CustomerDataRequest) -> DataExport:
    """Everything held about the customer, as JSON the merchant can hand over."""
    assert store.id is not None
    contacts = []
    for contact in matching_contacts(session, store.id, request.customer):
        carts = session.exec(select(Cart).where(Cart.contact_id == contact.id).order_by(col(Cart.id))).all()
        cart_ids = [cart.id for cart in carts]
        contacts.append(
            {
                "contact": _row(contact),
                "consent_events": [
                    _row(e)
                    for e in session.exec(
                        select(ConsentEvent).where(ConsentEvent.contact_id == contact.id)
                    ).all()
                ],
                "messages": [
                    _row(m, skip=("components",))
                    for m in session.exec(select(Message).where(Message.contact_id == contact.id)).all()
                ],
                "whatsapp_messages_received": [
                    _row(inbound)
                    for inbound in session.exec(
                        select(InboundMessage)
                        .where(InboundMessage.contact_id == contact.id)
                        .order_by(col(InboundMessage.id))
                    ).all()
                ],
                "carts": [
                    {
                        **_row(cart),
                        "lines": [
                            _row(line)
                            for line in session.exec(
                                select(CartLine)
                                .where(CartLine.cart_id == cart.id)
                                .order_by(col(CartLine.position))
                            ).all()
                        ],
                        "events": [
                            _row(event)
                            for event in session.exec(
                                select(CartEvent)
                                .where(CartEvent.cart_id == cart.id)
                                .order_by(col(CartEvent.id))
                            ).all()
                        ],
                        "link_clicks": [
                            _row(click)
                            for click in session.exec(
                                select(LinkClick).where(LinkClick.cart_id == cart.id)
                            ).all()
                        ],
                    }
                    for cart in carts
                ],
                "cart_count": len(cart_ids),
                # The arms experiments put them in, and their orders kept for their 90-day value.
                "experiment_arms": [
                    _row(assignment, skip=ASSIGNMENT_FIGURES)
                    for assignment in session.exec(
                        select(ExperimentAssignment)
                        .where(ExperimentAssignment.contact_id == contact.id)
                        .order_by(col(ExperimentAssignment.id))
                    ).all()
                ],
                "orders_followed": [
                    _row(order)
                    for order in session.exec(
                        select(ShopperOrder)
                        .where(ShopperOrder.contact_id == contact.id)
                        .order_by(col(ShopperOrder.id))
                    ).all()
                ],
            }
        )
    export = DataExport(
        store_id=store.id,
        request_ref=request.request_id,
        customer_ref=request.customer.customer_id,
        content={
            "store": store.platform_store_id,
            "request_id": request.request_id,
            "customer": {
                "id": request.customer.customer_id,
                "email": request.customer.email,
                "phone": request.customer.phone_e164,
            },
            "orders_requested": list(request.order_ids),
            "found": bool(contacts),
            "contacts": contacts,
        },
    )
    session.add(export)
    return export


def redact_customer(
    session: Session, runtime: Runtime, store: Store, request: CustomerRedact
) -> ErasureReport:
    assert store.id is not None
    report = ErasureReport()
    contacts = matching_contacts(session, store.id, request.customer, lock=True)
    erased_ids = {contact.id for contact in contacts}
    # Then all their carts, in id order, before erasing contact by contact (the lock order,
    # sequences.db): one contact's carts may have higher ids than the next one's.
    lock_carts_of(session, [contact_id for contact_id in erased_ids if contact_id is not None])
    for contact in contacts:
        erase_locked(session, runtime, contact, report)
    # Exports made for this customer hold the same personal data, whichever way they matched.
    for export in session.exec(select(DataExport).where(DataExport.store_id == store.id)).all():
        exported_ids = {entry.get("contact", {}).get("id") for entry in export.content.get("contacts", [])}
        named = request.customer.customer_id and export.customer_ref == request.customer.customer_id
        if named or exported_ids & erased_ids:
            session.delete(export)
    return report


def redact_store(session: Session, store: Store) -> None:
    """Delete every row held for the store, children first, the store itself last."""
    store_id = store.id
    cart_ids = select(Cart.id).where(Cart.store_id == store_id)
    message_ids = select(Message.id).where(Message.store_id == store_id)
    session.exec(delete(SandboxOutboxMessage).where(col(SandboxOutboxMessage.store_id) == store_id))
    session.exec(delete(LinkClick).where(col(LinkClick.store_id) == store_id))
    session.exec(delete(InboundMessage).where(col(InboundMessage.store_id) == store_id))
    session.exec(delete(WhatsAppTemplate).where(col(WhatsAppTemplate.store_id) == store_id))
    session.exec(delete(WhatsAppAccount).where(col(WhatsAppAccount.store_id) == store_id))
    session.exec(delete(Message).where(col(Message.id).in_(message_ids)))
    session.exec(delete(RecoveryStep).where(col(RecoveryStep.store_id) == store_id))
    session.exec(delete(CartEvent).where(col(CartEvent.store_id) == store_id))
    session.exec(delete(CartLine).where(col(CartLine.cart_id).in_(cart_ids)))
    session.exec(delete(Discount).where(col(Discount.store_id) == store_id))
    experiment_ids = select(Experiment.id).where(Experiment.store_id == store_id)
    experiment_figures.forget_experiments(session, experiment_ids)
    session.exec(delete(ShopperOrder).where(col(ShopperOrder.store_id) == store_id))
    session.exec(delete(ExperimentAssignment).where(col(ExperimentAssignment.store_id) == store_id))
    session.exec(delete(ExperimentArm).where(col(ExperimentArm.experiment_id).in_(experiment_ids)))
    session.exec(delete(Experiment).where(col(Experiment.store_id) == store_id))
    session.exec(delete(Cart).where(col(Cart.store_id) == store_id))
    session.exec(delete(ConsentEvent).where(col(ConsentEvent.store_id) == store_id))
    session.exec(delete(Contact).where(col(Contact.store_id) == store_id))
    session.exec(delete(DataExport).where(col(DataExport.store_id) == store_id))
    session.exec(delete(VariantImage).where(col(VariantImage.store_id) == store_id))
    session.exec(delete(WebhookDelivery).where(col(WebhookDelivery.store_id) == store_id))
    session.exec(delete(SettingsChange).where(col(SettingsChange.store_id) == store_id))
    session.exec(delete(AdminLogin).where(col(AdminLogin.store_id) == store_id))
    session.exec(delete(ReconciliationRun).where(col(ReconciliationRun.store_id) == store_id))
    session.exec(delete(Incident).where(col(Incident.store_id) == store_id))
    session.exec(delete(DashboardMessageBucket).where(col(DashboardMessageBucket.store_id) == store_id))
    session.exec(delete(DashboardCartBucket).where(col(DashboardCartBucket.store_id) == store_id))
    rollups.forget_store(session, store_id)
    session.exec(delete(Store).where(col(Store.id) == store_id))
    log.info("store data deleted", extra={"store_id": store_id})
