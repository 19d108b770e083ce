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

from connectors.untrusted_json import load_untrusted_json


def read_raw_body(limit: int) -> bytes | None:
    """The request body exactly as sent (signatures cover these bytes), or None when it is
    larger than ``limit``: read at most one byte more, whatever Content-Length claims."""
    if request.content_length is not None and request.content_length > limit:
        return None
    raw = request.stream.read(limit + 1)
    return None if len(raw) > limit else raw


class GuardedJSONProvider(DefaultJSONProvider):
    """Flask's JSON with the untrusted-body checks on the way in.

    ``MalformedPayload`` is a ``ValueError``, which ``request.get_json`` already turns into a
    400 (or ``None`` with ``silent=True``); the reason goes in the 400's description.
    """

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return load_untrusted_json(s, **kwargs)
