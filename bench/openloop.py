"""Open-loop load for ``bench.load`` and ``bench.burst``: jobs sent on a precomputed schedule.

A *schedule* is a list of sends ``(offset_s, priority, count)`` fixed before the run (Poisson arrivals
for steady load, evenly spaced batches for a burst). Each producer is a process of its own (spawned,
so it shares nothing with the harness) that waits for a common start instant ``epoch`` and sends each
entry when it falls due; one that fell behind sends everything already due at once. Every job is
``bench.peer_jobs.burn`` and carries its *scheduled* send time ``epoch + offset_s``, so the latency the
job stamps (start minus scheduled send) counts a late producer against the system instead of hiding
it: no coordinated omission.

Three systems are fed, each its own way: ``ours`` through plain RQ (JSON) into ``p0``..``p3``, one
``enqueue_many`` (a single pipeline) per send; ``celery`` and ``dramatiq-prefetch`` into their single
queue (``Task.delay``, ``Actor.send``), the priority only a label. The ``*CapacityDriver`` classes are
the ``bench.peers`` drivers with burn jobs in place of no-ops, so ``bench.peers.drain`` measures
capacity on the very same jobs.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from bench import peer_jobs, runqueue
from bench.dispatch import SchedulerDriver
from bench.peers import CeleryDriver, DramatiqDriver, percentile

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

SYSTEMS = ("ours", "celery", "dramatiq-prefetch")
QUEUES = ("p0", "p1", "p2", "p3")
JOB_CPU_S = 0.001
P0_SHARE = 0.1
MAX_SEND = 500  # jobs one send may carry when a producer is behind
START_DELAY_S = 0.5  # from "all producers ready" to the first scheduled send


Send = tuple[float, int, int]  # (offset from epoch in s, priority 0..3, jobs)


def draw_priority(rng: random.Random) -> int:
    """P0 with probability ``P0_SHARE``, else P1, P2 or P3 alike."""
    return 0 if rng.random() < P0_SHARE else rng.randint(1, 3)


def poisson_schedule(rate_per_s: float, start_s: float, end_s: float, rng: random.Random) -> list[Send]:
    """Single-job sends with exponential gaps (Poisson arrivals at ``rate_per_s``) in [start_s, end_s)."""
    sends: list[Send] = []
    t = start_s
    while rate_per_s > 0:
        t += rng.expovariate(rate_per_s)
        if t >= end_s:
            break
        sends.append((t, draw_priority(rng), 1))
    return sends


def batch_schedule(rate_per_s: float, start_s: float, end_s: float, batch: int, phase: int) -> list[Send]:
    """Batches of ``batch`` jobs, evenly spaced to make ``rate_per_s``, priorities cycling P1, P2, P3."""
    gap_s = batch / rate_per_s
    n = math.floor((end_s - start_s) / gap_s)
    return [(start_s + i * gap_s, 1 + (i + phase) % 3, batch) for i in range(n)]


@dataclass(frozen=True)
class ProducerPlan:
    """What one producer process sends, and where."""

    system: str
    job_url: str
    name: str
    schedule: list[Send]
    nice: int = 0  # run this many steps below the harness's CPU priority (a load generator, not a probe)


@dataclass(frozen=True)
class ProducerStats:
    """What one producer did: jobs sent, how late its sends were, the CPU it used."""

    name: str
    jobs: int
    lag_p99_ms: float
    lag_max_ms: float
    cpu_s: float
    wait_ns: int  # waiting for a CPU (run queue), and the timeslices run: see bench.runqueue
    slices: int
    send_p99_ms: float = 0.0  # how long one send took (building it and the enqueue round trips), p99


class Sender(Protocol):
    """Sends due entries (returning the next job number); ``warm_up`` sends one no-op job first, so
    connecting and declaring queues happen before the schedule starts."""

    def warm_up(self) -> None: ...
    def send(self, due: Sequence[Send], epoch: float, seq: int) -> int: ...


def burn_args(sent_at: float, priority: int, tag: str) -> tuple[float, float, int, str, float]:
    """``bench.peer_jobs.burn``'s arguments, stamped with the moment they are built (the actual send)."""
    return (JOB_CPU_S, sent_at, priority, tag, time.time())


