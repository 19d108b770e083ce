"""How the fake Shopify speaks HTTP: reading request bodies, answering JSON."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from werkzeug.wrappers import Request, Response


def read_body(request: Request) -> Any:
    """JSON or form fields as sent; None when the body is neither (or malformed)."""
    raw = request.get_data(cache=True)
    if request.mimetype == "application/json":
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
    if request.mimetype == "application/x-www-form-urlencoded":
        return dict(parse_qsl(raw.decode(errors="replace"), keep_blank_values=True))
    return None


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")
