"""The memory governor against real memory: a small budget and jobs that really allocate.

Budget 300 MB = 286 MiB (the daemon itself holds about 46 MiB); a job allocating 170 MiB puts the
daemon at about 75 % (ELEVATED), 210 MiB at about 90 % (HIGH), 250 MiB at 100 % (EMERGENCY).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import redis
from adaptive_scheduler.governor.monitor import Monitor
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.helpers import ROOT, children, queue, running_daemon, wait_until

SMALL_BUDGET = {
    "ASCHED_MEMORY_BUDGET": "300MB",
    "ASCHED_PRESSURE_HOLD_S": "0.5",
    "ASCHED_PREEMPT_GRACE_S": "1",
}


def fetch(client: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=client, serializer=JSONSerializer)


def status(client: redis.Redis, job_id: str) -> JobStatus:
    return fetch(client, job_id).get_status()


def daemon_status(client: redis.Redis) -> dict | None:
    """The status the (single) live daemon published, as `status --json` shows it."""
    names = list(client.scan_iter(match="asched:status:*"))
    return json.loads(client.get(names[0])) if names else None


def field(client: redis.Redis, job_id: str, name: str) -> str | None:
    value = client.hget(f"rq:job:{job_id}", name)
    return value.decode() if value is not None else None


def test_heartbeats_are_skipped_at_70_percent_and_run_again_when_it_falls(
    client: redis.Redis, redis_url: str
) -> None:
    # Given a daemon whose P1 job holds 170 MiB of a 286 MiB budget for three seconds
    with running_daemon(redis_url, env=SMALL_BUDGET) as daemon:
        hog = queue(client, 1).enqueue("tests.fixtures.jobs.allocate", 170, 3.0)
        wait_until(lambda: "memory pressure NORMAL -> ELEVATED" in daemon.output())
        # When heartbeats arrive meanwhile
        beats = [queue(client, 3).enqueue("tests.fixtures.jobs.heartbeat") for _ in range(3)]
        wait_until(lambda: all(status(client, b.id) == JobStatus.CANCELED for b in beats))
        # Then they are skipped (not run, counted, visible with the reason), and later ones run
        wait_until(lambda: status(client, hog.id) == JobStatus.FINISHED, timeout_s=15)
        wait_until(lambda: "-> NORMAL" in daemon.output(), timeout_s=10)
        later = queue(client, 3).enqueue("tests.fixtures.jobs.heartbeat")
        wait_until(lambda: status(client, later.id) == JobStatus.FINISHED)
    for beat in beats:
        assert field(client, beat.id, "asched_outcome") == "skipped"
        assert "skipped: under memory pressure ELEVATED" in (field(client, beat.id, "asched_reason") or "")
    assert client.zcard("asched:skipped") == 3
    assert client.zcard("rq:canceled:p3") == 3


def test_a_periodic_heartbeat_is_skipped_and_counted_above_70_percent(
    client: redis.Redis, redis_url: str
) -> None:
    beat = json.dumps([{"name": "beat", "task": "heartbeat", "every_s": 1}])
    with running_daemon(redis_url, env={**SMALL_BUDGET, "ASCHED_PERIODIC": beat}) as daemon:
        # Given periodic heartbeats running, then a job holding 170 MiB of 286 for four seconds
        wait_until(lambda: client.zcard("rq:finished:p3") >= 1)
        hog = queue(client, 1).enqueue("tests.fixtures.jobs.allocate", 170, 4.0)
        wait_until(lambda: "memory pressure NORMAL -> ELEVATED" in daemon.output())
        enqueued_before = len(client.keys("rq:job:periodic-beat-*"))
        # When ticks come while ELEVATED, then they are skipped: counted, logged, not enqueued
        wait_until(lambda: (daemon_status(client) or {}).get("counts", {}).get("periodic_skipped", 0) >= 2)
        assert "periodic heartbeat beat skipped: memory pressure ELEVATED" in daemon.output()
        assert len(client.keys("rq:job:periodic-beat-*")) == enqueued_before
        # And once the pressure falls, they are enqueued and run again
        wait_until(lambda: status(client, hog.id) == JobStatus.FINISHED, timeout_s=15)
        wait_until(lambda: "-> NORMAL" in daemon.output(), timeout_s=10)
        after = client.zcard("rq:finished:p3")
        wait_until(lambda: client.zcard("rq:finished:p3") > after, timeout_s=5)


def test_the_heap_reading_sees_memory_a_job_reserved_but_never_touched(
    client: redis.Redis, redis_url: str
) -> None:
    # Given a job that callocs 250 MiB of the 286 MiB budget and leaves the pages untouched (RSS flat)
    with running_daemon(redis_url, env=SMALL_BUDGET) as daemon:
        job = queue(client, 1).enqueue("tests.fixtures.jobs.reserve", 250, 2.0)
        # Then the level rises on the heap reading alone, and the status shows the slot's heap
        wait_until(lambda: "memory pressure NORMAL -> HIGH" in daemon.output(), timeout_s=5)
        slots = wait_until(lambda: [s for s in daemon_status(client)["slots"] if (s["heap_mb"] or 0) >= 250])
        assert (slots[0]["job_grew_mb"] or 0) < 50, slots  # while RSS hardly moved
        wait_until(lambda: status(client, job.id) == JobStatus.FINISHED, timeout_s=10)


def test_a_p3_job_is_preempted_at_85_percent_and_resumes_to_the_right_result(
    client: redis.Redis, redis_url: str
) -> None:
    # Given a long checkpointing P3 job running
    n = 3_000_000
    with running_daemon(redis_url, env=SMALL_BUDGET) as daemon:
        long_sum = queue(client, 3).enqueue("tests.fixtures.jobs.long_sum", n, 100_000, 0.1)
        wait_until(lambda: status(client, long_sum.id) == JobStatus.STARTED)
        wait_until(lambda: field(client, long_sum.id, "asched_preemptions") is None)
        # When a P1 job takes 210 MiB of the 286 MiB budget (HIGH)
        hog = queue(client, 1).enqueue("tests.fixtures.jobs.allocate", 210, 2.0)
        wait_until(lambda: "memory pressure" in daemon.output() and "-> HIGH" in daemon.output())
        # Then the P3 job is preempted with its checkpoint, and resumes once pressure falls
        wait_until(lambda: field(client, long_sum.id, "asched_preemptions") == "1")
        assert field(client, long_sum.id, "asched_checkpoint") is not None
        wait_until(lambda: status(client, hog.id) == JobStatus.FINISHED, timeout_s=15)
        wait_until(lambda: status(client, long_sum.id) == JobStatus.FINISHED, timeout_s=30)
        assert "preempted (checkpointed)" in daemon.output()
        shown = wait_until(lambda: (d := daemon_status(client)) and d["counts"]["resumed"] == 1 and d)
        assert shown["counts"]["preempted"] == 1 and shown["memory"]["budget_source"] == "settings"
        # the kernel's memory PSI is shown where the kernel has it
        assert (shown["memory"]["psi_some_avg10"] is None) == (Monitor(None).psi_source is None)
    result = fetch(client, long_sum.id).return_value()
    assert result == {"total": n * (n - 1) // 2, "runs": 2}


def test_emergency_stops_all_but_p0_sheds_heartbeats_and_loses_nothing(
    client: redis.Redis, redis_url: str
) -> None:
    with running_daemon(redis_url, env=SMALL_BUDGET) as daemon:
        # Given a P1 checkpointing job in one slot, a short P0 job in the other, and, waiting locally,
        # a heartbeat, a P2 job and a P0 job that will take the whole budget
        p1 = queue(client, 1).enqueue("tests.fixtures.jobs.long_sum", 3_000_000, 100_000, 0.1)
        wait_until(lambda: status(client, p1.id) == JobStatus.STARTED)
        first = queue(client, 0).enqueue("tests.fixtures.jobs.sleep", 1.0)
        wait_until(lambda: status(client, first.id) == JobStatus.STARTED)
        beat = queue(client, 3).enqueue("tests.fixtures.jobs.heartbeat")
        late = queue(client, 2).enqueue("tests.fixtures.jobs.add", 1, 2, meta={"deadline": time.time()})
        p2 = queue(client, 2).enqueue("tests.fixtures.jobs.add", 2, 3)
        hog = queue(client, 0).enqueue("tests.fixtures.jobs.allocate", 250, 2.5)
        # When the P0 hog starts (EMERGENCY)
        wait_until(lambda: "-> EMERGENCY" in daemon.output(), timeout_s=15)
        # Then the P1 job is preempted (for the P0 hog, or by EMERGENCY), the job past its deadline is
        # shed, the P2 job is put back, the heartbeat is skipped or shed (on the way up the monitor may
        # read ELEVATED first), and the P0 job finishes
        # (at least once: on a loaded machine EMERGENCY can outlast its resumption and stop it again;
        # and a slot short of CPU may not reach its first checkpoint within the grace period: then it
        # is killed, a memory stop, and runs again from the start)
        wait_until(
            lambda: (
                int(field(client, p1.id, "asched_preemptions") or 0)
                + int(field(client, p1.id, "asched_memory_stops") or 0)
                >= 1
            )
        )
        wait_until(lambda: field(client, late.id, "asched_outcome") == "shed")
        assert field(client, beat.id, "asched_outcome") in ("skipped", "shed")
        assert status(client, p2.id) == JobStatus.QUEUED
        wait_until(lambda: status(client, hog.id) == JobStatus.FINISHED, timeout_s=15)
        # And after the storm everything that was not shed finishes
        wait_until(lambda: status(client, p1.id) == JobStatus.FINISHED, timeout_s=30)
        wait_until(lambda: status(client, p2.id) == JobStatus.FINISHED)
    assert fetch(client, p1.id).return_value()["total"] == 3_000_000 * 2_999_999 // 2
    assert fetch(client, p2.id).return_value() == 5
    assert "past its deadline, under memory pressure EMERGENCY" in (
        field(client, late.id, "asched_reason") or ""
    )
    assert late.id.encode() in client.zrange("asched:shed", 0, -1)


def test_a_job_always_past_the_slot_cap_runs_again_then_is_parked_with_its_peak(
    client: redis.Redis, redis_url: str
) -> None:
    # Given a plain job that always grows past the slot cap, and a job behind it
    env = {"ASCHED_SLOT_MEMORY_CAP": "100MB", "ASCHED_MEMORY_STOP_LIMIT": "2"}
    with running_daemon(redis_url, env=env) as daemon:
        greedy = queue(client, 1).enqueue("tests.fixtures.jobs.allocate", 300, 5.0)
        after = queue(client, 1).enqueue("tests.fixtures.jobs.add", 2, 3)
        # Then it is stopped, runs again once, and is parked in the shed registry: not failed, not looping
        wait_until(lambda: status(client, greedy.id) == JobStatus.CANCELED, timeout_s=20)
        wait_until(lambda: status(client, after.id) == JobStatus.FINISHED)
        # the killed slot was reaped once it ended (the daemon did not wait for it): no zombie is left
        wait_until(lambda: not children(daemon.process.pid, zombies=True), timeout_s=2)
        log = daemon.output()
    reason = field(client, greedy.id, "asched_reason") or ""
    assert (
        "parked: stopped for memory 2 times" in reason and "exceeded the slot memory cap (100 MB)" in reason
    )
    assert re.search(r"peak \d+ MiB", reason), reason
    assert field(client, greedy.id, "asched_memory_stops") == "1"  # the parking stop is not counted twice
    assert greedy.id.encode() in client.zrange("asched:shed", 0, -1)
    assert "stopped for memory (1 of 2)" in log
    # and the breaker never heard of it: a stop for memory is not the task's failure
    assert "circuit breaker" not in log


def test_shed_jobs_can_be_listed_and_replayed(client: redis.Redis, redis_url: str) -> None:
    test_emergency_stops_all_but_p0_sheds_heartbeats_and_loses_nothing(client, redis_url)
    shed_ids = {member.decode() for member in client.zrange("asched:shed", 0, -1)}
    env = {**os.environ, "ASCHED_REDIS_URL": redis_url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "adaptive_scheduler", *args]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)

    listed = cli("shed", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert {e["id"] for e in entries} == shed_ids
    assert all(e["outcome"] == "shed" and e["level"] == "EMERGENCY" and e["queue"] for e in entries)
    replayed = cli("shed", "replay", "--all")
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed {len(shed_ids)} of {len(shed_ids)} jobs" in replayed.stdout
    assert client.zcard("asched:shed") == 0
    with running_daemon(redis_url):
        wait_until(lambda: all(status(client, job_id) == JobStatus.FINISHED for job_id in shed_ids))


def test_an_idle_slot_that_kept_memory_after_its_job_is_recycled(client: redis.Redis, redis_url: str) -> None:
    # Given a daemon with one slot and a 50 MB leak guard, and a job that leaves 120 MiB behind in it
    env = {"ASCHED_SLOT_IDLE_GROWTH_LIMIT": "50MB", "ASCHED_SLOTS": "1"}
    with running_daemon(redis_url, env=env) as daemon:
        leaky = queue(client, 1).enqueue("tests.fixtures.jobs.leak", 120)
        wait_until(lambda: status(client, leaky.id) == JobStatus.FINISHED)
        # Then the slot is replaced once it is idle, and the next job runs in a fresh process
        wait_until(lambda: "recycled: idle, yet its RSS grew" in daemon.output())
        again = queue(client, 1).enqueue("tests.fixtures.jobs.leak", 1)
        wait_until(lambda: status(client, again.id) == JobStatus.FINISHED)
    assert fetch(client, leaky.id).return_value() == 120
    assert fetch(client, again.id).return_value() == 1  # the one slot is new: nothing left over
