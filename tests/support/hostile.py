"""Hostile request bodies for the endpoint fuzz tests (tests/app/test_hostile_bodies.py).

Every strategy here yields a ``Body``: the exact bytes to post and a ``kind`` that says what
makes them hostile, so a test can count that each kind was really sent (a fuzz test whose
generator silently stopped making 20,000-deep bodies would pass for the wrong reason).

Bodies start from the recorded payloads in tests/fixtures/<platform>/ so that, signed, they
get past the signature check to the parsers; then fields are replaced by wrong types, huge
numbers and strings, lone surrogates, NUL, deep nesting, and raw invalid UTF-8 is spliced
into the encoded bytes. ``Probe`` posts them and fails on any status >= 500 or any log
record that carries a traceback.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from werkzeug.test import TestResponse

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# Python's json accepts these tokens; 1e400 is a float overflow, a 5,000-digit integer exceeds
# int's default 4,300-digit conversion limit (a ValueError, not a JSONDecodeError).
ODD_NUMBERS = (
    "1e400",
    "-1e400",
    "1e-400",
    "NaN",
    "Infinity",
    "-Infinity",
    "-0",
    "0.1e999999999",
    "1" * 5_000,
    "-" + "9" * 4_301,
    str(2**64),
    str(-(2**63) - 1),
    "1.0000000000000000000000000001",
)
# What a JSON string may decode to that no database or encoder wants: lone surrogates, NUL,
# a byte-order mark, line separators, a surrogate pair, quotes and backslashes.
ODD_CHARACTERS = (
    "\ud800",
    "\udc00",
    "\udfff\ud800",
    "\x00",
    "\ufeff",
    "\u2028",
    "\U0001d11e",
    '"',
    "\\",
    "\x7f",
)
# Spliced into the encoded bytes: encoded surrogates (CESU-8), bytes never valid in UTF-8,
# an overlong NUL, a raw NUL, a stray byte-order mark, a truncated multi-byte sequence.
ODD_BYTES = (
    b"\xed\xa0\x80",
    b"\xed\xb0\x80",
    b"\xff",
    b"\xfe",
    b"\xc0\x80",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\xe2\x82",
)
# Opening brackets repeated for deep nesting; 20,000 is far past Python's recursion limit.
DEEP_OPENERS = ("[", '{"a":', '{"line_items":[', '{"entry":[')
DEEP_LEVELS = (65, 1_001, 20_000, 100_000)
# An escape that decodes to a surrogate (lone or in a pair).
ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# ~200 kB: big enough to matter, small enough to stay under the 1 MiB webhook limit.
HUGE_CHARS = 200_000


@dataclass(frozen=True)
class Raw:
    """JSON text spliced verbatim where a value goes (numbers json.dumps cannot write)."""

    text: str

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}{'...' if len(self.text) > 40 else ''})"


class Body:
    """Bytes to post, what is hostile in them, and which recorded payload they came from
    (``source``, an index; None for bodies made from nothing). Not a dataclass: Hypothesis
    prints those field by field, and a failing 1 MiB body would fill the report."""

    __slots__ = ("data", "kind", "source")

    def __init__(self, kind: str, data: bytes, source: int | None = None) -> None:
        self.kind, self.data, self.source = kind, data, source

    def __repr__(self) -> str:
        more = "..." if len(self.data) > 160 else ""
        return f"Body({self.kind!r}, {len(self.data)} bytes: {self.data[:160]!r}{more})"


def recorded(platform: str, name: str) -> Any:
    return json.loads((FIXTURES / platform / f"{name}.json").read_text())


# -- encoding ---------------------------------------------------------------------------------


def to_json(value: Any, *, ascii_only: bool = True) -> str:
    """Like json.dumps, but ``Raw`` values go in verbatim and lone surrogates are written as
    ``\\ud800`` escapes (ascii_only) or as the surrogate itself (encoded later with
    surrogatepass: the bytes ED A0 80)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        items = (
            f"{json.dumps(str(k), ensure_ascii=ascii_only)}:{to_json(v, ascii_only=ascii_only)}"
            for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(to_json(v, ascii_only=ascii_only) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ascii_only)
    return json.dumps(value)


def to_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


# -- values -----------------------------------------------------------------------------------
# Built once: a strategy built anew for every draw costs Hypothesis more than the draw.

# Short strings mixing ordinary text with the odd characters above.
ODD_STRINGS = st.lists(
    st.one_of(st.text(max_size=12), st.sampled_from(ODD_CHARACTERS)), min_size=1, max_size=5
).map("".join)
# Built from a drawn unit, not drawn character by character (Hypothesis caps its buffer).
HUGE_STRINGS = st.builds(
    lambda unit, n: unit * (n // len(unit)),
    st.sampled_from(("x", "é", "₹", "9", "<b>", "\ud800", "\\", " ")),
    st.sampled_from((HUGE_CHARS, 70_000)),
)


def deep_text(levels: int, opener: str, closed: bool) -> str:
    closer = "".join({"[": "]", "{": "}"}[c] for c in reversed(opener) if c in "[{")
    inner = "null" if opener.endswith(":") else "1"
    return opener * levels + inner + (closer * levels if closed else "")


DEEP_VALUES = st.builds(
    lambda levels, opener, closed: Raw(deep_text(levels, opener, closed)),
    st.sampled_from(DEEP_LEVELS),
    st.sampled_from(DEEP_OPENERS),
    st.booleans(),
)
# Any JSON value (floats include inf and NaN, which json.dumps writes as Infinity and NaN).
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), ODD_STRINGS),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
# What replaces a field: another type, an odd number, a huge or odd string, nesting.
WRONG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from((10**400, -(10**30), 0, -1, 2**31, 2**63)),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(ODD_NUMBERS).map(Raw),
    ODD_STRINGS,
    HUGE_STRINGS,
    st.sampled_from(("", " ", "null", "0", "-1", "1e400", "NaN", "2026-13-45T25:61:00Z", "+91 12", "ÿ")),
    # Parsed anew each time: a shared list would grow with every later "add".
    st.sampled_from(("[]", "{}", "[[]]", '{"":null}')).map(json.loads),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    JSON_VALUES,
    DEEP_VALUES,
)
# What replaces fields, by the kind of body it makes: wrong types and shapes in general, or
# one hostile thing on purpose (so that each is sent often enough to count).
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "mutated": WRONG_VALUES,
    "odd-text": st.tuples(ODD_STRINGS, st.sampled_from(ODD_CHARACTERS)).map("".join),
    "huge": HUGE_STRINGS,
    "odd-number": st.sampled_from(ODD_NUMBERS).map(Raw),
}
# Hypothesis favours bodies it can vary by swapping parts (recorded payloads gone wrong):
# deep bodies are listed twice to be sent about as often as the others.
BODY_KINDS = (
    *FIELD_VALUES,
    "deep",
    "spliced",
    "deep",
    "deep-in-payload",
    "random-json",
    "bytes",
    "empty",
    "scalar",
    "oversize",
    "at-limit",
)


