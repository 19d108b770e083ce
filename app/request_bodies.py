"""Reading request bodies from strangers: bounded in size before reading, checked before parsing.

Every view that reads a body goes through here or through Flask's ``request.get_json``, which
this app routes through ``connectors.untrusted_json`` (``GuardedJSONProvider``): a body that is
too big, not UTF-8, nested absurdly deep or holding a lone surrogate is a 4xx with a reason,
never a ``RecursionError`` or ``UnicodeEncodeError`` escaping as a 500.
"""

from __future__ import annotations

from typing import Any

from flask import request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import ClientDisconnected
from werkzeug.wsgi import get_content_length

from connectors.untrusted_json import load_untrusted_json


def read_raw_body(limit: int) -> bytes | None:
    """The Flask request's body: ``read_body``."""
    return read_body(request.environ, limit)


def read_body(environ: dict[str, Any], limit: int) -> bytes | None:
    """The body exactly as sent (signatures cover these bytes), or None when it is larger than
    ``limit``: at most one byte more is read, whatever Content-Length claims.

    Read from the WSGI environ (app.webhooks.platforms answers before Flask), by werkzeug's
    rule for ``request.stream``: as long as Content-Length says, else to its end where the
    server marks a chunked body terminated (gunicorn does), else nothing. A body that ends
    before its Content-Length is a 400 (``ClientDisconnected``), never judged cut short."""
    length = get_content_length(environ)
    if length is not None and length > limit:
        return None
    stream = environ["wsgi.input"]
    if length is None:
        raw: bytes = stream.read(limit + 1) if environ.get("wsgi.input_terminated") else b""
        return None if len(raw) > limit else raw
    pieces, missing = [], length
    while missing > 0:
        piece = stream.read(missing)
        if not piece:
            raise ClientDisconnected()
        pieces.append(piece)
        missing -= len(piece)
    return b"".join(pieces)


class GuardedJSONProvider(DefaultJSONProvider):
    """Flask's JSON with the untrusted-body checks on the way in.

    ``MalformedPayload`` is a ``ValueError``, which ``request.get_json`` already turns into a
    400 (or ``None`` with ``silent=True``); the reason goes in the 400's description.
    """

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return load_untrusted_json(s, **kwargs)
