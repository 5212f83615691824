"""Crash safety: kill -9 of a daemon mid-run loses no job; a clean stop puts unfinished jobs back."""

from __future__ import annotations

import time
from pathlib import Path

import redis
from adaptive_scheduler.redis_server import RedisServer
from rq.job import Job, JobStatus
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from tests.helpers import DaemonProcess, queue, running_daemon, wait_until

FAST_LEASE = {"ASCHED_LEASE_TTL_S": "1"}


def statuses(client: redis.Redis, ids: list[str]) -> list[JobStatus]:
    return [Job.fetch(i, connection=client, serializer=JSONSerializer).get_status() for i in ids]


def finished_count(client: redis.Redis) -> int:
    return sum(FinishedJobRegistry(f"p{p}", connection=client).count for p in range(4))


def test_kill_9_mid_run_then_restart_leaves_no_job_missing(client: redis.Redis, redis_url: str) -> None:
    # Given 400 short jobs over all priorities and a daemon working through them
    ids = [queue(client, i % 4).enqueue("tests.fixtures.jobs.sleep", 0.002).id for i in range(400)]
    first = DaemonProcess(redis_url, env=FAST_LEASE).wait_ready()
    wait_until(lambda: finished_count(client) >= 100, timeout_s=30)
    # When it is killed with SIGKILL in the middle of the run, and a new daemon starts
    first.kill()
    in_flight = sum(client.zcard(f"rq:wip:p{p}") for p in range(4))
    with running_daemon(redis_url, env=FAST_LEASE):
        wait_until(lambda: finished_count(client) == 400, timeout_s=60)
    # Then every job finished: those the dead daemon held were recovered and run
    assert statuses(client, ids) == [JobStatus.FINISHED] * 400
    assert in_flight > 0, "the kill should have caught jobs in flight"
    assert all(client.zcard(f"rq:wip:p{p}") == 0 for p in range(4))


def test_a_clean_stop_puts_the_local_queue_back_and_lets_running_jobs_finish(
    client: redis.Redis, redis_url: str
) -> None:
    # Given a daemon with both slots busy and claimed jobs waiting in its local queue
    ids = [queue(client, 2).enqueue("tests.fixtures.jobs.sleep", 0.5).id for _ in range(10)]
    with running_daemon(redis_url) as daemon:
        wait_until(lambda: statuses(client, ids).count(JobStatus.STARTED) >= 2)
        # When it receives SIGTERM
        assert daemon.stop() == 0
    # Then the two running jobs finished and every other job is back in its queue, in order
    after = statuses(client, ids)
    assert after.count(JobStatus.FINISHED) == 2
    assert after.count(JobStatus.QUEUED) == 8
    assert [i.decode() for i in client.lrange("rq:queue:p2", 0, -1)] == [
        i for i, s in zip(ids, after, strict=True) if s == JobStatus.QUEUED
    ]
    assert client.zcard("rq:wip:p2") == 0


def test_a_second_signal_stops_at_once_and_still_puts_jobs_back(client: redis.Redis, redis_url: str) -> None:
    ids = [queue(client, 1).enqueue("tests.fixtures.jobs.sleep", 30).id for _ in range(3)]
    with running_daemon(redis_url) as daemon:
        wait_until(lambda: statuses(client, ids).count(JobStatus.STARTED) == 3)
        daemon.process.terminate()
        wait_until(lambda: "stopping after running jobs finish" in daemon.output())
        started = time.monotonic()
        assert daemon.stop(timeout_s=10) == 0
        assert time.monotonic() - started < 5
    assert statuses(client, ids) == [JobStatus.QUEUED] * 3
    assert client.llen("rq:queue:p1") == 3