# -- bodies -----------------------------------------------------------------------------------


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*prefix, index)
            yield from _paths(item, (*prefix, index))


def _container(root: Any, path: tuple[Any, ...]) -> Any:
    """The dict or list holding ``path``'s last step, or None once an earlier change removed it."""
    node = root
    for step in path[:-1]:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return None
    return node if isinstance(node, dict | list) else None


@dataclass(frozen=True)
class Recorded:
    """Payloads to start from, with every path into each (computed once)."""

    payloads: tuple[Any, ...]
    paths: tuple[st.SearchStrategy[tuple[Any, ...]], ...]
    # (index, payload), as sent: never changed in place.
    unchanged: st.SearchStrategy[tuple[int, Any]]

    @classmethod
    def of(cls, payloads: Sequence[Any]) -> Recorded:
        return cls(
            tuple(payloads),
            tuple(st.sampled_from(list(_paths(p)) or [("_",)]) for p in payloads),
            st.sampled_from(list(enumerate(payloads))),
        )


@st.composite
def mutated(draw: st.DrawFn, recorded: Recorded, values: st.SearchStrategy[Any]) -> tuple[int, Any]:
    """(which payload, a deep copy of it with 1-4 fields replaced by ``values``, deleted or
    added)."""
    index = draw(st.integers(0, len(recorded.payloads) - 1))
    value = copy.deepcopy(recorded.payloads[index])
    for _ in range(draw(st.integers(1, 4))):
        path = draw(recorded.paths[index])
        holder = _container(value, path)
        if holder is None:
            continue
        step = path[-1]
        operation = draw(st.sampled_from(("replace", "replace", "replace", "delete", "add")))
        try:
            if operation == "replace":
                holder[step] = draw(values)
            elif operation == "delete":
                del holder[step]
            elif isinstance(holder, dict):
                holder[draw(ODD_STRINGS)] = draw(values)
            else:
                holder.append(draw(values))
        except (KeyError, IndexError, TypeError):
            continue
    return index, value


