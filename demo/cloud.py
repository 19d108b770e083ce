"""`make demo` on the WhatsApp Cloud API transport (WHATSAPP_TRANSPORT=cloud).

The demo store is connected to the number named by the environment, checked against the
Graph API, and given its templates, exactly as a merchant would with `cartback whatsapp
connect`, `cartback whatsapp check` and `cartback templates push`. `make demo-cloud` points all
of it at a local fake Graph API that approves templates at once and posts Meta's status
webhooks back; a real Meta app works the same way once its templates are approved.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from sqlmodel import select

from channels.whatsapp.templates import TEMPLATE_NAMES
from demo.store.journey import CloudDemo
from sequences.config import ConfigError
from sequences.models import TemplateStatus, WhatsAppTemplate
from sequences.runtime import Runtime
from sequences.whatsapp.accounts import AccountError, check, connect
from sequences.whatsapp.template_push import push_templates

REQUIRED = (
    "WHATSAPP_GRAPH_URL",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_APP_ID",
    "WHATSAPP_WABA_ID",
    "WHATSAPP_PHONE_NUMBER_ID",
    "WHATSAPP_ACCESS_TOKEN",
)
# Meta usually reviews in minutes; the demo waits this long (s) before saying so.
APPROVAL_WAIT_S = 60


class CloudDemoError(RuntimeError):
    """The demo cannot send on the Cloud API; the message says what to set or fix."""


def prepare_cloud_demo(
    runtime: Runtime, store_id: int, env: Mapping[str, str], step: Callable[[str], None]
) -> CloudDemo:
    missing = [name for name in REQUIRED if not env.get(name, "").strip()]
    if missing:
        raise CloudDemoError(
            "WHATSAPP_TRANSPORT=cloud needs " + ", ".join(missing) + " to connect the demo store's number; "
            "`make demo-cloud` runs the demo against a local fake Graph API with all of them set."
        )
    step(f"Connecting the demo store to WhatsApp number {env['WHATSAPP_PHONE_NUMBER_ID']} (Cloud API)")
    try:
        connect(
            runtime,
            store_id,
            waba_id=env["WHATSAPP_WABA_ID"],
            phone_number_id=env["WHATSAPP_PHONE_NUMBER_ID"],
            access_token=env["WHATSAPP_ACCESS_TOKEN"],
        )
    except AccountError as exc:
        raise CloudDemoError(str(exc)) from None
    report = check(runtime, store_id)
    if not report.ok:
        raise CloudDemoError("the WhatsApp number is not ready: " + "; ".join(report.problems))
    step(f"Number checked: {report.facts.get('verified_name')}, quality {report.facts.get('quality_rating')}")
    step("Pushing the cart-recovery templates")
    try:
        results = push_templates(runtime, store_id, progress=lambda line: step("  " + line.strip()))
    except ConfigError as exc:
        raise CloudDemoError(str(exc)) from None
    refused = [
        f"{r.name} ({r.language}): {r.detail}" for r in results if r.status in ("REFUSED", "NOT PUSHED")
    ]
    if refused:
        raise CloudDemoError("Meta did not take the templates: " + "; ".join(refused))
    _wait_for_approval(runtime, store_id)
    return CloudDemo(env["WHATSAPP_WABA_ID"], env["WHATSAPP_PHONE_NUMBER_ID"], env["WHATSAPP_APP_SECRET"])


def _wait_for_approval(runtime: Runtime, store_id: int) -> None:
    deadline = time.monotonic() + APPROVAL_WAIT_S
    while True:
        with runtime.database.session() as session:
            statuses = {
                row.name: row.status
                for row in session.exec(
                    select(WhatsAppTemplate).where(
                        WhatsAppTemplate.store_id == store_id, WhatsAppTemplate.language == "en"
                    )
                ).all()
            }
        if all(statuses.get(name) == TemplateStatus.APPROVED for name in TEMPLATE_NAMES):
            return
        if time.monotonic() > deadline:
            raise CloudDemoError(
                f"Meta has not approved the templates yet ({statuses}); run the demo again once they are "
                "APPROVED (the status webhook updates them)."
            )
        time.sleep(1)