def test_a_stop_checkpoints_a_preemptible_job_which_resumes_after_a_restart(
    client: redis.Redis, redis_url: str
) -> None:
    # Given a long checkpointing job (about 5 s unpreempted) running next to a short plain one
    long_job = queue(client, 2).enqueue("tests.fixtures.jobs.long_sum", 1_000_000, 20_000, 0.1)
    plain = queue(client, 2).enqueue("tests.fixtures.jobs.sleep", 1.0)
    with running_daemon(redis_url) as daemon:
        wait_until(lambda: statuses(client, [long_job.id, plain.id]) == [JobStatus.STARTED] * 2)
        time.sleep(0.5)
        # When the daemon is stopped (SIGTERM)
        started = time.monotonic()
        assert daemon.stop() == 0
        stop_s = time.monotonic() - started
    # Then the plain job finished, the long one checkpointed and went back: no 4.5 s wait
    assert statuses(client, [long_job.id, plain.id]) == [JobStatus.QUEUED, JobStatus.FINISHED]
    assert stop_s < 2.5, stop_s
    assert client.hget(long_job.key, "asched_checkpoint")
    # And after a restart it resumes from its checkpoint and ends with the unpreempted result
    with running_daemon(redis_url):
        wait_until(lambda: long_job.get_status(refresh=True) == JobStatus.FINISHED, timeout_s=30)
    assert long_job.return_value(refresh=True) == {"total": sum(range(1_000_000)), "runs": 2}


def test_a_job_that_ignored_the_checkpoint_signal_does_not_stop_the_next_job_from_checkpointing(
    client: redis.Redis, redis_url: str
) -> None:
    # Given one slot, where a job set SIGUSR1 (the daemon's "checkpoint now") to be ignored and ended
    ignorer = queue(client, 2).enqueue("tests.fixtures.jobs.ignore_preemption_signal")
    env = {"ASCHED_SLOTS": "1", "ASCHED_P0_LANE": "false"}
    with running_daemon(redis_url, env=env) as daemon:
        wait_until(lambda: statuses(client, [ignorer.id]) == [JobStatus.FINISHED])
        # and then a long checkpointing job runs in the same slot process
        long_job = queue(client, 2).enqueue("tests.fixtures.jobs.long_sum", 1_000_000, 20_000, 0.1)
        wait_until(lambda: statuses(client, [long_job.id]) == [JobStatus.STARTED])
        time.sleep(0.3)
        # When the daemon is stopped
        started = time.monotonic()
        assert daemon.stop() == 0
        stop_s = time.monotonic() - started
        # Then the job checkpointed when asked, rather than being killed after the 2 s grace period
        assert "preempted (checkpointed)" in daemon.output(), daemon.output()[-3000:]
    assert stop_s < 1.5, stop_s
    assert statuses(client, [long_job.id]) == [JobStatus.QUEUED]
    assert client.hget(long_job.key, "asched_checkpoint")


def test_a_redis_outage_is_waited_out_and_no_job_is_lost(tmp_path: Path) -> None:
    # Given a daemon working through jobs on its own (persistent) Redis
    server = RedisServer(tmp_path, persistent=True).start()
    client = redis.Redis.from_url(server.url)
    ids = [queue(client, i % 4).enqueue("tests.fixtures.jobs.sleep", 0.01).id for i in range(300)]
    daemon = DaemonProcess(server.url, env=FAST_LEASE).wait_ready()
    try:
        wait_until(lambda: finished_count(client) >= 50, timeout_s=30)
        # When Redis goes away for two seconds and comes back
        server.stop()
        wait_until(lambda: "Redis unreachable, retrying with backoff" in daemon.output())
        time.sleep(2)
        server = RedisServer(tmp_path, persistent=True).start()
        client = redis.Redis.from_url(server.url)
        # Then the daemon carries on and every job finishes
        wait_until(lambda: finished_count(client) == 300, timeout_s=60)
        assert daemon.process.poll() is None
        assert "Redis reachable again" in daemon.output()
        assert statuses(client, ids) == [JobStatus.FINISHED] * 300
    finally:
        daemon.stop()
        server.stop()