class RqSender:
    """Our daemon's producer: plain RQ, JSON, one ``enqueue_many`` per queue, one pipeline per send."""

    def __init__(self, url: str, name: str) -> None:
        self.r = redis.Redis.from_url(url)
        self.queues = [Queue(q, connection=self.r, serializer=JSONSerializer) for q in QUEUES]
        self.name = name

    def warm_up(self) -> None:
        queue = self.queues[-1]
        queue.enqueue_many([queue.prepare_data(peer_jobs.NOOP_PATH)])

    def send(self, due: Sequence[Send], epoch: float, seq: int) -> int:
        by_queue: dict[int, list[object]] = {}
        for offset, priority, count in due:
            queue = self.queues[priority]
            for _ in range(count):
                args = burn_args(epoch + offset, priority, f"{self.name}-{seq}")
                by_queue.setdefault(priority, []).append(queue.prepare_data(peer_jobs.BURN_PATH, args))
                seq += 1
        with self.r.pipeline() as pipe:
            for priority, datas in by_queue.items():
                self.queues[priority].enqueue_many(datas, pipeline=pipe)  # type: ignore[arg-type]
            pipe.execute()
        return seq


class CelerySender:
    """Celery's producer: ``delay`` per job into its one queue."""

    def __init__(self, url: str, name: str) -> None:
        self.app = peer_jobs.make_celery_app(url)
        self.task = self.app.tasks[peer_jobs.BURN]
        self.name = name

    def warm_up(self) -> None:
        self.app.tasks[peer_jobs.NOOP].delay()

    def send(self, due: Sequence[Send], epoch: float, seq: int) -> int:
        for offset, priority, count in due:
            for _ in range(count):
                self.task.delay(*burn_args(epoch + offset, priority, f"{self.name}-{seq}"))
                seq += 1
        return seq


class DramatiqSender:
    """Dramatiq's producer: ``send`` per job into its one queue."""

    def __init__(self, url: str, name: str) -> None:
        self.broker = peer_jobs.make_dramatiq_broker(url)
        self.actor = self.broker.get_actor(peer_jobs.BURN)
        self.name = name

    def warm_up(self) -> None:
        self.broker.get_actor(peer_jobs.NOOP).send()

    def send(self, due: Sequence[Send], epoch: float, seq: int) -> int:
        for offset, priority, count in due:
            for _ in range(count):
                self.actor.send(*burn_args(epoch + offset, priority, f"{self.name}-{seq}"))
                seq += 1
        return seq


def make_sender(system: str, url: str, name: str) -> Sender:
    if system == "ours":
        return RqSender(url, name)
    if system == "celery":
        return CelerySender(url, name)
    return DramatiqSender(url, name)


def run_schedule(sender: Sender, schedule: list[Send], epoch: float) -> tuple[int, list[float], list[float]]:
    """Send each entry when due (everything due at once when behind); return jobs sent, lags in s and
    how long each send took in s (part of every job's latency from its actual send)."""
    seq, i, lags, took = 0, 0, [], []
    while i < len(schedule):
        now = time.time() - epoch
        wait_s = schedule[i][0] - now
        if wait_s > 0:
            time.sleep(wait_s)
            continue
        j, jobs = i, 0
        while j < len(schedule) and schedule[j][0] <= now and jobs < MAX_SEND:
            jobs += schedule[j][2]
            j += 1
        began = time.monotonic()
        seq = sender.send(schedule[i:j], epoch, seq)
        took.append(time.monotonic() - began)
        lags.extend(now - entry[0] for entry in schedule[i:j])
        i = j
    return seq, lags, took


