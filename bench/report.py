"""Results of a run: printed as they come, then written to bench/README.md."""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (p in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def seconds(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if abs(value) < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def millis(value_us: float) -> str:
    return f"{value_us / 1000:.1f} ms"


def say(line: str) -> None:
    """Progress and figures, as they come (make shows them live)."""
    print(line, flush=True)


@dataclass
class Row:
    measure: str
    result: str
    reference: str = ""


@dataclass
class Section:
    key: str
    title: str
    about: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None

    def add(self, measure: str, result: str, reference: str = "") -> None:
        self.rows.append(Row(measure, result, reference))
        plain = f"  {measure}: {result}" + (f"   [{reference}]" if reference else "")
        say(plain.replace("**", ""))

    def note(self, text: str) -> None:
        self.notes.append(text)
        say(f"  note: {text}")


@dataclass
class Machine:
    nproc: int
    cpu: str
    python: str
    redis: str
    wrk: str
    date: str
    commit: str

    @classmethod
    def describe(cls, redis_version: str, wrk_version: str) -> Machine:
        return cls(
            nproc=os.cpu_count() or 0,
            cpu=_cpu_model(),
            python=platform.python_version(),
            redis=redis_version,
            wrk=wrk_version,
            date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            commit=_git_commit(),
        )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    """HEAD plus how many files differ from it: figures belong to the working tree measured."""

    def git(*args: str) -> str:
        try:
            result = subprocess.run(
                ["git", *args], capture_output=True, text=True, timeout=10, cwd=README.parent, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return result.stdout.strip() if result.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "no commit"
    changed = len([line for line in git("status", "--porcelain").splitlines() if line.strip()])
    return f"{head}, {changed} uncommitted file(s) in the working tree" if changed else head


# What a reader needs beside the figures: where the remaining time goes, from py-spy profiles
# of a worker (`python -m bench.run --only dispatch cloud --quick --profile` re-creates them,
# under bench/results/). Written by hand from those profiles; the verdicts above it are
# computed from the run's own rows (``verdicts``).
WHERE_THE_TIME_GOES = """
## Where the remaining time goes (py-spy, one worker, PostgreSQL)

- **The schedule is the database; Redis holds no alarm per cart.** A worker's dispatcher claims
  up to 100 due carts per statement (`FOR UPDATE SKIP LOCKED` on PostgreSQL) and sends each batch
  with a few statements (engine.batches); RQ only runs retries, syncs and the periodic sweep, and
  deliveries are drained from the database (engine.intake). (d) measures it from outside: a
  pending cart adds nothing to Redis that the noise of `used_memory` can show.
- **(c) sandbox dispatch, 2 workers** (profile of one worker, 2,000 steps): ~89% of the samples
  are in `advance_batch`: writing the ledger (`write_ledger` ~49%: `_load` reading the batch's
  carts, contacts, steps and settings ~14%, `_write_messages` ~30%, of which the message rows'
  INSERT ~10%, template rendering ~6% with Babel's money format, link signing with
  itsdangerous ~5%) and recording outcomes (`record_outcomes` ~36%, its `update_rows`
  executemany ~15%). By library: psycopg ~47% (about half of it `Connection.wait`, the round
  trips to the server: the worker waits for PostgreSQL, which runs on the same 2 CPUs),
  SQLAlchemy ~18% (the ORM loading rows in `_load`/`grouped`/`record_outcomes`), the
  project's own code ~12%. PostgreSQL's own CPU is ~1 ms per message besides the worker's.
  What would move it: fewer round trips per batch (the outcome update and the message insert
  as one statement each rather than executemany), Core rows instead of ORM objects when
  loading, the money format cached per store and currency.
- **(b) lateness** is (c) under a due rate: the dispatcher polls every 0.1 s, so the floor is
  that plus one batch's send; above the workers' rate the backlog grows and p99 grows with it.
- **(f) cloud dispatch**: the same ledger path (`write_ledger` ~30-50% of the samples) plus the
  number's pace (`_reserve`: one Lua call per number per batch taking the number's next moments,
  GCRA, and a pipeline of pair slots) and the HTTP calls (httpcore ~27% of the samples with 10
  numbers). Costs found in profiles and fixed: httpcore's shared pool scanned under one lock by
  64 send threads (~25% of a worker's CPU; each send thread now keeps its own connections), a
  TLS context built per send thread from the CA bundle (~9%; now one per worker), httpx's INFO
  line per request (~6%; now WARNING and up), and a token bucket's one-second burst (now exact
  pacing). Messages used to leave late and together when their moments passed before they
  could go, and early when their moment was counted from before the batch's Redis calls (one
  per number: 10 numbers showed 90-96 in a second for one number). Now a moment is counted
  from Redis's answer; the moments lie on a grid of Redis's clock, 80 to each second from its
  start to 150 ms before its end, so a send up to ~100 ms late still counts in its own second,
  and one later than that is not sent (it goes again later); a batch's moments start after a
  lead learned from the time batches take to commit their ledger; sends are handed to the 64
  send threads at their moments by one thread; a worker starts its send threads before its
  first batch and freezes its start-up objects out of the garbage collector (full collections
  stopped it 100-235 ms). A moment stored with 14 digits lost one grid point a batch (74
  messages/s for one number) until it was stored in full. Carts told to wait come back at
  turns promised evenly, 3 % faster than the rate (the surplus is told to wait again): at exactly the rate, nothing brought the number's
  next free moment back ahead of the askers after a stall of the workers (~0.15 s on two shared
  CPUs), it sank to the lead, and each second's last moments passed unused (1 run in 5 at 80
  messages/s; 6 in 7 with the surplus). What remains, traced moment by moment (each
  reservation against the fake's arrivals): every moment taken is sent, none late; the lost
  ones were never taken. (1) At a burst's start the dispatchers claimed full batches back to
  back: all 4 batch slots of both workers held batches of fresh carts waiting ~0.45 s on their
  few sends, and no claim took the moments that opened for ~0.35 s: 7-13 moments, 11-21 lost in
  a run in all. Freeing a slot once its batch's ledger is committed removed that, but with 10
  numbers it doubled worker CPU per message and sent 100-700 sends too late for their second
  (262-640 messages/s against 513-547): reverted. Now a dispatcher claims again at once after
  a full claim only while no other of its batches is in flight, otherwise at its next poll
  (app.worker, `claims_back_to_back`): the claims stay a poll apart, and runs lose 0-5 moments
  (8 single runs in a row at 80, 29.8-30.04 s first to last); 10 numbers no lower (481-534
  in single runs, interleaved with the old claims later on a slower machine: 445 and 477
  against 291 and 388; a full run that printed 342 was slower in every row, (c) included),
  (c) 1 worker ~8 % lower (two full claims a poll while batches overlap). (2) Within each
  second the carts come back evenly, 3 % above the rate, while the moments run at 94/s until
  the guard: the lead over the moments falls from ~0.35 s towards the 0.1 s floor by the
  second's end, and a claim that comes late there loses 1-7. Turns on a grid of the same shape
  kept that lead flat but were no better in runs (2 in 5 at 79). The measure's own ceiling is
  79.97: a sender using every moment sends 2,400 in 30.0 s first to last, whatever the phase,
  so the printed 80 needs 15 lost moments or fewer; with 10 numbers, sends leave up to
  ~100 ms after their moment (the interpreter lock, with the workers busy), so a sliding 1 s
  window shows up to ~90 for one number while each calendar second holds at most 80. A number
  held by its pace has its waiting carts read again at each turn (1 number: ~6 ms of worker
  CPU per message, against ~1 ms in (c)); 10 numbers: ~2.4 ms. The fake is not what
  limits it: its row "fake Graph API alone" shows what it answers without cartback.
- **(a) ingest**: a delivery is answered by a WSGI layer in front of Flask (Flask's request
  context, routing and response objects were a third of its CPU) and committed to the web
  process's own SQLite spool (sequences.stores.spool: one table without indexes, one
  autocommitted insert on a kept connection); the workers move spooled deliveries into
  `webhook_delivery` (its unique keys drop replays) before they drain, ~35,000-50,000 a second
  in one process (the run prints it). Before the spool, the insert went to the shared database
  file and cost ~0.2 ms of a delivery's ~0.45 ms of server CPU: after another connection's
  commit SQLite drops a connection's page cache, so with two web processes inserting in turn
  every insert read again the ~20 pages of the table's, its six indexes' and the store's
  B-trees (measured outside the app: ~70 µs alone, ~165 µs in turn, plus the busy retries).
  What remains per delivery (~0.26 ms against hello's ~0.18): the spool insert and its WAL
  commit ~40 µs, the demo connector's parse, the signature, JSON and headers ~40 µs (measured
  by skipping the insert: ~0.22 ms); the rest is gunicorn's, as for hello.
- **(h) experiments**: the intervals are closed-form (a few microseconds a read), so the
  simulation's time is numpy's. The results page reads each arm's kept figures (8 shard
  rows an arm, written as the engine changes carts and messages: sequences.experiments.figures),
  so its time does not grow with the experiment: the analysis alone takes ~5 ms in process,
  the rest of the ~8 ms is the request and its JSON. Before the figures were kept it was one statement joining every
  assignment with its cart and messages, ~2.2 s at this size. Counting an existing
  experiment's assignments once, on upgrade (migrations 0012-0014), is the slow part now
  (~90 s for ~630,000; printed above).
"""

TARGETS: tuple[tuple[str, str, str, str, float], ...] = (
    # (section key, row measure, what, comparison, target)
    ("dispatch", "2 workers: messages/s", "(c) 2 workers, messages/s", ">=", 300),
    ("dispatch", "2 workers: worker CPU per message", "(c) 2 workers, worker CPU per message (ms)", "<=", 3),
    ("lateness", "2 workers, 167/s due: lateness p99", "(b) 2 workers, 167/s due, lateness p99 (s)", "<=", 2),
    ("lateness", "2 workers, 167/s due: sent", "(b) 2 workers, 167/s due, steps sent", ">=", 10_000),
    ("cloud", "1 number, 2 workers: messages/s", "(f) 1 number, 2 workers, messages/s", ">=", 80),
    (
        "cloud",
        "1 number, 2 workers: most messages for one number in one second",
        "(f) 1 number, most messages in one second (Meta's 80/s)",
        "<=",
        80,
    ),
    ("cloud", "10 numbers, 2 workers: messages/s", "(f) 10 numbers, 2 workers, messages/s", ">=", 250),
    (
        "cloud",
        "10 numbers, 2 workers: most messages for one number in one second",
        "(f) 10 numbers, most messages for one number in one second (Meta's 80/s)",
        "<=",
        80,
    ),
    ("memory", "bytes per pending cart", "(d) Redis bytes per pending cart", "<=", 1024),
    ("ingest", "sync: ingest / hello", "(a) sync: ingest / hello (×)", ">=", 0.5),
    ("ingest", "gthread", "(a) gthread: ingest / hello (×)", ">=", 0.5),
    (
        "experiments",
        "A/A, recovery rate",
        "(h) A/A experiments declaring a winner, recovery rate (%)",
        "<=",
        5,
    ),
    ("experiments", "A/A, net revenue", "(h) A/A experiments declaring a winner, net revenue (%)", "<=", 5),
    ("experiments", "lift = planned effect", "(h) a planned lift found by the planned carts (%)", ">=", 80),
    ("experiments", "coverage", "(h) coverage of the true difference at every look (%)", ">=", 95),
    (
        "experiments",
        "GET /api/experiments/<id>",
        "(h) an experiment's results at 1,000,000 carts, p50 (ms)",
        "<=",
        300,
    ),
)
_NUMBER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?")


def _figure(text: str, measure: str) -> float | None:
    """The first number of a result, in seconds when the result is a duration and the
    measure is a lateness (``812 ms`` -> 0.812)."""
    plain = text.replace("**", "").replace("≥ ", "")
    match = _NUMBER.search(plain)
    if match is None:
        return None
    value = float(match.group().replace(",", ""))
    if "lateness" in measure and plain[match.end() :].strip().startswith("ms"):
        value /= 1000
    return value


def verdicts(sections: Sequence[Section]) -> list[str]:
    """One line per issue-16 target: the figure this run measured and whether it is met."""
    lines = []
    for key, measure, what, comparison, target in TARGETS:
        section = next((s for s in sections if s.key == key and not s.skipped), None)
        row = None
        if section is not None:
            row = next(
                (
                    r
                    for r in section.rows
                    if r.measure.replace("**", "").startswith(measure)
                    and (measure != "gthread" or r.measure.replace("**", "").endswith("ingest / hello"))
                ),
                None,
            )
        if row is None:
            lines.append(f"- {what}: not measured in this run")
            continue
        value = _figure(row.result, measure)
        if value is None:
            lines.append(f"- {what}: {row.result} (not a figure)")
            continue
        bounded = "≥" in row.result  # a lower bound: steps were still unsent at the time limit
        met = value >= target if comparison == ">=" else value <= target and not bounded
        bound = " (a lower bound: steps unsent at the time limit)" if bounded else ""
        lines.append(
            f"- {what}: {row.result.replace('**', '')} — target {comparison.replace('>=', '≥').replace('<=', '≤')} "
            f"{target:,g}: **{'met' if met else 'not met'}**{bound}"
        )
    return lines


def render(machine: Machine, sections: Sequence[Section], total_seconds: float) -> str:
    out = [
        "# cartback benchmarks",
        "",
        "Figures, not pass/fail tests. `make bench` (= `.venv/bin/python -m bench.run`) starts its own",
        "redis-server, a PostgreSQL server, SQLite databases and app processes on free 127.0.0.1 ports,",
        "prints figures as it goes, stops everything it started and rewrites this file. These machines",
        "are noisy: speed is judged as a ratio against a baseline measured in the same run, not as an",
        "absolute number.",
        "`python -m bench.run --help` lists options (one benchmark only, a quick smoke run).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| date | {machine.date} |",
        f"| CPUs (nproc) | {machine.nproc} ({machine.cpu}) |",
        f"| Python | {machine.python} |",
        f"| Redis | {machine.redis} |",
        f"| wrk | {machine.wrk} |",
        f"| code | {machine.commit} |",
        f"| run time | {total_seconds / 60:.1f} min |",
        "",
        "## Results",
        "",
        "| benchmark | measure | result | reference / target |",
        "|---|---|---|---|",
    ]
    for section in sections:
        if section.skipped:
            out.append(f"| {section.title} | — | skipped: {section.skipped} | |")
            continue
        for row in section.rows:
            out.append(f"| {section.title} | {row.measure} | {row.result} | {row.reference} |")
    out += ["", "## Targets: met or not (computed from this run's rows)", "", *verdicts(sections)]
    out += ["", WHERE_THE_TIME_GOES.strip(), "", "## What each benchmark does", ""]
    for section in sections:
        about = textwrap.fill(" ".join(section.about.split()), width=100, break_on_hyphens=False)
        out += [f"### {section.title}", "", about, ""]
        if section.notes:
            out += ["Observations from this run:", ""]
            out += [f"- {note}" for note in section.notes]
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def write_readme(machine: Machine, sections: Sequence[Section], total_seconds: float) -> Path:
    README.write_text(render(machine, sections, total_seconds))
    return README
