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

# A JSON string (escapes included), replaced by "" so the brackets inside do not count.
# Unrolled loop: linear, with no backtracking on long strings.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_LONG_NUMBER = re.compile(f"[0-9]{{{MAX_NUMBER_DIGITS + 1}}}")
# Escapes that may decode to a lone surrogate, or to NUL; rare in real bodies (PHP's
# json_encode writes emoji as surrogate pairs), so only a hit pays for the exact check.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)")


def _without_strings(text: str) -> str:
    return _STRING.sub('""', text)


def nesting_depth(text: str, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep arrays and objects nest in ``text``, counted up to ``limit + 1`` at most."""
    return _nesting_depth(_without_strings(text), limit)


def _nesting_depth(structure: str, limit: int) -> int:
    depth = deepest = 0
    for bracket in _BRACKET.finditer(structure):
        if bracket.group() in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def checked_json_text(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> str:
    """The body as text, once it is strict UTF-8 and nests no deeper than ``max_depth``."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedPayload(f"body is not UTF-8 text (invalid byte at offset {exc.start})") from None
    else:
        text = raw
        if not _encodable(text):
            raise MalformedPayload("body is not UTF-8 text (it holds a lone surrogate)")
    # A byte-order mark is noise some PHP hosts print first; json.loads(bytes) skipped it too.
    text = text.removeprefix("\ufeff")
    structure = _without_strings(text)
    if _nesting_depth(structure, max_depth) > max_depth:
        raise MalformedPayload(f"body nests deeper than {max_depth} levels")
    if _LONG_NUMBER.search(structure):
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
