"""Faults around a running daemon: Redis going away or cutting connections, and slot processes dying
every way they can, with no job lost and no process left behind.

Redis: stopped for 5 s and restarted from its append-only file; every client connection killed in a
loop while jobs flow (`CLIENT KILL TYPE normal`); killed with SIGKILL and restarted from its AOF. The
daemon stays up, logs "Redis unreachable", tells systemd it is DEGRADED, backs off (seen by a listener
standing in for the server on its socket; the jitter itself is checked on `backoff_s`), and afterwards
every job is finished, none twice (two finished results with different execution ids).

Slots: a job looping past its timeout, one allocating past the slot memory cap, one whose slot is
killed from outside, one that ignores SIGTERM, and jobs that start children and grandchildren (which
then return, end their process, overrun, or are killed): each ends as it should with a clear reason,
the slot is replaced, the daemon keeps serving, and none of the job's processes is left (psutil).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
import redis
from adaptive_scheduler import keys, outcomes
from adaptive_scheduler.daemon import Daemon
from adaptive_scheduler.intake import Intake
from adaptive_scheduler.redis_server import RedisServer
from adaptive_scheduler.service import backoff_s
from adaptive_scheduler.settings.load import load_settings
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.helpers import DaemonProcess, children, queue, running_daemon, wait_until

FAST_LEASE = {"ASCHED_LEASE_TTL_S": "1", "ASCHED_LOG_LEVEL": "INFO"}


# --- helpers -------------------------------------------------------------------------------------


def fetch(client: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=client, serializer=JSONSerializer)


def status(client: redis.Redis, job_id: str) -> JobStatus:
    return fetch(client, job_id).get_status()


def reason(client: redis.Redis, job_id: str) -> str:
    result = fetch(client, job_id).latest_result()
    return result.exc_string if result is not None and result.exc_string else ""


def finished_count(client: redis.Redis) -> int:
    return sum(client.zcard(f"rq:finished:p{p}") for p in range(4))


def finished_executions(client: redis.Redis, job_id: str) -> list[bytes]:
    """Execution ids of the job's *finished* results (type 1 in rq:results:<id>)."""
    return [f[b"execution_id"] for _, f in client.xrange(f"rq:results:{job_id}") if f[b"type"] == b"1"]


def account(client: redis.Redis, ids: list[str]) -> dict[str, int]:
    """Every job finished once: counts of the ways that could fail (all 0 is good)."""
    not_finished = finished_twice = rewritten = 0
    for job_id in ids:
        executions = finished_executions(client, job_id)
        not_finished += status(client, job_id) != JobStatus.FINISHED or not executions
        finished_twice += len(set(executions)) > 1
        rewritten += len(executions) > len(set(executions))  # an outcome written again: documented
    return {"jobs": len(ids), "not finished": not_finished, "finished twice": finished_twice,
            "outcome written twice": rewritten}  # fmt: skip


