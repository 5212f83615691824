"""How fast `pause` and `resume` take effect across daemons, and what the producer's check costs.

Starts a private redis-server and two daemons (two slots each, the test fixtures allowlisted), then,
`--runs` times: pause P3 (`pausing.pause`, what the command runs: write the flag, publish, wait until
both daemons' published status shows it), enqueue a P3 job that must still be queued 0.5 s later,
resume P3 (`controls.resume`) and read the job's RQ `started_at` minus the time read just before the
resume; then the whole `adaptive-scheduler pause P3` / `resume P3` commands as a user runs them
(interpreter start-up included). Also the producer helper: `Backpressure.check` per call, cached (one
read per second) and uncached (`max_age_s=0`: one round trip of two HGETALLs), over 2,000 calls.

    python -m bench.pause [--runs 5]

Prints a table and writes bench/results/pause.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from adaptive_scheduler import controls, pausing
from adaptive_scheduler.backpressure import Backpressure
from adaptive_scheduler.model import Priority
from adaptive_scheduler.redis_server import RedisServer
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.helpers import DaemonProcess, queue, wait_until

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "pause.md"


def timed_cli(url: str, *args: str) -> float:
    """Run `adaptive-scheduler ARGS` as a user would; returns its wall time in seconds (must succeed)."""
    started = time.perf_counter()
    env = {"ASCHED_REDIS_URL": url, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "adaptive_scheduler", *args], env=env, capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return time.perf_counter() - started


def one_round(client: redis.Redis, url: str) -> tuple[float, float, float, float]:
    """(pause applied by both, s; resume -> job start, s; `pause` command, s; `resume` command, s)."""
    started = time.perf_counter()
    assert pausing.pause(client, [Priority.P3], None, lambda _: None)
    applied_s = time.perf_counter() - started
    job = queue(client, 3).enqueue("tests.fixtures.jobs.add", 1, 2)
    time.sleep(0.5)
    assert client.lrange("rq:queue:p3", 0, -1) == [job.id.encode()], "the paused job left its queue"
    before = time.time()
    controls.resume(client, [Priority.P3])
    fetch = lambda: Job.fetch(job.id, connection=client, serializer=JSONSerializer)  # noqa: E731
    wait_until(lambda: fetch().get_status() == "finished", 10)
    job_started = fetch().started_at
    assert job_started is not None
    pause_cli, resume_cli = timed_cli(url, "pause", "P3"), timed_cli(url, "resume", "P3")
    return applied_s, job_started.timestamp() - before, pause_cli, resume_cli


def check_us(client: redis.Redis, max_age_s: float, calls: int = 2000) -> float:
    bp = Backpressure(client, max_age_s=max_age_s)
    started = time.perf_counter()
    for _ in range(calls):
        bp.check("P3")
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="asched-bench-pause-") as directory:
        server = RedisServer(Path(directory), persistent=False).start()
        daemons = [DaemonProcess(server.url, env={"ASCHED_LOG_LEVEL": "INFO"}) for _ in range(2)]
        try:
            daemons[0].wait_ready(count=2)
            client = redis.Redis.from_url(server.url)
            rounds = [one_round(client, server.url) for _ in range(args.runs)]
            cached, uncached = check_us(client, 1.0), check_us(client, 0.0)
        finally:
            for daemon in daemons:
                daemon.stop()
                daemon.log.close()
            server.stop()
    columns = list(zip(*rounds, strict=True))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"# pause / resume, 2 daemons, {args.runs} runs ({when})",
        "",
        "| measure | median | min | max |",
        "|---|---|---|---|",
        _row("pause P3 written -> both daemons show it in their status (ms)", columns[0]),
        _row("resume P3 written -> the held P3 job starts (ms)", columns[1]),
        _row("`adaptive-scheduler pause P3`, whole command (ms)", columns[2]),
        _row("`adaptive-scheduler resume P3`, whole command (ms)", columns[3]),
        f"| `Backpressure.check`, cached 1 s (µs per call) | {cached:.1f} | | |",
        f"| `Backpressure.check`, uncached: one round trip (µs per call) | {uncached:.1f} | | |",
        "",
        f"`python -m bench.pause --runs {args.runs}`",
    ]
    text = "\n".join(lines) + "\n"
    RESULTS.write_text(text)
    print(text)


def _row(name: str, values: tuple[float, ...]) -> str:
    ms = [v * 1000 for v in values]
    return f"| {name} | {statistics.median(ms):.0f} | {min(ms):.0f} | {max(ms):.0f} |"


if __name__ == "__main__":
    main()
