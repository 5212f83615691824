"""rq-dashboard against a running daemon, in a real headless browser (issue 13: "RQ's tools see a worker").

Starts a private Redis, a daemon with two slots, plain RQ jobs that finish, fail and keep running, and
rq-dashboard 0.9.0 with `--json` (our payloads are JSON) from its own venv, `.venv-dash` (made here if
missing: `python3 -m venv .venv-dash && .venv-dash/bin/pip install rq-dashboard==0.9.0 six`; 0.9.0
imports `six` without declaring it). Then it checks what the dashboard serves: its workers data lists
the daemon, busy, on p0..p3, with a running job; its queues data counts our queues; the finished-jobs
page answers 200 with `--json`. Headless Chromium takes screenshots of the Workers and Jobs pages.

    python -m bench.rq_dashboard_shot [--chromium chromium]

Writes bench/results/rq-dashboard-workers.png, rq-dashboard-jobs.png and rq-dashboard.md.
Needs Debian's `chromium` (`apt-get install -y chromium`) for the screenshots; without it, the checks
still run and the screenshots are skipped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from adaptive_scheduler.redis_server import RedisServer

from tests.helpers import DaemonProcess, queue, wait_until

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DASH_VENV = ROOT / ".venv-dash"
DASH_VERSION = "0.9.0"
WINDOW = "1400,1000"


def dashboard_venv() -> Path:
    """The venv's rq-dashboard command, installing it there first if needed."""
    command = DASH_VENV / "bin" / "rq-dashboard"
    if not command.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DASH_VENV)], check=True)
        pip = [str(DASH_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, f"rq-dashboard=={DASH_VERSION}", "six"], check=True)
    return command


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (urllib.error.URLError, ConnectionError) as error:  # not listening yet
        return 0, str(error)


def screenshot(chromium: str, url: str, out: Path) -> bool:
    """A PNG of `url` once its scripts had 5 s of (virtual) time to fetch and render their data."""
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={WINDOW}",
            "--virtual-time-budget=5000",
            f"--screenshot={out}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode == 0 and out.exists() and out.stat().st_size > 10_000


def produce(client: redis.Redis) -> dict[str, list[str]]:
    """Jobs the pages show: finished, failed, then two running (both slots busy) with three behind."""
    finished = [queue(client, 1).enqueue("tests.fixtures.jobs.add", i, 1).id for i in range(6)]
    failed = [queue(client, 2).enqueue("tests.fixtures.jobs.fail", "shown in rq-dashboard").id]
    wait_until(lambda: client.zcard("rq:finished:p1") == 6 and client.zcard("rq:failed:p2") == 1, 20)
    running = [queue(client, p).enqueue("tests.fixtures.jobs.sleep", 3).id for p in (1, 3)]
    waiting = [queue(client, 3).enqueue("tests.fixtures.jobs.sleep", 0.2).id for _ in range(3)]
    return {"finished": finished, "failed": failed, "running": running, "queued": waiting}


def busy_workers_status(base: str, client: redis.Redis, name: str) -> int:
    """The HTTP status of the workers data while the daemon runs a job.

    rq-dashboard 0.9.0 loads workers with `Worker.all(connection=...)`, i.e. RQ's default (pickle)
    serializer even under `--json`, and fetches each busy worker's current job with it: a JSON job
    cannot be unpickled and the endpoint answers 500, for our daemon as for `rq worker --serializer
    JSONSerializer`. Recorded, not asserted."""
    wait_until(lambda: client.hget(f"rq:worker:{name}", "state") == b"busy", 10)
    return get(f"{base}/0/data/workers.json")[0]


