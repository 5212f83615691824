"""Redis Sentinel: a daemon given a redis+sentinel:// URL follows a failover without a restart.

Real processes on loopback: a master, a replica and three sentinels (tests/sentinel_cluster.py); the
master is SIGKILLed mid-drain.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis
from adaptive_scheduler.redis_url import connect
from adaptive_scheduler.rqtime import unix_seconds

from tests.helpers import DaemonProcess, queue, running_daemon, wait_until
from tests.runs import executions
from tests.sentinel_cluster import SERVICE, SentinelCluster


def test_a_daemon_follows_a_failover_and_every_job_replicated_before_it_ends(
    cluster: SentinelCluster, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    client = connect(cluster.url, socket_timeout=2)
    # Given 60 jobs of 0.1 s enqueued through Sentinel, acknowledged by the replica (WAIT)
    jobs = [queue(client, 2).enqueue("tests.fixtures.jobs.paced_run", str(runs), 0.1).id for _ in range(60)]
    assert client.wait(1, 2000) == 1
    daemon = DaemonProcess(cluster.url, env={"ASCHED_LEASE_TTL_S": "3"}).wait_ready()
    try:
        # When the master is killed mid-drain
        wait_until(lambda: len(executions(runs)) >= 10, timeout_s=15)
        killed = time.time()
        cluster.kill_master()
        detected_s = cluster.wait_for_failover()
        # Then the daemon, never restarted, serves the new master: every job that was replicated ends
        new_master = cluster.master()
        served = wait_until(lambda: _first_finished_after(new_master, jobs, killed), timeout_s=30)
        wait_until(lambda: all(_status(new_master, j) in (b"finished", None) for j in jobs), timeout_s=40)
        assert daemon.process.poll() is None, daemon.output()[-3000:]
        log = daemon.output()
    finally:
        daemon.stop()
        daemon.log.close()
    present = [j for j in jobs if _status(new_master, j) is not None]
    assert len(present) >= 60 - 10  # at most what the master acknowledged but never replicated is gone
    assert all(_status(new_master, j) == b"finished" for j in present)
    assert "Redis unreachable" in log or "read-only replica" in log
    print(
        f"failover seen after {detected_s:.1f} s; first claim on the new master {served:.1f} s after the kill"
    )


def _status(client: object, job_id: str) -> bytes | None:
    return client.hget(f"rq:job:{job_id}", "status")  # type: ignore[attr-defined, no-any-return]


def _first_finished_after(client: object, jobs: list[str], killed: float) -> float | None:
    """Seconds from the kill to the first claim (started_at) the new master recorded; None before."""
    started = [unix_seconds(client.hget(f"rq:job:{j}", "started_at")) for j in jobs]  # type: ignore[attr-defined]
    after = [t for t in started if t is not None and t > killed]
    return min(after) - killed if after else None


def test_a_daemon_leaves_a_master_the_sentinels_no_longer_name(cluster: SentinelCluster) -> None:
    # Given a daemon connected to the master, idle
    with running_daemon(cluster.url, env={"ASCHED_LEASE_TTL_S": "2"}) as daemon:
        # When the replica becomes a master of its own and the sentinels are told to name it, while
        # the old master still calls itself master (as a master restarted during a promotion does)
        new = redis.Redis(port=cluster.replica_port)
        new.replicaof("NO", "ONE")
        for port in cluster.sentinel_ports:
            sentinel = redis.Redis(port=port)
            sentinel.execute_command("SENTINEL", "REMOVE", SERVICE)
            sentinel.execute_command("SENTINEL", "MONITOR", SERVICE, "127.0.0.1", cluster.replica_port, 2)
        assert redis.Redis(port=cluster.master_port).info("replication")["role"] == "master"
        # and a producer that follows the sentinels enqueues on the new master
        job = queue(connect(cluster.url), 1).enqueue("tests.fixtures.jobs.add", 2, 3)
        assert new.exists(job.key)
        # Then the daemon moves to it within a few seconds and runs the job there
        wait_until(lambda: new.hget(job.key, "status") == b"finished", timeout_s=10)
        assert "as master, but this daemon was writing to" in daemon.output()
