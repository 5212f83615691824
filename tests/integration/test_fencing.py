"""Fencing: an outcome is written only while its execution's claim is still the writer's."""

from __future__ import annotations

import time

import redis
from adaptive_scheduler import keys, outcomes
from adaptive_scheduler.intake import Intake
from adaptive_scheduler.model import ClaimedJob, JobOptions
from adaptive_scheduler.settings import load_settings
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.helpers import queue, wait_until

OPTIONS = JobOptions(timeout_s=180, result_ttl_s=500, failure_ttl_s=1000)


def claim_one(intake: Intake) -> ClaimedJob:
    jobs = intake.exchange([], 1, time.time()).jobs
    assert len(jobs) == 1
    return jobs[0]


def test_an_outcome_for_a_claim_another_daemon_reclaimed_is_dropped_not_written(
    client: redis.Redis,
) -> None:
    # Given daemon A's claim, reclaimed by B after A's lease expired, and B's run of the job finished
    settings = load_settings(lease_ttl_s=1)
    job_id = queue(client, 1).enqueue("tests.fixtures.jobs.add", 1, 2).id
    a, b = Intake(client, settings, "a"), Intake(client, settings, "b")
    a.announce()
    b.announce()
    a_claim = claim_one(a)
    client.delete(keys.daemon_lease("a"))  # A paused past its lease
    # B renews its own 1 s lease as its housekeeping does, and recovers A's claims once Redis has been
    # up for a lease (an outage is not a death: see test_leases.py)
    assert wait_until(lambda: b.renew() and b.recover()) == [job_id]
    b_claim = claim_one(b)
    now = time.time()
    finished = outcomes.finished(b_claim, OPTIONS, b"3", now, now)
    assert b.exchange([finished], 0, now).stale == []
    # When A, resumed, writes its own outcome for the job (a failure, and a put-back)
    failed = outcomes.failed(a_claim, OPTIONS, "A's stale failure", now, now)
    written = a.exchange([failed, outcomes.put_back(a_claim)], 0, now)
    # Then both are dropped as stale: the job stays finished, in the finished registry only, not queued
    assert written.stale == [job_id, job_id]
    job = Job.fetch(job_id, connection=client, serializer=JSONSerializer)
    assert job.get_status().value == "finished"
    assert client.zscore("rq:finished:p1", job_id) is not None
    assert client.zscore("rq:failed:p1", job_id) is None
    assert client.llen("rq:queue:p1") == 0
    assert len(job.results()) == 1  # B's result only


def test_an_outcome_for_a_job_redis_lost_is_dropped_and_no_ghost_hash_is_written(client: redis.Redis) -> None:
    # Given a claim, then a Redis that lost everything (restarted with no persistence)
    settings = load_settings()
    queue(client, 1).enqueue("tests.fixtures.jobs.add", 1, 2)
    a = Intake(client, settings, "a")
    a.announce()
    a_claim = claim_one(a)
    client.flushdb()
    now = time.time()
    written = a.exchange([outcomes.finished(a_claim, OPTIONS, b"3", now, now)], 0, now)
    assert written.stale == [a_claim.id]
    assert client.keys("rq:job:*") == [] and client.keys("rq:results:*") == []


def test_an_outcome_for_a_job_hash_deleted_or_replaced_while_it_ran_writes_nothing(
    client: redis.Redis,
) -> None:
    # Given three claimed jobs: one's hash deleted, one's replaced by a hash of another application
    settings = load_settings()
    ids = [queue(client, 1).enqueue("tests.fixtures.jobs.add", 1, 2).id for _ in range(3)]
    a = Intake(client, settings, "a")
    a.announce()
    claims = a.exchange([], 3, time.time()).jobs
    deleted, replaced, fine = ids
    client.delete(f"rq:job:{deleted}")
    client.delete(f"rq:job:{replaced}")
    client.hset(f"rq:job:{replaced}", "other", "app")
    # When all three finish in one call
    now = time.time()
    written = a.exchange([outcomes.finished(c, OPTIONS, b"3", now, now) for c in claims], 0, now)
    # Then the two are reported damaged, nothing of them is written (no ghost hash, the other hash as it
    # was, no result), their claims are removed, and the third is finished
    assert sorted(written.damaged) == sorted([deleted, replaced])
    assert not client.exists(f"rq:job:{deleted}")
    assert client.hgetall(f"rq:job:{replaced}") == {b"other": b"app"}
    assert not client.exists(f"rq:results:{deleted}", f"rq:results:{replaced}")
    assert client.zcard("rq:wip:p1") == 0
    assert Job.fetch(fine, connection=client, serializer=JSONSerializer).get_status().value == "finished"
