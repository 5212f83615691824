"""What RQ's own enqueue costs Redis, with no consumer: how busy a burst's producers keep it.

A fresh redis-server; `--producers` processes send `enqueue_many` batches of `--batch` jobs (plain RQ,
JSON, the load benchmarks' sender: `bench.openloop.RqSender`) as fast as they can for `--seconds`.
Prints the jobs/s and the growth of Redis's `used_cpu_user + used_cpu_sys` per job and per second
(the share of one core), and writes bench/results/enqueue_cost.md.

    python -m bench.enqueue_cost [--producers 3] [--batch 100] [--seconds 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import redis
from adaptive_scheduler.redis_server import RedisServer

from bench.openloop import RqSender

RESULTS = Path(__file__).resolve().parent / "results"


def produce(url: str, name: str, batch: int, until: float, sent: mp.Queue) -> None:  # type: ignore[type-arg]
    """One producer: batches of `batch` P1 jobs until `until` (wall clock); reports how many it sent."""
    sender = RqSender(url, name)
    sender.warm_up()
    seq = 0
    while time.time() < until:
        seq = sender.send([(0.0, 1, batch)], time.time(), seq)
    sent.put(seq)


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.enqueue_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--producers", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100, help="jobs per enqueue_many")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="asched-enqueue-") as tmp:
        server = RedisServer(Path(tmp, "redis"), persistent=False).start()
        try:
            client = redis.Redis.from_url(server.url)
            spawn = mp.get_context("spawn")
            sent: mp.Queue = spawn.Queue()  # type: ignore[type-arg]
            until = time.time() + 2.0 + args.seconds  # 2 s to start the producers and connect
            procs = [
                mp.get_context("spawn").Process(
                    target=produce, args=(server.url, f"e{i}", args.batch, until, sent)
                )
                for i in range(args.producers)
            ]
            for proc in procs:
                proc.start()
            time.sleep(2.0)
            cpu_before, jobs_before, began = redis_cpu_s(client), client.llen("rq:queue:p1"), time.monotonic()
            for proc in procs:
                proc.join()
            took_s, cpu_s = time.monotonic() - began, redis_cpu_s(client) - cpu_before
            jobs = int(client.llen("rq:queue:p1")) - int(jobs_before)
            total = sum(sent.get() for _ in procs)
        finally:
            server.stop()
    text = (
        f"{args.producers} producers, enqueue_many batches of {args.batch}, no consumer: {jobs:,} jobs in "
        f"{took_s:.1f} s ({jobs / took_s:,.0f} jobs/s; {total:,} sent in all): Redis CPU "
        f"{1e6 * cpu_s / max(1, jobs):.1f} us per job, {100 * cpu_s / took_s:.0f} % of one core "
        f"(started {stamp})"
    )
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "enqueue_cost.md").write_text(f"# RQ enqueue cost, {stamp}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
