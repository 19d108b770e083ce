"""`make demo-cloud` from the outside: the demo journey on the Cloud API transport, with the fake
Graph API as Meta, as a newcomer runs it (real processes: fake Graph API, gunicorn, worker)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]


def test_the_cloud_demo_sends_templates_follows_statuses_and_honours_stop(tmp_path, redis_url):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("WHATSAPP_", "CARTBACK_", "DATABASE_URL", "APP_URL", "SECRET_KEY", "ENCRYPTION_KEY")
        )
    }
    env.update(
        PORT=str(free_port()),
        GRAPH_PORT=str(free_port()),
        PYTHON_BIN=str(REPO / ".venv" / "bin" / "python"),
        CARTBACK_INSTANCE_PATH=str(tmp_path),
        REDIS_URL=redis_url,
        # Step 2 comes 12 s after the last activity instead of 24 s: the scene is the same. Not
        # faster: the demo store's own clicks, ~0.5 s apart, must stay well inside the 15 quiet
        # minutes (0.75 s here), or the cart is rightly judged unreachable before its phone
        # arrives (the workers look every 0.1 s).
        CARTBACK_TIME_SCALE="1200",
    )
    done = subprocess.run(
        [str(REPO / "tools" / "demo-cloud"), "--exit-after-journey"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Number checked: Kurta Corner, quality GREEN" in output
    assert "WhatsApp template cart_recovery_image_v1 accepted by the Graph API" in output
    assert "Meta reports the message sent, delivered and read" in output
    assert "cart recovered: ₹2,098.00 revenue" in output
    # After the journey the demo signs in to the dashboard and reads the recovery off it.
    assert "Reconciled : 1 recovered orders re-read: 1 confirmed for ₹2,098.00" in output
    assert "Dashboard  : 1 cart recovered, ₹2,098.00 recovered revenue reconciled (+ ₹0.00 pending)" in output
    assert "/admin/login#token=" in output
    # Then it starts the demo store's experiment and says what it does.
    assert "Experiment : “Does ₹100 off in the first message pay?” is running on the demo store" in output
    assert "10 % the holdout (no message)" in output
    assert "taps Stop promotions" in output
    assert "step 2's time passed and nothing went out: cart opted_out" in output
