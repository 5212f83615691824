"""Several daemons, one Redis: does Redis's cost per job stay flat as daemons are added?

Every daemon on every host shares one Redis, so Redis's CPU per job sets the ceiling of the whole
deployment: one Redis core settles at most 1 / (Redis CPU seconds per job) jobs per second, however many
daemons there are. For 1, 2 and 4 daemons (two slots each, pool mode) against one redis-server (the
same configuration as `bench.dispatch`: append-only file, `appendfsync everysec`, otherwise Redis's
defaults), each round:
the daemons are started and warmed up (a few jobs each), frozen with SIGSTOP, `--jobs` no-op jobs are
enqueued with plain RQ (JSON), and SIGCONT starts the clock. Measured until the finished registry has
grown by `--jobs`:

- aggregate jobs/s: jobs over the time from SIGCONT to the poll that saw the last one finished;
- Redis CPU per job: growth of `used_cpu_user + used_cpu_sys` (INFO cpu) over the drain, over jobs;
- Redis CPU utilisation: that growth over the drain's wall time (1.0 = one core busy);
- Redis commands per job (INFO commandstats, the harness's own polls included: a few per 5 ms);
- per-daemon share: the jobs each daemon ran (the job hash's `worker_name`), as a percentage, and
  the smallest share over the fair one (1.0 = perfectly even);
- projected ceiling: 1 / Redis CPU per job, per Redis core.

On the 2-core machine the aggregate cannot grow with daemons (they share the cores with Redis); the
point is the cost per job and the ceiling it implies.

    python -m bench.scale [--daemons 1 2 4] [--jobs 10000] [--rounds 1]

Prints a table and writes bench/results/scale.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import redis
from adaptive_scheduler.redis_server import RedisServer
from rq import Queue
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from bench import peer_jobs
from bench.dispatch import stock_redis
from bench.peers import (
    POLL_S,
    Consumers,
    consumer_env,
    frozen,
    redis_snapshot,
    start_consumers,
    stop_consumers,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
QUEUE = "p1"
WARMUP_JOBS = 20
ENV = {
    "ASCHED_SLOT_MODE": "pool",
    "ASCHED_SLOTS": "2",
    "ASCHED_ALLOWED_MODULES": '["bench.peer_jobs"]',
    "ASCHED_LOG_LEVEL": "WARNING",
}


@dataclass(frozen=True)
class ScaleRow:
    daemons: int
    jobs: int
    jobs_per_s: float
    redis_cpu_us_per_job: float
    redis_cpu_utilisation: float
    redis_cmds_per_job: float
    shares_pct: list[float]  # per daemon, largest first
    fairness: float  # smallest share over the fair share
    ceiling_jobs_per_s: float  # per Redis core: 1 / Redis CPU per job


def enqueue(q: Queue, n: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, 1000):
        jobs = q.enqueue_many([q.prepare_data(peer_jobs.noop) for _ in range(min(1000, n - start))])
        ids += [job.id for job in jobs]
    return ids


def drain_round(r: redis.Redis, url: str, daemons: int, n: int, log: Path) -> ScaleRow:
    """Start `daemons` daemons on a flushed DB, drain `n` jobs, stop them."""
    r.flushdb()
    q = Queue(QUEUE, connection=r, serializer=JSONSerializer)
    finished = FinishedJobRegistry(QUEUE, connection=r)
    command = [sys.executable, "-m", "adaptive_scheduler", "run"]
    consumers: Consumers = start_consumers(
        [command] * daemons, consumer_env(url, {"ASCHED_REDIS_URL": url, **ENV}), log
    )
    try:
        wait_until(lambda: len(consumers.tree()) == 3 * daemons, "every daemon and its slots", consumers)
        wait_until(
            lambda: len(list(r.scan_iter(match="asched:status:*"))) == daemons, "registration", consumers
        )
        warm = enqueue(q, WARMUP_JOBS * daemons)
        wait_until(lambda: finished.count >= len(warm), "the warm-up jobs", consumers)
        with frozen(consumers):
            ids = enqueue(q, n)
            target = finished.count + n
            before = redis_snapshot(r)
            started = time.monotonic()
        while finished.count < target:
            consumers.check_alive()
            if time.monotonic() - started > max(60.0, n / 10):
                raise RuntimeError(f"{daemons} daemons: not drained:\n{consumers.log_tail()}")
            time.sleep(POLL_S)
        elapsed = time.monotonic() - started
        after = redis_snapshot(r)
        with r.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(f"rq:job:{job_id}", "worker_name")
            ran_by = Counter(pipe.execute())
    finally:
        stop_consumers(consumers)
        r.flushdb()
    cpu_s = after.cpu_s - before.cpu_s
    shares = sorted((100 * c / n for c in ran_by.values()), reverse=True)
    shares += [0.0] * (daemons - len(shares))
    return ScaleRow(
        daemons=daemons,
        jobs=n,
        jobs_per_s=n / elapsed,
        redis_cpu_us_per_job=cpu_s * 1e6 / n,
        redis_cpu_utilisation=cpu_s / elapsed,
        redis_cmds_per_job=(after.calls - before.calls) / n,
        shares_pct=shares,
        fairness=min(shares) / (100 / daemons),
        ceiling_jobs_per_s=n / cpu_s,
    )


def median_row(rows: list[ScaleRow]) -> ScaleRow:
    """The round with the median Redis CPU per job (an actual round, not a mix of rounds)."""
    ordered = sorted(rows, key=lambda row: row.redis_cpu_us_per_job)
    return ordered[(len(ordered) - 1) // 2]


def format_table(rows: list[ScaleRow]) -> str:
    head = (
        "daemons",
        "jobs/s",
        "Redis CPU µs/job",
        "Redis CPU util",
        "Redis cmds/job",
        "shares %",
        "fairness",
        "ceiling jobs/s/core",
    )
    cells = [head] + [
        (
            str(row.daemons),
            f"{row.jobs_per_s:,.0f}",
            f"{row.redis_cpu_us_per_job:.0f}",
            f"{row.redis_cpu_utilisation:.2f}",
            f"{row.redis_cmds_per_job:.1f}",
            "/".join(f"{s:.0f}" for s in row.shares_pct),
            f"{row.fairness:.2f}",
            f"{row.ceiling_jobs_per_s:,.0f}",
        )
        for row in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--daemons", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--jobs", type=int, default=10000, help="no-op jobs per drain")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; the median is reported")
    args = parser.parse_args(argv)
    started = time.monotonic()
    runs: dict[int, list[ScaleRow]] = {k: [] for k in args.daemons}
    with tempfile.TemporaryDirectory(prefix="asched-scale-") as tmp:
        server = RedisServer(Path(tmp, "redis"), persistent=True).start()
        try:
            r = redis.Redis.from_url(server.url)
            stock_redis(r)
            version = r.info("server")["redis_version"]
            for i in range(args.rounds):
                for k in args.daemons:
                    runs[k].append(drain_round(r, server.url, k, args.jobs, Path(tmp, f"{k}-{i}.log")))
        finally:
            server.stop()
    rows = [median_row(runs[k]) for k in args.daemons]
    cpu = [row.redis_cpu_us_per_job for row in rows]
    ceiling = statistics.median(row.ceiling_jobs_per_s for row in rows)
    lines = [
        format_table(rows),
        "",
        "ceiling = 1 / (Redis CPU seconds per job): the jobs/s one Redis core can settle, whatever the "
        "number of daemons",
        f"Redis CPU per job across daemon counts: {min(cpu):.0f}-{max(cpu):.0f} µs "
        f"(max/min {max(cpu) / min(cpu):.2f}); median ceiling {ceiling:,.0f} jobs/s per Redis core",
        f"({args.jobs} no-op jobs per drain, 2 slots per daemon, {args.rounds} round(s), median round shown; "
        f"redis-server {version} with appendonly yes; {time.monotonic() - started:.0f} s in all)",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (RESULTS / "scale.md").write_text(f"# Several daemons, one Redis, {stamp}\n\n```\n{text}\n```\n")
    raw = {"when": stamp, "rounds": {k: [asdict(row) for row in v] for k, v in runs.items()}}
    (RESULTS / "scale.json").write_text(json.dumps(raw, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
