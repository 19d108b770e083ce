"""Where Shopify requests go: the real ``{shop}.myshopify.com``, or a stand-in for tests.

``shopifyapp`` builds every URL as ``https://{shop}.myshopify.com/admin/...`` itself. The
``SHOPIFY_ADMIN_URL_TEMPLATE`` setting (``https://{shop}/admin/api/{version}`` by default) lets
an operator or a test point those requests elsewhere: this transport rewrites the origin of
each ``*.myshopify.com`` request to the template's, keeping path and query. With the default
template nothing is rewritten.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

DEFAULT_ADMIN_URL_TEMPLATE = "https://{shop}/admin/api/{version}"
ADMIN_SUFFIX = "/admin/api/{version}"
MYSHOPIFY_SUFFIX = ".myshopify.com"


class TemplateError(ValueError):
    pass


def shop_origin_template(admin_url_template: str) -> str:
    """``http://127.0.0.1:9000/shops/{shop}/admin/api/{version}`` -> ``http://127.0.0.1:9000/shops/{shop}``."""
    if not admin_url_template.endswith(ADMIN_SUFFIX) or "{shop}" not in admin_url_template:
        raise TemplateError(
            "SHOPIFY_ADMIN_URL_TEMPLATE must contain {shop} and end with /admin/api/{version}, "
            f"e.g. {DEFAULT_ADMIN_URL_TEMPLATE}"
        )
    return admin_url_template[: -len(ADMIN_SUFFIX)]


class ShopifyRoutingTransport(httpx.BaseTransport):
    """Sends ``https://{shop}.myshopify.com/...`` to the configured origin for that shop."""

    def __init__(self, admin_url_template: str, inner: httpx.BaseTransport | None = None) -> None:
        self._origin_template = shop_origin_template(admin_url_template)
        self._rewrites = admin_url_template != DEFAULT_ADMIN_URL_TEMPLATE
        self._inner = inner or httpx.HTTPTransport()

    def target_url(self, url: str) -> str:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if not self._rewrites or not host.endswith(MYSHOPIFY_SUFFIX):
            return url
        origin = self._origin_template.format(shop=host)
        return origin + parts.path + (f"?{parts.query}" if parts.query else "")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        target = self.target_url(str(request.url))
        if target != str(request.url):
            headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "host"]
            request = httpx.Request(
                request.method, target, headers=headers, content=request.read(), extensions=request.extensions
            )
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()
