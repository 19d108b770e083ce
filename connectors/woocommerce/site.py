"""A WooCommerce store's address: how it is written here, and whether cartback may call it.

cartback calls the addresses merchants type (its REST API, WordPress's index). In production an
address that is, or resolves to, a private, loopback or link-local one is refused: it would
reach cartback's own network instead of a store. (A name that resolves differently later, DNS
rebinding, is not covered: the REST client does not follow redirects, which closes the rest.)
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit, urlunsplit

# Names that never lead to the public internet.
PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")
MAX_URL_CHARS = 2000
# DNS limits (RFC 1035): 253 characters in a name, 1-63 letters, digits or hyphens a label
# (and underscores, which DNS carries and some hosts' names use).
MAX_HOST_CHARS = 253
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def canonical_site_url(raw: str) -> str:
    """``HTTPS://Shop.Example/`` -> ``https://shop.example``: how a store is named here.

    Scheme and host lower-case, default port and trailing slash dropped, the path kept (a
    WordPress in a subdirectory). ValueError when it is not an http(s) URL with a host.
    """
    raw = raw.strip()
    if any(ch.isspace() or not ch.isprintable() for ch in raw):
        raise ValueError("the store's address must not contain spaces or control characters")
    parts = urlsplit(raw)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("give the store's address, like https://shop.example")
    if "@" in parts.netloc:
        raise ValueError("the store's address must not contain a user name or password")
    host = host_name(parts.hostname)
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the store's address has an invalid port") from None
    default_port = 443 if parts.scheme.lower() == "https" else 80
    netloc = host if port in (None, default_port) else f"{host}:{port}"
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), netloc, path, "", ""))


def host_name(host: str) -> str:
    """A URL's host as it is written here (lower case; IPv6 in brackets); ValueError unless it
    is an IP address or a DNS name once IDNA-encoded (``bücher.example`` is
    ``xn--bcher-kva.example``). Kept as written: stores are known by it, and their webhooks
    name it the same way."""
    host = host.strip("[]").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return f"[{address}]" if address.version == 6 else str(address)
    try:
        ascii_host = host.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError("the store's address does not have a valid host name") from None
    labels = ascii_host.split(".")
    if (
        len(ascii_host) > MAX_HOST_CHARS
        or not all(_HOST_LABEL.match(label) for label in labels)
        or all(label.isdigit() for label in labels)  # 999.1.1.1 is not an address or a name
    ):
        raise ValueError("the store's address does not have a valid host name")
    return host.rstrip(".")


def is_public_host(host: str) -> bool:
    """True when every address the name resolves to is a global one."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(PRIVATE_SUFFIXES):
        return False
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]) for info in found}
    return bool(addresses) and all(
        ipaddress.ip_address(address.split("%")[0]).is_global for address in addresses
    )


def validate_store_url(raw: str, *, public_only: bool) -> str:
    """The store's canonical https address; ValueError with what to fix."""
    if len(raw) > MAX_URL_CHARS:
        raise ValueError("that address is too long to be a store's")
    site = canonical_site_url(raw if "://" in raw else f"https://{raw}")
    parts = urlsplit(site)
    if parts.scheme != "https":
        raise ValueError(
            "the store must be served over https: WooCommerce hands out REST keys only to secure sites, "
            "and cartback sends them nowhere else"
        )
    if public_only and not is_public_host(parts.hostname or ""):
        raise ValueError("that address is not on the public internet")
    return site
