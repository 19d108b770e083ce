"""`make bench`: run the benchmarks, print figures as they come, rewrite bench/README.md.

    .venv/bin/python -m bench.run                 # everything (~20 minutes on 2 cores; admin seeds 1M carts)
    .venv/bin/python -m bench.run --only memory   # one or more of: ingest lateness dispatch memory shopify cloud admin experiments
    .venv/bin/python -m bench.run --quick         # small counts, a smoke test of the bench itself

One private redis-server serves the whole run (emptied between scenarios), and one private
PostgreSQL server, started on first use; every scenario gets a fresh database of its own
(PostgreSQL for (b), (c), (d), (f), SQLite for the extra rows and (a), (e); the admin's seeds
its own PostgreSQL).
Everything started is stopped at the end, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from bench import admin, cloud, dispatch, experiments, ingest, lateness, redis_memory, shopify_webhooks
from bench.environment import BenchEnv
from bench.processes import start_redis, stop_all_uninterrupted
from bench.report import Machine, Section, say, write_readme

BENCHMARKS = ("ingest", "lateness", "dispatch", "memory", "shopify", "cloud", "admin", "experiments")


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP unwind like Ctrl-C, so the finally blocks stop every child.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    parser.add_argument("--quick", action="store_true", help="small counts and short runs (smoke test)")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite bench/README.md")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy one app process per benchmark (profiles in bench/results/)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (databases, logs) for a look")
    args = parser.parse_args(argv)
    chosen = args.only or list(BENCHMARKS)
    # A partial, quick or profiled (py-spy perturbs) run would overwrite the full table with
    # less: keep the README then.
    write = not (args.no_readme or args.quick or args.profile) and set(chosen) == set(BENCHMARKS)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)

    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="cartback-bench-"))
    say(f"bench: temp dir {root}")
    sections: list[Section] = []
    failed: list[str] = []
    wrk_version = "not used"
    env: BenchEnv | None = None
    try:
        redis_server = start_redis(root / "redis")
        say(f"bench: redis-server {redis_server.version} on {redis_server.url}")
        env = bench_env = BenchEnv(root=root, redis=redis_server, profile=args.profile)
        runners: dict[str, Callable[[], Section]] = {
            "lateness": lambda: lateness.run(bench_env, lateness.quick() if args.quick else None),
            "dispatch": lambda: dispatch.run(bench_env, dispatch.quick() if args.quick else None),
            "memory": lambda: redis_memory.run(bench_env, redis_memory.quick() if args.quick else None),
            "shopify": lambda: shopify_webhooks.run(
                bench_env, shopify_webhooks.quick() if args.quick else None
            ),
            "cloud": lambda: cloud.run(bench_env, cloud.quick() if args.quick else None),
            "admin": lambda: admin.run(bench_env, admin.quick() if args.quick else None),
            "experiments": lambda: experiments.run(bench_env, experiments.quick() if args.quick else None),
        }
        for name in BENCHMARKS:
            if name not in chosen:
                continue
            say("")
            try:
                if name == "ingest":
                    section, wrk_version = ingest.run(bench_env, ingest.quick() if args.quick else None)
                else:
                    section = runners[name]()
            except Exception as exc:
                # One broken benchmark (an app crash, a tool missing) must not hide the others.
                traceback.print_exc()
                section = Section(name, name, "", skipped=f"failed: {type(exc).__name__}: {str(exc)[:200]}")
                failed.append(name)
            sections.append(section)
        machine = Machine.describe(redis_server.version, wrk_version)
    except KeyboardInterrupt:
        say("\nbench: interrupted; stopping everything it started")
        return 130
    finally:
        if env is not None:
            env.close()
        stop_all_uninterrupted()
        if args.keep:
            say(f"bench: kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    elapsed = time.monotonic() - started
    say(f"\nbench: done in {elapsed / 60:.1f} min")
    if write:
        path = write_readme(machine, sections, elapsed)
        say(f"bench: wrote {path}")
    else:
        say("bench: bench/README.md left as it was (partial, quick, profiled or --no-readme run)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
