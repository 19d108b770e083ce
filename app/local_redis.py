"""A private, memory-only redis-server on loopback: how the demo, the tests and the benchmarks
start one. One place, so all three run Redis the same way."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Where Debian's redis-server package puts the binary (not always on PATH for non-root users).
DEBIAN_REDIS_SERVER = "/usr/bin/redis-server"


def find_redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    return DEBIAN_REDIS_SERVER if os.access(DEBIAN_REDIS_SERVER, os.X_OK) else None


def redis_server_argv(binary: str, port: int, workdir: Path, host: str = "127.0.0.1") -> list[str]:
    """No snapshots, no append-only file: queues and locks only; the database holds the rest."""
    return [
        binary,
        "--port", str(port),
        "--bind", host,
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--dir", str(workdir),
    ]  # fmt: skip
