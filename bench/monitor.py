"""Monitor cost: CPU time of one memory reading (daemon + 2 slot processes), and of the governor's
whole per-sample work (reading, classifying), as a share of one core at the default 100 ms cadence.

    python -m bench.monitor [--samples 5000]

Runs inside a cgroup-limited process only if started in one; the reading then includes the cgroup files.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time

from adaptive_scheduler.governor.monitor import Monitor
from adaptive_scheduler.governor.pressure import State, Thresholds, classify


def _idle(conn: multiprocessing.connection.Connection) -> None:
    conn.recv()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.monitor", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--interval-s", type=float, default=0.1)
    args = parser.parse_args(argv)
    children = []
    for _ in range(2):
        parent, child = multiprocessing.Pipe()
        process = multiprocessing.get_context("fork").Process(target=_idle, args=(child,))
        process.start()
        children.append((parent, process))
    monitor = Monitor(budget_bytes=None)
    for index, (_, process) in enumerate(children):
        monitor.track(index, process.pid)  # type: ignore[arg-type]
    state, thresholds = State(), Thresholds()
    started_cpu, started = time.process_time(), time.perf_counter()
    for i in range(args.samples):
        sample = monitor.sample()
        state = classify(sample.percent, state, thresholds, float(i))
    cpu_us = (time.process_time() - started_cpu) / args.samples * 1e6
    wall_us = (time.perf_counter() - started) / args.samples * 1e6
    share = cpu_us / (args.interval_s * 1e6) * 100
    print(
        f"one reading + classification (daemon + 2 slots, budget from {monitor.budget_source}): "
        f"{cpu_us:.0f} µs CPU ({wall_us:.0f} µs wall), {args.samples} samples"
    )
    print(f"at one reading per {args.interval_s * 1000:.0f} ms: {share:.2f} % of one core")
    for parent, process in children:
        parent.send(None)
        process.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
