"""The fake site's REST routes: ``/wp-json/`` and ``/wp-json/wc/v3/...``.

The order of checks is WordPress's (``WP_REST_Server::serve_request`` then ``dispatch``):
WooCommerce key authentication (a wrong secret fails every wc/ route), the key's read/write
permission (``rest_pre_dispatch``, before routing), the route (``rest_no_route``), the body
(``rest_invalid_json``) and arguments (``rest_missing_callback_param`` / ``rest_invalid_param``),
the endpoint's permission check (a request without a known key gets
``woocommerce_rest_cannot_*``), then the endpoint itself.
"""

from __future__ import annotations

import re

from tests.fakes.woocommerce_render import general_settings, rest_index
from tests.fakes.woocommerce_rest import (
    CANNOT_CREATE,
    CANNOT_DELETE,
    CANNOT_EDIT,
    CANNOT_LIST,
    CANNOT_VIEW,
    COLLECTION_ARGS,
    FORCE_ARGS,
    STRING,
    Endpoint,
    Handler,
    RestRequest,
    RestResponse,
    check_key_permissions,
)
from tests.fakes.woocommerce_rest_coupons import (
    COUPON_ARGS,
    create_coupon,
    delete_coupon,
    get_coupon,
    list_coupons,
    update_coupon,
)
from tests.fakes.woocommerce_rest_orders import (
    ORDER_ARGS,
    ORDER_COLLECTION_ARGS,
    create_order,
    delete_order,
    get_order,
    list_orders,
    update_order,
)
from tests.fakes.woocommerce_rest_webhooks import (
    WEBHOOK_ARGS,
    WEBHOOK_COLLECTION_ARGS,
    create_webhook,
    delete_webhook,
    get_webhook,
    list_webhooks,
    update_webhook,
)
from tests.fakes.woocommerce_site import Site
from tests.fakes.woocommerce_wp import Arg, RestError, check_args, no_route


def _item_methods(
    get: Handler, update: Handler, delete: Handler, args: dict[str, Arg]
) -> dict[str, Endpoint]:
    """A /{id} route: GET, POST/PUT/PATCH (WP_REST_Server::EDITABLE) and DELETE with ``force``."""
    edit = Endpoint(update, args, CANNOT_EDIT)
    return {
        "GET": Endpoint(get, {}, CANNOT_VIEW),
        "POST": edit,
        "PUT": edit,
        "PATCH": edit,
        "DELETE": Endpoint(delete, FORCE_ARGS, CANNOT_DELETE),
    }