def producer_main(plan: ProducerPlan, conn: Connection) -> None:
    """A producer process: build the sender, say ready, get the epoch, send, report."""
    if plan.nice:
        os.nice(plan.nice)
    sender = make_sender(plan.system, plan.job_url, plan.name)
    sender.warm_up()
    conn.send("ready")
    epoch = conn.recv()
    cpu_before, queue_before = time.process_time(), runqueue.read([os.getpid()])
    jobs, lags, took = run_schedule(sender, plan.schedule, epoch)
    lags_ms = [lag * 1000 for lag in lags]
    lag_p99 = percentile(lags_ms, 99) or 0.0
    cpu_s = time.process_time() - cpu_before
    wait_ns, slices = runqueue.totals(queue_before, runqueue.read([os.getpid()]))
    send_p99 = percentile([t * 1000 for t in took], 99) or 0.0
    stats = ProducerStats(
        plan.name, jobs, lag_p99, max(lags_ms, default=0.0), cpu_s, wait_ns, slices, send_p99
    )
    conn.send(stats)
    conn.close()


def run_producers(plans: list[ProducerPlan]) -> tuple[float, list[ProducerStats]]:
    """Start one process per plan, start them all at one epoch, wait for them; return (epoch, stats)."""
    ctx = mp.get_context("spawn")
    procs, conns = [], []
    for plan in plans:
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=producer_main, args=(plan, theirs), daemon=True)
        proc.start()
        procs.append(proc)
        conns.append(ours)
    try:
        for conn in conns:
            if not conn.poll(60) or conn.recv() != "ready":
                raise RuntimeError("a producer did not get ready within 60 s")
        epoch = time.time() + START_DELAY_S
        for conn in conns:
            conn.send(epoch)
        last_s = max((plan.schedule[-1][0] for plan in plans if plan.schedule), default=0.0)
        stats = []
        for conn in conns:
            if not conn.poll(last_s + START_DELAY_S + 120):
                raise RuntimeError("a producer did not finish its schedule")
            stats.append(conn.recv())
        return epoch, stats
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()


@dataclass(frozen=True)
class Stamp:
    """One job's record: its priority, scheduled send, start and actual send (wall clock, s), its tag."""

    priority: int
    sent_at: float
    started_at: float
    tag: str
    called_at: float
    job_id: str = "-"  # the RQ job id, for ours
    pid: int = 0  # the process that ran it (a slot, for ours)

    @property
    def latency_ms(self) -> float:
        """From the scheduled send: the open-loop figure."""
        return (self.started_at - self.sent_at) * 1000

    @property
    def from_call_ms(self) -> float:
        """From the moment the producer built the send: the job system's part alone."""
        return (self.started_at - self.called_at) * 1000


def parse_stamp(raw: bytes) -> Stamp:
    priority, sent_at, started_at, tag, called_at, *named = raw.decode().split()  # named: job id, pid
    stamp = Stamp(int(priority), float(sent_at), float(started_at), tag, float(called_at))
    if named:
        stamp = replace(stamp, job_id=named[0], pid=int(named[1]) if len(named) > 1 else 0)
    return stamp


def report_twice(stamps: list[Stamp], r: redis.Redis, where: str, log: Path | None = None) -> None:
    """Print `twice_detail` and keep it in bench/results/twice.md (written only when it happens), with
    the consumers' log lines that name the job or warn (`log`: their log file, if kept)."""
    lines = twice_detail(stamps, r)
    if lines:
        lines += log_detail(log, {s.job_id for s in duplicated(stamps)} - {"-"}) if log else []
        text = f"## {where}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n" + "\n".join(lines)
        print(text, flush=True)
        with (Path(__file__).resolve().parent / "results" / "twice.md").open("a") as out:
            out.write(text + "\n\n")


def duplicated(stamps: list[Stamp]) -> list[Stamp]:
    """The stamps of tags stamped more than once."""
    counts = Counter(stamp.tag for stamp in stamps)
    return [stamp for stamp in stamps if counts[stamp.tag] > 1]


