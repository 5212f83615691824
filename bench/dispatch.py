"""Dispatch benchmark: adaptive-scheduler against RQ, Celery and Dramatiq, in one run, on one Redis.

For every system (ours in pool and fresh mode, then the peers of `bench.peers`), measured by the same
harness (`bench.peers.measure_peer`, whose docstring says exactly how each figure is taken):
drain throughput of no-op jobs enqueued in advance, consumer CPU per job, Redis commands per job
(INFO commandstats, scripts' inner commands included), Redis CPU per job (INFO cpu), Redis memory and
append-only-file growth per job, enqueue->start latency p50/p99 on an idle consumer, idle PSS of the
whole consumer process tree. The redis-server it starts runs with ``appendonly yes`` (``appendfsync
everysec``, automatic rewrites off) so that the AOF growth can be read; its CPU includes the AOF writes.
Otherwise it runs with Redis's defaults (``stream-node-max-bytes 4096``, where the daemon's embedded
Redis uses 512). Ours is fed through plain RQ with the JSON serializer and writes full RQ bookkeeping
(status, times, result stream, finished registry).
Also reported: the start-up cost of a fresh slot process, as the daemon in fresh mode measured it.

    python -m bench.dispatch [--jobs 5000] [--latency 300] [--modes pool fresh] [--peers rq-fork celery ...]
                             [--drain-rounds 3]

Prints a table with ratios against each peer, the costliest Redis commands per job of ours and of the
peers it is compared with, and writes it all to bench/results/dispatch.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

import redis
from adaptive_scheduler.redis_server import RedisServer
from rq import Queue
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from bench.peers import PEERS, PeerResult, PeerSpec, RqDriver, format_profile, format_table, measure_peer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
QUEUE = "p1"


class SchedulerDriver(RqDriver):
    """Our daemon as one `python -m adaptive_scheduler run` process and its two slots, fed like RQ (JSON)."""

    def __init__(self, r: redis.Redis, redis_url: str, mode: str) -> None:
        super().__init__(r, redis_url, None)
        self.queue = Queue(QUEUE, connection=r, serializer=JSONSerializer)
        self.finished_key = FinishedJobRegistry(QUEUE, connection=r).key
        self.system = f"adaptive-scheduler {mode} x2"
        self.idle_procs = 3  # the daemon and its two slots
        self.extra_after_drain = 1  # the P0 lane

    def commands(self) -> list[list[str]]:
        return [[sys.executable, "-m", "adaptive_scheduler", "run"]]

    def registered(self) -> bool:
        return bool(list(self.r.scan_iter(match="asched:status:*")))


def our_spec(mode: str, redis_url: str) -> PeerSpec:
    env = {
        "ASCHED_REDIS_URL": redis_url,
        "ASCHED_SLOT_MODE": mode,
        "ASCHED_ALLOWED_MODULES": '["bench.peer_jobs"]',
        "ASCHED_LOG_LEVEL": "INFO",
    }
    return PeerSpec(lambda r, url: SchedulerDriver(r, url, mode), env=env)


def stock_redis(r: redis.Redis) -> None:
    """Redis's own defaults where the embedded server differs (a user's Redis is measured), and no
    automatic AOF rewrite (it would fork and shrink the file mid-drain)."""
    r.config_set("stream-node-max-bytes", 4096)
    r.config_set("auto-aof-rewrite-percentage", 0)


def slot_start_line(log_path: Path) -> str:
    """The daemon's own account of its slot start-ups (logged at shutdown), from its log file."""
    for line in log_path.read_text(errors="replace").splitlines():
        if "slot start-up over the last" in line:
            return line.split("INFO", 1)[-1].split(" ", 2)[-1].strip()
    return "not reported"


