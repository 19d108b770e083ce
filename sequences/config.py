"""Runtime settings read from the environment (12-factor).

They live here, not in ``app``, because the RQ worker runs the engine without Flask; the
web app builds its Flask config from the same object (``app.config``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

ENVIRONMENTS = ("development", "test", "production")
# More proxies than this in front of a web process is a typo: each one counted lets a client
# write one more X-Forwarded-For hop that is believed.
MAX_FORWARDED_PROXIES = 5
TRANSPORTS = ("sandbox", "cloud")
# Where development secrets are kept so the web and worker processes agree on them.
DEV_SECRETS_FILE = "dev-secrets.env"


# The environment variables cartback reads start with one of these: a process started for
# tests or benchmarks drops the ones it inherits and sets its own.
ENVIRONMENT_PREFIXES = (
    "CARTBACK_",
    "DATABASE_URL",
    "REDIS_URL",
    "SECRET_KEY",
    "ENCRYPTION_KEY",
    "APP_URL",
    "WHATSAPP_",
    "SHOPIFY_",
)


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the message says which and how to fix it."""


@dataclass(frozen=True)
class Settings:
    environment: str = "development"
    database_url: str = "sqlite:///instance/cartback.db"
    redis_url: str = "redis://localhost:6379/0"
    # The newest key signs; older keys (SECRET_KEY_FALLBACKS) still verify live links.
    secret_key: str = ""
    secret_key_fallbacks: tuple[str, ...] = ()
    # One or more Fernet keys, newest first (MultiFernet order): rotation re-encrypts lazily.
    encryption_keys: tuple[str, ...] = ()
    app_url: str = "http://localhost:8000"
    shopify_api_key: str = ""
    shopify_api_secret: str = ""
    # The previous secret while a rotation rolls out (requests signed with either verify).
    shopify_old_api_secret: str = ""
    whatsapp_app_secret: str = ""
    whatsapp_verify_token: str = ""
    # The Meta app's id: template header examples are uploaded to it (Resumable Upload API).
    whatsapp_app_id: str = ""
    whatsapp_transport: str = "sandbox"
    whatsapp_graph_url: str = "https://graph.facebook.com/v25.0"
    shopify_admin_url_template: str = "https://{shop}/admin/api/{version}"
    # Proxies in front of the web process that append to X-Forwarded-For (Heroku's router, a
    # load balancer: 1). 0 trusts no forwarded header: the socket's address is the client's.
    forwarded_proxies: int = 0
    # Bearer token for GET /metrics (store-level business figures); unset, /metrics is off.
    metrics_token: str = ""
    # Where the processes of a host keep their Prometheus samples (PROMETHEUS_MULTIPROC_DIR, as
    # prometheus_client names it; <instance path>/metrics by default, which the web and worker
    # processes of one checkout share). Empty: each process reports only its own.
    metrics_dir: str = ""
    # Sentry's DSN: with it, unhandled errors of the web app and the workers are reported,
    # scrubbed of personal data (app.error_tracking). Empty: no error tracking.
    sentry_dsn: str = ""
    # Incident emails to merchants (their alert address, Settings): the operator's SMTP server.
    # smtp_security: "starttls" (submission, port 587), "tls" (port 465) or "none" (a local relay).
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_from: str = "cartback <alerts@localhost>"
    smtp_security: str = "starttls"
    # Incidents for the operator, as an Alertmanager-compatible webhook (POST, Alertmanager's
    # webhook_config JSON); empty: not sent.
    alertmanager_webhook_url: str = ""
    # Demo only: 60 makes 15 policy minutes pass in 15 wall-clock seconds.
    time_scale: float = 1.0
    # Largest webhook body we accept, in bytes; platform payloads are far smaller.
    max_webhook_bytes: int = 1_048_576
    instance_path: str = "instance"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def link_keys(self) -> list[str]:
        """Keys for itsdangerous: oldest first, the signing key last."""
        return [*reversed(self.secret_key_fallbacks), self.secret_key]

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def production_problem(self) -> str | None:
        """Why these settings must not serve real shoppers, or None.

        The sandbox transport keeps messages in a local outbox (``/outbox``) with a reply form
        that opts shoppers out, made for the demo and for development; in production it would
        show every store's messages to anyone and send nothing to WhatsApp.
        """
        if self.is_production and self.whatsapp_transport == "sandbox":
            return (
                "WHATSAPP_TRANSPORT=sandbox is for development and the demo: its outbox would show every "
                "store's messages to anyone and WhatsApp would receive nothing. In production set "
                "WHATSAPP_TRANSPORT=cloud (or leave it unset) and connect each store's WhatsApp number."
            )
        return None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        environment = env.get("CARTBACK_ENV", "development").strip() or "development"
        if environment not in ENVIRONMENTS:
            raise ConfigError(f"CARTBACK_ENV={environment!r} is not one of {', '.join(ENVIRONMENTS)}.")
        production = environment == "production"
        instance_path = env.get("CARTBACK_INSTANCE_PATH", "instance")

        missing = [
            name
            for name in ("SECRET_KEY", "ENCRYPTION_KEY", "DATABASE_URL", "REDIS_URL", "APP_URL")
            if production and not env.get(name, "").strip()
        ]
        if missing:
            raise ConfigError(
                "Production needs these environment variables set: "
                + ", ".join(missing)
                + ". Generate keys with `cartback keys` and keep them in your secret store."
            )

        dev_secrets: dict[str, str] = {}
        if not production and (not env.get("SECRET_KEY") or not env.get("ENCRYPTION_KEY")):
            dev_secrets = _load_or_create_dev_secrets(Path(instance_path))

        shopify_half = [
            name for name in ("SHOPIFY_API_KEY", "SHOPIFY_API_SECRET") if not env.get(name, "").strip()
        ]
        if len(shopify_half) == 1:
            raise ConfigError(
                f"{shopify_half[0]} is missing: Shopify needs both SHOPIFY_API_KEY (the app's client id) and "
                "SHOPIFY_API_SECRET (its client secret), from the Partner Dashboard; set neither to run without Shopify."
            )

        transport = env.get("WHATSAPP_TRANSPORT") or ("cloud" if production else "sandbox")
        if transport not in TRANSPORTS:
            raise ConfigError(f"WHATSAPP_TRANSPORT={transport!r} is not one of {', '.join(TRANSPORTS)}.")

        try:
            time_scale = float(env.get("CARTBACK_TIME_SCALE", "1"))
        except ValueError:
            raise ConfigError("CARTBACK_TIME_SCALE must be a number, e.g. 60.") from None
        if time_scale <= 0 or (production and time_scale != 1):
            raise ConfigError("CARTBACK_TIME_SCALE must be 1 in production and > 0 elsewhere.")

        encryption_keys = tuple(
            key.strip()
            for key in (env.get("ENCRYPTION_KEY") or dev_secrets["ENCRYPTION_KEY"]).split(",")
            if key.strip()
        )
        for key in encryption_keys:
            try:
                Fernet(key.encode())
            except ValueError:
                raise ConfigError(
                    "ENCRYPTION_KEY must be one or more comma-separated Fernet keys "
                    "(32 url-safe base64-encoded bytes); generate one with `cartback keys`."
                ) from None

        try:
            forwarded_proxies = int(env.get("FORWARDED_PROXIES", "0") or "0")
        except ValueError:
            forwarded_proxies = -1
        if not 0 <= forwarded_proxies <= MAX_FORWARDED_PROXIES:
            raise ConfigError(
                f"FORWARDED_PROXIES must be the number of proxies in front of cartback (0-{MAX_FORWARDED_PROXIES}), e.g. 1 behind "
                "Heroku's router or one load balancer."
            )

        settings = cls(
            environment=environment,
            database_url=env.get("DATABASE_URL") or f"sqlite:///{instance_path}/cartback.db",
            redis_url=env.get("REDIS_URL") or "redis://localhost:6379/0",
            secret_key=env.get("SECRET_KEY") or dev_secrets["SECRET_KEY"],
            secret_key_fallbacks=tuple(
                key.strip() for key in env.get("SECRET_KEY_FALLBACKS", "").split(",") if key.strip()
            ),
            encryption_keys=encryption_keys,
            app_url=(env.get("APP_URL") or "http://localhost:8000").rstrip("/"),
            shopify_api_key=env.get("SHOPIFY_API_KEY", ""),
            shopify_api_secret=env.get("SHOPIFY_API_SECRET", ""),
            shopify_old_api_secret=env.get("SHOPIFY_OLD_API_SECRET", ""),
            whatsapp_app_secret=env.get("WHATSAPP_APP_SECRET", ""),
            whatsapp_verify_token=env.get("WHATSAPP_VERIFY_TOKEN", ""),
            whatsapp_app_id=env.get("WHATSAPP_APP_ID", "").strip(),
            whatsapp_transport=transport,
            whatsapp_graph_url=(env.get("WHATSAPP_GRAPH_URL") or "https://graph.facebook.com/v25.0").rstrip(
                "/"
            ),
            shopify_admin_url_template=env.get("SHOPIFY_ADMIN_URL_TEMPLATE")
            or "https://{shop}/admin/api/{version}",
            time_scale=time_scale,
            metrics_token=env.get("METRICS_TOKEN", "").strip(),
            metrics_dir=env.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
            or str(Path(instance_path) / "metrics"),
            forwarded_proxies=forwarded_proxies,
            instance_path=instance_path,
        )
        problem = settings.production_problem()
        if problem:
            raise ConfigError(problem)
        return settings


def _smtp_port(value: str) -> int:
    if not value.strip():
        return 587
    if not value.strip().isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(f"SMTP_PORT must be a port number (587, 465, 25), not {value!r}")
    return int(value)


def _smtp_security(value: str) -> str:
    security = value.strip().lower() or "starttls"
    if security not in ("starttls", "tls", "none"):
        raise ConfigError(f"SMTP_SECURITY must be starttls, tls or none, not {value!r}")
    return security


def generate_secret_key() -> str:
    return secrets.token_urlsafe(48)


def generate_encryption_key() -> str:
    return Fernet.generate_key().decode()


def _load_or_create_dev_secrets(instance_path: Path) -> dict[str, str]:
    """Development keys, generated once and kept in the instance folder (mode 600).

    Generating them per process would give the web and worker processes different keys, and
    every restart would break links and stored secrets.
    """
    path = instance_path / DEV_SECRETS_FILE
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep:
                values[name.strip()] = value.strip()
    if "SECRET_KEY" in values and "ENCRYPTION_KEY" in values:
        return values
    values.setdefault("SECRET_KEY", generate_secret_key())
    values.setdefault("ENCRYPTION_KEY", generate_encryption_key())
    instance_path.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    path.chmod(0o600)
    return values
