"""A small client for Meta's Graph API: one place that builds URLs, sends the token and
reads Graph's error body (``{"error": {"code", "error_subcode", "message", "error_data"}}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

# Graph calls made for the merchant (checks, template pushes): generous, they are rare.
ADMIN_TIMEOUT = httpx.Timeout(20.0, connect=5.0)


@dataclass(frozen=True)
class GraphError(Exception):
    """Graph refused the call; ``code`` is Meta's error code (190 token, 100 parameter, ...)."""

    http_status: int
    code: int | None
    subcode: int | None
    message: str
    details: str | None = None

    def __str__(self) -> str:
        what = f"Meta error {self.code}" if self.code is not None else f"HTTP {self.http_status}"
        detail = f" ({self.details})" if self.details and self.details not in self.message else ""
        return f"{what}: {self.message}{detail}"


class GraphUnreachable(Exception):
    """No answer from Graph (network, timeout): nothing is known about the call."""


def parse_error(response: httpx.Response) -> GraphError:
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return GraphError(response.status_code, None, None, response.reason_phrase or "no error body")
    data = error.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    code, subcode = error.get("code"), error.get("error_subcode")
    return GraphError(
        response.status_code,
        code if isinstance(code, int) else None,
        subcode if isinstance(subcode, int) else None,
        str(error.get("message") or "no message"),
        str(details) if details else None,
    )


class GraphClient:
    def __init__(self, base_url: str, access_token: str, http: httpx.Client) -> None:
        self._base = base_url.rstrip("/")
        self._token = access_token
        self._http = http

    @property
    def token(self) -> str:
        return self._token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {**self._headers(), **kwargs.pop("headers", {})}
        try:
            response = self._http.request(
                method, f"{self._base}/{path.lstrip('/')}", headers=headers, timeout=ADMIN_TIMEOUT, **kwargs
            )
        except httpx.HTTPError as exc:
            raise GraphUnreachable(f"{type(exc).__name__} calling the Graph API") from None
        except (UnicodeEncodeError, httpx.InvalidURL):
            # A stored token or id that cannot be sent at all: Meta would refuse it too.
            raise GraphError(
                400, None, None, "the stored token or ids cannot be sent to Meta; connect again"
            ) from None
        if response.status_code >= 400:
            raise parse_error(response)
        try:
            return response.json()
        except ValueError:
            raise GraphError(
                response.status_code, None, None, "the Graph API answered without JSON"
            ) from None

    def get(self, path: str, **params: str) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, json: dict[str, Any] | None = None, **params: str) -> Any:
        return self.request("POST", path, json=json, params=params)
