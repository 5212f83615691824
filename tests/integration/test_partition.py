"""A daemon whose connections die without a word (a partition: no reset, no reply) consumes again.

The failure users of other queues report most after a failover: a worker still connected and
"running" that no longer consumes. Here every connection the daemon had is frozen by a proxy
(tests/freezing_proxy.py) while new connections work; a job then arrives in a queue it was watching.
With a claim parked behind that watch (`park_claims`, the default) Redis claims the job at once and the
reply is what never comes; without, the watch never fires. Either way the job runs.
"""

from __future__ import annotations

import time

import pytest
import redis
from adaptive_scheduler.redis_server import RedisServer
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.freezing_proxy import FreezingProxy
from tests.helpers import queue, running_daemon, wait_until


@pytest.mark.parametrize(
    ("park_claims", "found"),
    [
        ("true", "ran but its reply never came: watch reset, its claim goes back to the queue"),
        ("false", "its watch never woke this daemon"),
    ],
)
def test_a_dead_watch_and_a_reply_that_never_comes_are_dropped_and_the_job_runs(
    client: redis.Redis, redis_server: RedisServer, park_claims: str, found: str
) -> None:
    proxy = FreezingProxy(str(redis_server.socket))
    try:
        with running_daemon(proxy.url, env={"ASCHED_PARK_CLAIMS": park_claims}) as daemon:
            time.sleep(0.5)  # its queues were found empty: their watches are pending
            assert proxy.freeze_existing() >= 4  # the watches, the exchange, the pool
            job = queue(client, 1).enqueue("tests.fixtures.jobs.add", 2, 3)
            wait_until(
                lambda: (
                    Job.fetch(job.id, connection=client, serializer=JSONSerializer).get_status()
                    == JobStatus.FINISHED
                ),
                timeout_s=45,
            )
            log = daemon.output()
            assert daemon.process.poll() is None
        assert found in log, log[-3000:]
    finally:
        proxy.stop()
