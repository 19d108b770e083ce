"""An open-loop HTTP load: requests sent on a fixed schedule, whatever the server's pace.

wrk (closed loop) sends a connection's next request only after its answer, so a slow server
is asked less and its stalls are hidden (coordinated omission). Here request i is due at
``start + i / rate`` whether or not earlier ones have been answered, and its latency is
measured from that due time: a request that had to wait for a free sender counts its wait.
Senders are threads with a pre-built request each (one connection per request, as gunicorn's
sync workers close it anyway), so the generator costs a few per cent of a core at 500/s; how
late the senders started (``start_lag``) shows whether the generator kept its schedule.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

# Seconds a single request may take before it counts as an error.
REQUEST_TIMEOUT_S = 10.0
# Answer bytes read at most (the status line and a short JSON body).
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Sent:
    latency_s: float  # from the due time to the whole answer
    start_lag_s: float  # from the due time to the sender starting
    ok: bool


@dataclass(frozen=True)
class OpenLoopResult:
    rate: float
    sent: list[Sent]
    wall_s: float

    def _percentile(self, values: list[float], fraction: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")

    def latency_us(self, fraction: float) -> float:
        return self._percentile([s.latency_s for s in self.sent], fraction) * 1e6

    def start_lag_us(self, fraction: float) -> float:
        return self._percentile([s.start_lag_s for s in self.sent], fraction) * 1e6

    @property
    def errors(self) -> int:
        return sum(not s.ok for s in self.sent)

    @property
    def achieved_rate(self) -> float:
        return len(self.sent) / self.wall_s if self.wall_s else float("nan")


def http_request(path: str, host: str, port: int, headers: dict[str, str], body: bytes) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Connection: close",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _send(host: str, port: int, request: bytes, expect: bytes) -> bool:
    try:
        with socket.create_connection((host, port), timeout=REQUEST_TIMEOUT_S) as connection:
            connection.sendall(request)
            answer = b""
            while len(answer) < MAX_ANSWER_BYTES:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return False
    return answer.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")) and expect in answer


def run_open_loop(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    rate: float,
    duration_s: float,
    senders: int = 64,
    expect: bytes = b"",
) -> OpenLoopResult:
    """Send ``rate * duration_s`` of ``requests`` (each once, in order) on the fixed schedule."""
    count = int(rate * duration_s)
    if len(requests) < count:
        raise ValueError(f"{count} requests needed, {len(requests)} given")
    results: list[Sent | None] = [None] * count
    indices = itertools.count()
    start = time.perf_counter() + 0.1

    def sender() -> None:
        while (i := next(indices)) < count:
            due = start + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            began = time.perf_counter()
            ok = _send(host, port, requests[i], expect)
            results[i] = Sent(time.perf_counter() - due, began - due, ok)

    threads = [threading.Thread(target=sender, name=f"open-loop-{n}", daemon=True) for n in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return OpenLoopResult(rate, [r for r in results if r is not None], wall)
