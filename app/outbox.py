"""The sandbox outbox: what the sandbox transport "delivered", shown like a WhatsApp chat.

Only present with WHATSAPP_TRANSPORT=sandbox. A shopper's reply (STOP, START, anything) can be
simulated from here; it goes through the same consent code a real inbound message will.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify, redirect, render_template, request, url_for
from sqlmodel import col, select

from app.current import get_runtime
from sequences.engine.consent import handle_reply
from sequences.models import Message, SandboxOutboxMessage, Store

bp = Blueprint("outbox", __name__)

# Replies longer than a WhatsApp message are not replies.
MAX_REPLY_CHARS = 4096
PAGE_SIZE = 100


def mask_phone(phone: str) -> str:
    """+919876543210 -> +91 98•••••210: enough to tell shoppers apart, not to call them."""
    if len(phone) < 8:
        return "•" * len(phone)
    return f"{phone[:3]} {phone[3:5]}{'•' * (len(phone) - 8)}{phone[-3:]}"


def _sandbox_only() -> None:
    if get_runtime().transport.name != "sandbox":
        abort(404)


def _rows() -> list[dict[str, Any]]:
    runtime = get_runtime()
    with runtime.database.session() as session:
        rows = session.exec(
            select(SandboxOutboxMessage, Store.name, Message.status)
            .join(Store, col(Store.id) == col(SandboxOutboxMessage.store_id))
            .join(Message, col(Message.id) == col(SandboxOutboxMessage.message_id))
            .order_by(col(SandboxOutboxMessage.id).desc())
            .limit(PAGE_SIZE)
        ).all()
    return [
        {
            "id": outbox.id,
            "message_id": outbox.message_id,
            "store": store_name,
            "to": mask_phone(outbox.to_phone),
            "template": outbox.template_name,
            "body": outbox.body,
            "image_url": outbox.image_url,
            "buttons": outbox.buttons,
            "status": status,
            "sent_at": outbox.created_at.isoformat(),
        }
        for outbox, store_name, status in rows
    ]


@bp.get("/outbox")
def page() -> Any:
    _sandbox_only()
    return render_template("outbox.html", messages=_rows(), replied=request.args.get("replied"))


@bp.get("/outbox.json")
def as_json() -> Any:
    _sandbox_only()
    return jsonify(messages=_rows())


@bp.post("/outbox/<int(max=2147483647):outbox_id>/reply")
def reply(outbox_id: int) -> Any:
    _sandbox_only()
    text = (request.form.get("text") or "").strip()
    if not text:
        return render_template("outbox.html", messages=_rows(), error="Type a reply first."), 400
    if len(text) > MAX_REPLY_CHARS:
        return render_template("outbox.html", messages=_rows(), error="That reply is too long."), 400
    runtime = get_runtime()
    with runtime.database.session() as session:
        outbox = session.get(SandboxOutboxMessage, outbox_id)
    if outbox is None:
        abort(404, "no such outbox message")
    result = handle_reply(
        runtime,
        outbox.store_id,
        outbox.to_phone,
        text,
        source="sandbox_reply",
        evidence={"outbox_message_id": outbox.id, "message_id": outbox.message_id, "text": text[:160]},
    )
    return redirect(url_for("outbox.page", replied=result.intent.value), code=303)
