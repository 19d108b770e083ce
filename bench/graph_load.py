"""A direct load on the fake Graph API, without cartback: how many sends per second it answers.

Run as its own process (``python -m bench.graph_load``) so the load's CPU is not taken from
the fake, which runs in the bench process: ``--concurrency`` threads POST a send the fake
accepts (the body of one it accepted from a worker, with a new recipient for each request)
as fast as the answers come, and print one JSON line: requests, accepted, seconds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx


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
    numbers = itertools.count(1)
    numbers_lock = threading.Lock()
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    headers = {"Authorization": f"Bearer {args.token}"}
    with httpx.Client(timeout=30, limits=limits) as client:

        def post(_: int) -> bool:
            with numbers_lock:
                n = next(numbers)
            # A different shopper each time, as a real burst (919800000001, ...).
            response = client.post(args.url, json={**body, "to": f"9198{n:08d}"}, headers=headers)
            return response.status_code == 200

        with ThreadPoolExecutor(args.concurrency) as pool:
            began = time.monotonic()
            accepted = sum(pool.map(post, range(args.requests)))
            elapsed = time.monotonic() - began
    print(json.dumps({"requests": args.requests, "accepted": accepted, "seconds": elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