def check(base: str, daemon_name: str) -> dict[str, Any]:
    """What the dashboard serves once the daemon is idle, asserted; returns it for the report."""
    status, body = get(f"{base}/0/data/workers.json")
    assert status == 200, (status, body[:2000])
    workers = json.loads(body)["workers"]
    assert [w["name"] for w in workers] == [daemon_name], workers
    worker = workers[0]
    assert worker["state"] == "idle" and worker["queues"] == ["p0", "p1", "p2", "p3"], worker
    assert worker["successful_job_count"] == 11 and worker["failed_job_count"] == 1, worker
    status, page = get(f"{base}/0/view/workers")
    assert status == 200 and "workers.json" in page, status  # the page renders that data with its script
    status, body = get(f"{base}/0/data/queues.json")
    assert status == 200, (status, body[:2000])
    counts = {q["name"]: q["count"] for q in json.loads(body)["queues"]}
    finished_page, _ = get(f"{base}/0/view/jobs/p1/finished/8/asc/1")
    failed_data, failed_body = get(f"{base}/0/data/jobs/p2/failed/8/asc/1.json")
    assert finished_page == 200 and failed_data == 200, (finished_page, failed_data, failed_body[:2000])
    assert "shown in rq-dashboard" in failed_body, failed_body[:2000]
    return {"worker": worker, "queues": counts}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = dashboard_venv()
    with tempfile.TemporaryDirectory(prefix="asched-dash-") as tmp:
        server = RedisServer(Path(tmp) / "redis", persistent=False).start()
        client = redis.Redis.from_url(server.url)
        daemon = DaemonProcess(server.url, env={"ASCHED_SLOTS": "2"}).wait_ready()
        port = free_port()
        dash_log = (Path(tmp) / "dash.log").open("wb")
        dash = subprocess.Popen(
            [str(command), "--json", "-u", server.url, "-b", "127.0.0.1", "-p", str(port)],
            stdout=dash_log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            jobs = produce(client)
            (status_key,) = client.scan_iter(match="asched:status:*")
            name = "adaptive-scheduler:" + status_key.decode().removeprefix("asched:status:")
            wait_until(lambda: get(f"{base}/0/data/workers.json")[0] == 200, 30, 0.2)
            busy_status = busy_workers_status(base, client, name)
            ends = jobs["running"] + jobs["queued"]
            wait_until(
                lambda: client.zcard("rq:finished:p1") + client.zcard("rq:finished:p3") == 6 + len(ends), 30
            )
            wait_until(lambda: client.hget(f"rq:worker:{name}", "state") == b"idle", 10)
            figures = check(base, name) | {"busy_status": busy_status}
            shots = {}
            for page, path in (("workers", "/0/view/workers"), ("jobs", "/0/view/jobs/p1/finished/8/asc/1")):
                out = RESULTS / f"rq-dashboard-{page}.png"
                shots[page] = (
                    screenshot(args.chromium, base + path, out) if shutil.which(args.chromium) else False
                )
        except AssertionError:
            print((Path(tmp) / "dash.log").read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            dash.terminate()
            dash.wait(10)
            dash_log.close()
            daemon.kill()
            daemon.log.close()
            client.close()
            server.stop()
    report(figures, shots)


def report(figures: dict[str, Any], shots: dict[str, bool]) -> None:
    worker = figures["worker"]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# rq-dashboard {DASH_VERSION} against a running daemon ({stamp})",
        "",
        "`python -m bench.rq_dashboard_shot`: rq-dashboard started with `--json`, one daemon with 2 slots;",
        "6 jobs finished on p1 and 1 failed on p2, then 2 ran (3 s sleeps, p1 and p3) with 3 queued behind.",
        "",
        "| what the dashboard served | value |",
        "|---|---|",
        f"| workers listed (idle daemon) | 1: `{worker['name']}` |",
        f"| its state, queues | {worker['state']}, {', '.join(worker['queues'])} |",
        f"| workers data while it ran a job | HTTP {figures['busy_status']} (read with pickle) |",
        f"| finished / failed counts | {worker['successful_job_count']} / {worker['failed_job_count']} |",
        f"| queue counts (waiting) | {', '.join(f'{k} {v}' for k, v in sorted(figures['queues'].items()))} |",
        "| finished-jobs page, failed-jobs data | HTTP 200, 200 (the traceback's text shown) |",
        f"| screenshots taken | workers: {shots.get('workers', False)}, jobs: {shots.get('jobs', False)} |",
        "",
    ]
    text = "\n".join(lines)
    (RESULTS / "rq-dashboard.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
