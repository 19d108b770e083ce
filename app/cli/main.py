"""The `cartback` command line (click)."""

from __future__ import annotations

import os
import sys

import click

from sequences.config import ConfigError, Settings, generate_encryption_key, generate_secret_key


def _settings() -> Settings:
    from dotenv import load_dotenv

    load_dotenv(override=False)
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(help="cartback: win back abandoned carts over WhatsApp.")
def main() -> None:
    pass


@main.group(help="Database commands.")
def db() -> None:
    pass


@db.command("upgrade", help="Apply all migrations to DATABASE_URL.")
def db_upgrade() -> None:
    from app.dbmigrate import upgrade

    settings = _settings()
    click.echo("Applying migrations…")
    upgrade(settings.database_url)
    click.echo("Database is up to date.")


@main.command(help="Serve the web app with gunicorn.")
@click.option("--bind", default="127.0.0.1:8000", show_default=True)
@click.option("--workers", default=2, show_default=True, type=int)
@click.option("--threads", default=4, show_default=True, type=int)
def web(bind: str, workers: int, threads: int) -> None:
    from app.gunicorn_config import CONFIG_SPEC

    _settings()  # fail fast on configuration before gunicorn forks
    os.execvp(  # noqa: S606 - replaces this process with gunicorn, arguments are ours
        sys.executable,
        [
            sys.executable,
            "-m",
            "gunicorn",
            "app:create_app()",
            "--bind",
            bind,
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--worker-class",
            "gthread",
            "--config",
            CONFIG_SPEC,
        ],
    )


