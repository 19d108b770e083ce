"""WooCommerce's app authorization endpoint, /wc-auth/v1/{login,authorize,access_granted}, as
includes/class-wc-auth.php implements it, for a merchant who is already logged in as an admin.

Every route first runs ``make_validation`` (all five parameters, the scope, both URLs, an https
callback_url); a failure is a 401 "Access denied" page saying ``Error: <message>.``. Approving
creates a key pair, POSTs it as JSON to the callback_url and requires exactly 200; anything else
deletes the key again and shows the error page instead of redirecting to return_url.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from tests.fakes.woocommerce_site import Site
from tests.fakes.woocommerce_state import ApiKey, ApprovalResult

AUTH_PARAMS = ("app_name", "user_id", "return_url", "callback_url", "scope")
SCOPES = ("read", "write", "read_write")
SEND_FAILED = "An error occurred in the request and at the time were unable to send the consumer data"


class AuthError(Exception):
    pass


def formatted_url(url: str) -> str:
    """WC_Auth::get_formatted_url: urldecode, and https:// when there is no scheme."""
    url = unquote(url)
    return url if "://" in url else "https://" + url


def _filter_validate_url(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.scheme) and bool(parts.netloc) and " " not in url


def validate(params: Mapping[str, str]) -> dict[str, str]:
    """WC_Auth::make_validation; raises AuthError with WooCommerce's message."""
    for name in AUTH_PARAMS:
        if not params.get(name):
            raise AuthError(f"Missing parameter {name}")
    if params["scope"] not in SCOPES:
        raise AuthError(f"Invalid scope {params['scope']}")
    for name in ("return_url", "callback_url"):
        url = formatted_url(params[name])
        if not _filter_validate_url(url):
            raise AuthError(f"The {url} is not a valid URL")
    if not formatted_url(params["callback_url"]).lower().startswith("https://"):
        raise AuthError("The callback_url needs to be over SSL")
    return {name: params[name] for name in AUTH_PARAMS}


def add_query_arg(url: str, **args: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in args]
    return urlunsplit(parts._replace(query=urlencode([*query, *args.items()])))


def deny_url(params: Mapping[str, str]) -> str:
    """The Deny link on the grant-access page: return_url with success=0."""
    return add_query_arg(formatted_url(params["return_url"]), success="0", user_id=params["user_id"])


def error_page(text: str) -> str:
    """wp_die( 'Error: %s.', 'Access denied', array( 'response' => 401 ) ): ``text`` is the 'Error: ...' line."""
    return (
        "<!DOCTYPE html><html><head><title>Access denied</title></head>"
        f'<body id="error-page"><div class="wp-die-message">{html.escape(text)}</div></body></html>'
    )


def error_text(message: str) -> str:
    return f"Error: {message}."


def grant_access_page(site: Site, params: Mapping[str, str], nonce: str) -> str:
    """auth/form-grant-access.php, reduced to what a test needs: the app, scope and two links."""
    granted = f"{site.url}/wc-auth/v1/access_granted?{urlencode({**params, 'wc_auth_nonce': nonce})}"
    return (
        f"<!DOCTYPE html><html><head><title>{html.escape(site.name)} &rsaquo; Grant access</title></head><body>"
        f"<p>{html.escape(params['app_name'])} would like to connect to your store.</p>"
        f"<p>Permissions: {html.escape(params['scope'])}</p>"
        f'<a class="button wc-auth-approve" href="{html.escape(granted)}">Approve</a> '
        f'<a class="button wc-auth-deny" href="{html.escape(deny_url(params))}">Deny</a>'
        "</body></html>"
    )


def consumer_data(site: Site, params: Mapping[str, str]) -> tuple[ApiKey, bytes, dict[str, str]]:
    """WC_Auth::create_keys, and the body and headers post_consumer_data sends."""
    key = site.add_key(params["scope"], f"{params['app_name'][:170]} - API ({site.now():%Y-%m-%d %H:%M:%S})")
    data: dict[str, Any] = {
        "key_id": key.key_id,
        "user_id": params["user_id"],  # echoed as given (a string), not the key owner's id
        "consumer_key": key.consumer_key,
        "consumer_secret": key.consumer_secret,
        "key_permissions": key.permissions,
    }
    body = json.dumps(data, separators=(",", ":")).replace("/", "\\/").encode()  # wp_json_encode
    headers = {"Content-Type": "application/json;charset=UTF-8", "User-Agent": f"WordPress/6.8.2; {site.url}"}
    return key, body, headers


def finish_grant(
    site: Site, params: Mapping[str, str], key: ApiKey, status: int, error: str | None
) -> ApprovalResult:
    """post_consumer_data's verdict: exactly 200, or the key is deleted and an error page shown."""
    if status != 200:
        site.keys.pop(key.consumer_key, None)  # maybe_delete_key
        message = error if status == 0 and error else SEND_FAILED
        return ApprovalResult(None, None, status, error_text(message), revoked=True)
    redirect = add_query_arg(formatted_url(params["return_url"]), success="1", user_id=params["user_id"])
    return ApprovalResult(redirect, key, status, None)
