"""A stop (SIGTERM) while Redis is away, with a real Redis killed and restarted from its append-only file.

The daemon waits up to `stop_timeout_s` for Redis to come back, so that the outcomes of jobs that ended
are written; past that it stops, says what it could not write, and exits 0. Nothing is lost: the jobs
stay claimed under its lease, and once that expires a daemon puts them back and runs them again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from adaptive_scheduler.redis_server import RedisServer
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.helpers import DaemonProcess, queue, running_daemon, wait_until
from tests.runs import executions

STOP_TIMEOUT_S = 4.0
ENV = {
    "ASCHED_LEASE_TTL_S": "2",
    "ASCHED_SLOTS": "2",
    "ASCHED_P0_LANE": "false",
    "ASCHED_STOP_TIMEOUT_S": str(STOP_TIMEOUT_S),
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", persistent=True).start()
    yield server
    server.stop()


def kill(server: RedisServer) -> None:
    assert server.process is not None
    server.process.kill()
    server.process.wait()


def status(client: redis.Redis, job_id: str) -> JobStatus:
    return Job.fetch(job_id, connection=client, serializer=JSONSerializer).get_status(refresh=True)


def stop_in_outage(
    server: RedisServer, runs: Path, back_after_s: float | None
) -> tuple[str, int, float, str]:
    """Run a 1 s job, kill Redis, SIGTERM the daemon (and restart Redis `back_after_s` later, if given);
    returns the job id, the daemon's exit code, how long it took to exit, and its log."""
    daemon = DaemonProcess(server.url, env=ENV).wait_ready()
    try:
        job_id = (
            queue(redis.Redis.from_url(server.url), 2)
            .enqueue("tests.fixtures.jobs.paced_run", str(runs), 1.0)
            .id
        )
        wait_until(lambda: len(executions(runs)) == 1)
        kill(server)
        signalled = time.monotonic()
        daemon.process.terminate()
        if back_after_s is not None:
            time.sleep(back_after_s)
            server.start()
        code = daemon.process.wait(timeout=STOP_TIMEOUT_S + 10)
        return job_id, code, time.monotonic() - signalled, daemon.output()
    finally:
        daemon.kill()
        daemon.log.close()


def test_a_stop_while_redis_stays_away_ends_at_the_stop_timeout_and_loses_no_job(
    server: RedisServer, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    # Given a daemon whose job finishes while Redis is away, and a stop asked then
    job_id, code, took_s, log = stop_in_outage(server, runs, back_after_s=None)
    # Then it waits for Redis up to its stop timeout, stops cleanly, and says what it could not write
    assert code == 0, log
    assert STOP_TIMEOUT_S <= took_s < STOP_TIMEOUT_S + 3, (took_s, log)
    assert "Redis still unreachable, so the outcomes of the jobs that ended are not written" in log
    assert "could not write 1 outcomes at stop" in log
    assert "jobs still running" not in log  # the job had ended: that was not why it waited
    # and the outage's connection refusals are said once each, not at every retry
    assert log.count("WARNING adaptive_scheduler.waker cannot subscribe to asched:control") == 1, log
    # When Redis comes back with its data and a daemon serves
    server.start()
    client = redis.Redis.from_url(server.url)
    with running_daemon(server.url, env=ENV) as other:
        # Then once the stopped daemon's lease has expired its job is put back and runs again to the end
        wait_until(lambda: status(client, job_id) == JobStatus.FINISHED, timeout_s=20)
        assert "recovered 1 jobs of dead daemons" in other.output()
    first, again = executions(runs)[job_id]  # at-least-once: the first run's outcome was never written
    assert first.ended and again.ended
    client.close()


def test_a_stop_while_redis_is_away_writes_the_outcomes_once_redis_is_back(
    server: RedisServer, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    # Given a daemon whose job finishes while Redis is away, a stop asked then, and Redis back 2 s later
    job_id, code, took_s, log = stop_in_outage(server, runs, back_after_s=2.0)
    # Then it stops as soon as the outcome is written, before its stop timeout
    assert code == 0, log
    assert took_s < STOP_TIMEOUT_S, (took_s, log)
    assert "could not write" not in log and "stopping now" not in log
    # and the job finished once: its outcome is in Redis, no daemon runs it again
    client = redis.Redis.from_url(server.url)
    assert status(client, job_id) == JobStatus.FINISHED
    [run] = executions(runs)[job_id]
    assert run.ended
    client.close()
