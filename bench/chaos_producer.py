"""The producer of `bench.chaos`: uniquely identified jobs at a steady rate, with plain RQ, until SIGTERM.

It reaches the master through Sentinel (redis-py re-resolves it after a failover) and retries on any
error. Every attempt has a fresh job id, so an enqueue whose reply was lost is never sent twice under
one id. Each attempt is one line of `out`: `ok <job id> <unix s> <job seconds>` once Redis confirmed it,
`err <job id> <unix s> <error type>` otherwise; only confirmed enqueues count as sent.

    python -m bench.chaos_producer URL RECORDER_URL OUT --rate 10 --seed 1
"""

from __future__ import annotations

import argparse
import random
import signal
import time
from pathlib import Path
from typing import TextIO

import redis
from adaptive_scheduler.redis_url import connect
from rq import Queue, Retry
from rq.serializers import JSONSerializer

TASK = "tests.fixtures.jobs.record_execution"
KEEP_S = 24 * 3600  # results and failures outlive the run: an expired job must not look lost


class Producer:
    """Enqueues one job every 1/rate s (late attempts are not bunched up: the pace resumes)."""

    def __init__(self, url: str, recorder_url: str, out: TextIO, seed: int) -> None:
        client = connect(url, socket_timeout=1, socket_connect_timeout=1)
        self.queue = Queue("p2", connection=client, serializer=JSONSerializer)
        self.recorder_url, self.out = recorder_url, out
        self.rng = random.Random(seed)
        self.attempts = 0
        self.stopping = False

    def run(self, rate: float) -> None:
        interval_s, due = 1.0 / rate, time.monotonic()
        while not self.stopping:
            self.attempt()
            due = max(due + interval_s, time.monotonic() - interval_s)
            time.sleep(max(0.0, due - time.monotonic()))

    def attempt(self) -> None:
        self.attempts += 1
        job_id, seconds = f"chaos-{self.attempts:06d}", round(self.rng.uniform(0.05, 0.5), 3)
        try:
            self.queue.enqueue(
                TASK,
                self.recorder_url,
                seconds,
                job_id=job_id,
                result_ttl=KEEP_S,
                failure_ttl=KEEP_S,
                retry=Retry(max=2),
            )
        except (redis.RedisError, OSError) as error:
            self.out.write(f"err {job_id} {time.time():.6f} {type(error).__name__}\n")
            time.sleep(0.05)
        else:
            self.out.write(f"ok {job_id} {time.time():.6f} {seconds}\n")
        self.out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos_producer", description=__doc__.splitlines()[0]
    )
    parser.add_argument("url")
    parser.add_argument("recorder_url")
    parser.add_argument("out", type=Path)
    parser.add_argument("--rate", type=float, default=10.0, help="jobs per second")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with args.out.open("a") as out:
        producer = Producer(args.url, args.recorder_url, out, args.seed)
        signal.signal(signal.SIGTERM, lambda *_: setattr(producer, "stopping", True))
        producer.run(args.rate)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
