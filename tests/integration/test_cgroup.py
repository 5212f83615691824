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
from typing import Any

import pytest
import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.helpers import DaemonProcess, children, queue, running_daemon, wait_until

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
        log = daemon.output()
        # the storm was real: the daemon either reacted to a level or held jobs back for memory
        assert "memory pressure NORMAL ->" in log or "waits for memory" in log, log
    finally:
        daemon.stop()
        daemon.log.close()


def test_plain_jobs_that_do_not_fit_two_at_a_time_all_finish_one_at_a_time_with_no_stop(
    client: redis.Redis, redis_url: str, memory_cgroup: Path
) -> None:
    # Given a daemon in a 350 MiB cgroup and plain RQ jobs (no SDK) of 150 MiB each: two at once and
    # the daemon would pass 95 % (EMERGENCY), one at a time fits
    env = {"ASCHED_ALLOWED_MODULES": '["tests.fixtures.plain"]'}
    daemon = DaemonProcess(redis_url, env=env, cgroup_procs=memory_cgroup / "cgroup.procs").wait_ready()
    try:
        jobs = [queue(client, 2 + i % 2).enqueue("tests.fixtures.plain.touch", 150, 0.6) for i in range(4)]
        wait_until(lambda: all(fetch(client, j.id).get_status() in DONE for j in jobs), timeout_s=40)
        log = daemon.output()
        # Then every one finished and none was OOM-killed; until the task had a profile two ran at once
        # (each assumed to need a quarter of the budget): one stop for memory at most, none after
        assert [fetch(client, j.id).get_status() for j in jobs] == [JobStatus.FINISHED] * 4, log
        assert oom_kills(memory_cgroup) == 0
        assert log.count("stopped for memory") <= 1 and "waits for memory" in log

        # and the profile it learned is in Redis for every daemon, with peaks near 150 MiB
        def profile() -> dict[str, Any]:
            return json.loads(client.hget("asched:profiles", "tests.fixtures.plain.touch") or "{}")

        runs = 4 + log.count("stopped for memory")
        learned = wait_until(lambda: profile().get("runs") == runs and profile(), timeout_s=3)  # 1 write/s
        assert learned["stops"] == runs - 4
        assert all(120 * 2**20 < peak < 200 * 2**20 for _, peak in learned["peaks"][-3:]), learned
    finally:
        daemon.stop()
        daemon.log.close()


def fetch(client: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=client, serializer=JSONSerializer)


def test_a_job_the_kernel_oom_kills_runs_again_and_finishes(
    client: redis.Redis, redis_url: str, memory_cgroup: Path, tmp_path: Path
) -> None:
    # Given a daemon outside the cgroup (its budget is ample: the governor sees nothing coming), whose
    # job moves into the 350 MiB cgroup and there allocates 600 MiB once, 1 MiB when run again
    with running_daemon(redis_url) as daemon:
        once = tmp_path / "ran-once"
        job = queue(client, 1).enqueue(
            "tests.fixtures.jobs.allocate_in_cgroup", str(memory_cgroup / "cgroup.procs"), 600, str(once)
        )
        # When the kernel's OOM killer takes its slot
        wait_until(lambda: job.get_status(refresh=True) in DONE, timeout_s=20)
        # Then the job ran again and finished: a stop for memory, not a failure of the task
        assert oom_kills(memory_cgroup) == 1
        assert job.get_status() == JobStatus.FINISHED, job.exc_info
        assert job.return_value() == 2**20
        assert client.hget(job.key, "asched_memory_stops") == b"1"
        assert "killed by the kernel's OOM killer" in daemon.output()
        # And slots, not the daemon, are the OOM killer's first choice
        slots = children(daemon.process.pid)
        assert slots and all(Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "500" for pid in slots)
        assert Path(f"/proc/{daemon.process.pid}/oom_score_adj").read_text().strip() == "0"


def test_a_job_the_kernel_oom_kills_every_time_is_parked_with_the_reason_not_failed(
    client: redis.Redis, redis_url: str, memory_cgroup: Path
) -> None:
    with running_daemon(redis_url, env={"ASCHED_MEMORY_STOP_LIMIT": "2"}) as daemon:
        job = queue(client, 1).enqueue(
            "tests.fixtures.jobs.allocate_in_cgroup", str(memory_cgroup / "cgroup.procs"), 600
        )
        ended = wait_until(lambda: client.hget(job.key, "asched_outcome") == b"shed", timeout_s=20)
        assert ended, daemon.output()
        assert oom_kills(memory_cgroup) == 2
        reason = client.hget(job.key, "asched_reason").decode()
        assert "parked: stopped for memory 2 times" in reason and "OOM killer" in reason, reason