@main.command(
    help="Run a worker: it claims due carts and pending deliveries from the database, runs queued jobs and the periodic sweep."
)
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Batches of due carts worked on at once (and RQ job loops) in this process: a batch waiting on Meta (~100 ms a send) holds back no other.",
)
def worker(burst: bool, threads: int) -> None:
    from app.logs import configure_logging
    from app.worker import run_workers, worker_runtime
    from sequences import runtime as runtime_module

    settings = _settings()
    configure_logging()
    from app.error_tracking import init_error_tracking

    init_error_tracking(settings)
    if settings.metrics_dir:
        from sequences.telemetry import forget_dead_processes

        forget_dead_processes(settings.metrics_dir)
    try:
        runtime = worker_runtime(settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    runtime_module.install(runtime)
    run_workers(runtime, threads=threads, burst=burst)


@main.command(
    help="Run the sweep now: apply deliveries no worker took, settle steps a dead sender left, report overdue carts, and the chores."
)
def sweep() -> None:
    from app.wiring import build_runtime
    from sequences import runtime as runtime_module
    from sequences.engine.sweep import run_sweep

    runtime = build_runtime(_settings())
    runtime_module.install(runtime)
    click.echo(f"Sweep: {run_sweep(runtime)}")


@main.command(help="Erase a shopper's personal data from one store, for good.")
@click.option("--store", "store_ref", required=True, help="The store's platform id, e.g. demo-bazaar.")
@click.option("--phone", required=True, help="The shopper's phone, as E.164 or as they typed it.")
def erase(store_ref: str, phone: str) -> None:
    from sqlmodel import select

    from app.wiring import build_runtime
    from connectors.base import InvalidPhone, normalise_phone
    from sequences.models import Store
    from sequences.privacy.erasure import erase_contact

    runtime = build_runtime(_settings())
    with runtime.database.session() as session:
        store = session.exec(select(Store).where(Store.platform_store_id == store_ref)).first()
    if store is None or store.id is None:
        raise click.ClickException(f"no store {store_ref!r}; check the id with the merchant")
    try:
        phone_e164 = normalise_phone(phone, store.default_region)
    except InvalidPhone as exc:
        raise click.ClickException(str(exc)) from None
    report = erase_contact(runtime, store.id, phone_e164)
    if not report.contacts:
        click.echo("Nothing held for that number in this store.")
        return
    click.echo(
        f"Erased: 1 contact, {report.messages} messages redacted, {report.outbox_messages} outbox "
        f"entries deleted, {report.consent_events} consent records kept without text, "
        f"{report.deliveries} webhook payloads emptied."
    )


@main.command(
    help="Empty processed webhook payloads past their 7-day retention (the sweep does this too) "
    "and delete expired, unused recovery codes from the stores' platforms."
)
def purge() -> None:
    from app.wiring import build_runtime
    from sequences import runtime as runtime_module
    from sequences.privacy.erasure import purge_processed_payloads
    from sequences.stores.discount_cleanup import delete_expired_discounts

    runtime = build_runtime(_settings())
    runtime_module.install(runtime)
    count = purge_processed_payloads(runtime)
    click.echo(f"Emptied {count} processed webhook payloads older than 7 days.")
    click.echo("Deleting expired, unused discount codes from the platforms…")
    report = delete_expired_discounts(runtime, progress=click.echo)
    click.echo(f"Deleted {report.deleted} expired codes.")
    if report.failed:
        click.echo(
            f"{report.failed} codes could not be deleted now (platform unreachable or refusing); "
            "run `cartback purge` again later.",
            err=True,
        )


@main.command(
    help="Reconcile now (the worker also does it weekly per store): re-read the orders counted as recovered in "
    "the last 60 days and record refunds, cancellations and cash-on-delivery returns; delete discount codes "
    "that expired unused; compare a week of messaging cost with Meta's figures. Prints each store's report "
    "(also on the admin's Reconciliation page). For platforms that never retry a failed delivery "
    "(WooCommerce), first re-activates disabled webhooks and reads back every order changed since the last sync."
)
@click.option("--platform", default=None, help="Only this platform's stores, e.g. shopify or woocommerce.")
@click.option(
    "--store",
    "store_ref",
    default=None,
    help="Only this store (its platform id, e.g. bazaar.myshopify.com or https://shop.example).",
)
def reconcile(platform: str | None, store_ref: str | None) -> None:
    from sqlmodel import col, select

    from app.wiring import build_runtime
    from sequences import runtime as runtime_module
    from sequences.models import RunStatus, RunTrigger, Store, StoreStatus
    from sequences.reconciliation import report as reconciliation_report
    from sequences.reconciliation import runs
    from sequences.stores.sync import sync_platform

    runtime = build_runtime(_settings())
    runtime_module.install(runtime)
    configured = ", ".join(runtime.connectors.platforms())
    if platform is not None and runtime.connectors.get(platform) is None:
        raise click.ClickException(f"platform {platform!r} is not configured here. Configured: {configured}")
    sync_failed = 0
    for name in [platform] if platform else runtime.connectors.platforms():
        synced = sync_platform(runtime, name, store_ref=store_ref, progress=click.echo)
        if synced.stores:
            click.echo(f"Synced: {synced}.")
        sync_failed += synced.failed_stores
    with runtime.database.session() as session:
        query = select(Store.id, Store.platform_store_id).where(Store.status == StoreStatus.ACTIVE)
        if platform:
            query = query.where(Store.platform == platform)
        if store_ref:
            query = query.where(Store.platform_store_id == store_ref)
        stores = [
            (store_id, ref) for store_id, ref in session.exec(query.order_by(col(Store.id))).all() if store_id
        ]
    if not stores:
        raise click.ClickException("no active store matches: check --store (its platform id) and --platform")
    failed = 0
    for store_id, ref in stores:
        run = runs.open_run(runtime, store_id, RunTrigger.COMMAND, enqueue=False)
        assert run.id is not None
        done = runs.execute(runtime, run.id, progress=click.echo)
        if done is None:
            click.echo(
                f"{ref}: a run is already under way (started {run.started_at or run.created_at:%Y-%m-%d %H:%M} UTC)"
            )
            continue
        click.echo(f"Reconciled {ref}:")
        for line in reconciliation_report.summary_lines(done):
            click.echo(f"  {line}")
        failed += done.status == RunStatus.FAILED
    if failed:
        raise click.ClickException(
            f"{failed} store(s) could not be reconciled: see above, then run this again"
        )
    if sync_failed:
        raise SystemExit(1)


@main.command("admin-link", help="Print a one-time sign-in link to a store's admin (dashboard and settings).")
@click.argument("store_ref", metavar="STORE")
def admin_link(store_ref: str) -> None:
    from app.admin.session import LOGIN_LINK_LIFETIME, find_store, issue_login_link
    from app.wiring import build_runtime
    from sequences.models import StoreStatus

    runtime = build_runtime(_settings())
    store = find_store(runtime, store_ref)
    if store is None or store.id is None:
        raise click.ClickException(
            f"no store {store_ref!r}: give its id or its platform id (shop domain, site URL, demo slug); "
            "`cartback whatsapp stores` lists them"
        )
    if store.status != StoreStatus.ACTIVE:
        raise click.ClickException(f"{store.name} has uninstalled cartback: there is nothing to sign in to")
    link = issue_login_link(runtime, store.id, "cli")
    minutes = int(LOGIN_LINK_LIFETIME.total_seconds() // 60)
    click.echo(f"Sign-in link for {store.name} (works once, for {minutes} minutes):")
    click.echo(link)


@main.group(help="The recovery dashboard's kept figures.")
def dashboard() -> None:
    pass


@dashboard.command(
    "rebuild",
    help="Recount the dashboard's figures from the carts and messages (safe beside running workers).",
)
@click.option("--store", "store_ref", default=None, help="Only this store (its id or platform id).")
def dashboard_rebuild(store_ref: str | None) -> None:
    from sqlmodel import col, select

    from app.admin.session import find_store
    from app.wiring import build_runtime
    from sequences.merchant.rollups import rebuild
    from sequences.models import Store

    runtime = build_runtime(_settings())
    if store_ref is not None:
        store = find_store(runtime, store_ref)
        if store is None or store.id is None:
            raise click.ClickException(
                f"no store {store_ref!r}: give its id or its platform id; `cartback whatsapp stores` lists them"
            )
        store_ids = [store.id]
    else:
        with runtime.database.session() as session:
            store_ids = [
                store_id for store_id in session.exec(select(Store.id).order_by(col(Store.id))) if store_id
            ]
    fixed = 0
    for store_id in store_ids:
        result = rebuild(runtime.database.session, store_id, progress=click.echo)
        click.echo(f"store {store_id}: {result.buckets:,} buckets recounted, {result.changed:,} were wrong")
        fixed += result.changed
    click.echo(f"Done: {len(store_ids)} stores, {fixed:,} buckets fixed.")


@main.command(help="Print fresh SECRET_KEY and ENCRYPTION_KEY values for production.")
def keys() -> None:
    click.echo(f"SECRET_KEY={generate_secret_key()}")
    click.echo(f"ENCRYPTION_KEY={generate_encryption_key()}")


@main.command(help="Run the whole product locally and play a shopper's journey (make demo).")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--no-journey", is_flag=True, help="Start everything but do not play the journey.")
@click.option("--exit-after-journey", is_flag=True, help="Stop everything once the journey is played.")
def demo(port: int, no_journey: bool, exit_after_journey: bool) -> None:
    from app.cli.demo import run_demo

    sys.exit(run_demo(port=port, play=not no_journey, wait_forever=not exit_after_journey))


from app.cli.experiments import register as _register_experiments  # noqa: E402 - needs main defined
from app.cli.whatsapp import register as _register_whatsapp  # noqa: E402 - needs main defined

_register_whatsapp(main, _settings)
_register_experiments(main)

if __name__ == "__main__":
    main()