@st.composite
def spliced(draw: st.DrawFn, data: bytes) -> bytes:
    """The bytes with invalid UTF-8 (or NUL, or a BOM) put in somewhere, or cut short."""
    position = draw(st.integers(0, len(data)))
    if draw(st.integers(0, 4)) == 0:
        return data[:position]
    return data[:position] + draw(st.sampled_from(ODD_BYTES)) + data[position:]


def sized(body: bytes, size: int) -> bytes:
    """The body padded with trailing spaces (still the same JSON) to exactly ``size`` bytes, or
    a JSON object of that size when the body is already longer."""
    if len(body) <= size:
        return body + b" " * (size - len(body))
    head, tail = b'{"note":"', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


@st.composite
def deep_bodies(draw: st.DrawFn) -> Body:
    levels = draw(st.sampled_from(DEEP_LEVELS))
    # A few levels more or less: Hypothesis runs each distinct body once, so without this
    # there would be only a few dozen deep bodies in all.
    extra = draw(st.integers(0, 99))
    text = deep_text(levels + extra, draw(st.sampled_from(DEEP_OPENERS)), draw(st.booleans()))
    return Body(f"deep-{levels}", text.encode())


def json_bodies(payloads: Sequence[Any], limit: int) -> st.SearchStrategy[Body]:
    """A hostile JSON body, most often a recorded payload gone wrong. Its kind names what is
    hostile in it: ``mutated+surrogate+huge``, ``spliced``, ``deep-20000``, ``oversize``..."""
    return _json_bodies(Recorded.of(payloads), limit)


@st.composite
def _json_bodies(draw: st.DrawFn, recorded: Recorded, limit: int) -> Body:
    kind = draw(st.sampled_from(BODY_KINDS))
    ascii_only = draw(st.booleans())
    if kind in FIELD_VALUES:
        source, value = draw(mutated(recorded, FIELD_VALUES[kind]))
        text = to_json(value, ascii_only=ascii_only)
        return Body("mutated" + "".join(f"+{k}" for k in _kinds_in(text)), to_bytes(text), source)
    if kind == "spliced":
        source, value = draw(mutated(recorded, WRONG_VALUES) | recorded.unchanged)
        return Body("spliced", draw(spliced(to_bytes(to_json(value, ascii_only=ascii_only)))), source)
    if kind == "deep":
        return draw(deep_bodies())
    if kind == "deep-in-payload":
        source, value = draw(recorded.unchanged)
        value, nest = copy.deepcopy(value), draw(DEEP_VALUES)
        if isinstance(value, dict) and value:
            value[draw(st.sampled_from(sorted(value)))] = nest
        else:
            value = nest
        return Body("deep-in-payload", to_bytes(to_json(value, ascii_only=ascii_only)), source)
    if kind == "random-json":
        return Body("random-json", to_bytes(to_json(draw(JSON_VALUES), ascii_only=ascii_only)))
    if kind == "bytes":
        return Body("bytes", draw(st.binary(max_size=600)))
    if kind == "empty":
        return Body(
            "empty", draw(st.sampled_from((b"", b" ", b"\n", b"\xef\xbb\xbf", b"null", b"{}", b"[]")))
        )
    if kind == "scalar":
        return Body("scalar", to_bytes(to_json(draw(WRONG_VALUES), ascii_only=ascii_only)))
    # A payload gone wrong padded to exactly the limit (read, verified and parsed), or to
    # just over it (refused before it is read).
    source, value = draw(mutated(recorded, WRONG_VALUES))
    body = to_bytes(to_json(value, ascii_only=ascii_only))
    if kind == "oversize":
        return Body("oversize", sized(body, limit + draw(st.integers(1, 4_096))), source)
    return Body("at-limit", sized(body, limit), source)


