"""JSON from strangers: the checks every body passes before any parser sees it.

Webhook bodies, the settings API and the demo store's API all read JSON written by someone
else. Python's ``json`` (and any library that calls it, ``shopifyapp``'s webhook check among
them) recurses once per nesting level, decodes bytes with ``surrogatepass`` and turns
``"\\ud800"`` into a string no encoder can write back: a body nested 20,000 deep or holding a
lone surrogate used to become a ``RecursionError`` or a ``UnicodeEncodeError`` deep in a view,
that is a 500 and a traceback. Here such a body is a ``MalformedPayload`` (a 4xx with a reason)
before anything else reads it:

- the bytes must be strict UTF-8 (encoded surrogates such as ``ED A0 80`` are not UTF-8);
- arrays and objects nest at most ``MAX_JSON_DEPTH`` deep (counted without parsing);
- no number is longer than ``MAX_NUMBER_DIGITS`` digits (Python refuses to turn more than 4,300
  into an int, with a ``ValueError`` a library may not expect);
- no ``\\u`` escape may leave a lone UTF-16 surrogate, and none may be NUL (PostgreSQL cannot
  store NUL in text, and no platform puts one in a name or an address).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from connectors.base import MalformedPayload

# The platforms' bodies nest about 6 deep (a Shopify checkout's line -> discount allocation
# -> amount set -> money); 64 leaves room for anything real and far less than Python's
# recursion limit (1,000), which a library's own parse would otherwise hit first.
MAX_JSON_DEPTH = 64

# Platform ids are at most 20 digits and amounts far fewer; 100 is generous and far below the
# 4,300 digits at which int() refuses.
MAX_NUMBER_DIGITS = 100

# The checks run on every delivery, so they stay in C where they can (bench (e) measures them):
# an escape (backslash and the character after it) never delimits a string; once they are gone,
# every quote does, and what lies outside the 1st-2nd, 3rd-4th, ... quotes is structure. Where a
# body is not JSON the two views part only after its first error, past which no parser goes.
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_ALL_BUT_BRACKETS_AND_QUOTES = bytes(range(256)).translate(None, b'[]{}"')
_DIGITS_AS_ZERO = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
_LONG_DIGIT_RUN = b"0" * (MAX_NUMBER_DIGITS + 1)
# Escapes that may decode to a lone surrogate, or to NUL; rare in real bodies (PHP's
# json_encode writes emoji as surrogate pairs), so only a hit pays for the exact check.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)")


def _outside_strings(raw: bytes, *, brackets_only: bool = False) -> bytes:
    """The body without its strings (only its brackets, with ``brackets_only``)."""
    unescaped = _ESCAPE.sub(b"", raw)
    if brackets_only:
        # Fewer, shorter pieces to split: the quotes still mark where strings are.
        unescaped = unescaped.translate(None, _ALL_BUT_BRACKETS_AND_QUOTES)
    return b"".join(unescaped.split(b'"')[0::2])


def nesting_depth(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep arrays and objects nest, counted up to ``limit + 1`` at most."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    depth = deepest = 0
    for bracket in _outside_strings(raw, brackets_only=True):
        if bracket in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif bracket in b"]}":
            depth -= 1
    return deepest


def checked_json_text(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> str:
    """The body as text, once it is strict UTF-8, nests no deeper than ``max_depth`` and holds
    no absurdly long number. Parses nothing: safe before a library's own parse."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedPayload(f"body is not UTF-8 text (invalid byte at offset {exc.start})") from None
    else:
        text = raw
        if not _encodable(text):
            raise MalformedPayload("body is not UTF-8 text (it holds a lone surrogate)")
        raw = text.encode("utf-8")
    # A byte-order mark is noise some PHP hosts print first; json.loads(bytes) skipped it too.
    text = text.removeprefix("\ufeff")
    # Fewer openings than the limit cannot nest deeper than it (strings only add to the count).
    if raw.count(b"[") + raw.count(b"{") > max_depth and nesting_depth(raw, max_depth) > max_depth:
        raise MalformedPayload(f"body nests deeper than {max_depth} levels")
    # A long digit run inside a string is text: only one outside strings is a number.
    if _LONG_DIGIT_RUN in raw.translate(_DIGITS_AS_ZERO) and _LONG_DIGIT_RUN in _outside_strings(
        raw
    ).translate(_DIGITS_AS_ZERO):
        raise MalformedPayload(f"body holds a number longer than {MAX_NUMBER_DIGITS} digits")
    return text


def load_untrusted_json(
    raw: bytes | str,
    *,
    max_depth: int = MAX_JSON_DEPTH,
    parse_float: Callable[[str], Any] | None = None,
    parse_int: Callable[[str], Any] | None = None,
) -> Any:
    """Parse a body from outside; ``MalformedPayload`` (a ``ValueError``) says what is wrong."""
    text = checked_json_text(raw, max_depth=max_depth)
    try:
        value = json.loads(text, parse_float=parse_float, parse_int=parse_int)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise MalformedPayload(f"body is not valid JSON ({_why(exc)})") from None
    except ValueError as exc:  # parse_float / parse_int refusing a number
        raise MalformedPayload(f"body is not acceptable JSON ({exc})") from None
    if _SUSPECT_ESCAPE.search(text):
        _refuse_unstorable_strings(value)
    return value


def _why(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return exc.__class__.__name__


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _refuse_unstorable_strings(value: Any) -> None:
    """Walk the parsed body (keys too): a lone surrogate or a NUL is refused, with where."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise MalformedPayload("body holds a NUL character (\\u0000) in a string")
            if not _encodable(item):
                raise MalformedPayload("body holds a lone UTF-16 surrogate (like \\ud800), which is not text")
