"""Crash storm: a daemon killed with SIGKILL at random instants, again and again, each time restarted,
while a second daemon serves the same queues throughout; mixed P0-P3 jobs keep flowing.

Every job is a `tests.fixtures.jobs.record_run`, which appends "start" and "end" lines (job id, daemon pid,
time) to a file, so what ran is known independently of what Redis says. Terms, per job:

- lost: not finished once the storm is over and the survivors have drained the queues;
- started twice: its function began in a slot more than once. At-least-once delivery allows it: the
  first run was cut by the kill ("killed mid-run": fewer ends than starts), or it completed in the slot
  but the daemon died before the outcome reached Redis ("completed, outcome lost");
- finished twice: two *finished* results (type 1 entries in `rq:results:<id>`) with different
  execution ids: settled twice, a bug. The same execution id twice would be an outcome written again
  after a lost reply (documented, harmless), and is counted apart.

Recovery, per kill that caught claims in the dead daemon's hands: from the kill to all of those
claims being gone from `rq:wip:*` (back in their queues; lease 1 s here), and from the kill to the
first job started by the replacement daemon.

The CI variant kills 10 times. The long one (>= 100 kills) runs with ASCHED_LONG=1:

    ASCHED_LONG=1 .venv/bin/python -m pytest tests/integration/test_crash_storm.py -s -k long
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.helpers import DaemonProcess, queue, wait_until

FAST_LEASE = {"ASCHED_LEASE_TTL_S": "1", "ASCHED_LOG_LEVEL": "INFO"}
DURATIONS_S = (0.002, 0.005, 0.02, 0.05, 0.2)  # per job, at random: most short, some long enough to be cut
LONG = os.environ.get("ASCHED_LONG") == "1"


@dataclass
class Storm:
    kills: int = 0
    kills_before_ready: int = 0
    kills_with_claims: int = 0
    claims_caught: int = 0
    claims_back_s: list[float] = field(default_factory=list)
    held: list[int] = field(default_factory=list)  # per kill
    first_start_s: list[float] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    steady_lease_lapses: int = 0  # samples in which the surviving daemon's lease key was missing


@dataclass
class Kill:
    pid: int
    replacement: int
    at_mono: float
    at_wall: float
    held: int  # claims in the killed daemon's hands
    back_s: float | None = None  # when none of them was left in rq:wip:* (back in their queues)


class Watch(threading.Thread):
    """Every 3 ms: is the surviving daemon's lease there (a lapse lets others take its claims), and
    which killed daemons still have claims in the started registries."""

    def __init__(self, redis_url: str, pid: int) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(redis_url)
        self.pid = pid
        self.lapses = 0
        self.pending: list[Kill] = []
        self.lock = threading.Lock()
        self.done = threading.Event()

    def add(self, kill: Kill) -> None:
        with self.lock:
            self.pending.append(kill)

    def run(self) -> None:
        key = None
        while not self.done.is_set():
            if key is None:
                key = next((k for k in self.client.scan_iter(match=f"asched:daemon:*-{self.pid}-*")), None)
            else:
                self.lapses += not self.client.exists(key)
            with self.lock:
                pending = list(self.pending)
            if pending:
                entries = " ".join(
                    m.decode() for p in range(4) for m in self.client.zrange(f"rq:wip:p{p}", 0, -1)
                )
                now = time.monotonic()
                for kill in pending:
                    if f"-{kill.pid}-" not in entries:
                        kill.back_s = now - kill.at_mono
                        with self.lock:
                            self.pending.remove(kill)
            time.sleep(0.003)
        self.client.close()


@dataclass
class Tally:
    jobs: int
    finished: int
    lost: list[str]
    started_twice: int
    killed_mid_run: int
    completed_outcome_lost: int
    finished_twice: list[str]
    rewritten: int
    never_started: list[str]


def enqueue_batch(client: redis.Redis, runs: Path, rng: random.Random, n: int) -> list[str]:
    with client.pipeline() as pipe:
        ids = [
            queue(client, rng.randrange(4))
            .enqueue("tests.fixtures.jobs.record_run", str(runs), rng.choice(DURATIONS_S), pipeline=pipe)
            .id
            for _ in range(n)
        ]
        pipe.execute()
    return ids


def claims_of(client: redis.Redis, pid: int) -> set[str]:
    """The started-registry entries of the daemon with this pid (its id is <host>-<pid>-<hex>)."""
    return {
        m.decode() for p in range(4) for m in client.zrange(f"rq:wip:p{p}", 0, -1) if f"-{pid}-" in m.decode()
    }


def queued(client: redis.Redis) -> int:
    return sum(client.llen(f"rq:queue:p{p}") for p in range(4))


def first_start_by(runs: Path, pid: int, after: float) -> float | None:
    """When the daemon `pid` first started a job after `after` (unix s), from the runs file."""
    if not runs.exists():
        return None
    for line in runs.read_text().splitlines():
        kind, _, daemon, at = line.split()
        if kind == "start" and int(daemon) == pid and float(at) >= after:
            return float(at)
    return None


def run_storm(redis_url: str, runs: Path, kills: int, seed: int) -> Storm:
    rng = random.Random(seed)
    client = redis.Redis.from_url(redis_url)
    storm = Storm()
    storm.ids += enqueue_batch(client, runs, rng, 150)
    steady = DaemonProcess(redis_url, env=FAST_LEASE)
    victim = DaemonProcess(redis_url, env=FAST_LEASE)
    spawned = time.monotonic()
    watch = Watch(redis_url, steady.process.pid)
    watch.start()
    done: list[Kill] = []
    try:
        for n in range(kills):
            top_up(client, runs, rng, storm, 100)  # a backlog, so that every kill finds work in flight
            if n % 5 == 4:  # now and then an instant during start-up (imports, recovery, first claim)
                time.sleep(max(0.0, rng.uniform(0.05, 0.4) - (time.monotonic() - spawned)))
            else:
                wait_until(lambda v=victim: "daemon ready" in alive(v).output(), timeout_s=15)  # type: ignore[misc]
                time.sleep(rng.uniform(0.1, 0.4))
            ready = "daemon ready" in alive(victim).output()
            victim.kill()
            kill = Kill(
                victim.process.pid,
                0,
                time.monotonic(),
                time.time(),
                len(claims_of(client, victim.process.pid)),
            )
            victim.log.close()
            victim, spawned = DaemonProcess(redis_url, env=FAST_LEASE), time.monotonic()  # the restart
            kill.replacement = victim.process.pid
            if kill.held:
                watch.add(kill)
            done.append(kill)
            storm.kills += 1
            storm.kills_before_ready += not ready
        wait_until(lambda: not watch.pending, timeout_s=10)
        wait_until(lambda: finished_count(client) >= len(storm.ids), timeout_s=120, interval_s=0.1)
    finally:
        watch.done.set()
        watch.join()
        storm.steady_lease_lapses = watch.lapses
        for daemon in (victim, steady):
            if daemon.process.poll() is None:
                daemon.stop()
            daemon.log.close()
        client.close()
    storm.kills_with_claims = sum(1 for k in done if k.held)
    storm.claims_caught = sum(k.held for k in done)
    storm.held = [k.held for k in done]
    storm.claims_back_s = [k.back_s for k in done if k.back_s is not None]
    for kill in done:
        first = first_start_by(runs, kill.replacement, kill.at_wall)
        if first is not None:
            storm.first_start_s.append(first - kill.at_wall)
    return storm


def top_up(client: redis.Redis, runs: Path, rng: random.Random, storm: Storm, least: int) -> None:
    """Enqueue more jobs if fewer than `least` wait."""
    if queued(client) < least:
        storm.ids += enqueue_batch(client, runs, rng, least)


def alive(daemon: DaemonProcess) -> DaemonProcess:
    assert daemon.process.poll() is None, f"the daemon exited ({daemon.process.poll()}):\n{daemon.output()}"
    return daemon


def finished_count(client: redis.Redis) -> int:
    return sum(client.zcard(f"rq:finished:p{p}") for p in range(4))


def tally(client: redis.Redis, runs: Path, ids: list[str]) -> Tally:
    starts: Counter[str] = Counter()
    ends: Counter[str] = Counter()
    for line in runs.read_text().splitlines():
        kind, job_id, _, _ = line.split()
        (starts if kind == "start" else ends)[job_id] += 1
    lost, finished_twice, never_started = [], [], []
    finished = rewritten = started_twice = killed_mid_run = completed_outcome_lost = 0
    for job_id in ids:
        status = Job.fetch(job_id, connection=client, serializer=JSONSerializer).get_status()
        executions = [
            fields[b"execution_id"]
            for _, fields in client.xrange(f"rq:results:{job_id}")
            if fields[b"type"] == b"1"
        ]
        finished += status == JobStatus.FINISHED
        if status != JobStatus.FINISHED:
            lost.append(job_id)
        if len(set(executions)) > 1:
            finished_twice.append(job_id)
        rewritten += len(executions) > len(set(executions))
        if starts[job_id] == 0:
            never_started.append(job_id)
        if starts[job_id] > 1:
            started_twice += 1
            killed_mid_run += ends[job_id] < starts[job_id]
            completed_outcome_lost += ends[job_id] > 1
    return Tally(
        len(ids), finished, lost, started_twice, killed_mid_run, completed_outcome_lost,
        finished_twice, rewritten, never_started,
    )  # fmt: skip


def report(storm: Storm, counts: Tally) -> str:
    def pct(values: list[float], q: float) -> str:
        if not values:
            return "-"
        ordered = sorted(values)
        return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))]:.2f}"

    rows = [
        ("kills (SIGKILL + restart)", storm.kills),
        ("  of which before 'daemon ready'", storm.kills_before_ready),
        ("  of which caught claims in hand", storm.kills_with_claims),
        ("claims caught in the dead daemons' hands", f"{storm.claims_caught} {storm.held[:20]}"),
        ("jobs enqueued", counts.jobs),
        ("jobs finished", counts.finished),
        ("jobs lost", len(counts.lost)),
        ("jobs never started", len(counts.never_started)),
        ("jobs started twice or more (at-least-once; a job may be in both below)", counts.started_twice),
        ("  a run killed mid-run (fewer ends than starts)", counts.killed_mid_run),
        ("  completed twice (an outcome lost with its daemon)", counts.completed_outcome_lost),
        ("jobs finished twice (2 execution ids: a bug)", len(counts.finished_twice)),
        ("outcomes written twice (same execution id)", counts.rewritten),
        ("lapses of the surviving daemon's lease (3 ms samples)", storm.steady_lease_lapses),
        (f"claims back in queues after kill (n={len(storm.claims_back_s)}), p50 / p90 / max s",
         f"{pct(storm.claims_back_s, 0.5)} / {pct(storm.claims_back_s, 0.9)} / "
         f"{max(storm.claims_back_s, default=0):.2f}"),
        (f"first job of the restarted daemon after kill (n={len(storm.first_start_s)}), p50 / p90 / max s",
         f"{pct(storm.first_start_s, 0.5)} / {pct(storm.first_start_s, 0.9)} / "
         f"{max(storm.first_start_s, default=0):.2f}"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def check(client: redis.Redis, runs: Path, storm: Storm) -> Tally:
    counts = tally(client, runs, storm.ids)
    print(f"\n{report(storm, counts)}")
    assert not counts.lost, counts.lost[:10]
    assert not counts.finished_twice, counts.finished_twice[:10]
    assert not counts.never_started
    assert storm.steady_lease_lapses == 0  # else another daemon may take a live one's claims
    assert all(client.zcard(f"rq:wip:p{p}") == 0 for p in range(4))
    assert queued(client) == 0
    return counts


@pytest.mark.timeout(90)
def test_ten_kills_with_restarts_lose_no_job_and_finish_none_twice(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.log"
    storm = run_storm(redis_url, runs, kills=10, seed=6)
    check(client, runs, storm)
    assert storm.kills_with_claims >= 5, "most kills should catch claims in flight"
    assert max(storm.claims_back_s) < 5  # lease 1 s, then the next housekeeping turn (0.5 s here)


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="long variant (>= 100 kills, several minutes): set ASCHED_LONG=1")
@pytest.mark.timeout(1800)
def test_long_storm_of_a_hundred_and_twenty_kills(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.log"
    storm = run_storm(redis_url, runs, kills=int(os.environ.get("ASCHED_KILLS", "120")), seed=7)
    check(client, runs, storm)
    mean = statistics.mean(storm.claims_back_s)
    print(f"claims back in queues: {mean:.2f} s mean over {len(storm.claims_back_s)} kills")
