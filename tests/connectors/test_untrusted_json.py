"""The checks every body from outside passes before a parser sees it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import MalformedPayload
from connectors.untrusted_json import MAX_JSON_DEPTH, checked_json_text, load_untrusted_json, nesting_depth


def test_a_real_body_with_emoji_as_surrogate_pairs_is_read() -> None:
    # PHP's json_encode writes "😀" as a surrogate pair: a real WooCommerce name.
    body = b'{"first_name": "Asha \\ud83d\\ude00", "lines": [{"qty": 1}]}'

    assert load_untrusted_json(body) == {"first_name": "Asha 😀", "lines": [{"qty": 1}]}


def test_a_byte_order_mark_is_skipped() -> None:
    assert load_untrusted_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"id": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"id": "\\udc00 then a pair \\ud83d\\ude00"}', "lone UTF-16 surrogate"),
        (b'{"\\ud800": 1}', "lone UTF-16 surrogate"),
        (b'{"id": "\xed\xa0\x80"}', "not UTF-8"),
        (b'{"id": "\xff"}', "not UTF-8"),
        (b'{"name": "a\\u0000b"}', "NUL"),
        (b"[" * 20_000 + b"]" * 20_000, "nests deeper"),
        (b'{"a": ' * 65 + b"1" + b"}" * 65, "nests deeper"),
        (b'{"a": 1', "not valid JSON"),
        (b'{"a": ' + b"1" * 5000 + b"}", "longer than 100 digits"),
        (b"1" * 101, "longer than 100 digits"),
        (b"", "not valid JSON"),
    ],
)
def test_hostile_bodies_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedPayload, match=reason):
        load_untrusted_json(body)


def test_long_digit_runs_inside_strings_are_text() -> None:
    assert load_untrusted_json(b'{"note": "' + b"1" * 500 + b'"}') == {"note": "1" * 500}


def test_an_escaped_backslash_before_u_d800_is_text_not_a_surrogate() -> None:
    assert load_untrusted_json(b'{"note": "\\\\ud800"}') == {"note": "\\ud800"}


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps({"note": "[[[[{{{{" * 100 + '\\"]]]'})

    assert nesting_depth(text) == 1
    assert checked_json_text(text.encode()) == text


def test_the_depth_limit_itself_is_accepted() -> None:
    body = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH

    assert nesting_depth(body) == MAX_JSON_DEPTH
    assert load_untrusted_json(body) is not None


def test_a_text_body_with_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(MalformedPayload, match="lone surrogate"):
        checked_json_text('{"a": "\ud800"}')


def test_numbers_refused_by_a_caller_are_a_malformed_payload() -> None:
    def small(text: str) -> int:
        if len(text) > 4:
            raise ValueError("number too large")
        return int(text)

    with pytest.raises(MalformedPayload, match="number too large"):
        load_untrusted_json(b'{"a": 123456}', parse_int=small)


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='ab[]{}"\\\n\u00e9\U0001f600'),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet='k[]{}"\\', max_size=4), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(derandomize=True, max_examples=300, database=None)
@given(JSON_VALUES, st.booleans())
def test_the_depth_counted_without_parsing_is_the_parsed_depth(value: object, ascii_only: bool) -> None:
    # Strings full of brackets, quotes and backslashes, escaped as json.dumps (or PHP) writes them.
    text = json.dumps(value, ensure_ascii=ascii_only)

    assert nesting_depth(text) == _depth(value)
