"""Latency under load, open loop: ours against Celery and tuned Dramatiq at the same offered loads.

For each system in turn (ours: the daemon with two pool slots fed through plain RQ into p0..p3;
Celery prefork x2 and Dramatiq 2 processes x 1 thread with prefetch 32, each on its single queue),
on one redis-server, with a second redis-server taking the jobs' start stamps:

1. **Capacity**: ``bench.peers.drain`` of ``--capacity-jobs`` jobs enqueued in advance, the jobs
   every later phase sends (``bench.peer_jobs.burn``: 1 ms of CPU, then one RPUSH of its stamp to the
   stamp server).
2. **Each load level** (25, 50, 75, 90 % of that capacity): ``--producers`` processes send jobs with
   Poisson arrivals for ``--seconds`` (``bench.openloop``), 10 % P0 and the rest spread over P1-P3.
   Latency is the job's first ``time.time()`` minus its *scheduled* send time (so a producer that
   falls behind counts against the system), nearest-rank p50/p99/p99.9 per priority. The harness then
   waits for every job's stamp (a missing one is reported) and a second of quiet before the next level.

    python -m bench.load [--seconds 30] [--levels 25 50 75 90] [--systems ours celery dramatiq-prefetch]

Prints one table and writes bench/results/load.md, load.json and load.png (latency against load).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import version
from pathlib import Path

import psutil
import redis
from adaptive_scheduler.redis_server import RedisServer

from bench import peer_jobs, runqueue
from bench.openloop import (
    SYSTEMS,
    CeleryCapacityDriver,
    DramatiqCapacityDriver,
    OurCapacityDriver,
    ProducerPlan,
    ProducerStats,
    Stamp,
    poisson_schedule,
    read_stamps,
    report_twice,
    run_producers,
    wait_for_stamps,
)
from bench.peers import (
    Driver,
    PeerSpec,
    consumer_env,
    cpu_snapshot,
    cpu_spent_s,
    drain,
    percentile,
    start_consumers,
    stop_consumers,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
GOALS_MS = {25: 5.0, 50: 5.0, 75: 5.0, 90: 10.0}  # issue 16: P0 p99 at each load level
QUIET_S = 1.0


def spec_for(system: str, url: str, stamp_url: str) -> PeerSpec:
    """How to start and drain one system, its consumers told where the stamps go."""
    stamp = {peer_jobs.STAMP_URL_ENV: stamp_url}
    if system == "ours":
        env = {
            **stamp,
            "ASCHED_REDIS_URL": url,
            "ASCHED_SLOT_MODE": "pool",
            "ASCHED_ALLOWED_MODULES": '["bench.peer_jobs"]',
            "ASCHED_LOG_LEVEL": "WARNING",
        }
        return PeerSpec(lambda r, url: OurCapacityDriver(r, url, "pool"), env=env)
    if system == "celery":
        return PeerSpec(CeleryCapacityDriver, env=stamp)
    return PeerSpec(
        lambda r, url: DramatiqCapacityDriver(r, url, 32), env={**stamp, "dramatiq_queue_prefetch": "32"}
    )


@dataclass(frozen=True)
class Percentiles:
    """Latency from the scheduled send; ``call_p99_ms`` from the actual send (the producer's delay
    taken out), to tell a late producer from a slow job system."""

    n: int
    p50_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    call_p99_ms: float | None


def percentiles(stamps: list[Stamp]) -> Percentiles:
    latencies_ms = [s.latency_ms for s in stamps]
    return Percentiles(
        len(latencies_ms),
        percentile(latencies_ms, 50),
        percentile(latencies_ms, 99),
        percentile(latencies_ms, 99.9),
        percentile([s.from_call_ms for s in stamps], 99),
    )


@dataclass(frozen=True)
class LevelResult:
    """One system at one offered load."""

    system: str
    load_pct: int
    offered_per_s: float
    sent: int
    stamped: int
    started_per_s: float
    producer_lag_p99_ms: float
    producer_cpu_pct: float  # of one core, all producers together
    by_priority: dict[str, Percentiles]
    cpu_wait_us: dict[str, float | None]  # mean run-queue wait per timeslice: consumers, redis, producers
    loadavg_1m: float  # the machine's, at the end of the level (others' work included)
    ran_twice: int = 0  # jobs of this level stamped more than once
    producer_send_p99_ms: float = 0.0  # the slowest producer's p99 time to send (enqueue round trips)
    # CPU per job started: consumers (job included), redis, producers (their sends); until all stamped
    cpu_us_per_job: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SystemResult:
    system: str
    capacity_per_s: float
    levels: list[LevelResult]


def summarise(
    system: str,
    load_pct: int,
    rate: float,
    seconds: float,
    stats: list[ProducerStats],
    stamps: list[Stamp],
    waits: dict[str, tuple[int, int]],
) -> LevelResult:
    """Percentiles per priority (P0..P3 and all) and what the producers did."""
    by_priority = {f"P{p}": percentiles([s for s in stamps if s.priority == p]) for p in range(4)}
    by_priority["all"] = percentiles(stamps)
    if stamps:
        span_s = max(s.started_at for s in stamps) - min(s.started_at for s in stamps)
        started_per_s = len(stamps) / span_s if span_s > 0 else 0.0
    else:
        started_per_s = 0.0
    return LevelResult(
        system=system,
        load_pct=load_pct,
        offered_per_s=rate,
        sent=sum(s.jobs for s in stats),
        stamped=len(stamps),
        started_per_s=started_per_s,
        producer_lag_p99_ms=max(s.lag_p99_ms for s in stats),
        producer_cpu_pct=100 * sum(s.cpu_s for s in stats) / seconds,
        by_priority=by_priority,
        cpu_wait_us={role: runqueue.wait_per_slice_us(*totals) for role, totals in waits.items()},
        loadavg_1m=os.getloadavg()[0],
        producer_send_p99_ms=max(s.send_p99_ms for s in stats),
    )


def run_level(
    system: str,
    url: str,
    stamp_r: redis.Redis,
    capacity: float,
    load_pct: int,
    args: argparse.Namespace,
    watched: dict[str, list[int]],
    log: Path,
) -> LevelResult:
    """Offer ``load_pct`` % of ``capacity`` for ``args.seconds`` and collect every job's stamp; the
    ``watched`` processes' run-queue waits (by role) are read over the same span; ``log`` is the
    consumers' (for the report of a job stamped twice)."""
    stamp_r.delete(peer_jobs.STAMPS_KEY)
    rate = capacity * load_pct / 100
    rng = random.Random(f"{args.seed}-{load_pct}")  # same arrivals for every system at this level
    plans = [
        ProducerPlan(
            system, url, f"{load_pct}p{i}", poisson_schedule(rate / args.producers, 0, args.seconds, rng)
        )
        for i in range(args.producers)
    ]
    before = {role: runqueue.read(pids) for role, pids in watched.items()}
    procs = {role: [psutil.Process(pid) for pid in pids] for role, pids in watched.items()}
    cpu_before = {role: cpu_snapshot(ps) for role, ps in procs.items()}
    _, stats = run_producers(plans)
    waits = {role: runqueue.totals(before[role], runqueue.read(pids)) for role, pids in watched.items()}
    waits["producers"] = (sum(s.wait_ns for s in stats), sum(s.slices for s in stats))
    sent = sum(s.jobs for s in stats)
    wait_for_stamps(stamp_r, sent, timeout_s=30.0)
    cpu_s = {role: cpu_spent_s(cpu_before[role], cpu_snapshot(ps)) for role, ps in procs.items()}
    cpu_s["producers"] = sum(s.cpu_s for s in stats)
    time.sleep(QUIET_S)
    # this level's jobs only (a late stamp of an earlier phase is not counted), each once
    ours = [stamp for stamp in read_stamps(stamp_r) if stamp.tag.startswith(f"{load_pct}p")]
    stamps = list({stamp.tag: stamp for stamp in ours}.values())
    result = summarise(system, load_pct, rate, args.seconds, stats, stamps, waits)
    per_job = {role: 1e6 * spent / max(1, len(stamps)) for role, spent in cpu_s.items()}
    result = replace(result, ran_twice=len(ours) - len(stamps), cpu_us_per_job=per_job)
    report_twice(ours, redis.Redis.from_url(url), f"bench.load, {system} at {load_pct} %", log)
    print(row_text(result, capacity), flush=True)
    return result


