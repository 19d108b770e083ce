"""Optional sampling profiles of the app processes under load (`bench.run --profile`).

Attaches `py-spy record` (not a project dependency: `pip install py-spy` anywhere, or point
BENCH_PYSPY at the binary) to one web worker or one rq worker for the measured window,
keeps the collapsed stacks under bench/results/ (git-ignored) and prints where the time went:
by library (the leaf frame's package) and by the project's own functions (inclusive).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

from bench.processes import REGISTRY, Child, find_executable
from bench.report import say

RESULTS = Path(__file__).resolve().parent / "results"
PROJECT_PREFIXES = ("app/", "sequences/", "connectors/")
# Threads that only wait (rq's pub/sub listener) would dilute the picture.
IGNORED_STACK_MARKERS = ("PubSubWorkerThread",)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::\d+)?\)$")


def pyspy_binary() -> str | None:
    return os.environ.get("BENCH_PYSPY") or find_executable("py-spy")


class Profiler:
    def __init__(self, name: str, pid: int, seconds: int) -> None:
        self.name = name
        self.output = RESULTS / f"profile-{name}.txt"
        self.child: Child | None = None
        binary = pyspy_binary()
        if binary is None:
            say("  (profile skipped: py-spy not found; pip install py-spy, or set BENCH_PYSPY)")
            return
        RESULTS.mkdir(exist_ok=True)
        self.output.unlink(missing_ok=True)
        self.child = REGISTRY.spawn(
            f"py-spy {name}",
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(seconds),
                "--rate",
                "200",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(self.output),
            ],
            log_path=RESULTS / f"profile-{name}.log",
        )

    def finish(self, timeout: float = 30) -> None:
        """Wait for py-spy to write its file (it stops by itself), then summarise it."""
        if self.child is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.child.proc.wait(timeout=timeout)
        REGISTRY.stop(self.child)
        if self.output.exists():
            summarise(self.name, self.output)
        else:
            say(f"  (profile {self.name}: py-spy wrote nothing; see {self.child.log_path})")


def _parse(line: str) -> tuple[list[tuple[str, str]], int] | None:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    if not stack or not count.isdigit() or any(marker in stack for marker in IGNORED_STACK_MARKERS):
        return None
    frames = []
    for frame in stack.split(";"):
        match = _FRAME.match(frame)
        frames.append((match["func"], match["file"]) if match else (frame, ""))
    return frames, int(count)


def _library(file: str) -> str:
    if file.startswith(PROJECT_PREFIXES):
        return "cartback (" + file.split("/", 1)[0] + ")"
    top = file.split("/", 1)[0]
    return top if "/" in file else (file or "?")


def summarise(name: str, path: Path, top: int = 12) -> None:
    total = 0
    by_library: Counter[str] = Counter()
    project_inclusive: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        parsed = _parse(line)
        if parsed is None:
            continue
        frames, count = parsed
        total += count
        by_library[_library(frames[-1][1])] += count
        seen = set()
        for func, file in frames:
            key = f"{file}:{func}"
            if file.startswith(PROJECT_PREFIXES) and key not in seen:
                seen.add(key)
                project_inclusive[key] += count
    if not total:
        say(f"  profile {name}: no samples")
        return
    say(f"  profile {name} ({total:,} samples, {path}):")
    say(
        "    self time by package: "
        + ", ".join(f"{lib} {n / total:.0%}" for lib, n in by_library.most_common(8))
    )
    for key, count in project_inclusive.most_common(top):
        say(f"    {count / total:5.1%}  {key}")
