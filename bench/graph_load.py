"""A direct load on the fake Graph API, without cartback: how many sends per second it answers.

Run as its own process (``python -m bench.graph_load``) so the load's CPU is not the fake's:
``--concurrency`` keep-alive connections each POST a send the fake accepts (the body of one it
accepted from a worker, with a new recipient for each request) as soon as the previous answer
came, until ``--requests`` were answered, and print one JSON line: requests, accepted, seconds.

The load is lean on purpose (asyncio streams, requests written by hand, answers read by their
Content-Length): a threaded httpx client spends more CPU per request than the fake it measures
(issue 16's run measured ~350 requests/s that way), and it would share these 2 cores with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit

# Bytes of an answer's status line and headers; the fake's are ~100.
MAX_HEAD_BYTES = 64 * 1024


class Load:
    def __init__(self, url: str, token: str, body: dict[str, Any], requests: int) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"an http://host:port/... URL, not {url!r}")
        self.host, self.port = parts.hostname, parts.port
        self.target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.head = (
            f"POST {self.target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nAccept: */*\r\n"
        )
        self.body = body
        self.requests = requests
        self.started = 0
        self.accepted = 0
        self.answered = 0

    def request(self) -> bytes:
        self.started += 1
        # A different shopper each time, as a real burst (919800000001, ...).
        body = json.dumps({**self.body, "to": f"9198{self.started:08d}"}).encode()
        return f"{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body

    async def connection(self) -> None:
        """Sends one after another on one connection; a new one when the server closes it."""
        while self.started < self.requests:
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD_BYTES)
            try:
                while self.started < self.requests:
                    writer.write(self.request())
                    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                    status_line, *lines = head.split("\r\n")
                    fields = dict(line.lower().split(":", 1) for line in lines if ":" in line)
                    length = int(fields.get("content-length", 0))
                    if length:
                        await reader.readexactly(length)
                    self.answered += 1
                    if status_line.split(" ", 2)[1] == "200":
                        self.accepted += 1
                    if fields.get("connection", "").strip() == "close":
                        break
            finally:
                writer.close()

    async def run(self, concurrency: int) -> float:
        began = time.monotonic()
        await asyncio.gather(*(self.connection() for _ in range(concurrency)))
        return time.monotonic() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.graph_load", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="the send endpoint: {graph}/{phone-number-id}/messages")
    parser.add_argument("--token", required=True)
    parser.add_argument("--body-file", required=True, help="JSON of one accepted send")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=128)
    args = parser.parse_args(argv)
    with open(args.body_file) as body_file:
        body = json.load(body_file)
    load = Load(args.url, args.token, body, args.requests)
    elapsed = asyncio.run(load.run(min(args.concurrency, args.requests)))
    print(json.dumps({"requests": load.answered, "accepted": load.accepted, "seconds": elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
