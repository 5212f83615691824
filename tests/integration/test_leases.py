"""Leases with real pauses and real outages: a frozen daemon (SIGSTOP) and a Redis restart (SIGKILL).

A daemon frozen past its lease loses its jobs to a live daemon, and neither runs a job at the same time
as the other (its slots stop their own jobs: adaptive_scheduler.pulse) nor writes over the other's outcomes
(fencing); a Redis outage longer than the lease is no one's death: no job runs twice.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import redis
from adaptive_scheduler.redis_server import RedisServer
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.helpers import DaemonProcess, queue, running_daemon, wait_until
from tests.runs import executions, overlapping

LEASE = {"ASCHED_LEASE_TTL_S": "2", "ASCHED_SLOTS": "2", "ASCHED_P0_LANE": "false"}


def status(client: redis.Redis, job_id: str) -> JobStatus:
    return Job.fetch(job_id, connection=client, serializer=JSONSerializer).get_status(refresh=True)


def test_a_daemon_frozen_past_its_lease_loses_its_jobs_without_overlap_or_stale_writes(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    # Given daemon A running two 3 s jobs, and daemon B idle beside it
    a = DaemonProcess(redis_url, env=LEASE).wait_ready()
    try:
        jobs = [
            queue(client, 2).enqueue("tests.fixtures.jobs.paced_run", str(runs), 3.0).id for _ in range(2)
        ]
        wait_until(lambda: len(executions(runs)) == 2)
        with running_daemon(redis_url, env=LEASE) as b:
            # When A is frozen for 5 s (longer than its 2 s lease), then resumes
            os.kill(a.process.pid, signal.SIGSTOP)
            time.sleep(5)
            os.kill(a.process.pid, signal.SIGCONT)
            wait_until(lambda: all(status(client, j) == JobStatus.FINISHED for j in jobs), timeout_s=20)
            wait_until(lambda: "lease lost" in a.output(), timeout_s=5)
            b_log = b.output()
        a_log = a.output()
    finally:
        a.stop()
        a.log.close()
    # Then B ran them again after A's slots had stopped them: no two runs of a job overlapped
    assert overlapping(runs) == []
    assert all(len(runs_of_job) == 2 for runs_of_job in executions(runs).values())
    assert "stopped job" in a_log and "recovered 2 jobs of dead daemons" in b_log
    # and A, back, wrote nothing over B's work: each job finished once, in the finished registry only
    assert "dropped" in a_log and "serving again as" in a_log
    for job_id in jobs:
        job = Job.fetch(job_id, connection=client, serializer=JSONSerializer)
        assert len(job.results()) == 1 and job.return_value() == 3.0
        assert client.zscore("rq:failed:p2", job_id) is None and client.llen("rq:queue:p2") == 0


def test_a_redis_outage_longer_than_the_lease_is_not_a_death(tmp_path: Path) -> None:
    # Given a Redis with an append-only file, two daemons (2 s leases) running four 4 s jobs
    server = RedisServer(tmp_path / "redis", persistent=True).start()
    client = redis.Redis.from_url(server.url)
    runs = tmp_path / "runs"
    daemons = [DaemonProcess(server.url, env=LEASE).wait_ready(count=i + 1) for i in range(2)]
    try:
        jobs = [
            queue(client, 2).enqueue("tests.fixtures.jobs.paced_run", str(runs), 4.0).id for _ in range(4)
        ]
        wait_until(lambda: len(executions(runs)) == 4)
        # When Redis is killed, stays away for 3.5 s, and comes back with its data
        assert server.process is not None
        server.process.kill()
        server.process.wait()
        time.sleep(3.5)
        server.start()
        wait_until(lambda: all(status(client, j) == JobStatus.FINISHED for j in jobs), timeout_s=30)
        logs = [daemon.output() for daemon in daemons]
    finally:
        for daemon in daemons:
            daemon.stop()
            daemon.log.close()
        client.close()
        server.stop()
    # Then no daemon declared another dead, and every job ran exactly once
    assert not any("of dead daemons" in log or "lease lost" in log for log in logs), logs
    assert [len(r) for r in executions(runs).values()] == [1, 1, 1, 1]


def test_a_job_a_frozen_daemons_parked_claim_took_runs_once_elsewhere_never_on_its_thaw(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    # Given daemon A idle (its queues watched, a claim parked behind each watch), then daemon B
    a = DaemonProcess(redis_url, env={**LEASE, "ASCHED_PARK_CLAIMS": "true"}).wait_ready()
    try:
        time.sleep(0.3)  # A's watches are set before B's: Redis serves A's first
        with running_daemon(redis_url, env=LEASE) as b:
            # When A is frozen, a job lands at once (A's parked claim takes it, under A's lease still
            # valid), and A stays frozen for 5 s (past its 2 s lease)
            os.kill(a.process.pid, signal.SIGSTOP)
            job_id = queue(client, 2).enqueue("tests.fixtures.jobs.paced_run", str(runs), 0.5).id
            time.sleep(5)
            os.kill(a.process.pid, signal.SIGCONT)
            # Then B recovered A's claim and ran the job; A, thawed, read the claim's reply but started
            # nothing while in doubt of its lease, then learned it lost it
            wait_until(lambda: status(client, job_id) == JobStatus.FINISHED, timeout_s=20)
            wait_until(lambda: "lease lost" in a.output(), timeout_s=5)
            time.sleep(1.0)  # time for a wrong start on A to show
            b_log = b.output()
    finally:
        a.stop()
        a.log.close()
    assert "recovered 1 jobs of dead daemons" in b_log
    [run] = executions(runs)[job_id]
    assert run.ended
