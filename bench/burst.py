"""Burst traffic: a steady 10 % load, then 10x capacity for 10 s on top of it, then the 10 % again.

Our daemon (two pool slots, plain RQ producers, JSON) on one redis-server, the jobs' start stamps on
a second one, the jobs ``bench.peer_jobs.burn`` (1 ms of CPU; see ``bench.openloop``):

1. **Capacity**: a drain of ``--capacity-jobs`` such jobs enqueued in advance (``bench.peers.drain``).
2. **Baseline stream** for the whole run: ``--producers`` processes, Poisson arrivals at 10 % of the
   capacity, 10 % P0 and the rest over P1-P3.
3. **Burst**, from ``--base-s`` for ``--burst-s`` seconds: ``--burst-producers`` more processes send
   ``--burst-x`` times the capacity in pipelined RQ ``enqueue_many`` batches of ``--batch`` jobs,
   P1-P3 only (the backlog P0 must overtake; a burst of 10 % P0 at 10x capacity would be a P0
   overload on its own), on a fixed schedule (a producer behind sends what is due at once).
4. **Tail**: the baseline stream goes on until the backlog should have drained, plus ``--after-s``.

A sampler thread reads the daemon's RSS (its one process: ``run`` execs the daemon) and the queues'
total length every 0.1 s. Reported: jobs lost (sent, never started) and started twice; the daemon's
RSS against its median during the first phase; P0 latency while the burst is sent and until the
backlog is gone; the peak backlog, the time from that peak to empty queues against peak / capacity;
the time from empty queues to the first 1-s window (by scheduled send time) whose p99 is back within
twice the first phase's p99.

    python -m bench.burst [--base-s 10] [--burst-s 10] [--burst-x 10] [--after-s 15]

Prints one table and writes bench/results/burst.md and burst.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import redis
from adaptive_scheduler.redis_server import RedisServer

from bench import peer_jobs, runqueue
from bench.load import QUIET_S, fmt, spec_for
from bench.openloop import (
    QUEUES,
    ProducerPlan,
    ProducerStats,
    Stamp,
    batch_schedule,
    poisson_schedule,
    read_stamps,
    report_twice,
    run_producers,
    wait_for_stamps,
)
from bench.peers import Driver, consumer_env, drain, percentile, start_consumers, stop_consumers, wait_ready

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SAMPLE_S = 0.1
MIB = 2**20
WINDOW_S = 1.0
BASE_LOAD = 0.10
GOALS = "lost 0; RSS flat within 10 %; P0 p99 <= 10 ms during the burst; baseline <= 5 s after drained"


@dataclass(frozen=True)
class Sample:
    at: float  # wall clock, s
    rss_mib: float
    queued: int


class Sampler(threading.Thread):
    """Reads the daemon's RSS and the queues' total length every ``SAMPLE_S`` until stopped."""

    def __init__(self, pid: int, r: redis.Redis) -> None:
        super().__init__(daemon=True)
        self.proc, self.r = psutil.Process(pid), r
        self.samples: list[Sample] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            pipe = self.r.pipeline(transaction=False)
            for name in QUEUES:
                pipe.llen(f"rq:queue:{name}")
            queued = sum(pipe.execute())
            self.samples.append(Sample(time.time(), self.proc.memory_info().rss / MIB, queued))
            self.halt.wait(SAMPLE_S)


@dataclass(frozen=True)
class BurstResult:
    capacity_per_s: float
    base_per_s: float
    burst_per_s: float
    burst_sent: int
    burst_send_span_s: float  # from the burst's first scheduled send to its last producer's finish
    sent: int
    started: int
    lost: int
    duplicates: int
    rss_base_mib: float
    rss_max_mib: float
    rss_growth_pct: float
    p0_burst_n: int
    p0_burst_p99_ms: float | None
    p0_burst_call_p99_ms: float | None  # ... from the actual send
    p0_burst_lag_p99_ms: float | None  # ... how late the baseline producers sent them (CPU-starved)
    p0_backlog_n: int
    p0_backlog_p50_ms: float | None
    p0_backlog_p99_ms: float | None
    p0_backlog_max_ms: float | None
    p0_backlog_call_p99_ms: float | None  # from the actual send: the producer's delay taken out
    peak_backlog: int
    drain_s: float | None
    ideal_drain_s: float
    base_p99_ms: float | None
    recovery_s: float | None
    rss_series: list[tuple[float, float, int]]  # (s from epoch, RSS MiB, jobs queued), every ~1 s
    cpu_wait_us: dict[str, float | None]  # mean run-queue wait per timeslice over the run, by role
    loadavg_1m: float  # the machine's at the end (others' work included)


def recovery_s(stamps: list[Stamp], drained_at: float, end: float, threshold_ms: float) -> float | None:
    """Seconds from ``drained_at`` to the first ``WINDOW_S`` window (by scheduled send) within threshold."""
    t = drained_at
    while t + WINDOW_S <= end:
        window = [s.latency_ms for s in stamps if t <= s.sent_at < t + WINDOW_S]
        p99 = percentile(window, 99)
        if p99 is not None and p99 <= threshold_ms:
            return t - drained_at
        t += WINDOW_S
    return None


def analyse(
    capacity: float,
    args: argparse.Namespace,
    epoch: float,
    stats: list[ProducerStats],
    stamps: list[Stamp],
    samples: list[Sample],
    waits: dict[str, tuple[int, int]],
    loadavg_1m: float,
) -> BurstResult:
    """Every figure of the report from the stamps, the samples and the run-queue waits (pure)."""
    burst_start, burst_end = epoch + args.base_s, epoch + args.base_s + args.burst_s
    burst_stats = [s for s in stats if s.name.startswith("burst")]
    burst_finish = burst_end + max((s.lag_max_ms for s in burst_stats), default=0.0) / 1000
    tags = {s.tag for s in stamps}
    sent = sum(s.jobs for s in stats)
    base_rss = statistics.median(s.rss_mib for s in samples if s.at < burst_start)
    peak = max(samples, key=lambda s: s.queued)
    drained = next((s for s in samples if s.at > peak.at and s.queued == 0), None)
    drained_at = drained.at if drained else samples[-1].at
    p0_burst_stamps = [s for s in stamps if s.priority == 0 and burst_start <= s.sent_at < burst_end]
    p0_burst = [s.latency_ms for s in p0_burst_stamps]
    p0_stamps = [s for s in stamps if s.priority == 0 and burst_start <= s.sent_at < drained_at]
    p0_backlog = [s.latency_ms for s in p0_stamps]
    base = [s.latency_ms for s in stamps if s.sent_at < burst_start]
    base_p99 = percentile(base, 99)
    last_sent = max(s.sent_at for s in stamps)
    recovery = None
    if drained is not None and base_p99 is not None:
        recovery = recovery_s(stamps, drained.at, last_sent, 2 * base_p99)
    series, next_at = [], epoch
    for s in samples:
        if s.at >= next_at:
            series.append((round(s.at - epoch, 1), round(s.rss_mib, 1), s.queued))
            next_at += 1.0
    return BurstResult(
        capacity_per_s=capacity,
        base_per_s=capacity * BASE_LOAD,
        burst_per_s=capacity * args.burst_x,
        burst_sent=sum(s.jobs for s in burst_stats),
        burst_send_span_s=burst_finish - burst_start,
        sent=sent,
        started=len(stamps),
        lost=sent - len(tags),
        duplicates=len(stamps) - len(tags),
        rss_base_mib=base_rss,
        rss_max_mib=max(s.rss_mib for s in samples),
        rss_growth_pct=100 * (max(s.rss_mib for s in samples) / base_rss - 1),
        p0_burst_n=len(p0_burst),
        p0_burst_p99_ms=percentile(p0_burst, 99),
        p0_burst_call_p99_ms=percentile([s.from_call_ms for s in p0_burst_stamps], 99),
        p0_burst_lag_p99_ms=percentile([s.latency_ms - s.from_call_ms for s in p0_burst_stamps], 99),
        p0_backlog_n=len(p0_backlog),
        p0_backlog_p50_ms=percentile(p0_backlog, 50),
        p0_backlog_p99_ms=percentile(p0_backlog, 99),
        p0_backlog_max_ms=max(p0_backlog, default=None),
        p0_backlog_call_p99_ms=percentile([s.from_call_ms for s in p0_stamps], 99),
        peak_backlog=peak.queued,
        drain_s=drained.at - peak.at if drained else None,
        ideal_drain_s=peak.queued / capacity,
        base_p99_ms=base_p99,
        recovery_s=recovery,
        rss_series=series,
        cpu_wait_us={role: runqueue.wait_per_slice_us(*totals) for role, totals in waits.items()},
        loadavg_1m=loadavg_1m,
    )


def plans_for(url: str, capacity: float, args: argparse.Namespace) -> tuple[list[ProducerPlan], float]:
    """The baseline producers' and the burst producers' schedules, and the planned length of the run."""
    burst_jobs = capacity * args.burst_x * args.burst_s
    tail_s = 1.5 * burst_jobs / (capacity * (1 - BASE_LOAD)) + args.after_s
    end_s = args.base_s + args.burst_s + tail_s
    rng = random.Random(args.seed)
    base_rate = capacity * BASE_LOAD / args.producers
    plans = [
        ProducerPlan("ours", url, f"base{i}", poisson_schedule(base_rate, 0, end_s, rng))
        for i in range(args.producers)
    ]
    burst_rate = capacity * args.burst_x / args.burst_producers
    start, stop = args.base_s, args.base_s + args.burst_s
    plans += [
        ProducerPlan(
            "ours", url, f"burst{i}", batch_schedule(burst_rate, start, stop, args.batch, i), args.burst_nice
        )
        for i in range(args.burst_producers)
    ]
    return plans, end_s


def run(args: argparse.Namespace, url: str, stamp_url: str, log: Path, redis_pid: int) -> BurstResult:
    r, stamp_r = redis.Redis.from_url(url), redis.Redis.from_url(stamp_url)
    r.flushdb()
    spec = spec_for("ours", url, stamp_url)
    driver: Driver = spec.make_driver(r, url)
    consumers = start_consumers(driver.commands(), consumer_env(url, spec.env), log)
    sampler = None
    try:
        wait_ready(r, driver, consumers)
        capacity = drain(r, driver, consumers, args.capacity_jobs).jobs_per_s
        wait_for_stamps(stamp_r, args.capacity_jobs, timeout_s=10.0)
        plans, end_s = plans_for(url, capacity, args)
        print(f"capacity {capacity:,.0f} jobs/s; running {end_s:.0f} s", flush=True)
        time.sleep(QUIET_S)
        stamp_r.delete(peer_jobs.STAMPS_KEY)
        sampler = Sampler(consumers.procs[0].pid, redis.Redis.from_url(url))
        sampler.start()
        watched = {"consumers": [p.pid for p in consumers.tree()], "redis": [redis_pid]}
        before = {role: runqueue.read(pids) for role, pids in watched.items()}
        epoch, stats = run_producers(plans)
        waits = {role: runqueue.totals(before[role], runqueue.read(pids)) for role, pids in watched.items()}
        waits["producers"] = (sum(s.wait_ns for s in stats), sum(s.slices for s in stats))
        sent = sum(s.jobs for s in stats)
        wait_for_stamps(stamp_r, sent, timeout_s=30.0)
        time.sleep(QUIET_S)
        sampler.halt.set()
        sampler.join()
        stamps = read_stamps(stamp_r)
        report_twice(stamps, r, "bench.burst", log)
        return analyse(capacity, args, epoch, stats, stamps, sampler.samples, waits, os.getloadavg()[0])
    finally:
        if sampler is not None:
            sampler.halt.set()
        stop_consumers(consumers)
        driver.close()
        r.flushdb()
        r.close()
        stamp_r.close()


def format_report(res: BurstResult, args: argparse.Namespace) -> str:
    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("met" if ok else "MISSED")

    def seconds(value: float | None) -> str:
        return "never" if value is None else f"{value:.1f} s"

    p0 = res.p0_backlog_p99_ms
    p0_figures = f"{fmt(res.p0_backlog_p50_ms)} / {fmt(p0)} / {fmt(res.p0_backlog_max_ms)} ms"
    rows = [
        ("capacity (drain, 1 ms jobs)", f"{res.capacity_per_s:,.0f} jobs/s", ""),
        ("baseline load (10 %)", f"{res.base_per_s:,.0f} jobs/s", ""),
        (
            f"burst ({args.burst_x:g}x for {args.burst_s:g} s, P1-P3)",
            f"{res.burst_sent:,} jobs sent over {res.burst_send_span_s:.1f} s",
            f"{res.burst_per_s:,.0f} jobs/s asked",
        ),
        ("jobs sent / started", f"{res.sent:,} / {res.started:,}", ""),
        ("jobs lost / started twice", f"{res.lost} / {res.duplicates}", f"goal 0: {verdict(res.lost == 0)}"),
        (
            "daemon RSS: first phase median -> max",
            f"{res.rss_base_mib:.1f} -> {res.rss_max_mib:.1f} MiB ({res.rss_growth_pct:+.1f} %)",
            f"goal within 10 %: {verdict(abs(res.rss_growth_pct) <= 10)}",
        ),
        ("P0 p99 while the burst is sent", f"{fmt(res.p0_burst_p99_ms)} ms (n={res.p0_burst_n})", ""),
        (
            "... from the actual send / producer's lag p99",
            f"{fmt(res.p0_burst_call_p99_ms)} / {fmt(res.p0_burst_lag_p99_ms)} ms",
            "lag: scheduled -> actual send (baseline producers short of CPU)",
        ),
        (
            "P0 p50 / p99 / max, burst start -> drained",
            f"{p0_figures} (n={res.p0_backlog_n})",
            f"goal p99 <= 10 ms: {verdict(None if p0 is None else p0 <= 10)}",
        ),
        ("P0 p99 from the actual send, same jobs", f"{fmt(res.p0_backlog_call_p99_ms)} ms", ""),
        ("peak backlog", f"{res.peak_backlog:,} jobs", ""),
        (
            "peak -> queues empty",
            seconds(res.drain_s),
            f"backlog / capacity = {res.ideal_drain_s:.1f} s",
        ),
        (
            "drained -> p99 back within 2x baseline",
            seconds(res.recovery_s),
            f"baseline p99 {fmt(res.base_p99_ms)} ms; goal <= 5 s: "
            + verdict(None if res.recovery_s is None else res.recovery_s <= 5),
        ),
    ]
    waits = "/".join(
        "-" if res.cpu_wait_us.get(k) is None else f"{res.cpu_wait_us[k]:.0f}"
        for k in ("consumers", "redis", "producers")
    )
    rows.append(("CPU wait per timeslice, consumers/redis/producers", f"{waits} us", ""))
    rows.append(("machine load average (1 min) at the end", f"{res.loadavg_1m:.1f}", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{a.ljust(widths[0])}  {b.ljust(widths[1])}  {c}".rstrip() for a, b, c in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__.splitlines()[0])
    parser.add_argument("--base-s", type=float, default=10.0, help="10 %% load before the burst")
    parser.add_argument("--burst-s", type=float, default=10.0)
    parser.add_argument("--burst-x", type=float, default=10.0, help="burst rate, times the capacity")
    parser.add_argument("--after-s", type=float, default=15.0, help="tail beyond the expected drain")
    parser.add_argument("--producers", type=int, default=2, help="baseline producer processes")
    parser.add_argument("--burst-producers", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100, help="jobs per enqueue_many in the burst")
    parser.add_argument(
        "--burst-nice",
        type=int,
        default=0,
        help="run the burst producers this many nice steps lower, so that on a small machine they do not "
        "starve the baseline producers whose P0 jobs are measured (default 0)",
    )
    parser.add_argument("--capacity-jobs", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args(argv)
    started, stamp = time.monotonic(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="asched-burst-") as tmp:
        server = RedisServer(Path(tmp, "redis"), persistent=False).start()
        stamps = RedisServer(Path(tmp, "stamps"), persistent=False).start()
        try:
            assert server.process is not None
            result = run(args, server.url, stamps.url, Path(tmp, "ours.log"), server.process.pid)
        finally:
            server.stop()
            stamps.stop()
    took_s = time.monotonic() - started
    text = "\n".join(
        [
            format_report(result, args),
            "",
            f"(goals: {GOALS}; {args.producers} baseline + {args.burst_producers} burst producers, "
            f"batches of {args.batch}"
            + (f", burst producers at nice {args.burst_nice}" if args.burst_nice else "")
            + f"; started {stamp}, {took_s:.0f} s in all)",
        ]
    )
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "burst.md").write_text(f"# Burst benchmark, {stamp}\n\n```\n{text}\n```\n")
    (RESULTS / "burst.json").write_text(
        json.dumps({"when": stamp, "args": vars(args), **asdict(result)}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