def log_detail(log: Path, job_ids: set[str], most: int = 40) -> list[str]:
    """The log's lines that name one of `job_ids`, and its last `most` warnings and errors."""
    if not log.exists():
        return []
    text = log.read_text(errors="replace").splitlines()
    naming = [line for line in text if any(job_id in line for job_id in job_ids)]
    warnings = [line for line in text if "WARNING" in line or "ERROR" in line]
    return [
        f"  log lines naming the job: {len(naming)}",
        *(f"    {line[:400]}" for line in naming[:most]),
        f"  warnings and errors in the log: {len(warnings)} (the last {min(most, len(warnings))})",
        *(f"    {line[:400]}" for line in warnings[-most:]),
    ]


def twice_detail(stamps: list[Stamp], r: redis.Redis) -> list[str]:
    """For each tag stamped more than once, what the job Redis holds of its job (ours): the executions
    whose outcomes were written (results stream) and the job hash's status and times. A job that ran
    twice shows two results; a stamp written twice (a retried push) or a job id enqueued twice shows
    otherwise."""
    by_tag: dict[str, list[Stamp]] = {}
    for stamp in duplicated(stamps):
        by_tag.setdefault(stamp.tag, []).append(stamp)
    lines = []
    for tag, same in sorted(by_tag.items()):
        starts = ", ".join(f"{s.started_at:.6f} ({s.job_id}, pid {s.pid})" for s in same)
        lines.append(f"{tag}: started at {starts}")
        for job_id in sorted({s.job_id for s in same} - {"-"}):
            fields = r.hmget(f"rq:job:{job_id}", "status", "enqueued_at", "started_at", "ended_at")
            values = [field.decode() if field else None for field in fields]
            results = [entry[1] for entry in r.xrange(f"rq:results:{job_id}")]
            lines.append(f"  job {job_id}: status, enqueued, started, ended {values}; results {results}")
    return lines


def read_stamps(stamp_r: redis.Redis) -> list[Stamp]:
    """Every stamp pushed so far, in chunks."""
    found: list[Stamp] = []
    total = int(stamp_r.llen(peer_jobs.STAMPS_KEY))
    for start in range(0, total, 20_000):
        chunk = stamp_r.lrange(peer_jobs.STAMPS_KEY, start, min(total, start + 20_000) - 1)
        found += [parse_stamp(raw) for raw in chunk]  # type: ignore[union-attr]
    return found


def wait_for_stamps(stamp_r: redis.Redis, expected: int, timeout_s: float) -> int:
    """Wait until ``expected`` stamps arrived, or until none arrived for ``timeout_s``; return how many."""
    last, last_change = -1, time.monotonic()
    while True:
        n = int(stamp_r.llen(peer_jobs.STAMPS_KEY))
        if n >= expected:
            return n
        if n != last:
            last, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > timeout_s:
            return n
        time.sleep(0.05)


class OurCapacityDriver(SchedulerDriver):
    """``bench.dispatch``'s driver for our daemon, draining burn jobs (all on p1) instead of no-ops."""

    def enqueue_noops(self, n: int) -> None:
        self.target = int(self.r.zcard(self.finished_key)) + n
        now = time.time()
        for start in range(0, n, 500):
            datas = [
                self.queue.prepare_data(peer_jobs.BURN_PATH, burn_args(now, 1, f"cap-{start + i}"))
                for i in range(min(500, n - start))
            ]
            self.queue.enqueue_many(datas)


class CeleryCapacityDriver(CeleryDriver):
    """``bench.peers``' Celery driver, draining burn jobs; the sentinel still goes last."""

    def enqueue_noops(self, n: int) -> None:
        self.r.delete(peer_jobs.SENTINEL_KEY)
        task, now = self.app.tasks[peer_jobs.BURN], time.time()
        for i in range(n - 1):
            task.delay(*burn_args(now, 1, f"cap-{i}"))
        self.app.tasks[peer_jobs.SENTINEL].delay()


class DramatiqCapacityDriver(DramatiqDriver):
    """``bench.peers``' Dramatiq driver, draining burn jobs."""

    def enqueue_noops(self, n: int) -> None:
        actor, now = self.broker.get_actor(peer_jobs.BURN), time.time()
        for i in range(n):
            actor.send(*burn_args(now, 1, f"cap-{i}"))
