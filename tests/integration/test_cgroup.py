"""The daemon inside a real memory cgroup (v1 here, as root) is never OOM-killed, and loses no job.

The cgroup limit is the daemon's budget (no memory_budget setting), as under systemd's MemoryMax=.
The workload asks for about twice the limit. Skipped, with the reason, where cgroups are not writable.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.helpers import DaemonProcess, queue, wait_until

V1_MEMORY = Path("/sys/fs/cgroup/memory")
LIMIT = 350 * 2**20
DONE = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED)


@pytest.fixture()
def memory_cgroup() -> Iterator[Path]:
    if os.geteuid() != 0 or not os.access(V1_MEMORY, os.W_OK):
        pytest.skip("needs root and a writable cgroup v1 memory controller")
    group = V1_MEMORY / f"asched-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    (group / "memory.limit_in_bytes").write_text(str(LIMIT))
    try:
        yield group
    finally:
        wait_until(lambda: not (group / "cgroup.procs").read_text().strip(), timeout_s=15)
        group.rmdir()


def oom_kills(group: Path) -> int:
    stats = dict(line.split() for line in (group / "memory.oom_control").read_text().splitlines())
    return int(stats.get("oom_kill", 0))


def test_a_memory_storm_in_a_cgroup_kills_nothing_and_loses_nothing(
    client: redis.Redis, redis_url: str, memory_cgroup: Path
) -> None:
    # Given a daemon inside a 350 MiB cgroup, with the default thresholds
    env = {"ASCHED_PRESSURE_HOLD_S": "0.5", "ASCHED_PREEMPT_GRACE_S": "1"}
    daemon = DaemonProcess(redis_url, env=env, cgroup_procs=memory_cgroup / "cgroup.procs").wait_ready()
    try:
        # When jobs that together want about twice the limit arrive at every priority
        jobs = [queue(client, 0).enqueue("tests.fixtures.jobs.allocate", 60, 1.0) for _ in range(3)]
        jobs += [queue(client, 1).enqueue("tests.fixtures.jobs.long_sum", 2_000_000, 100_000, 0.05)]
        jobs += [
            queue(client, 2).enqueue("tests.fixtures.jobs.allocate_steps", 200, 10, 0.1) for _ in range(3)
        ]
        jobs += [queue(client, 3).enqueue("tests.fixtures.jobs.heartbeat") for _ in range(5)]
        # Then every job ends in a known place, the P0 and P1 jobs finish, and nothing was OOM-killed
        wait_until(lambda: all(fetch(client, j.id).get_status() in DONE for j in jobs), timeout_s=90)
        assert daemon.process.poll() is None, daemon.output()
        statuses = [fetch(client, j.id).get_status() for j in jobs]
        assert statuses[:4] == [JobStatus.FINISHED] * 4
        assert statuses[4:7] == [JobStatus.FINISHED] * 3  # preempted and resumed, perhaps more than once
        assert oom_kills(memory_cgroup) == 0
        published = json.loads(client.get(next(client.scan_iter(match="asched:status:*"))))
        assert published["memory"]["budget_source"].startswith("cgroup")
        assert published["memory"]["budget_mb"] == LIMIT / 2**20
        assert "memory pressure NORMAL ->" in daemon.output()
    finally:
        daemon.stop()
        daemon.log.close()


def fetch(client: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=client, serializer=JSONSerializer)
