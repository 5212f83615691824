"""replica_acks: each claim-and-settle call waits (Redis WAIT) until a replica has its writes."""

from __future__ import annotations

import redis

from tests.helpers import queue, running_daemon, wait_until
from tests.sentinel_cluster import SentinelCluster


def test_with_replica_acks_a_finished_job_is_on_the_replica_when_its_outcome_is_written(
    cluster: SentinelCluster,
) -> None:
    master = redis.Redis(port=cluster.master_port)
    replica = redis.Redis(port=cluster.replica_port)
    url = f"redis://127.0.0.1:{cluster.master_port}/0"
    with running_daemon(url, env={"ASCHED_REPLICA_ACKS": "1"}) as daemon:
        jobs = [queue(master, 1).enqueue("tests.fixtures.jobs.add", i, 1).id for i in range(20)]
        wait_until(lambda: all(master.hget(f"rq:job:{j}", "status") == b"finished" for j in jobs))
        wait_until(lambda: all(replica.hget(f"rq:job:{j}", "status") == b"finished" for j in jobs))
        # every call was followed by a WAIT the replica answered in time
        assert master.info("commandstats")["cmdstat_wait"]["calls"] >= 1
        assert "not acknowledged" not in daemon.output()


def test_without_its_replica_the_daemon_goes_on_and_says_the_writes_are_unreplicated(
    cluster: SentinelCluster,
) -> None:
    master = redis.Redis(port=cluster.master_port)
    url = f"redis://127.0.0.1:{cluster.master_port}/0"
    env = {"ASCHED_REPLICA_ACKS": "1", "ASCHED_REPLICA_ACK_TIMEOUT_MS": "50"}
    replica = cluster.processes.pop("replica")
    replica.kill()
    replica.wait()
    with running_daemon(url, env=env) as daemon:
        job = queue(master, 1).enqueue("tests.fixtures.jobs.add", 1, 1).id
        wait_until(lambda: master.hget(f"rq:job:{job}", "status") == b"finished")
        wait_until(lambda: "not acknowledged by 1 replicas within 50 ms" in daemon.output())