def enqueue_mixed(client: redis.Redis, runs: Path, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    with client.pipeline() as pipe:
        ids = [
            queue(client, i % 4)
            .enqueue(
                "tests.fixtures.jobs.record_run",
                str(runs),
                rng.choice((0.002, 0.005, 0.01, 0.05)),
                pipeline=pipe,
            )
            .id
            for i in range(n)
        ]
        pipe.execute()
    return ids


def ran_twice(runs: Path) -> int:
    starts = [line.split()[1] for line in runs.read_text().splitlines() if line.startswith("start")]
    return len(starts) - len(set(starts))


class Listener(threading.Thread):
    """A unix socket bound at `path`: sd_notify datagrams (dgram), or connection attempts (stream) noted
    with their time and refused, standing in for a Redis server that is away."""

    def __init__(self, path: Path, kind: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, kind)
        path.unlink(missing_ok=True)
        self.sock.bind(str(path))
        self.path = path
        self.kind = kind
        self.sock.settimeout(0.05)
        if kind == socket.SOCK_STREAM:
            self.sock.listen(64)
        self.seen: list[tuple[float, str]] = []
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                if self.kind == socket.SOCK_STREAM:
                    conn, _ = self.sock.accept()
                    conn.close()
                    self.seen.append((time.monotonic(), "connect"))
                else:
                    self.seen.append((time.monotonic(), self.sock.recv(4096).decode()))
            except TimeoutError:
                continue

    def close(self) -> None:
        self.done.set()
        self.join()
        self.sock.close()
        if self.kind == socket.SOCK_STREAM:
            self.path.unlink(missing_ok=True)

    def statuses(self) -> list[str]:
        return [m.split("STATUS=", 1)[1] for _, m in self.seen if "STATUS=" in m]


def bursts(times: list[float], within_s: float = 0.02) -> list[float]:
    """Attempt times with those closer than `within_s` to the previous merged: one per retry turn."""
    merged: list[float] = []
    for t in sorted(times):
        if not merged or t - merged[-1] > within_s:
            merged.append(t)
    return merged


@pytest.fixture
def own_redis() -> Iterator[tuple[Path, list[RedisServer]]]:
    """A persistent (appendonly) redis-server in a short directory; the list holds the running one."""
    with tempfile.TemporaryDirectory(prefix="asched-f-") as directory:
        servers = [RedisServer(Path(directory), persistent=True).start()]
        try:
            yield Path(directory), servers
        finally:
            servers[-1].stop()


# --- Redis faults --------------------------------------------------------------------------------


class Phases:
    """One daemon on its own persistent Redis, through one Redis fault after another."""

    def __init__(self, directory: Path, servers: list[RedisServer], notify: Listener) -> None:
        self.directory = directory
        self.servers = servers
        self.notify = notify
        self.client = redis.Redis.from_url(servers[0].url)
        self.jobs = 0

    def flowing(self, daemon: DaemonProcess, more: int = 20) -> None:
        """Wait until `more` jobs finished since now (jobs flow) and systemd was told it is not degraded."""
        target = min(finished_count(self.client) + more, self.jobs)
        wait_until(lambda: finished_count(self.client) >= target or daemon.process.poll() is not None, 30)
        assert daemon.process.poll() is None, daemon.output()
        wait_until(lambda: not self.notify.statuses()[-1].startswith("DEGRADED"))

    def restart(self) -> None:
        """Start the server again on the same directory: it loads its append-only file."""
        self.servers.append(RedisServer(self.directory, persistent=True).start())
        self.client.close()
        self.client = redis.Redis.from_url(self.servers[-1].url)

    def outage(self, daemon: DaemonProcess, kill: bool, down_s: float) -> list[float]:
        """Stop (SIGTERM: it writes its AOF) or kill (SIGKILL) Redis, keep it away for `down_s`, restart
        it; returns the times the daemon tried to connect meanwhile (a listener stands in for Redis)."""
        server = self.servers[-1]
        down_at = time.monotonic()
        if kill:
            assert server.process is not None
            server.process.kill()
            server.process.wait()
        else:
            server.stop()
        standin = Listener(server.socket, socket.SOCK_STREAM)
        # the log says "Redis unreachable" once per outage (at most 20 times per 10 s: see logs.py);
        # systemd is told at once: STATUS=DEGRADED (flowing() saw NORMAL last)
        wait_until(lambda: self.notify.statuses()[-1].startswith("DEGRADED"))  # it was NORMAL before
        time.sleep(max(0.0, down_s - (time.monotonic() - down_at)))
        standin.close()
        self.restart()
        return [t for t, _ in standin.seen]


@pytest.mark.timeout(90)
def test_redis_faults_one_after_another_degrade_the_daemon_but_lose_no_job(
    own_redis: tuple[Path, list[RedisServer]], tmp_path: Path
) -> None:
    directory, servers = own_redis
    notify = Listener(tmp_path / "notify", socket.SOCK_DGRAM)
    phases = Phases(directory, servers, notify)
    runs = tmp_path / "runs.log"
    ids = enqueue_mixed(phases.client, runs, 320, seed=1)
    phases.jobs = len(ids)
    daemon = DaemonProcess(servers[0].url, env={**FAST_LEASE, "NOTIFY_SOCKET": str(notify.path)})
    try:
        # 1. every client connection killed every 50 ms for 1.5 s, mid-command or not
        phases.flowing(daemon)
        killed = 0
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            killed += phases.client.client_kill_filter(_type="normal", skipme=True)
            time.sleep(0.05)
        # 2. Redis killed outright (SIGKILL) and restarted from its append-only file 0.3 s later
        phases.flowing(daemon)
        phases.outage(daemon, kill=True, down_s=0.3)
        # 3. Redis stopped for 5 s, then restarted (appendonly)
        phases.flowing(daemon)
        attempts = phases.outage(daemon, kill=False, down_s=5.0)
        # Then the daemon carries on, says so, and every job finishes, once
        wait_until(lambda: finished_count(phases.client) == len(ids), timeout_s=40)
        wait_until(lambda: notify.statuses()[-1].startswith("NORMAL"))
        assert daemon.process.poll() is None
        output = daemon.output()
    except BaseException:
        daemon.kill()  # Redis may be away: a stop would wait stop_timeout_s for it
        raise
    finally:
        daemon.stop()
        daemon.log.close()
        notify.close()
    counts = account(phases.client, ids)
    turns = bursts(attempts)
    gaps = [b - a for a, b in itertools.pairwise(turns)]
    degraded = [s for s in notify.statuses() if s.startswith("DEGRADED")]
    print(
        f"\nRedis faults: {killed} connections killed in 1.5 s, SIGKILL + AOF restart, 5 s stop; {counts}; "
        f"ran twice {ran_twice(runs)}; log: 'Redis unreachable' x{output.count('Redis unreachable')}, "
        f"'reachable again' x{output.count('reachable again')}, claims put back after a lost reply "
        f"x{output.count('whose reply was lost')}; {len(degraded)} DEGRADED statuses, e.g. {degraded[-1]!r}; "
        f"5 s stop: {len(attempts)} connection attempts in {len(turns)} turns, gaps s "
        f"{[round(g, 2) for g in gaps]}"
    )
    assert killed > 20
    assert "Redis unreachable, retrying with backoff" in output and "Redis reachable again" in output
    assert counts["not finished"] == 0 and counts["finished twice"] == 0, counts
    assert all(phases.client.zcard(f"rq:wip:p{p}") == 0 for p in range(4)), phases.client.keys("rq:wip:*")
    # backed off: a handful of retry turns in 5 s, not a spin, none more than the 5 s cap apart
    assert 3 <= len(turns) <= 60, turns
    assert max(gaps) < 5.5, gaps
    phases.client.close()


def test_the_backoff_is_jittered_and_capped() -> None:
    for attempt, ceiling in ((0, 0.1), (3, 0.8), (10, 5.0)):
        waits = [backoff_s(attempt) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) - min(waits) > ceiling / 2  # full jitter: spread over [0, ceiling]


def test_the_reply_that_ends_an_outage_keeps_the_jobs_it_claimed(client: redis.Redis, redis_url: str) -> None:
    # Given a daemon that lost an exchange's reply (so its next reply reconciles its claims)
    ids = [queue(client, 1).enqueue("tests.fixtures.jobs.noop").id for _ in range(3)]
    daemon = Daemon(load_settings(), redis_url)
    try:
        daemon.intake.announce()
        daemon.exchange.unsure = True
        # When Redis answers again, with jobs claimed in that reply
        daemon._send_exchange(time.time())
        daemon.exchange.on_reply()
        # Then they are the daemon's to run, not put back in the queue as well (they would run twice)
        assert [job.id for job in daemon.local] == ids
        assert client.llen("rq:queue:p1") == 0 and client.zcard("rq:wip:p1") == 3
    finally:
        daemon.shutdown()


def test_housekeeping_after_redis_lost_its_scripts_still_recovers_and_promotes(
    client: redis.Redis, redis_url: str
) -> None:
    # Given a dead daemon's claimed job, a due scheduled job, and a Redis that forgot its scripts
    dead = Intake(client, load_settings(), "dead")
    orphan = queue(client, 1).enqueue("tests.fixtures.jobs.noop").id
    dead.announce()
    assert [job.id for job in dead.exchange([], 1, time.time()).jobs] == [orphan]
    client.delete(keys.daemon_lease("dead"))  # its lease is gone: it died
    due = queue(client, 2).enqueue_at(datetime.now(UTC) - timedelta(seconds=1), "tests.fixtures.jobs.noop").id
    daemon = Daemon(load_settings(lease_ttl_s=1), redis_url)
    # reclaiming waits until Redis has been up for a lease and a second (an outage is not a death)
    wait_until(lambda: client.info("server")["uptime_in_seconds"] >= 2, timeout_s=5)
    try:
        daemon.intake.announce()
        client.script_flush()
        # When the daemon does its housekeeping round trip
        chores = daemon.intake.housekeeping(time.time(), lambda pipe: pipe.set("also", "1"))
        # Then the scripts were loaded again: the orphan is back in P1, the due job moved to P2
        assert chores.recovered == [orphan] and chores.promoted == 1
        assert chores.depths == [0, 1, 1, 0] and client.get("also") == b"1"
        assert client.lrange("rq:queue:p2", 0, -1) == [due.encode()]
    finally:
        daemon.shutdown()


def test_a_job_that_ends_while_that_reply_is_in_flight_is_not_put_back(
    client: redis.Redis, redis_url: str
) -> None:
    # Given a daemon running a claimed job, that lost an exchange's reply (so its next one reconciles)
    job_id = queue(client, 1).enqueue("tests.fixtures.jobs.noop").id
    daemon = Daemon(load_settings(), redis_url)
    try:
        daemon.intake.announce()
        daemon._send_exchange(time.time())
        daemon.exchange.on_reply()
        running = daemon.local.pop()  # handed to a slot
        daemon.exchange.unsure = True
        # When the job ends while the next exchange is in flight, and that reply comes
        daemon._send_exchange(time.time())
        now = time.time()
        daemon.exchange.settle_later(
            outcomes.finished(running, daemon.dispatcher.defaults, b"null", now, now)
        )
        daemon.exchange.on_reply()
        # Then it is not put back in its queue as well (it would run again), and it is settled once
        assert client.llen("rq:queue:p1") == 0
        daemon._send_exchange(time.time())
        daemon.exchange.on_reply()
        assert status(client, job_id) == JobStatus.FINISHED and client.llen("rq:queue:p1") == 0
        assert not len(daemon.local)
    finally:
        daemon.shutdown()


# --- slot faults ---------------------------------------------------------------------------------


def job_processes(job_id: str) -> list[psutil.Process]:
    """Live processes a job started (they carry ASCHED_JOB_CHILD=<job id>; zombies are not live)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("ASCHED_JOB_CHILD") == job_id and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def pids_in(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def alive(pids: list[int]) -> list[int]:
    """Those pids still running (a zombie has ended; it is counted apart)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            continue
    return out


def zombies(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            continue
    return out


def slot_of(client: redis.Redis, daemon: DaemonProcess, job_id: str) -> int | None:
    """The pid of the slot running `job_id`, from the daemon's status, checked against its children."""
    for key in client.scan_iter(match="asched:status:*"):
        for slot in json.loads(client.get(key) or "{}").get("slots", []):
            if slot["job_id"] == job_id:
                children = {p.pid for p in psutil.Process(daemon.process.pid).children()}
                return slot["pid"] if slot["pid"] in children else None
    return None


@pytest.mark.timeout(60)
def test_slot_faults_fail_their_job_replace_the_slot_and_leave_no_process(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    q = queue(client, 1)
    env = {"ASCHED_SLOT_MEMORY_CAP": "60MB", "ASCHED_SLOTS": "3", "ASCHED_P0_LANE": "false"}
    pid_files = {name: tmp_path / f"{name}.pids" for name in ("returns", "exits", "overruns", "killed")}
    with running_daemon(redis_url, env=env) as daemon:
        first_slots = children(daemon.process.pid)
        # Given a job that starts children and grandchildren and returns while they run: once it has
        # finished, none is left, although its slot lives on
        returns = q.enqueue("tests.fixtures.jobs.spawn_children", str(pid_files["returns"]), "return")
        wait_until(lambda: status(client, returns.id) == JobStatus.FINISHED)
        assert len(pids_in(pid_files["returns"])) == 6 and not alive(pids_in(pid_files["returns"]))
        assert children(daemon.process.pid) == first_slots
        # And jobs that loop past their timeout, allocate past the 60 MB slot cap, start children then
        # end their process / overrun; a job whose slot is SIGKILLed from outside; and one that ignores
        # the SIGTERM sent to its slot
        jobs = {
            "spins": q.enqueue("tests.fixtures.jobs.spin", 600, job_timeout=1),
            "grows": q.enqueue("tests.fixtures.jobs.allocate", 250, 30),
            "returns": returns,
            "exits": q.enqueue("tests.fixtures.jobs.spawn_children", str(pid_files["exits"]), "exit"),
            "overruns": q.enqueue("tests.fixtures.jobs.spawn_children", str(pid_files["overruns"]), "sleep",
                                  job_timeout=2),
            "killed": q.enqueue("tests.fixtures.jobs.spawn_children", str(pid_files["killed"]), "sleep"),
        }  # fmt: skip
        wait_until(lambda: pid_files["killed"].exists() and slot_of(client, daemon, jobs["killed"].id), 30)
        victim = slot_of(client, daemon, jobs["killed"].id)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        jobs["ignores_sigterm"] = q.enqueue("tests.fixtures.jobs.ignore_sigterm", 600, job_timeout=2)
        wait_until(lambda: slot_of(client, daemon, jobs["ignores_sigterm"].id), timeout_s=30)
        stubborn = slot_of(client, daemon, jobs["ignores_sigterm"].id)
        assert stubborn is not None
        time.sleep(0.2)  # let the job install its handler
        os.kill(stubborn, signal.SIGTERM)
        time.sleep(0.5)
        assert psutil.pid_exists(stubborn) and status(client, jobs["ignores_sigterm"].id) == JobStatus.STARTED
        # Then each ends with its reason, and the daemon still serves
        after = q.enqueue("tests.fixtures.jobs.add", 2, 2)
        wait_until(lambda: status(client, after.id) == JobStatus.FINISHED, timeout_s=30)
        wait_until(
            lambda: all(
                status(client, j.id) in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED)
                for j in jobs.values()
            )
        )
        final_slots = children(daemon.process.pid)
        output = daemon.output()
        # counted while the daemon still runs (its stop kills every slot's process group)
        started = {name: pids_in(path) for name, path in pid_files.items()}
        leaked = {name: alive(pids) for name, pids in started.items()}
        stray = [p for j in jobs.values() for p in job_processes(j.id)]
    expected = {
        "spins": "exceeded its timeout of 1 s",
        "exits": "its slot process exited with code 9",
        "overruns": "exceeded its timeout of 2 s",
        "killed": "its slot process was killed by SIGKILL",
        "ignores_sigterm": "exceeded its timeout of 2 s",
    }
    for name, text in expected.items():
        assert status(client, jobs[name].id) == JobStatus.FAILED, name
        assert text in reason(client, jobs[name].id), (name, reason(client, jobs[name].id))
    assert status(client, jobs["returns"].id) == JobStatus.FINISHED
    # the job past the slot cap ran again until memory_stop_limit, then was parked (not failed)
    grows = client.hmget(f"rq:job:{jobs['grows'].id}", "status", "asched_outcome", "asched_reason")
    assert grows[:2] == [b"canceled", b"shed"] and b"exceeded the slot memory cap (60 MB)" in grows[2]
    assert fetch(client, jobs["returns"].id).return_value() == 6
    assert fetch(client, after.id).return_value() == 4
    # the slots that died or were stopped were replaced: still three, none of the killed ones
    assert len(final_slots) == 3 and victim not in final_slots and stubborn not in final_slots
    assert output.count("replaced:") >= 2, output
    dead = sum(len(zombies(p)) for p in started.values())
    print(f"\nslot faults: started {sum(map(len, started.values()))} job processes, left "
          f"{sum(map(len, leaked.values()))} (ended, awaiting init's reaping: {dead}); "
          f"slots before {sorted(first_slots)} after {sorted(final_slots)}")  # fmt: skip
    assert all(len(pids) == 6 for pids in started.values()), started
    assert leaked == {key: [] for key in pid_files}, leaked
    assert not stray, stray


@pytest.mark.timeout(60)
def test_a_stop_ends_jobs_that_ignore_sigterm_or_have_children_and_puts_them_back(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    pids = tmp_path / "children.pids"
    stubborn = queue(client, 1).enqueue("tests.fixtures.jobs.ignore_sigterm", 600)
    parent = queue(client, 1).enqueue("tests.fixtures.jobs.spawn_children", str(pids), "sleep")
    with running_daemon(redis_url, env={"ASCHED_STOP_TIMEOUT_S": "1"}) as daemon:
        wait_until(lambda: pids.exists() and status(client, stubborn.id) == JobStatus.STARTED)
        slots = children(daemon.process.pid)
        started = time.monotonic()
        assert daemon.stop(timeout_s=10) == 0
        stop_s = time.monotonic() - started
    assert stop_s < 4, stop_s  # stop_timeout_s (1 s), then the slots are killed
    assert status(client, stubborn.id) == JobStatus.QUEUED and status(client, parent.id) == JobStatus.QUEUED
    assert not alive(list(slots)) and not alive(pids_in(pids)), (slots, pids_in(pids))
    assert not job_processes(parent.id)
