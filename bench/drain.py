"""One drain of our daemon, for A/B runs of a change and for profiles: no peers, no latency probes.

    python -m bench.drain [--jobs 30000] [--func bench.peer_jobs.noop] [--arg 0.001 ...]
                          [--profile profile.txt]

Starts a redis-server of its own, enqueues `--jobs` jobs of `--func` in advance (plain RQ, JSON, queue
p1), starts one `python -m adaptive_scheduler run` (2 slots) and prints the jobs/s and the Redis CPU per
job from the first finished job to the last (start-up excluded). With `--profile`, py-spy (`pip
install py-spy`) samples the daemon and its slots during the drain and writes its raw output there
(one line per stack and count; each stack starts with the process's title).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from adaptive_scheduler.redis_server import RedisServer
from rq import Queue
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from bench.peers import redis_snapshot

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drain", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30000)
    parser.add_argument("--func", default="bench.peer_jobs.noop", help="dotted path of the job function")
    parser.add_argument("--arg", type=float, action="append", default=[], help="a positional argument")
    parser.add_argument("--profile", type=Path, help="write py-spy's raw samples of the drain here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="asched-drain-") as tmp:
        server = RedisServer(Path(tmp, "redis"), persistent=False).start()
        try:
            rate, cpu_us = drain(server.url, args, Path(tmp))
        finally:
            server.stop()
    print(f"{args.jobs:,} jobs of {args.func}: {rate:,.0f} jobs/s, Redis CPU {cpu_us:.0f} µs/job")
    return 0


def drain(url: str, args: argparse.Namespace, tmp: Path) -> tuple[float, float]:
    client = redis.Redis.from_url(url)
    queue = Queue("p1", connection=client, serializer=JSONSerializer)
    for start in range(0, args.jobs, 1000):
        count = min(1000, args.jobs - start)
        queue.enqueue_many([queue.prepare_data(args.func, tuple(args.arg)) for _ in range(count)])
    finished = FinishedJobRegistry("p1", connection=client)
    module = args.func.rpartition(".")[0]
    env = dict(
        os.environ,
        ASCHED_REDIS_URL=url,
        ASCHED_ALLOWED_MODULES=f'["{module}"]',
        ASCHED_LOG_LEVEL="WARNING",
    )
    with open(tmp / "daemon.log", "w") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "adaptive_scheduler", "run"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    spy = None
    try:
        while (first := finished.count) == 0:
            if daemon.poll() is not None:
                raise SystemExit(f"the daemon exited: {(tmp / 'daemon.log').read_text()[-2000:]}")
            time.sleep(0.005)
        started, cpu_before = time.monotonic(), redis_snapshot(client).cpu_s
        if args.profile:
            cmd = ["py-spy", "record", "--subprocesses", "-r", "200", "-f", "raw", "-o", str(args.profile)]
            spy = subprocess.Popen([*cmd, "--pid", str(daemon.pid)], stdout=subprocess.DEVNULL)
        while finished.count < args.jobs:
            time.sleep(0.005)
        took_s, cpu_s = time.monotonic() - started, redis_snapshot(client).cpu_s - cpu_before
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        daemon.terminate()
        daemon.wait(30)
    done = args.jobs - first
    return done / took_s, cpu_s / done * 1e6


if __name__ == "__main__":
    sys.exit(main())