def measure_system(
    system: str, url: str, stamp_url: str, args: argparse.Namespace, log: Path, redis_pid: int
) -> SystemResult:
    """Start the system, measure its capacity on burn jobs, then offer each load level; stop it."""
    r = redis.Redis.from_url(url)
    stamp_r = redis.Redis.from_url(stamp_url)
    r.flushdb()
    spec = spec_for(system, url, stamp_url)
    driver: Driver = spec.make_driver(r, url)
    consumers = start_consumers(driver.commands(), consumer_env(url, spec.env), log)
    try:
        wait_ready(r, driver, consumers)
        capacity = drain(r, driver, consumers, args.capacity_jobs).jobs_per_s
        wait_for_stamps(stamp_r, args.capacity_jobs, timeout_s=10.0)
        print(f"{driver.system}: capacity {capacity:,.0f} jobs/s", flush=True)
        time.sleep(QUIET_S)
        levels = []
        for pct in args.levels:
            watched = {"consumers": [p.pid for p in consumers.tree()], "redis": [redis_pid]}
            levels.append(run_level(system, url, stamp_r, capacity, pct, args, watched, log))
        return SystemResult(driver.system, capacity, levels)
    finally:
        stop_consumers(consumers)
        driver.close()
        r.flushdb()
        r.close()
        stamp_r.close()


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fmt0(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


HEAD = (
    "system",
    "load",
    "offered/s",
    "started/s",
    "lost/twice",
    "prod lag p99",
    "send p99",
    "CPU wait c/r/p us",
    "CPU/job c/r/p us",
    "load avg",
    "prio",
    "n",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "p99 from call",
)


def table_rows(result: LevelResult) -> list[tuple[str, ...]]:
    """One row per priority (P0..P3, all); the level's own figures on its first row."""
    rows = []
    for i, (prio, pct) in enumerate(result.by_priority.items()):
        lead = (
            (
                result.system,
                f"{result.load_pct} %",
                f"{result.offered_per_s:,.0f}",
                f"{result.started_per_s:,.0f}",
                f"{result.sent - result.stamped}/{result.ran_twice}",
                f"{result.producer_lag_p99_ms:.1f} ms",
                f"{result.producer_send_p99_ms:.1f} ms",
                "/".join(fmt0(result.cpu_wait_us.get(k)) for k in ("consumers", "redis", "producers")),
                "/".join(fmt0(result.cpu_us_per_job.get(k)) for k in ("consumers", "redis", "producers")),
                f"{result.loadavg_1m:.1f}",
            )
            if i == 0
            else ("",) * 10
        )
        figures = (fmt(pct.p50_ms), fmt(pct.p99_ms), fmt(pct.p999_ms), fmt(pct.call_p99_ms))
        rows.append((*lead, prio, f"{pct.n}", *figures))
    return rows


def row_text(result: LevelResult, capacity: float) -> str:
    p0, every = result.by_priority["P0"], result.by_priority["all"]
    return (
        f"  {result.load_pct} % of {capacity:,.0f}/s: P0 p50 {fmt(p0.p50_ms)} p99 {fmt(p0.p99_ms)} ms, "
        f"all p50 {fmt(every.p50_ms)} p99 {fmt(every.p99_ms)} ms, {result.stamped}/{result.sent} stamped, "
        f"producers {result.producer_cpu_pct:.0f} % of a core"
    )


def format_table(results: list[SystemResult]) -> str:
    rows = [HEAD]
    for res in results:
        for level in res.levels:
            rows += table_rows(level)
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEAD))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def goal_lines(results: list[SystemResult]) -> list[str]:
    """Issue 16's goal for our P0 p99 at each level, met or missed; peers' all-jobs p99 beside it."""
    lines = []
    ours = next((r for r in results if r.system.startswith("adaptive-scheduler")), None)
    if ours is None:
        return lines
    for level in ours.levels:
        goal = GOALS_MS.get(level.load_pct)
        p99 = level.by_priority["P0"].p99_ms
        verdict = "-" if goal is None or p99 is None else ("met" if p99 <= goal else "MISSED")
        peers = ", ".join(
            f"{peer.system} all-jobs p99 {fmt(lv.by_priority['all'].p99_ms)} ms"
            for peer in results
            if peer is not ours
            for lv in peer.levels
            if lv.load_pct == level.load_pct
        )
        target = f"goal <= {goal:g} ms" if goal else "no goal"
        lines.append(f"{level.load_pct} %: our P0 p99 {fmt(p99)} ms ({target}: {verdict}); {peers}")
    return lines


