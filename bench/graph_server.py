"""The fake Graph API of bench (f), served lean in a process of its own.

tests/fakes/whatsapp_graph.FakeGraphAPI is served in the tests by werkzeug's threaded dev
server: a thread and http.server's parsing per request, and ``Connection: close`` on every
answer (a new TCP connection per send), in the bench process, beside the workers and
PostgreSQL on the same 2 cores. Measured in issue 16's runs, that served only ~300-370
sends/s, close to being what limited "10 numbers". Here the same FakeGraphAPI
object, seeded as bench (f) needs (10 numbers, each with its own WABA, token and the approved
templates), answers every request through its own WSGI app, unchanged, so each send is checked
exactly as in the tests (path ``/{phone-number-id}/messages``, that number's bearer token, the
template message's JSON against the approved template). Only the serving is different: asyncio
streams with a minimal HTTP/1.1 reader that keeps connections alive (as Meta does), and the
100 ms wait is ``asyncio.sleep``, so waiting requests cost no thread.

Invariant: a send is in the log if and only if the fake accepted it (answered 200), one line
per send, ``<phone-number-id> <accepted-at, Unix seconds>``, written before its answer leaves.
``accepted-at`` is when the request arrived (the fake checks it then; Meta counts a number's
throughput by arrival), and the answer leaves ``--latency-ms`` later.

    python -m bench.graph_server --app-secret S --latency-ms 100 --log sends.log --ready ready.json

writes ``{"port": ..., "pid": ...}`` to ``--ready`` once it listens on 127.0.0.1, and the JSON
of the first template send it accepts (path and body) to ``<log>.sample.json``, for the load
that measures its capacity (bench.graph_load). SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote_to_bytes

from bench.processes import HOST, REGISTRY, Child, pids_cpu_seconds, wait_until
from channels.whatsapp.templates import DEFINITIONS
from tests.fakes.whatsapp_graph import UNDERSCORE_HEADERS, FakeGraphAPI

# Bytes of a request line and its headers: far above what httpx sends (~300), and the bound
# asyncio's StreamReader needs anyway.
MAX_HEAD_BYTES = 64 * 1024
# Bytes of a request body: a template send is ~1 KB; header uploads in the tests are smaller.
MAX_BODY_BYTES = 1024 * 1024
# Pending connections the listening socket holds: a burst of new connections (the capacity
# load opens hundreds at once) must not be refused.
BACKLOG = 1024
REASONS = {200: "OK", 400: "Bad Request", 413: "Payload Too Large", 500: "Internal Server Error"}


@dataclass(frozen=True)
class Number:
    """One store's WhatsApp Business account and number, seeded in the fake."""

    waba_id: str
    phone_number_id: str
    access_token: str


NUMBERS = tuple(
    Number(f"10229012934{n:04d}", f"10654035224{n:04d}", f"EAAG-bench-system-user-token-{n:04d}-0123456789")
    for n in range(10)
)


def seeded_fake(app_secret: str) -> FakeGraphAPI:
    """The fake with every bench number, at Meta's standard throughput and an unlimited daily
    messaging limit (the bench measures pacing, not the limit: at 2K a day, 2,400 shoppers on
    one number would be held), and the app's templates approved for each; not started (this
    module serves it)."""
    fake = FakeGraphAPI(app_secret=app_secret, latency_seconds=0.0)
    for n, number in enumerate(NUMBERS):
        fake.add_account(
            number.waba_id,
            number.phone_number_id,
            number.access_token,
            display_phone_number=f"+91 90000 {n:05d}",
            throughput_level="STANDARD",
        )
        fake.set_messaging_limit(number.phone_number_id, "TIER_UNLIMITED")
        for template in DEFINITIONS:
            payload = template.creation_payload(
                store_name="Store bench", app_url="http://127.0.0.1", header_handle="4::bench"
            )
            fake.add_template(
                number.waba_id, template.name, template.language, payload["category"], payload["components"]
            )
    return fake


# --- the server process ------------------------------------------------------------------------


