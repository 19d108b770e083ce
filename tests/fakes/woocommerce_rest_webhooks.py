"""The fake site's /wc/v3/webhooks endpoints, as WC_REST_Webhooks_Controller (v3 over v2 over v1)
handles them: the ping after creation, a posted status ignored on creation, no secret shown."""

from __future__ import annotations

import secrets
import string
from urllib.parse import urlsplit

from tests.fakes.woocommerce_render import webhook_json
from tests.fakes.woocommerce_rest import (
    COLLECTION_ARGS,
    STRING,
    RestRequest,
    RestResponse,
    id_list,
    paged,
    sorted_items,
    to_int,
)
from tests.fakes.woocommerce_site import Site
from tests.fakes.woocommerce_state import WEBHOOK_STATUSES, Webhook, is_valid_topic
from tests.fakes.woocommerce_wp import Arg, RestError, to_boolean

WEBHOOK_ARGS: dict[str, Arg] = {
    "name": STRING,
    "status": {"type": "string", "enum": list(WEBHOOK_STATUSES)},
    "topic": STRING,
    "secret": STRING,
}
WEBHOOK_COLLECTION_ARGS: dict[str, Arg] = {
    **{
        k: v
        for k, v in COLLECTION_ARGS.items()
        if k not in ("modified_after", "modified_before", "dates_are_gmt")
    },
    "orderby": {"type": "string", "enum": ["date", "id", "title"]},
    "status": {"type": "string", "enum": ["all", *WEBHOOK_STATUSES]},
}

SECRET_ALPHABET = string.ascii_letters + string.digits + "!@#$%^&*()-_ []{}<>~`+=,.;:/?|"


def is_valid_url(url: str) -> bool:
    """wc_is_valid_url: http(s):// and FILTER_VALIDATE_URL."""
    if not url.startswith(("http://", "https://")):
        return False
    parts = urlsplit(url)
    return bool(parts.hostname) and " " not in url


def list_webhooks(site: Site, request: RestRequest) -> RestResponse:
    status = request.params.get("status") or "all"
    hooks = [w for w in site.webhooks.values() if status == "all" or w.status == status]
    include, exclude = id_list(request.params.get("include")), id_list(request.params.get("exclude"))
    hooks = [w for w in hooks if (not include or w.id in include) and w.id not in exclude]
    if request.params.get("search"):
        hooks = [w for w in hooks if str(request.params["search"]).lower() in w.name.lower()]
    hooks = sorted_items(
        hooks,
        request,
        {"date": lambda w: w.date_created, "id": lambda w: w.id, "title": lambda w: w.name},
        "date",
    )
    return paged(site, request, hooks, lambda w: webhook_json(site, w))


def _webhook(site: Site, request: RestRequest) -> Webhook:
    webhook = site.webhooks.get(to_int(request.params.get("id")))
    if webhook is None:
        raise RestError("woocommerce_rest_shop_webhook_invalid_id", "ID is invalid.", 400)
    return webhook


def get_webhook(site: Site, request: RestRequest) -> RestResponse:
    return RestResponse(200, webhook_json(site, _webhook(site, request)))


def create_webhook(site: Site, request: RestRequest) -> RestResponse:
    params = request.params
    if params.get("id"):
        raise RestError("woocommerce_rest_shop_webhook_exists", "Cannot create existing shop_webhook.", 400)
    topic = str(params.get("topic") or "")
    if not topic or not is_valid_topic(topic.lower()):
        raise RestError(
            "woocommerce_rest_shop_webhook_invalid_topic", "Webhook topic is required and must be valid.", 400
        )
    url = str(params.get("delivery_url") or "")
    if not url or not is_valid_url(url):
        raise RestError(
            "woocommerce_rest_shop_webhook_invalid_delivery_url",
            "Webhook delivery URL must be a valid URL starting with http:// or https://.",
            400,
        )
    now = site.now()
    webhook = Webhook(
        id=site.next_webhook_id(),
        name=str(params.get("name") or f"Webhook created on {now.strftime('%b %d, %Y @ %I:%M %p')}"),
        status="active",  # prepare_item_for_database always publishes: the posted status is ignored
        topic=topic if is_valid_topic(topic) else "",  # set_topic checks the topic as given
        delivery_url=url,
        secret=str(params.get("secret") or "".join(secrets.choice(SECRET_ALPHABET) for _ in range(50))),
        user_id=request.key.user_id if request.key else site.admin_user_id,
        date_created=now,
        date_modified=now,
    )
    site.webhooks[webhook.id] = webhook
    site.fire("ping", webhook.id)  # create_item sends the ping after building the 201 and ignores the result
    response = RestResponse(201, webhook_json(site, webhook))
    response.headers.append(("Location", site.rest_url(f"/wc/v3/webhooks/{webhook.id}")))
    return response


def update_webhook(site: Site, request: RestRequest) -> RestResponse:
    params = request.params
    webhook = _webhook(site, request)
    url_changed = False
    if params.get("topic"):
        if not is_valid_topic(str(params["topic"]).lower()):
            raise RestError(
                "woocommerce_rest_shop_webhook_invalid_topic", "Webhook topic must be valid.", 400
            )
        webhook.topic = str(params["topic"]) if is_valid_topic(str(params["topic"])) else ""
    if params.get("delivery_url"):
        if not is_valid_url(str(params["delivery_url"])):
            raise RestError(
                "woocommerce_rest_shop_webhook_invalid_delivery_url",
                "Webhook delivery URL must be a valid URL starting with http:// or https://.",
                400,
            )
        url_changed = params["delivery_url"] != webhook.delivery_url
        webhook.delivery_url = str(params["delivery_url"])
    if params.get("secret"):
        webhook.secret = str(params["secret"])
    if params.get("status"):
        webhook.status = str(params["status"]).lower()  # failure_count is not reset
    if params.get("name"):
        webhook.name = str(params["name"])
    save_webhook(site, webhook, url_changed=url_changed)
    return RestResponse(200, webhook_json(site, webhook))


def save_webhook(site: Site, webhook: Webhook, *, url_changed: bool = False) -> None:
    """WC_Webhook_Data_Store::update: an active webhook pings while a ping is pending."""
    webhook.date_modified = site.now()
    if webhook.status == "active" and (url_changed or webhook.pending_delivery):
        site.fire("ping", webhook.id)


def delete_webhook(site: Site, request: RestRequest) -> RestResponse:
    if not to_boolean(request.params.get("force", False)):
        raise RestError("woocommerce_rest_trash_not_supported", "Webhooks do not support trashing.", 501)
    webhook = site.webhooks.get(to_int(request.params.get("id")))
    if webhook is None:
        raise RestError("woocommerce_rest_shop_webhook_invalid_id", "Invalid ID.", 404)
    body = webhook_json(site, webhook)
    del site.webhooks[webhook.id]
    return RestResponse(200, body)