class RestApi:
    """Routes a /wp-json request to its endpoint, with WordPress's checks around it."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.routes: list[tuple[re.Pattern[str], dict[str, Endpoint]]] = []
        self._add("/", {"GET": Endpoint(index, {}, None)})
        self._add("/wc/v3", {"GET": Endpoint(namespace_index, {}, None)})
        self._add("/wc/v3/settings/general", {"GET": Endpoint(list_settings, {}, CANNOT_LIST)})
        # Defaults are the schema's, which WordPress applies to creation (CREATABLE) only.
        create_order_defaults = {
            "status": "pending",
            "customer_id": 0,
            "set_paid": False,
            "currency": site.currency,
        }
        self._add(
            "/wc/v3/orders",
            {
                "GET": Endpoint(list_orders, ORDER_COLLECTION_ARGS, CANNOT_LIST),
                "POST": Endpoint(create_order, ORDER_ARGS, CANNOT_CREATE, create_order_defaults),
            },
        )
        self._add(
            r"/wc/v3/orders/(?P<id>\d+)", _item_methods(get_order, update_order, delete_order, ORDER_ARGS)
        )
        coupon_defaults = {
            "discount_type": "fixed_cart",
            "individual_use": False,
            "free_shipping": False,
            "exclude_sale_items": False,
        }
        self._add(
            "/wc/v3/coupons",
            {
                "GET": Endpoint(list_coupons, {**COLLECTION_ARGS, "code": STRING}, CANNOT_LIST),
                "POST": Endpoint(
                    create_coupon,
                    {**COUPON_ARGS, "code": {**STRING, "required": True}},
                    CANNOT_CREATE,
                    coupon_defaults,
                ),
            },
        )
        self._add(
            r"/wc/v3/coupons/(?P<id>\d+)",
            _item_methods(get_coupon, update_coupon, delete_coupon, COUPON_ARGS),
        )
        # array_merge( schema args, topic + delivery_url ): delivery_url is readonly in the schema,
        # so it comes last, and both are required on creation.
        create_webhook_args = {
            **WEBHOOK_ARGS,
            "topic": {**STRING, "required": True},
            "delivery_url": {**STRING, "required": True},
        }
        self._add(
            "/wc/v3/webhooks",
            {
                "GET": Endpoint(list_webhooks, WEBHOOK_COLLECTION_ARGS, CANNOT_LIST),
                "POST": Endpoint(create_webhook, create_webhook_args, CANNOT_CREATE, {"status": "active"}),
            },
        )
        self._add(
            r"/wc/v3/webhooks/(?P<id>\d+)",
            _item_methods(get_webhook, update_webhook, delete_webhook, WEBHOOK_ARGS),
        )

    def _add(self, pattern: str, methods: dict[str, Endpoint]) -> None:
        self.routes.append((re.compile(f"^{pattern}$"), methods))

    def serve(self, request: RestRequest, auth_error: RestError | None) -> RestResponse:
        try:
            return self._serve(request, auth_error)
        except RestError as error:
            return RestResponse(error.status, error.body())

    def _serve(self, request: RestRequest, auth_error: RestError | None) -> RestResponse:
        is_wc = request.route.startswith(("/wc/", "/wc-"))
        if auth_error is not None and is_wc:
            raise auth_error
        if request.key is not None and is_wc:
            check_key_permissions(request.key, request.method)
        for pattern, methods in self.routes:
            matched = pattern.match(request.route)
            if matched is None:
                continue
            endpoint = methods.get(request.method)
            if endpoint is None:
                break
            if request.invalid_json:
                raise RestError(
                    "rest_invalid_json",
                    "Invalid JSON body passed.",
                    400,
                    json_error_code=4,
                    json_error_message="Syntax error",
                )
            body = request.body if isinstance(request.body, dict) else {}
            # WP_REST_Request::get_parameter_order: JSON body, then GET, then URL, then defaults.
            request.params = {**endpoint.defaults, **matched.groupdict(), **request.query, **body}
            check_args(endpoint.args, request.params)
            if endpoint.permission is not None and (request.key is None or not is_wc):
                code, message = endpoint.permission
                raise RestError(code, message, 401)
            return endpoint.handler(self.site, request)
        raise no_route()


def index(site: Site, request: RestRequest) -> RestResponse:
    return RestResponse(
        200, rest_index(site, ["/", "/wc/v3", "/wc/v3/orders", "/wc/v3/coupons", "/wc/v3/webhooks"])
    )


def namespace_index(site: Site, request: RestRequest) -> RestResponse:
    """GET /wp-json/wc/v3: the namespace and its routes (cut down to what this fake serves)."""
    routes = ["/wc/v3", "/wc/v3/orders", "/wc/v3/orders/(?P<id>[\\d]+)", "/wc/v3/coupons",
              "/wc/v3/coupons/(?P<id>[\\d]+)", "/wc/v3/webhooks", "/wc/v3/webhooks/(?P<id>[\\d]+)",
              "/wc/v3/settings/general"]  # fmt: skip
    return RestResponse(
        200,
        {
            "namespace": "wc/v3",
            "routes": {route: {"namespace": "wc/v3"} for route in routes},
            "_links": {"up": [{"href": site.rest_url("/")}]},
        },
    )


def list_settings(site: Site, request: RestRequest) -> RestResponse:
    return RestResponse(200, general_settings(site))