class BadRequest(Exception):
    """What this reader does not take: answered 400 (or 413), then the connection is closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Head:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]  # names lower-cased, in order

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)

    @property
    def keep_alive(self) -> bool:
        connection = (self.header("connection") or "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


def parse_head(raw: bytes) -> Head:
    try:
        text = raw.decode("latin-1")
        request_line, *lines = text.rstrip("\r\n").split("\r\n")
        method, target, version = request_line.split(" ")
    except ValueError as error:
        raise BadRequest(400, "malformed request line") from error
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(400, f"unsupported version {version!r}")
    headers = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(400, "malformed header line")
        headers.append((name.lower(), value.strip()))
    return Head(method, target, version, headers)


def body_length(head: Head) -> int:
    if head.header("transfer-encoding") is not None:
        raise BadRequest(400, "chunked bodies are not read here: send Content-Length")
    try:
        length = int(head.header("content-length") or 0)
    except ValueError as error:
        raise BadRequest(400, "Content-Length is not a number") from error
    if not 0 <= length <= MAX_BODY_BYTES:
        raise BadRequest(413, f"a body of {length} bytes")
    return length


def refusal(error: BadRequest) -> bytes:
    """The answer to a request this reader does not take; the connection is closed after it."""
    message = json.dumps({"error": {"message": f"cartback bench fake: {error}"}}).encode()
    status = f"{error.status} {REASONS[error.status]}"
    return encode_response(status, [("Content-Type", "application/json")], message, keep_alive=False)


def wsgi_environ(head: Head, body: bytes, port: int) -> dict[str, Any]:
    """The environ werkzeug's dev server builds for the same request, as GraphHandler extends it:
    header names holding "_" are kept aside under UNDERSCORE_HEADERS, not in HTTP_*."""
    path, _, query = head.target.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": head.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": HOST,
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": head.version,
        "REMOTE_ADDR": HOST,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        UNDERSCORE_HEADERS: {},
    }
    for name, value in head.headers:
        if "_" in name:
            environ[UNDERSCORE_HEADERS][name] = value
        elif name == "content-type":
            environ["CONTENT_TYPE"] = value
        elif name == "content-length":
            environ["CONTENT_LENGTH"] = value
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
            environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def encode_response(status: str, headers: list[tuple[str, str]], body: bytes, *, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status}"]
    lines += [
        f"{name}: {value}"
        for name, value in headers
        if name.lower() not in ("content-length", "connection", "transfer-encoding")
    ]
    lines.append(f"Content-Length: {len(body)}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class LeanServer:
    """Serves one seeded FakeGraphAPI; every request goes to its WSGI app (the fake's checks),
    and every send it accepted goes to the log before the answer is written."""

    def __init__(self, fake: FakeGraphAPI, latency_s: float, log: IO[str], sample_path: Path) -> None:
        self.fake = fake
        self.latency_s = latency_s
        self.log = log
        self.sample_path = sample_path
        self.port = 0
        self._sampled = False

    def answer(self, head: Head, body: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
        """The fake's answer (status line, headers, body); its accepted sends logged."""
        captured: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[..., Any]:
            captured[:] = [status, headers]
            return lambda _data: None

        chunks = self.fake._wsgi(wsgi_environ(head, body, self.port), start_response)
        try:
            payload = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        # The fake keeps every request and send in memory; here they are logged and dropped.
        self.fake.requests.clear()
        for sent in self.fake.sent_messages:
            self.log.write(f"{sent.phone_number_id} {sent.accepted_at:.6f}\n")
            if not self._sampled and sent.type == "template":
                self._sampled = True
                sample = {"path": head.target, "phone_number_id": sent.phone_number_id, "body": sent.payload}
                self.sample_path.write_text(json.dumps(sample))
        self.fake.sent_messages.clear()
        return captured[0], captured[1], payload

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client's requests, one after another, answered each ``latency_s`` after it arrived."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed between requests
                except asyncio.LimitOverrunError:
                    writer.write(refusal(BadRequest(413, "request head too long")))
                    return
                arrived = loop.time()
                try:
                    head = parse_head(raw)
                    length = body_length(head)
                except BadRequest as error:
                    writer.write(refusal(error))
                    return
                body = await reader.readexactly(length) if length else b""
                try:
                    status, headers, payload = self.answer(head, body)
                except Exception as error:  # a bug in the fake must not take the server down
                    print(f"fake Graph API failed on {head.method} {head.target}: {error!r}", file=sys.stderr)
                    status, headers, payload = "500 Internal Server Error", [], b""
                response = encode_response(status, headers, payload, keep_alive=head.keep_alive)
                wait = arrived + self.latency_s - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(response)
                await writer.drain()
                if not head.keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(ConnectionError):
                writer.close()

    async def serve(self, ready: Path) -> None:
        server = await asyncio.start_server(
            self.connection, HOST, 0, backlog=BACKLOG, limit=MAX_HEAD_BYTES, reuse_address=True
        )
        self.port = server.sockets[0].getsockname()[1]
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        # Written whole, then renamed: the bench never reads half a file.
        partial = ready.with_suffix(".partial")
        partial.write_text(json.dumps({"port": self.port, "pid": os.getpid()}))
        partial.rename(ready)
        async with server:
            await stopping.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.graph_server", description=__doc__.split("\n")[0])
    parser.add_argument("--app-secret", required=True)
    parser.add_argument("--latency-ms", type=float, default=100.0, help="wait before every answer (100)")
    parser.add_argument("--log", required=True, type=Path, help="accepted sends, one line each")
    parser.add_argument("--ready", required=True, type=Path, help='gets {"port": ..., "pid": ...}')
    args = parser.parse_args(argv)
    fake = seeded_fake(args.app_secret)
    # Line-buffered: every accepted send is in the file before its answer is written.
    with open(args.log, "a", buffering=1) as log:
        server = LeanServer(fake, args.latency_ms / 1000, log, Path(f"{args.log}.sample.json"))
        asyncio.run(server.serve(args.ready))
    return 0


# --- the bench's handle on it -----------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """A send the fake accepted: the number it was for, and when it arrived (Unix seconds)."""

    phone_number_id: str
    accepted_at: float


@dataclass(frozen=True)
class Sample:
    """One template send the fake accepted, to replay: its URL, its number's token, its body."""

    url: str
    access_token: str
    body: dict[str, Any]


class GraphServer:
    """The fake Graph API as a child process of the bench: ``url`` for WHATSAPP_GRAPH_URL,
    ``accepted()`` its log so far."""

    def __init__(self, child: Child, port: int, log: Path) -> None:
        self.child = child
        self.origin = f"http://{HOST}:{port}"
        self.url = f"{self.origin}/v25.0"
        self.log = log

    @classmethod
    def start(cls, workdir: Path, app_secret: str, latency_s: float, python: str, cwd: Path) -> GraphServer:
        workdir.mkdir(parents=True, exist_ok=True)
        log, ready = workdir / "graph-sends.log", workdir / "graph-ready.json"
        for stale in (log, ready, Path(f"{log}.sample.json")):
            stale.unlink(missing_ok=True)
        child = REGISTRY.spawn(
            "fake Graph API",
            [
                python,
                "-m",
                "bench.graph_server",
                "--app-secret",
                app_secret,
                "--latency-ms",
                str(latency_s * 1000),
                "--log",
                str(log),
                "--ready",
                str(ready),
            ],
            cwd=cwd,
            log_path=workdir / "graph-server.log",
        )
        try:
            wait_until(ready.exists, timeout=30, child=child, what="the fake Graph API to listen")
        except (RuntimeError, TimeoutError):
            REGISTRY.stop(child)
            raise
        return cls(child, json.loads(ready.read_text())["port"], log)

    def accepted(self) -> list[Accepted]:
        if not self.log.exists():
            return []
        with open(self.log) as lines:
            return [Accepted(number, float(at)) for number, at in (line.split() for line in lines)]

    def sample(self) -> Sample | None:
        path = Path(f"{self.log}.sample.json")
        if not path.exists():
            return None
        sample = json.loads(path.read_text())
        token = next(n.access_token for n in NUMBERS if n.phone_number_id == sample["phone_number_id"])
        return Sample(f"{self.origin}{sample['path']}", token, sample["body"])

    def cpu_seconds(self) -> float:
        return pids_cpu_seconds([self.child.pid])

    def stop(self) -> None:
        REGISTRY.stop(self.child)


if __name__ == "__main__":
    sys.exit(main())
