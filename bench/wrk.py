"""Driving wrk (HTTP load generator, Debian package ``wrk``) and reading its figures.

Figures come from a Lua ``done()`` hook that prints one JSON line with exact microsecond
percentiles, rather than from wrk's human-formatted table (units vary: us, ms, s).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.processes import REGISTRY, find_executable
from bench.report import say

RESULT_MARKER = "BENCH_RESULT "

# Appended to every script: one JSON line with the totals and this run's percentiles. The
# per-thread counters ("sent", "wrapped") exist only in scripts that generate requests.
_DONE_LUA = r"""
function done(summary, latency, requests)
  local sent, wrapped = 0, 0
  for _, thread in ipairs(threads or {}) do
    sent = sent + (thread:get("sent") or 0)
    wrapped = wrapped + (thread:get("wrapped") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"mean_us":%.1f,"sent":%d,"wrapped":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, sent, wrapped))
end
"""

# A plain GET through the static (fast) path of wrk: only done() is defined.
STATIC_SCRIPT = _DONE_LUA

# Cycles through pre-generated, pre-signed deliveries: each thread loads its own interleaved
# share of lines [first, last) of the data file (args: path first last nthreads shop topic),
# formats them once in init() so request() is a table lookup, and counts what it sent. If a
# thread runs out it starts over and counts a wrap: from then on it sends duplicates, which
# the server answers on its fast path, so a wrapped run is flagged as not comparable.
POOL_SCRIPT = (
    r"""
threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

function init(args)
  local path, first, last, nthreads = args[1], tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
  local shop, topic = args[5], args[6]
  reqs = {}
  local n = 0
  for line in io.lines(path) do
    if n >= last then break end
    if n >= first and (n - first) % nthreads == tid then
      local id, sig, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", "/webhooks/demo", {
        ["Content-Type"] = "application/json",
        ["X-Demo-Shop"] = shop,
        ["X-Demo-Topic"] = topic,
        ["X-Demo-Webhook-Id"] = id,
        ["X-Demo-Hmac-Sha256"] = sig,
      }, body)
    end
    n = n + 1
  end
  cursor, sent, wrapped = 0, 0, 0
end

function request()
  cursor = cursor + 1
  if cursor > #reqs then
    cursor, wrapped = 1, wrapped + 1
  end
  sent = sent + 1
  return reqs[cursor]
end
"""
    + _DONE_LUA
)


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    connect_errors: int
    read_errors: int
    write_errors: int
    timeouts: int
    # Responses with status >= 400 (wrk's "status" errors) and wrk's own non-2xx/3xx count.
    status_errors: int
    non_2xx: int
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    mean_us: float
    sent: int
    wrapped: int
    raw_output: str

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def errors(self) -> int:
        return (
            self.connect_errors
            + self.read_errors
            + self.write_errors
            + self.timeouts
            + max(self.status_errors, self.non_2xx)
        )


def ensure_wrk() -> str | None:
    """Path of wrk; installs the Debian package when running as root, else says how."""
    found = find_executable("wrk", "/usr/bin/wrk")
    if found:
        return found
    if os.geteuid() != 0:
        say("wrk is not installed; install it with: sudo apt-get install wrk")
        return None
    say("installing wrk (apt-get install -y wrk)…")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=300", "wrk"]
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600, check=False)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        say(f"apt-get install wrk failed:\n{result.stdout}{result.stderr}")
    return find_executable("wrk", "/usr/bin/wrk")


def wrk_version(binary: str) -> str:
    result = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10, check=False)
    first = (result.stdout or result.stderr).splitlines()
    return first[0].split("Copyright")[0].strip() if first else "unknown"


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def run_wrk(
    binary: str,
    url: str,
    *,
    script: Path,
    script_args: list[str] | None = None,
    threads: int,
    connections: int,
    duration_s: int,
    log_path: Path,
) -> WrkResult:
    argv = [
        binary,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    if script_args:
        argv += ["--", *script_args]
    log_path.unlink(missing_ok=True)
    child = REGISTRY.spawn("wrk", argv, log_path=log_path)
    try:
        # wrk stops by itself after duration_s; loading the request pool takes a few seconds.
        child.proc.wait(timeout=duration_s + 60)
    finally:
        REGISTRY.stop(child)
    output = log_path.read_text(errors="replace")
    return parse(output)


def parse(output: str) -> WrkResult:
    line = next((ln for ln in output.splitlines() if ln.startswith(RESULT_MARKER)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result line; its output:\n{output[-3000:]}")
    data = json.loads(line[len(RESULT_MARKER) :])
    non_2xx = 0
    for ln in output.splitlines():
        if "Non-2xx or 3xx responses:" in ln:
            non_2xx = int(ln.rsplit(":", 1)[1].strip())
    return WrkResult(
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        connect_errors=data["connect"],
        read_errors=data["read"],
        write_errors=data["write"],
        timeouts=data["timeout"],
        status_errors=data["status"],
        non_2xx=non_2xx,
        p50_us=data["p50_us"],
        p90_us=data["p90_us"],
        p99_us=data["p99_us"],
        max_us=data["max_us"],
        mean_us=data["mean_us"],
        sent=data["sent"],
        wrapped=data["wrapped"],
        raw_output=output,
    )