def _has_surrogate(text: str) -> bool:
    if ("\\ud" in text or "\\uD" in text) and ESCAPED_SURROGATE.search(text):
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _kinds_in(text: str) -> list[str]:
    """What a mutated body holds that matters, for the counts a test checks."""
    found = []
    if _has_surrogate(text):
        found.append("surrogate")
    if "\\u0000" in text:
        found.append("nul")
    if len(text) > 100_000:
        found.append("huge")
    if "[[[[[[[[" in text or '{"a":{"a":' in text:
        found.append("deep")
    return found


# -- posting ----------------------------------------------------------------------------------


def fuzz_settings(examples: int) -> settings:
    """Seeded, no example database on disk, no deadline (a 1 MiB body takes a while)."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


def _trouble(records: Sequence[logging.LogRecord]) -> list[str]:
    """Log records that carry a traceback (Flask logs "Exception on ..." with exc_info)."""
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    found = []
    for record in records:
        message = record.getMessage()
        if record.exc_info or record.exc_text or record.stack_info or "Traceback" in message:
            found.append(formatter.format(record))
    return found


@dataclass
class Probe:
    """Posts one request at a time and fails on a 5xx or a logged traceback, with the request."""

    client: FlaskClient
    caplog: pytest.LogCaptureFixture
    dump_dir: Path
    sent: Counter[str] = field(default_factory=Counter)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)

    def send(
        self,
        endpoint: str,
        kind: str,
        method: str,
        path: str,
        *,
        data: bytes = b"",
        headers: Mapping[str, str] | None = None,
        query_string: str | None = None,
        content_type: str | None = "application/json",
    ) -> TestResponse:
        self.caplog.clear()
        response = self.client.open(
            path,
            method=method,
            data=data,
            headers=dict(headers or {}),
            query_string=query_string,
            content_type=content_type,
        )
        self.sent[f"{endpoint} {kind}"] += 1
        self.statuses[(endpoint, response.status_code)] += 1
        if currently_in_test_context():
            # Hypothesis's statistics; a request sent outside a drawn example has none.
            event(f"{endpoint} -> {response.status_code}")
        trouble = _trouble(self.caplog.records)
        if response.status_code >= 500 or trouble:
            dump = self.dump_dir / "failing-body.bin"
            dump.write_bytes(data)
            raise AssertionError(
                f"{method} {path}{'?' + query_string if query_string else ''} -> {response.status_code}\n"
                f"kind: {kind}\nheaders: {dict(headers or {})}\n"
                f"body ({len(data)} bytes, all of it in {dump}): {data[:400]!r}\n"
                f"answer: {response.get_data()[:400]!r}\n" + "\n".join(trouble)
            )
        return response

    def count(self, endpoint: str, predicate: Callable[[str], bool] = lambda _kind: True) -> int:
        return sum(
            n
            for key, n in self.sent.items()
            if key.startswith(endpoint + " ") and predicate(key.split(" ", 1)[1])
        )

    def answered(self, endpoint: str, status: int) -> int:
        return self.statuses[(endpoint, status)]

    def report(self) -> str:
        lines = []
        for endpoint in sorted({key.split(" ", 1)[0] for key in self.sent}):
            codes = ", ".join(f"{s}x{n}" for (e, s), n in sorted(self.statuses.items()) if e == endpoint)
            lines.append(f"{endpoint}: {self.count(endpoint)} requests ({codes})")
        return "\n".join(lines)
