"""The WordPress and WooCommerce plumbing around the fake site's REST endpoints.

Requests and responses, WooCommerce key authentication (class-wc-rest-authentication.php), the
arguments every collection shares (WC_REST_CRUD_Controller::get_collection_params), and the
paging, sorting and date filtering the CRUD controllers apply. The routes live in
``woocommerce_routes``; the endpoints in ``woocommerce_rest_orders``, ``_coupons``, ``_webhooks``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from tests.fakes.woocommerce_site import Site
from tests.fakes.woocommerce_state import ApiKey
from tests.fakes.woocommerce_wp import Arg, RestError, parse_list, query_datetime, to_boolean

# --- arguments (the controllers' schemas, as WordPress checks them) -------------------------

INTEGER: Arg = {"type": "integer"}
STRING: Arg = {"type": "string"}
BOOLEAN: Arg = {"type": "boolean"}
ID_LIST: Arg = {"type": "array", "items": INTEGER, "validate": False}  # sanitize_callback only
DATE_TIME: Arg = {"type": "string", "format": "date-time"}
META: Arg = {
    "type": "array",
    "items": {"type": "object", "properties": {"id": INTEGER, "key": STRING, "value": {"type": "mixed"}}},
}
COLLECTION_ARGS: dict[str, Arg] = {
    "context": {"type": "string", "enum": ["view", "edit"]},
    "page": {"type": "integer", "minimum": 1},
    "per_page": {"type": "integer", "minimum": 1, "maximum": 100},
    "search": STRING,
    "after": DATE_TIME,
    "before": DATE_TIME,
    "modified_after": DATE_TIME,
    "modified_before": DATE_TIME,
    "dates_are_gmt": BOOLEAN,
    "exclude": ID_LIST,
    "include": ID_LIST,
    "offset": INTEGER,
    "order": {"type": "string", "enum": ["asc", "desc"]},
    "orderby": {"type": "string", "enum": ["date", "id", "include", "title", "slug", "modified"]},
}
FORCE_ARGS: dict[str, Arg] = {"force": BOOLEAN}

# --- requests and responses -----------------------------------------------------------------


@dataclass
class RestRequest:
    method: str
    route: str  # after /wp-json, e.g. /wc/v3/orders/12
    query: dict[str, str]
    body: Any
    key: ApiKey | None = None
    invalid_json: bool = False  # the body claimed to be JSON and was not
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RestResponse:
    status: int
    body: Any
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Site, RestRequest], RestResponse]


@dataclass(frozen=True)
class Endpoint:
    handler: Handler
    args: dict[str, Arg]
    permission: tuple[str, str] | None  # the error a request without a key gets; None: public
    defaults: dict[str, Any] = field(default_factory=dict)


CANNOT_LIST = ("woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")
CANNOT_VIEW = ("woocommerce_rest_cannot_view", "Sorry, you cannot view this resource.")
CANNOT_CREATE = ("woocommerce_rest_cannot_create", "Sorry, you are not allowed to create resources.")
CANNOT_EDIT = ("woocommerce_rest_cannot_edit", "Sorry, you are not allowed to edit this resource.")
CANNOT_DELETE = ("woocommerce_rest_cannot_delete", "Sorry, you are not allowed to delete this resource.")


def authenticate(
    site: Site, query: dict[str, str], authorization: str | None
) -> tuple[ApiKey | None, str | None, RestError | None]:
    """WC_REST_Authentication::perform_basic_authentication (the site is served over SSL).

    Returns (key, how the credentials came, error). An unknown key is not an error here: the
    request simply runs as a guest and fails the endpoint's permission check.
    """
    consumer_key = consumer_secret = ""
    carried: str | None = None
    if query.get("consumer_key") and query.get("consumer_secret"):
        consumer_key, consumer_secret, carried = query["consumer_key"], query["consumer_secret"], "query"
    elif authorization and authorization[:6].lower() == "basic ":
        try:
            user, _, password = (
                base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            user = password = ""
        if user and password:
            consumer_key, consumer_secret, carried = user, password, "basic"
    if not consumer_key or not consumer_secret:
        return None, carried, None
    key = site.keys.get(consumer_key)
    if key is None:
        return None, carried, None
    if not hmac.compare_digest(key.consumer_secret.encode(), consumer_secret.encode()):
        return (
            None,
            carried,
            RestError("woocommerce_rest_authentication_error", "Consumer secret is invalid.", 401),
        )
    return key, carried, None


def check_key_permissions(key: ApiKey, method: str) -> None:
    """WC_REST_Authentication::check_permissions."""
    if method in ("GET", "HEAD") and key.permissions not in ("read", "read_write"):
        raise RestError(
            "woocommerce_rest_authentication_error",
            "The API key provided does not have read permissions.",
            401,
        )
    if method in ("POST", "PUT", "PATCH", "DELETE") and key.permissions not in ("write", "read_write"):
        raise RestError(
            "woocommerce_rest_authentication_error",
            "The API key provided does not have write permissions.",
            401,
        )


def to_int(value: Any, default: int = 0) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def id_list(value: Any) -> list[int]:
    """wp_parse_id_list: absint each, unique."""
    return list(dict.fromkeys(abs(to_int(v)) for v in parse_list(value))) if value not in (None, "") else []


def paged(site: Site, request: RestRequest, items: list[Any], render: Callable[[Any], Any]) -> RestResponse:
    per_page = to_int(request.params.get("per_page"), 10) or 10
    page = max(1, to_int(request.params.get("page"), 1))
    offset = request.params.get("offset")
    start = to_int(offset) if offset not in (None, "") else (page - 1) * per_page
    total = len(items)
    pages = math.ceil(total / per_page)
    response = RestResponse(200, [render(item) for item in items[start : start + per_page]])
    response.headers += [("X-WP-Total", str(total)), ("X-WP-TotalPages", str(pages))]
    base = site.rest_url(request.route)
    query = dict(request.query)  # all of them, query-string keys too, as add_query_arg does
    if page > 1:
        response.headers.append(
            ("Link", f'<{base}?{urlencode({**query, "page": min(page - 1, pages)})}>; rel="prev"')
        )
    if pages > page:
        response.headers.append(("Link", f'<{base}?{urlencode({**query, "page": page + 1})}>; rel="next"'))
    return response


def sorted_items(
    items: list[Any], request: RestRequest, keys: dict[str, Callable[[Any], Any]], default: str
) -> list[Any]:
    orderby = request.params.get("orderby") or default
    if orderby == "include" and request.params.get("include"):
        wanted = id_list(request.params["include"])
        return sorted(items, key=lambda item: wanted.index(item.id) if item.id in wanted else len(wanted))
    key = keys.get(orderby, keys["id"])
    return sorted(
        items, key=lambda item: (key(item), item.id), reverse=request.params.get("order", "desc") != "asc"
    )


def date_window(
    site: Site, request: RestRequest, created: Callable[[Any], datetime], modified: Callable[[Any], datetime]
) -> Callable[[Any], bool]:
    """The date_query WC_REST_CRUD_Controller::prepare_objects_query builds (bounds exclusive)."""
    gmt = to_boolean(request.params.get("dates_are_gmt", False))

    def column(moment: datetime) -> datetime:
        return (moment.astimezone(site.timezone) if not gmt else moment).replace(tzinfo=None)

    bounds = []
    for name, getter, after in (
        ("after", created, True),
        ("before", created, False),
        ("modified_after", modified, True),
        ("modified_before", modified, False),
    ):
        if request.params.get(name):
            bounds.append((getter, after, query_datetime(str(request.params[name]), site.timezone)))

    def inside(item: Any) -> bool:
        for getter, after, bound in bounds:
            value = column(getter(item))
            if (after and not value > bound) or (not after and not value < bound):
                return False
        return True

    return inside


def require_id(site_items: dict[int, Any], request: RestRequest, post_type: str, status: int) -> Any:
    item = site_items.get(to_int(request.params.get("id")))
    if item is None:
        raise RestError(f"woocommerce_rest_{post_type}_invalid_id", "Invalid ID.", status)
    return item
