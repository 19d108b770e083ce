"""What a job needs to run: settings, database, Redis, connectors, transport, link signer.

Built once per process by ``app`` (web) or the worker class (``app.worker``), and installed
here so RQ jobs, which receive ids only, can reach it. Nothing is built at import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from redis import Redis
from rq import Queue

from channels.transport import MessageTransport
from connectors.base import ConnectorRegistry, StoreAccess
from sequences.clicks.links import LinkSigner
from sequences.config import Settings
from sequences.db import Database
from sequences.merchant.store_settings import StoreSettings
from sequences.models import Store
from sequences.queue import CartbackJob
from sequences.secrets import SecretBox
from sequences.telemetry import Telemetry

QUEUE_NAME = "default"
# The key under which the web app keeps its Runtime in ``Flask.extensions`` (app and demo read it).
FLASK_EXTENSION = "cartback"


@dataclass
class Runtime:
    settings: Settings
    database: Database
    redis: Redis
    connectors: ConnectorRegistry
    transport: MessageTransport
    links: LinkSigner
    secrets: SecretBox
    # Outbound HTTP to platforms (connection reuse; tests route it in-process).
    http: httpx.Client
    # Outbound HTTP to Meta's Graph API (sends, checks, template pushes), pooled for threads.
    whatsapp_http: httpx.Client
    # Histograms and counters of this process (sequences.telemetry).
    telemetry: Telemetry = field(default_factory=Telemetry)

    @property
    def queue(self) -> Queue:
        return Queue(QUEUE_NAME, connection=self.redis, job_class=CartbackJob)

    @property
    def time_scale(self) -> float:
        return self.settings.time_scale

    def now(self) -> datetime:
        return datetime.now(UTC)

    def store_settings(self, store: Store) -> StoreSettings:
        return StoreSettings.from_stored(store.settings)

    def store_access(self, store: Store) -> StoreAccess:
        token = self.secrets.decrypt(store.access_token_ciphertext) if store.access_token_ciphertext else ""
        return StoreAccess(
            platform_store_id=store.platform_store_id,
            api_base_url=store.api_base_url,
            access_token=token,
            storefront_url=store.storefront_url,
            webhook_secret=(
                self.secrets.decrypt(store.webhook_secret_ciphertext)
                if store.webhook_secret_ciphertext
                else ""
            ),
        )

    def link_url(self, token: str) -> str:
        return f"{self.settings.app_url}/r/{token}"


_current: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError(
            "cartback runtime not installed: run workers with `cartback worker` "
            "(a plain `rq worker` runs jobs but claims no due cart or delivery)"
        )
    return _current
