"""``cartback templates push``: create the cart-recovery templates on the store's WABA.

Meta needs an example for every variable, and for an IMAGE header an example image uploaded
through the Resumable Upload API first (``POST /{app_id}/uploads``, then the bytes to the
upload session with ``Authorization: OAuth``), whose handle goes in ``header_handle``. A
template that already exists is not an error: its current status is read back instead.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from sqlmodel import select

from channels.whatsapp.graph import GraphClient, GraphError, GraphUnreachable
from channels.whatsapp.templates import DEFINITIONS, TemplateDefinition
from sequences.config import ConfigError
from sequences.models import Store, TemplateStatus, WhatsAppAccount
from sequences.runtime import Runtime
from sequences.whatsapp import health
from sequences.whatsapp.accounts import graph_for

# Meta's "content in this language already exists" (code 100 with this subcode).
ALREADY_EXISTS_SUBCODE = 2388024
EXAMPLE_WIDTH, EXAMPLE_HEIGHT = 800, 418  # px; a landscape product card


@dataclass(frozen=True)
class PushResult:
    name: str
    language: str
    status: str
    detail: str = ""


def example_header_png() -> bytes:
    """A plain product-card image (PNG) for Meta's reviewers; real sends carry product photos."""
    rows = []
    for y in range(EXAMPLE_HEIGHT):
        row = bytearray([0])  # filter type: none
        for x in range(EXAMPLE_WIDTH):
            inside = 250 <= x < 550 and 60 <= y < 358
            row += bytes((37, 99, 235) if inside else (241, 245, 249))
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", EXAMPLE_WIDTH, EXAMPLE_HEIGHT, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )


def upload_example(runtime: Runtime, graph: GraphClient, image: bytes) -> str:
    app_id = runtime.settings.whatsapp_app_id
    if not app_id:
        raise ConfigError(
            "WHATSAPP_APP_ID is not set: the IMAGE header's example is uploaded to your Meta app "
            "(App Dashboard > App settings > Basic > App ID)."
        )
    session = graph.post(
        f"{app_id}/uploads", file_name="cart-example.png", file_length=str(len(image)), file_type="image/png"
    )
    upload_id = str(session.get("id") or "")
    if not upload_id.startswith("upload:"):
        raise GraphError(200, None, None, "the upload API answered without an upload session id")
    handle = graph.request(
        "POST",
        upload_id,
        content=image,
        headers={"Authorization": f"OAuth {graph.token}", "file_offset": "0"},
    ).get("h")
    if not handle:
        raise GraphError(200, None, None, "the upload API answered without a file handle")
    return str(handle)


def push_templates(
    runtime: Runtime, store_id: int, *, progress: Callable[[str], None] = lambda _line: None
) -> list[PushResult]:
    with runtime.database.session() as session:
        store = session.get(Store, store_id)
        account = session.exec(select(WhatsAppAccount).where(WhatsAppAccount.store_id == store_id)).first()
    if store is None or account is None:
        raise ConfigError("connect the store's WhatsApp number first (`cartback whatsapp connect`)")
    graph = graph_for(runtime, account)
    progress("uploading the example header image")
    handle = upload_example(runtime, graph, example_header_png())
    results = []
    for number, template in enumerate(DEFINITIONS, start=1):
        progress(f"[{number}/{len(DEFINITIONS)}] {template.name} ({template.language})")
        result = _push_one(runtime, graph, store, account, template, handle)
        progress(f"    {result.status}{': ' + result.detail if result.detail else ''}")
        results.append(result)
    return results


def _push_one(
    runtime: Runtime,
    graph: GraphClient,
    store: Store,
    account: WhatsAppAccount,
    template: TemplateDefinition,
    handle: str,
) -> PushResult:
    payload = template.creation_payload(
        store_name=store.name, app_url=runtime.settings.app_url, header_handle=handle
    )
    template_id: str | None = None
    detail = ""
    try:
        created = graph.post(f"{account.waba_id}/message_templates", json=payload)
        status, template_id = (
            str(created.get("status") or TemplateStatus.PENDING).upper(),
            str(created.get("id")),
        )
    except GraphError as error:
        if error.subcode != ALREADY_EXISTS_SUBCODE:
            return PushResult(template.name, template.language, "REFUSED", str(error))
        status, template_id, detail = _existing(graph, account, template)
    except GraphUnreachable as error:
        return PushResult(template.name, template.language, "NOT PUSHED", str(error))
    now = runtime.now()
    with runtime.database.locked_session() as session:
        row = health.set_template_status(
            session,
            store.id or 0,
            template.name,
            template.language,
            status,
            reason=detail or None,
            at=now,
            platform_template_id=template_id,
        )
        row.pushed_at = now
    return PushResult(template.name, template.language, status, detail)


def _existing(
    graph: GraphClient, account: WhatsAppAccount, template: TemplateDefinition
) -> tuple[str, str | None, str]:
    listing = graph.get(
        f"{account.waba_id}/message_templates", name=template.name, fields="id,name,language,status,category"
    )
    for item in listing.get("data", []):
        if (
            item.get("name") == template.name
            and str(item.get("language", "")).split("_")[0] == template.language
        ):
            return str(item.get("status") or "PENDING").upper(), str(item.get("id")), "already on the account"
    return TemplateStatus.PENDING, None, "already on the account"
