"""Backlog benchmark: the daemon's memory stays flat whether 10 or 1,000,000 jobs wait in Redis.

For each backlog size: a fresh redis-server, N no-op jobs enqueued with plain RQ (JSON), then the
daemon started; after a warm-up it is sampled while it drains (the backlog stays in Redis: the daemon
holds at most `local_queue_depth` claimed jobs). Reported: RSS and PSS of the daemon process and of
its whole tree (daemon + 2 slots), Redis's used_memory, and the drain rate while sampling.

    python -m bench.backlog [--sizes 10 1000000] [--sample-s 10]

Prints a table and writes bench/results/backlog.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import redis
from adaptive_scheduler.redis_server import RedisServer
from rq import Queue
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from tests.helpers import FIXTURES

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20


def enqueue(client: redis.Redis, n: int) -> float:
    """Enqueue `n` no-op jobs on p3 in batches; returns the seconds it took."""
    queue = Queue("p3", connection=client, serializer=JSONSerializer)
    started = time.monotonic()
    for start in range(0, n, 2000):
        queue.enqueue_many(
            [queue.prepare_data("tests.fixtures.jobs.noop") for _ in range(min(2000, n - start))]
        )
    return time.monotonic() - started


def measure(n: int, sample_s: float, tmp: Path) -> dict[str, float]:
    server = RedisServer(tmp / f"redis-{n}", persistent=False).start()
    client = redis.Redis.from_url(server.url)
    daemon = None
    try:
        enqueue_s = enqueue(client, n)
        env = {**os.environ, "ASCHED_REDIS_URL": server.url, "ASCHED_LOG_LEVEL": "WARNING", **FIXTURES}
        daemon = subprocess.Popen([sys.executable, "-m", "adaptive_scheduler", "run"], cwd=ROOT, env=env)
        time.sleep(2.0)  # warm-up: slots up, first batches drained
        finished = FinishedJobRegistry("p3", connection=client)
        done_before, started = finished.count, time.monotonic()
        top = psutil.Process(daemon.pid)
        peak_rss = peak_tree_pss = peak_pss = 0.0
        while time.monotonic() - started < sample_s:
            tree = [top, *top.children(recursive=True)]
            info = top.memory_full_info()
            peak_rss = max(peak_rss, info.rss / MIB)
            peak_pss = max(peak_pss, info.pss / MIB)
            peak_tree_pss = max(peak_tree_pss, sum(p.memory_full_info().pss for p in tree) / MIB)
            time.sleep(0.5)
        rate = (finished.count - done_before) / (time.monotonic() - started)
        return {
            "waiting": n,
            "enqueue_s": enqueue_s,
            "daemon_rss_mb": peak_rss,
            "daemon_pss_mb": peak_pss,
            "tree_pss_mb": peak_tree_pss,
            "redis_mb": client.info("memory")["used_memory"] / MIB,
            "still_waiting": client.llen("rq:queue:p3"),
            "jobs_per_s": rate,
        }
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=30)
        client.close()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backlog", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1_000_000])
    parser.add_argument("--sample-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="asched-backlog-") as tmp:
        rows = [measure(n, args.sample_s, Path(tmp)) for n in args.sizes]
    head = (
        "| jobs waiting | daemon RSS MiB | daemon PSS MiB | daemon+slots PSS MiB | Redis MiB "
        "| still waiting at end | drain jobs/s |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        rate = f"{r['jobs_per_s']:,.0f}" if r["jobs_per_s"] else "(drained in warm-up)"
        lines.append(
            f"| {r['waiting']:,} | {r['daemon_rss_mb']:.1f} | {r['daemon_pss_mb']:.1f} "
            f"| {r['tree_pss_mb']:.1f} | {r['redis_mb']:.0f} | {r['still_waiting']:,} | {rate} |"
        )
    text = "\n".join(lines) + f"\n\n(peaks over {args.sample_s:g} s of sampling after a 2 s warm-up)"
    print(text)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (results / "backlog.md").write_text(f"# Backlog benchmark, {stamp}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
