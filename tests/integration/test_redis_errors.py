"""No Redis error stops the daemon: a full Redis (maxmemory) and a job hash replaced while its job ran."""

from __future__ import annotations

import time

import pytest
import redis
from adaptive_scheduler.service import redis_trouble
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.helpers import DaemonProcess, queue, running_daemon, wait_until


def status(client: redis.Redis, job_id: str) -> JobStatus:
    return Job.fetch(job_id, connection=client, serializer=JSONSerializer).get_status(refresh=True)


@pytest.mark.parametrize(
    ("error", "meaning"),
    [
        (redis.ConnectionError("Connection refused"), "Redis unreachable"),
        (redis.TimeoutError("Timeout reading"), "Redis unreachable"),
        (redis.exceptions.OutOfMemoryError("OOM command not allowed"), "Redis is full"),
        (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), "read-only replica"),
        (redis.exceptions.MasterDownError("MASTERDOWN Link with MASTER is down"), "lost its master"),
        (redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"), "loading its data"),
        (
            redis.exceptions.NoPermissionError("User x has no permissions to run 'evalsha'"),
            "lacks a permission",
        ),
        (redis.ResponseError("BUSY Redis is busy running a script"), "busy running a script"),
        (redis.ResponseError("MISCONF Redis is configured to save RDB snapshots"), "cannot persist"),
        (redis.ResponseError("WRONGTYPE Operation against a key"), "wrong type"),
        (redis.ResponseError("ERR something new"), "Redis refused a command"),
    ],
)
def test_every_redis_error_has_a_meaning_for_the_operator(error: redis.RedisError, meaning: str) -> None:
    assert meaning in redis_trouble(error)


def test_a_full_redis_degrades_the_daemon_which_keeps_its_outcomes_and_resumes_by_itself(
    client: redis.Redis, redis_url: str
) -> None:
    env = {"ASCHED_LEASE_TTL_S": "3"}
    with running_daemon(redis_url, env=env) as daemon:
        # Given jobs running when Redis fills up (maxmemory below what it holds: it refuses writes)
        jobs = [queue(client, 1).enqueue("tests.fixtures.jobs.sleep", 1.0).id for _ in range(2)]
        wait_until(lambda: all(status(client, j) == JobStatus.STARTED for j in jobs))
        client.config_set("maxmemory", 1)
        try:
            # When they end while Redis is full, the daemon says so and stays up
            wait_until(lambda: "Redis is full" in daemon.output(), timeout_s=10)
            time.sleep(1.5)
            assert daemon.process.poll() is None
            assert all(status(client, j) == JobStatus.STARTED for j in jobs)  # nothing written yet
        finally:
            client.config_set("maxmemory", 0)
        # Then, once Redis has room, the outcomes it kept are written and it serves again
        wait_until(lambda: all(status(client, j) == JobStatus.FINISHED for j in jobs), timeout_s=15)
        after = queue(client, 1).enqueue("tests.fixtures.jobs.add", 1, 1).id
        wait_until(lambda: status(client, after) == JobStatus.FINISHED)
        assert daemon.process.poll() is None
        assert "lease lost" not in daemon.output()


def test_a_job_hash_replaced_while_its_job_runs_costs_that_job_only(
    client: redis.Redis, redis_url: str
) -> None:
    with running_daemon(redis_url) as daemon:
        # Given two jobs that end together, one of whose hash another application replaces by a string
        doomed, fine = (queue(client, 1).enqueue("tests.fixtures.jobs.sleep", 0.5).id for _ in range(2))
        wait_until(
            lambda: status(client, doomed) == JobStatus.STARTED and status(client, fine) == JobStatus.STARTED
        )
        client.delete(f"rq:job:{doomed}")
        client.set(f"rq:job:{doomed}", "not a hash")
        # Then the other's outcome is written, the damaged one reported, and the daemon serves on
        wait_until(lambda: status(client, fine) == JobStatus.FINISHED)
        wait_until(lambda: "replaced by another type of key" in daemon.output())
        assert client.get(f"rq:job:{doomed}") == b"not a hash"
        assert client.zcard("rq:wip:p1") == 0  # its claim removed: nobody reclaims it forever
        after = queue(client, 1).enqueue("tests.fixtures.jobs.add", 1, 1).id
        wait_until(lambda: status(client, after) == JobStatus.FINISHED)


def test_a_daemon_started_while_redis_is_full_waits_instead_of_crash_looping(
    client: redis.Redis, redis_url: str
) -> None:
    # Given a Redis that refuses writes (full), and a daemon started against it
    job = queue(client, 1).enqueue("tests.fixtures.jobs.add", 2, 2).id
    client.config_set("maxmemory", 1)
    daemon = DaemonProcess(redis_url)
    try:
        # Then it stays up and says why it cannot start yet
        wait_until(lambda: "cannot start yet: Redis is full" in daemon.output(), timeout_s=10)
        time.sleep(1)
        assert daemon.process.poll() is None
        # and starts by itself once Redis has room
        client.config_set("maxmemory", 0)
        daemon.wait_ready()
        wait_until(lambda: status(client, job) == JobStatus.FINISHED)
    finally:
        client.config_set("maxmemory", 0)
        daemon.stop()
        daemon.log.close()
