"""Tables of the recovery engine (SQLModel), one module per aggregate.

They live in ``sequences`` because the RQ worker uses them without Flask; ``app`` imports them
(the dependency runs app -> sequences). Money is ``Decimal`` with an ISO currency code; times
are timezone-aware UTC; phones are E.164. Every row that belongs to a merchant carries
``store_id`` so every query can be scoped by store.

- ``types``: the column types (``UTCDateTime``, ``MoneyAmount``) and field helpers
- ``stores``: the store, its connection under way, cached variant images, settings history
- ``contacts``: the shopper and the consent ledger
- ``carts``: the cart, its lines, its timeline and its states
- ``messages``: the (cart, step) ledger and the messages sent
- ``clicks``: discounts and link clicks
- ``deliveries``: platform webhook deliveries
- ``whatsapp``: the WhatsApp number, templates, inbound messages, the sandbox outbox
- ``privacy``: customer data exports
- ``admin``: one-time sign-in links to the standalone admin
- ``dashboard``: the dashboard's kept figures
- ``experiments``: experiments, their arms, and each eligible cart's arm
- ``reconciliation``: each store's reconciliation runs and their reports
- ``alerts``: incidents (an alert rule's condition, while it held)

Import the tables from here (``from sequences.models import Cart``): importing this package
registers every table on ``SQLModel.metadata``. Foreign keys name tables by string
(``"store.id"``), so the modules import none of each other's tables.
"""

from __future__ import annotations

from sequences.models.admin import AdminLogin
from sequences.models.alerts import Incident, IncidentStatus
from sequences.models.carts import TERMINAL_CART_STATUSES, Cart, CartEvent, CartLine, CartStatus
from sequences.models.clicks import Discount, LinkClick
from sequences.models.contacts import ConsentEvent, Contact, OptOutSync
from sequences.models.dashboard import (
    DASHBOARD_CART_COLUMNS,
    DASHBOARD_MESSAGE_COLUMNS,
    DashboardCartBucket,
    DashboardMessageBucket,
)
from sequences.models.deliveries import DeliveryStatus, WebhookDelivery
from sequences.models.experiments import (
    Experiment,
    ExperimentArm,
    ExperimentArmFigures,
    ExperimentAssignment,
    ExperimentStatus,
    ShopperOrder,
)
from sequences.models.messages import (
    ATTEMPTED_STEP_STATUSES,
    OPEN_STEP_STATUSES,
    Message,
    MessageStatus,
    RecoveryStep,
    StepStatus,
)
from sequences.models.privacy import DataExport
from sequences.models.reconciliation import ReconciliationRun, RunStatus, RunTrigger
from sequences.models.stores import PlatformConnection, SettingsChange, Store, StoreStatus, VariantImage
from sequences.models.types import MoneyAmount, UTCDateTime, utcnow
from sequences.models.whatsapp import (
    InboundMessage,
    SandboxOutboxMessage,
    TemplateStatus,
    WhatsAppAccount,
    WhatsAppTemplate,
)

__all__ = [
    "ATTEMPTED_STEP_STATUSES",
    "DASHBOARD_CART_COLUMNS",
    "DASHBOARD_MESSAGE_COLUMNS",
    "OPEN_STEP_STATUSES",
    "TERMINAL_CART_STATUSES",
    "AdminLogin",
    "Cart",
    "CartEvent",
    "CartLine",
    "CartStatus",
    "ConsentEvent",
    "Contact",
    "DashboardCartBucket",
    "DashboardMessageBucket",
    "DataExport",
    "DeliveryStatus",
    "Discount",
    "Experiment",
    "ExperimentArm",
    "ExperimentArmFigures",
    "ExperimentAssignment",
    "ExperimentStatus",
    "InboundMessage",
    "Incident",
    "IncidentStatus",
    "LinkClick",
    "Message",
    "MessageStatus",
    "MoneyAmount",
    "OptOutSync",
    "PlatformConnection",
    "ReconciliationRun",
    "RecoveryStep",
    "RunStatus",
    "RunTrigger",
    "SandboxOutboxMessage",
    "SettingsChange",
    "ShopperOrder",
    "StepStatus",
    "Store",
    "StoreStatus",
    "TemplateStatus",
    "UTCDateTime",
    "VariantImage",
    "WebhookDelivery",
    "WhatsAppAccount",
    "WhatsAppTemplate",
    "utcnow",
]
