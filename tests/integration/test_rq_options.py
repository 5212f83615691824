"""The RQ job options a producer sets are honoured as RQ's own worker would honour them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.helpers import queue, running_daemon, wait_until


def fetch(client: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=client, serializer=JSONSerializer)


def finished(client: redis.Redis, job_id: str) -> bool:
    return fetch(client, job_id).get_status() == JobStatus.FINISHED


def test_job_id_meta_description_and_result_ttl_are_kept(client: redis.Redis, redis_url: str) -> None:
    job = queue(client, 1).enqueue(
        "tests.fixtures.jobs.add",
        1,
        1,
        job_id="my-job",
        meta={"owner": "ops"},
        description="one plus one",
        result_ttl=100,
    )
    with running_daemon(redis_url):
        wait_until(lambda: finished(client, "my-job"))
    done = fetch(client, job.id)
    assert (done.meta, done.description, done.return_value()) == ({"owner": "ops"}, "one plus one", 2)
    assert 90 < client.ttl("rq:job:my-job") <= 100
    assert 90 < client.ttl("rq:results:my-job") <= 100


def test_result_ttl_zero_deletes_the_job_when_done(client: redis.Redis, redis_url: str) -> None:
    job = queue(client, 1).enqueue("tests.fixtures.jobs.noop", result_ttl=0)
    marker = queue(client, 1).enqueue("tests.fixtures.jobs.noop")
    with running_daemon(redis_url):
        wait_until(lambda: finished(client, marker.id))
    assert not client.exists(f"rq:job:{job.id}")


def test_failure_ttl_bounds_how_long_a_failed_job_stays(client: redis.Redis, redis_url: str) -> None:
    job = queue(client, 1).enqueue("tests.fixtures.jobs.fail", failure_ttl=50)
    with running_daemon(redis_url):
        wait_until(lambda: fetch(client, job.id).get_status() == JobStatus.FAILED)
    assert 40 < client.ttl(f"rq:job:{job.id}") <= 50


def test_a_job_whose_ttl_expired_while_queued_is_dropped_as_rq_does(
    client: redis.Redis, redis_url: str
) -> None:
    expired = queue(client, 1).enqueue("tests.fixtures.jobs.noop", ttl=1)
    client.delete(f"rq:job:{expired.id}")  # what Redis does when the ttl runs out
    marker = queue(client, 1).enqueue("tests.fixtures.jobs.noop")
    with running_daemon(redis_url) as daemon:
        wait_until(lambda: finished(client, marker.id))
        wait_until(lambda: "dropped 1 queued ids whose job hash is gone" in daemon.output())
    assert client.llen("rq:queue:p1") == 0


def test_at_front_jumps_the_queue(client: redis.Redis, redis_url: str) -> None:
    q = queue(client, 3)
    ordinary = [q.enqueue("tests.fixtures.jobs.stamp") for _ in range(20)]
    urgent = q.enqueue("tests.fixtures.jobs.stamp", at_front=True)
    with running_daemon(redis_url, env={"ASCHED_SLOTS": "1"}):
        wait_until(lambda: all(finished(client, j.id) for j in [*ordinary, urgent]))
    assert fetch(client, urgent.id).return_value() < min(fetch(client, j.id).return_value() for j in ordinary)


def test_enqueue_in_runs_the_job_once_it_is_due(client: redis.Redis, redis_url: str) -> None:
    due = datetime.now(UTC) + timedelta(seconds=2)
    job = queue(client, 1).enqueue_at(due, "tests.fixtures.jobs.add", 3, 4)
    assert fetch(client, job.id).get_status() == JobStatus.SCHEDULED
    with running_daemon(redis_url):
        wait_until(lambda: finished(client, job.id), timeout_s=10)
    done = fetch(client, job.id)
    assert done.return_value() == 7
    assert done.started_at >= due - timedelta(seconds=1)  # promoted on the daemon's 1 s cadence


def test_a_dependent_job_runs_after_its_parent(client: redis.Redis, redis_url: str) -> None:
    parent = queue(client, 2).enqueue("tests.fixtures.jobs.sleep", 0.2)
    child = queue(client, 1).enqueue("tests.fixtures.jobs.add", 1, 2, depends_on=parent)
    assert fetch(client, child.id).get_status() == JobStatus.DEFERRED
    with running_daemon(redis_url):
        wait_until(lambda: finished(client, child.id))
    assert fetch(client, child.id).started_at > fetch(client, parent.id).ended_at


def test_a_retry_interval_puts_the_job_in_rqs_scheduled_registry_until_due(
    client: redis.Redis, redis_url: str
) -> None:
    from rq import Retry

    job = queue(client, 1).enqueue("tests.fixtures.jobs.fail", "again", retry=Retry(max=1, interval=2))
    with running_daemon(redis_url):
        wait_until(lambda: fetch(client, job.id).get_status() == JobStatus.SCHEDULED)
        first_end = fetch(client, job.id).latest_result()  # no result yet for a retried run
        wait_until(lambda: fetch(client, job.id).get_status() == JobStatus.FAILED, timeout_s=10)
    done = fetch(client, job.id)
    assert first_end is None
    assert done.retries_left == 0
    assert done.started_at >= done.enqueued_at + timedelta(seconds=1)  # the second run waited