def ratio_rows(ours: PeerResult, peers: list[PeerResult]) -> list[str]:
    """One line per peer: how many times faster, cheaper and quicker ours is."""
    lines = []
    for peer in peers:
        parts = [
            f"{ours.jobs_per_s / peer.jobs_per_s:.1f}x jobs/s",
            f"{peer.cpu_ms_per_job / ours.cpu_ms_per_job:.1f}x less CPU/job",
            f"{peer.redis_cmds_per_job / ours.redis_cmds_per_job:.1f}x fewer Redis cmds/job",
        ]
        if peer.redis_cpu_us_per_job and ours.redis_cpu_us_per_job:
            parts.append(f"{peer.redis_cpu_us_per_job / ours.redis_cpu_us_per_job:.1f}x less Redis CPU/job")
        if peer.latency_p50_ms and ours.latency_p50_ms and peer.latency_p99_ms and ours.latency_p99_ms:
            parts.append(f"p50 {peer.latency_p50_ms / ours.latency_p50_ms:.1f}x lower")
            parts.append(f"p99 {peer.latency_p99_ms / ours.latency_p99_ms:.1f}x lower")
        lines.append(f"vs {peer.system}: " + ", ".join(parts))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000, help="no-op jobs per drain")
    parser.add_argument("--latency", type=int, default=300, help="latency probes per system")
    parser.add_argument("--peers", nargs="*", choices=PEERS, default=list(PEERS), help="default: all")
    parser.add_argument(
        "--modes", nargs="+", choices=("pool", "fresh"), default=["pool", "fresh"], help="ours: default both"
    )
    parser.add_argument(
        "--drain-rounds",
        type=int,
        default=3,
        help="then this many interleaved drains of ours (pool) and Dramatiq prefetch 32 (median ratio)",
    )
    parser.add_argument(
        "--drain-jobs",
        type=int,
        default=20000,
        help="no-op jobs per interleaved drain (ours drains 5,000 in under half a second: start-up weighs)",
    )
    parser.add_argument(
        "--redis-url", help="an existing redis-server (its DB is flushed); default: start one"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="asched-bench-") as tmp:
        server = None if args.redis_url else RedisServer(Path(tmp, "redis"), persistent=True).start()
        url = args.redis_url or server.url  # type: ignore[union-attr]
        if server is not None:
            stock_redis(redis.Redis.from_url(url))
        try:
            ours = [
                measure_peer(our_spec(m, url), url, args.jobs, args.latency, Path(tmp, f"{m}.log"))
                for m in args.modes
            ]
            peers = [
                measure_peer(_peer_spec(k), url, args.jobs, args.latency, Path(tmp, f"{k}.log"))
                for k in args.peers
            ]
            rounds = drain_rounds(url, args.drain_jobs, args.drain_rounds, Path(tmp))
            info = redis.Redis.from_url(url).info("server")
            fresh_log = Path(tmp, "fresh.log")
            fresh_start = slot_start_line(fresh_log) if fresh_log.exists() else "not measured"
        finally:
            if server is not None:
                server.stop()
    report(ours, peers, rounds, fresh_start, args, info["redis_version"], time.monotonic() - started)
    return 0


def drain_rounds(url: str, n_jobs: int, rounds: int, tmp: Path) -> list[tuple[PeerResult, PeerResult]]:
    """(ours, Dramatiq prefetch 32) per round, each a fresh drain without latency probes; the order
    alternates (ours first in even rounds), so a drift of the machine's speed falls on both."""
    specs = {"ours": our_spec("pool", url), "dramatiq": _peer_spec("dramatiq-prefetch")}
    pairs = []
    for i in range(rounds):
        order = ["ours", "dramatiq"] if i % 2 == 0 else ["dramatiq", "ours"]
        got = {k: measure_peer(specs[k], url, n_jobs, 0, tmp / f"round{i}-{k}.log") for k in order}
        pairs.append((got["ours"], got["dramatiq"]))
    return pairs


def rounds_lines(pairs: list[tuple[PeerResult, PeerResult]]) -> list[str]:
    """Per round and median: jobs/s and Redis CPU per job of ours against Dramatiq prefetch 32."""
    if not pairs:
        return []
    lines = [f"drain, {len(pairs)} interleaved rounds, ours (pool) against {pairs[0][1].system}:"]
    for i, (ours, theirs) in enumerate(pairs):
        lines.append(
            f"  round {i + 1}: {ours.jobs_per_s:,.0f} against {theirs.jobs_per_s:,.0f} jobs/s "
            f"({ours.jobs_per_s / theirs.jobs_per_s:.2f}x); Redis CPU {ours.redis_cpu_us_per_job:.0f} "
            f"against {theirs.redis_cpu_us_per_job:.0f} µs/job"
        )
    ratio = statistics.median(o.jobs_per_s / t.jobs_per_s for o, t in pairs)
    cpu = statistics.median((o.redis_cpu_us_per_job or 0) / (t.redis_cpu_us_per_job or 1) for o, t in pairs)
    lines.append(f"  median: {ratio:.2f}x the jobs/s, {cpu:.2f}x the Redis CPU per job")
    return lines


def _peer_spec(key: str) -> PeerSpec:
    from bench.peers import SPECS

    return SPECS[key]


def report(
    ours: list[PeerResult],
    peers: list[PeerResult],
    rounds: list[tuple[PeerResult, PeerResult]],
    fresh_start: str,
    args: argparse.Namespace,
    redis_version: str,
    took_s: float,
) -> None:
    """Print the table and write it, with the raw figures, under bench/results/."""
    lines = [
        format_table([*ours, *peers]),
        "",
        *ratio_rows(ours[0], peers),
        "",
        *rounds_lines(rounds),
        "",
        *(format_profile(r) + "\n" for r in [ours[0], *peers] if r.redis_profile),
        f"fresh mode, the daemon's slot start-up (fork to ready): {fresh_start}",
        f"({args.jobs} no-op jobs per drain in the table, {args.drain_jobs} per interleaved drain, "
        f"{args.latency} latency probes; redis-server {redis_version}, "
        f"rq {version('rq')}, Python {sys.version.split()[0]}; {took_s:.0f} s in all)",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (RESULTS / "dispatch.md").write_text(f"# Dispatch benchmark, {stamp}\n\n```\n{text}\n```\n")
    raw = {
        "when": stamp,
        "systems": [asdict(r) for r in [*ours, *peers]],
        "drain_rounds": [[asdict(o), asdict(t)] for o, t in rounds],
        "fresh_slot_start": fresh_start,
    }
    (RESULTS / "dispatch.json").write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    sys.exit(main())
