"""The Flask application (factory pattern: nothing runs at import).

``create_app`` is the composition root: it builds the runtime and registers the blueprints
(each view module reads the runtime through the leaf ``app.current``, never through this
package, so the views and the factory do not import each other).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from app.current import EXTENSION_KEY
from app.error_tracking import init_error_tracking
from app.request_bodies import GuardedJSONProvider
from sequences import runtime as runtime_module
from sequences.config import ConfigError, Settings
from sequences.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent


def create_app(
    overrides: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    runtime: Runtime | None = None,
) -> Flask:
    """Build the app. ``overrides`` holds Settings field names (lower case) or Flask keys."""
    from app.wiring import build_runtime

    overrides = dict(overrides or {})
    settings = settings or (runtime.settings if runtime else Settings.from_env())
    field_overrides = {k: v for k, v in overrides.items() if k.islower()}
    if field_overrides:
        settings = settings.with_overrides(**field_overrides)
    problem = settings.production_problem()
    if problem:
        raise ConfigError(problem)
    # Before the app exists: the SDK's Flask integration hooks Flask as it starts.
    init_error_tracking(settings)

    app = Flask(__name__, template_folder=str(ROOT / "templates"), static_folder=None)
    # request.get_json goes through the untrusted-body checks (depth, UTF-8, surrogates).
    app.json = GuardedJSONProvider(app)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SECRET_KEY_FALLBACKS=list(settings.secret_key_fallbacks),
        MAX_CONTENT_LENGTH=settings.max_webhook_bytes,
        JSON_SORT_KEYS=False,
        TESTING=settings.environment == "test",
    )
    app.config.update({k: v for k, v in overrides.items() if k.isupper()})
    if settings.forwarded_proxies:
        # The client's address (rate limits) and scheme come from the proxies' headers, and
        # only as many hops as there are proxies: a client cannot forge its way past them.
        proxies = settings.forwarded_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]

    runtime = runtime or build_runtime(settings)
    app.extensions[EXTENSION_KEY] = runtime
    # Jobs run in this process too (SimpleWorker in tests, `cartback sweep`).
    runtime_module.install(runtime)

    from app import links, ops, outbox
    from app.admin import experiments as admin_experiments
    from app.admin import incidents as admin_incidents
    from app.admin import login as admin_login
    from app.admin import pages as admin_pages
    from app.admin import reconciliation as admin_reconciliation
    from app.admin import session as admin_session
    from app.admin import settings as admin_settings
    from app.admin import whatsapp as whatsapp_settings
    from app.shopify import home as shopify_home
    from app.webhooks import cartflows as cartflows_webhook
    from app.webhooks import platforms as platform_webhooks
    from app.webhooks import whatsapp as whatsapp_webhook
    from app.woocommerce import connect as woocommerce_connect

    app.register_blueprint(ops.bp)
    app.register_blueprint(whatsapp_webhook.bp)
    app.register_blueprint(links.bp)
    if not settings.is_production:
        # Development tools: the sandbox outbox (anyone may read it and reply STOP for any
        # shopper) and the simulated store. Production never serves them.
        app.register_blueprint(outbox.bp)
        from demo.store import demo_store_bp

        app.register_blueprint(demo_store_bp)
    app.register_blueprint(shopify_home.bp)
    app.register_blueprint(whatsapp_settings.bp)
    app.register_blueprint(admin_login.bp)
    app.register_blueprint(admin_pages.bp)
    app.register_blueprint(admin_settings.bp)
    app.register_blueprint(admin_experiments.bp)
    app.register_blueprint(admin_reconciliation.bp)
    app.register_blueprint(admin_incidents.bp)
    app.register_blueprint(woocommerce_connect.bp)
    app.register_blueprint(cartflows_webhook.bp)
    admin_session.configure_sessions(app, settings.app_url)
    # Platform deliveries are answered before Flask (app.webhooks.platforms says why).
    app.wsgi_app = platform_webhooks.PlatformWebhooks(  # type: ignore[method-assign]
        app.wsgi_app, runtime, propagate=app.testing
    )

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Any:
        if request.path.startswith(("/webhooks/", "/api/", "/demo-store/api/")):
            return jsonify(error=error.description or error.name), error.code or 500
        return error

    return app
