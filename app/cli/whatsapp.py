"""`cartback whatsapp …` and `cartback templates push`: connecting a store's WhatsApp number."""

from __future__ import annotations

import os
from collections.abc import Callable

import click
from sqlmodel import col, select

from app.wiring import build_runtime
from sequences.config import ConfigError, Settings
from sequences.models import Store
from sequences.runtime import Runtime

STORE_HELP = "The store's platform id, e.g. bazaar.myshopify.com."


def _store(runtime: Runtime, store_ref: str) -> Store:
    with runtime.database.session() as session:
        store = session.exec(select(Store).where(Store.platform_store_id == store_ref)).first()
    if store is None or store.id is None:
        raise click.ClickException(f"no store {store_ref!r}; `cartback whatsapp stores` lists them")
    return store


def register(main: click.Group, load_settings: Callable[[], Settings]) -> None:
    """Add the commands to ``main``; settings are read when a command runs, not at import."""

    def runtime() -> Runtime:
        return build_runtime(load_settings())

    @main.group(help="Connect and check a store's WhatsApp number (Cloud API).")
    def whatsapp() -> None:
        pass

    @whatsapp.command("stores", help="List stores with their WhatsApp number and sending state.")
    def stores() -> None:
        from sequences.models import WhatsAppAccount

        rt = runtime()
        with rt.database.session() as session:
            rows = session.exec(
                select(Store, WhatsAppAccount).outerjoin(
                    WhatsAppAccount, col(WhatsAppAccount.store_id) == col(Store.id)
                )
            ).all()
        for store, account in rows:
            number = (account.display_phone_number or account.phone_number_id) if account else "not connected"
            state = f"paused: {store.pause_reason}" if store.sending_paused else "sending"
            click.echo(f"{store.platform_store_id}  {number}  {state}")

    @whatsapp.command(
        "connect",
        help="Save the store's WABA id, phone number id and system-user token (from WHATSAPP_ACCESS_TOKEN, "
        "or asked for).",
    )
    @click.option("--store", "store_ref", required=True, help=STORE_HELP)
    @click.option("--waba-id", required=True, help="WhatsApp Business Account id (WhatsApp Manager).")
    @click.option("--phone-number-id", required=True, help="The number's id (not the number itself).")
    @click.option("--language", default="en", show_default=True, help="Template language: en or hi.")
    def connect(store_ref: str, waba_id: str, phone_number_id: str, language: str) -> None:
        from sequences.whatsapp.accounts import AccountError
        from sequences.whatsapp.accounts import connect as connect_account

        # Never an option: a token on the command line ends up in shell history and `ps`.
        token = os.environ.get("WHATSAPP_ACCESS_TOKEN") or click.prompt(
            "System-user access token", hide_input=True
        )
        rt = runtime()
        store = _store(rt, store_ref)
        assert store.id is not None
        try:
            connect_account(
                rt,
                store.id,
                waba_id=waba_id,
                phone_number_id=phone_number_id,
                access_token=token,
                default_language=language,
            )
        except AccountError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo("Saved (the token is stored encrypted). Checking it with Meta…")
        _print_check(rt, store.id)

    @whatsapp.command("check", help="Verify the store's number and token against the Graph API.")
    @click.option("--store", "store_ref", required=True, help=STORE_HELP)
    def check(store_ref: str) -> None:
        rt = runtime()
        store = _store(rt, store_ref)
        assert store.id is not None
        _print_check(rt, store.id)

    @whatsapp.command("resume", help="Resume a store's sending after a pause (say why it was paused first).")
    @click.option("--store", "store_ref", required=True, help=STORE_HELP)
    def resume(store_ref: str) -> None:
        from sequences.whatsapp.health import resume_store

        rt = runtime()
        store = _store(rt, store_ref)
        with rt.database.locked_session() as session:
            stored = session.get(Store, store.id)
            assert stored is not None
            reason = stored.pause_reason
            resumed = resume_store(stored, rt.now())
        click.echo(f"Sending resumed (it was paused: {reason})." if resumed else "Sending was not paused.")

    @main.group(help="WhatsApp message templates.")
    def templates() -> None:
        pass

    @templates.command("push", help="Create the cart-recovery templates on the store's WhatsApp account.")
    @click.option("--store", "store_ref", required=True, help=STORE_HELP)
    def push(store_ref: str) -> None:
        from sequences.whatsapp.template_push import push_templates

        rt = runtime()
        store = _store(rt, store_ref)
        assert store.id is not None
        try:
            results = push_templates(rt, store.id, progress=click.echo)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        refused = [result for result in results if result.status in ("REFUSED", "NOT PUSHED")]
        click.echo(
            "Meta reviews new templates (usually minutes, up to 24 h); cartback sends only approved ones "
            "and follows their status through the webhook."
        )
        if refused:
            raise click.ClickException(f"{len(refused)} templates were not created; see the reasons above")


def _print_check(runtime: Runtime, store_id: int) -> None:
    from sequences.whatsapp.accounts import check

    report = check(runtime, store_id)
    for key, value in report.facts.items():
        if value:
            click.echo(f"  {key.replace('_', ' ')}: {value}")
    for line in report.done:
        click.echo(f"  ✓ {line}")
    if report.ok:
        click.echo("All good: messages can go out from this number.")
        return
    for problem in report.problems:
        click.echo(f"  ✗ {problem}", err=True)
    raise click.ClickException(
        "the WhatsApp number is not ready; fix the problems above and run the check again"
    )
