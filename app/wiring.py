"""Build the engine's Runtime for this process: the one place that picks implementations.

Transports and connectors are looked up by configuration here (warehouse-style), so the
engine depends on interfaces only.
"""

from __future__ import annotations

import httpx
from redis import Redis

from channels.transport import MessageTransport
from channels.whatsapp.cloud import CloudTransport, new_http_client
from channels.whatsapp.throttle import SendThrottle
from connectors.base import ConnectorRegistry
from connectors.shopify import ShopifyConnector
from connectors.shopify.routing import TemplateError
from connectors.woocommerce import WooCommerceConnector
from sequences.clicks.links import LinkSigner
from sequences.config import ConfigError, Settings
from sequences.db import Database
from sequences.experiments import figures as experiment_figures
from sequences.merchant import rollups
from sequences.runtime import Runtime
from sequences.sandbox import SandboxTransport
from sequences.secrets import SecretBox
from sequences.telemetry import Telemetry

# Platform API calls: fail fast, the click handler falls back to the plain checkout.
PLATFORM_TIMEOUT = httpx.Timeout(10.0, connect=3.0)


def build_transport(
    settings: Settings, database: Database, redis: Redis, whatsapp_http: httpx.Client
) -> MessageTransport:
    if settings.whatsapp_transport == "sandbox":
        return SandboxTransport(database)
    return CloudTransport(
        settings.whatsapp_graph_url, whatsapp_http, SendThrottle(redis, key=settings.secret_key)
    )


def build_connectors(settings: Settings, http: httpx.Client) -> ConnectorRegistry:
    # WooCommerce needs no app credentials: each store's keys come from its own connect.
    registry = ConnectorRegistry([WooCommerceConnector(public_only=settings.is_production)])
    if not settings.is_production:
        # The demo platform is the simulated store under /demo-store/, never served in
        # production: imported here so a production process never loads ``demo`` at all.
        from demo.connector import DemoConnector

        registry.register(DemoConnector(http))
    if settings.shopify_api_key and settings.shopify_api_secret:
        try:
            connector = ShopifyConnector(
                settings.shopify_api_key,
                settings.shopify_api_secret,
                old_api_secret=settings.shopify_old_api_secret,
                admin_url_template=settings.shopify_admin_url_template,
            )
        except TemplateError as exc:
            raise ConfigError(str(exc)) from None
        registry.register(connector)
    return registry


def build_runtime(
    settings: Settings,
    *,
    database: Database | None = None,
    http: httpx.Client | None = None,
    redis: Redis | None = None,
) -> Runtime:
    database = database or Database(settings.database_url)
    # Every transaction of this runtime keeps the dashboard's figures as it changes carts, and
    # then (the lock order) the experiments' figures.
    rollups.keep_figures(database)
    experiment_figures.keep_figures(database)
    http = http or httpx.Client(timeout=PLATFORM_TIMEOUT, follow_redirects=False)
    redis = redis or Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    whatsapp_http = new_http_client()
    telemetry = Telemetry(settings.metrics_dir or None)
    telemetry.instrument_graph_client(whatsapp_http)
    return Runtime(
        settings=settings,
        database=database,
        redis=redis,
        connectors=build_connectors(settings, http),
        transport=build_transport(settings, database, redis, whatsapp_http),
        links=LinkSigner(settings.link_keys),
        secrets=SecretBox(settings.encryption_keys),
        http=http,
        whatsapp_http=whatsapp_http,
        telemetry=telemetry,
    )
