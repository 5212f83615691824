"""rq-dashboard's workers data lists a running daemon (issue 13, item 4), without a browser.

Runs rq-dashboard 0.9.0 `--json` from `.venv-dash` (made by `python -m bench.rq_dashboard_shot`, which
also takes the screenshots); skipped when that venv is absent, since rq-dashboard is not a dependency.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import redis

from bench.rq_dashboard_shot import DASH_VENV, free_port, get
from tests.helpers import running_daemon, wait_until
from tests.integration.test_rq_worker import worker_name


def test_rq_dashboard_lists_the_idle_daemon_on_its_queues(client: redis.Redis, redis_url: str) -> None:
    command = DASH_VENV / "bin" / "rq-dashboard"
    if not command.exists():
        pytest.skip(f"no {command}: `python -m bench.rq_dashboard_shot` installs rq-dashboard there")
    port = free_port()
    with running_daemon(redis_url):
        dash = subprocess.Popen(
            [str(command), "--json", "-u", redis_url, "-b", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}/0/data/workers.json"
            status, body = wait_until(lambda: (reply := get(url))[0] and reply, timeout_s=30, interval_s=0.2)
            assert status == 200, body[:2000]
            listed = [(w["name"], w["state"], w["queues"]) for w in json.loads(body)["workers"]]
            assert listed == [(worker_name(client), "idle", ["p0", "p1", "p2", "p3"])]
        finally:
            dash.terminate()
            dash.wait(10)
