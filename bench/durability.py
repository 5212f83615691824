"""What `replica_acks` costs: a drain of no-op jobs on a master with one replica, WAIT off and on.

Each claim-and-settle call is followed, in the same packet, by `WAIT 1 <timeout>` when `replica_acks`
is 1: the daemon reads the reply once the replica has the call's writes. Rounds alternate the two
modes (the machine's speed drifts); the ratio is taken pair by pair.

    python -m bench.durability [--jobs 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import redis
from rq import Queue
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from tests.helpers import DaemonProcess, wait_until
from tests.sentinel_cluster import SentinelCluster

RESULTS = Path(__file__).resolve().parent / "results"


def drain(cluster: SentinelCluster, jobs: int, acks: int) -> float:
    """Jobs per second for one drain of `jobs` no-op jobs enqueued in advance."""
    master = redis.Redis(port=cluster.master_port)
    master.flushdb()
    queue = Queue("p1", connection=master, serializer=JSONSerializer)
    for start in range(0, jobs, 1000):
        queue.enqueue_many(
            [Queue.prepare_data("tests.fixtures.jobs.noop") for _ in range(min(1000, jobs - start))]
        )
    env = {"ASCHED_REPLICA_ACKS": str(acks), "ASCHED_LOG_LEVEL": "WARNING"}
    daemon = DaemonProcess(f"redis://127.0.0.1:{cluster.master_port}/0", env=env)
    try:
        started = time.monotonic()
        daemon.wait_ready()
        finished = FinishedJobRegistry("p1", connection=master, serializer=JSONSerializer)
        wait_until(lambda: finished.count >= jobs, timeout_s=300, interval_s=0.05)
        return jobs / (time.monotonic() - started)
    finally:
        daemon.stop()
        daemon.log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.durability", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    cluster = SentinelCluster().start()
    rows = []
    try:
        for round_no in range(1, args.rounds + 1):
            modes = (0, 1) if round_no % 2 else (1, 0)
            rates = {acks: drain(cluster, args.jobs, acks) for acks in modes}
            rows.append((round_no, rates[0], rates[1], rates[1] / rates[0]))
            print(
                f"round {round_no}: WAIT off {rates[0]:,.0f} jobs/s, WAIT 1 {rates[1]:,.0f} jobs/s",
                flush=True,
            )
    finally:
        cluster.stop()
    lines = [
        f"# replica_acks cost, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"`python -m bench.durability --jobs {args.jobs} --rounds {args.rounds}`: a master and one replica,"
        " loopback",
        "",
        "| round | replica_acks 0, jobs/s | replica_acks 1, jobs/s | ratio |",
        "|---|---|---|---|",
        *(f"| {r} | {off:,.0f} | {on:,.0f} | {ratio:.2f} |" for r, off, on, ratio in rows),
        f"| median | | | {statistics.median(r[3] for r in rows):.2f} |",
        "",
    ]
    text = "\n".join(lines)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "durability.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
