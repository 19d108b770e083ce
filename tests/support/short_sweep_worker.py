"""`cartback worker` with the sweep's period shortened, for the test that counts sweeps per period.

    python -m tests.support.short_sweep_worker SECONDS [worker options]

Everything else is the production worker: the same periodic claim (app.worker.claim_period),
the same dispatcher and job loops. rq's job lines are logged at INFO so the test can read which
job ids ran ("Job OK (sweep-<period>)").
"""

from __future__ import annotations

import sys

import app.worker
from app.cli.main import main as cli


def run(argv: list[str]) -> None:
    app.worker.SWEEP_INTERVAL_SECONDS = int(argv[0])
    app.worker.RQ_LOG_LEVEL = "INFO"
    cli(["worker", *argv[1:]])


if __name__ == "__main__":
    run(sys.argv[1:])