def plot(results: list[SystemResult], path: Path) -> None:
    """Latency against offered load: p50 (left) and p99 (right), ours per priority, peers all jobs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, key, title in ((axes[0], "p50_ms", "p50"), (axes[1], "p99_ms", "p99")):
        for res in results:
            ours = res.system.startswith("adaptive-scheduler")
            series = ["P0", "P1", "P2", "P3"] if ours else ["all"]
            for prio in series:
                xs = [lv.load_pct for lv in res.levels]
                ys = [getattr(lv.by_priority[prio], key) for lv in res.levels]
                short = res.system.replace(" 2 proc x 1 thread,", "")
                name = f"ours {prio}" if ours else f"{short} (one queue)"
                style = "-o" if ours else "--s"
                ax.plot(xs, ys, style, label=name, linewidth=2.2 if prio == "P0" else 1.2)
        ax.set_yscale("log")
        ax.set_xlabel("offered load, % of each system's own capacity")
        ax.set_title(f"enqueue->start {title}, open loop")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("ms (from the scheduled send time)")
    axes[1].axhline(5, color="grey", linewidth=0.8, linestyle=":", label="goal P0 p99: 5 ms to 75 %")
    axes[1].axhline(10, color="black", linewidth=0.8, linestyle=":", label="goal P0 p99: 10 ms at 90 %")
    axes[1].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def from_json(path: Path) -> list[SystemResult]:
    """The results a run wrote to load.json, to draw the plot again (``--replot``)."""
    systems = json.loads(path.read_text())["systems"]
    return [
        SystemResult(
            sys_["system"],
            sys_["capacity_per_s"],
            [
                LevelResult(
                    **{**lv, "by_priority": {k: Percentiles(**v) for k, v in lv["by_priority"].items()}}
                )
                for lv in sys_["levels"]
            ],
        )
        for sys_ in systems
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="per load level (default 30)")
    parser.add_argument("--levels", type=int, nargs="+", default=[25, 50, 75, 90], help="%% of capacity")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--producers", type=int, default=4, help="producer processes (default 4)")
    parser.add_argument("--capacity-jobs", type=int, default=5000, help="jobs drained to measure capacity")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--replot", action="store_true", help="only redraw load.png from load.json")
    args = parser.parse_args(argv)
    if args.replot:
        plot(from_json(RESULTS / "load.json"), RESULTS / "load.png")
        return 0
    started, stamp = time.monotonic(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="asched-load-") as tmp:
        server = RedisServer(Path(tmp, "redis"), persistent=False).start()
        stamps = RedisServer(Path(tmp, "stamps"), persistent=False).start()
        try:
            assert server.process is not None
            results = [
                measure_system(
                    system, server.url, stamps.url, args, Path(tmp, f"{system}.log"), server.process.pid
                )
                for system in args.systems
            ]
            redis_version = redis.Redis.from_url(server.url).info("server")["redis_version"]
        finally:
            server.stop()
            stamps.stop()
    report(results, args, redis_version, stamp, time.monotonic() - started)
    return 0


def report(
    results: list[SystemResult], args: argparse.Namespace, redis_version: str, stamp: str, took_s: float
) -> None:
    """Print the table and write it, the raw figures and the plot under bench/results/."""
    capacities = ", ".join(f"{r.system} {r.capacity_per_s:,.0f} jobs/s" for r in results)
    lines = [
        format_table(results),
        "",
        *goal_lines(results),
        "",
        f"capacity (drain of {args.capacity_jobs} jobs of 1 ms CPU, measured first, same run): {capacities}",
        f"({args.seconds:g} s per level, {args.producers} producers, Poisson arrivals, 10 % P0, "
        f"seed {args.seed}; "
        "latency from the scheduled send time, 'p99 from call' from the actual send; 'lost/twice' = sent "
        "minus stamped / jobs stamped twice; 'prod lag' = how late the producers' sends were; "
        "'send p99' = how long a send took (building it and RQ's or the peer's enqueue round trips, "
        "inside 'p99 from call'); "
        "'CPU wait c/r/p' = mean wait for a core per timeslice (run queue, /proc/<pid>/schedstat) of "
        "the consumer processes, the job Redis "
        "and the producers; 'CPU/job c/r/p' = CPU seconds the consumers (the 1 ms job included), the job "
        "Redis and the producers spent per job started, from the level's start to its last stamp; "
        f"'load avg' = the machine's 1-min load average; redis-server {redis_version}, "
        f"rq {version('rq')}, Python {sys.version.split()[0]}; started {stamp}, {took_s:.0f} s in all)",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load.md").write_text(f"# Latency under load (open loop), {stamp}\n\n```\n{text}\n```\n")
    raw = {"when": stamp, "args": vars(args), "systems": [asdict(r) for r in results]}
    (RESULTS / "load.json").write_text(json.dumps(raw, indent=2))
    plot(results, RESULTS / "load.png")


if __name__ == "__main__":
    sys.exit(main())
