"""Short jobs waiting in a slot behind its running job (`Prefetch.behind`): they run in order, each after
the one before; a TAKE_BACK gives the unstarted ones back; and whatever happens to the slot (a pause, a
kill, a stop), every job still ends in a known place, once.

The first tests drive a real slot process through `Slot` directly; the others a real daemon, whose
slots have learned that the jobs are short (a few hundred no-ops first), so that jobs do wait in them.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from adaptive_scheduler import pausing, slot_main
from adaptive_scheduler.model import Call, ClaimedJob, JobOptions, Priority
from adaptive_scheduler.slots import Running, Slot, SlotSpec
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.helpers import children, queue, running_daemon, wait_until

JOBS = "tests.fixtures.jobs"


def handed(job_id: str, func: str, *args: object) -> Running:
    job = ClaimedJob(job_id, Priority.P2, f"{job_id}:x", {})
    return Running(job, Call(f"{JOBS}.{func}", args, {}), JobOptions(60.0, 60, 60), 0.0, 60.0)


@pytest.fixture
def slot() -> Iterator[Slot]:
    one = Slot(0, SlotSpec("json", one_job=False))
    assert one.wait_ready()
    yield one
    one.kill()


def messages_until(slot: Slot, done: object, timeout_s: float = 10.0) -> list[tuple[object, ...]]:
    """What the slot sends, until a message for which `done(message)` holds."""
    got: list[tuple[object, ...]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if slot.conn.poll(0.1):
            got += [m for m in slot.receive() if m is not None]
            if got and done(got[-1]):  # type: ignore[operator]
                return got
    raise AssertionError(f"the slot did not finish in {timeout_s} s: {got}")


def test_jobs_waiting_in_a_slot_run_in_order_each_after_the_one_before(slot: Slot) -> None:
    for running in [handed("a", "sleep", 0.2), handed("b", "add", 1, 2), handed("c", "add", 3, 4)]:
        slot.give(running, None)
    assert slot.running is not None and slot.running.job.id == "a"
    assert [r.job.id for r in slot.waiting] == ["b", "c"]
    outcomes = messages_until(slot, lambda m: m[0] == "c")
    assert [(m[0], m[1], m[2]) for m in outcomes] == [
        ("a", "ok", b"0.2"),
        ("b", "ok", b"3"),
        ("c", "ok", b"7"),
    ]
    ends = [(m[3], m[4]) for m in outcomes]
    assert all(ends[i][1] <= ends[i + 1][0] for i in range(2)), ends  # one at a time, in the order sent


def test_a_take_back_gives_back_the_jobs_not_started_and_the_slot_goes_on(slot: Slot, tmp_path: Path) -> None:
    # Given a slot running a job of 0.3 s with two jobs waiting behind it
    runs = tmp_path / "runs"
    for running in [
        handed("a", "record_run", str(runs), 0.3),
        handed("b", "add", 1, 2),
        handed("c", "add", 3, 4),
    ]:
        slot.give(running, None)
    # When they are taken back while the first one runs
    wait_until(runs.exists)
    slot.take_back()
    got = messages_until(slot, lambda m: m[0] == slot_main.GIVEN_BACK)
    # Then the running job ends and the waiting ones come back unrun, in their order
    assert [m[:2] for m in got] == [("a", "ok"), (slot_main.GIVEN_BACK, ["b", "c"])]
    assert [r.job.id for r in slot.given_back(got[-1][1], time.monotonic())] == ["b", "c"]  # type: ignore[arg-type]
    assert not slot.waiting and not slot.taking_back
    # and the slot takes the next job as usual
    slot.running = None
    slot.give(handed("d", "add", 5, 6), None)
    assert messages_until(slot, lambda m: m[0] == "d")[-1][:3] == ("d", "ok", b"11")


def test_a_take_back_with_nothing_left_waiting_is_answered_with_none(slot: Slot) -> None:
    slot.give(handed("a", "add", 1, 2), None)
    slot.give(handed("b", "add", 3, 4), None)
    outcomes = messages_until(slot, lambda m: m[0] == "b")  # both ran before the take-back was sent
    slot.waiting.clear()
    slot.conn.send(slot_main.TAKE_BACK)
    assert messages_until(slot, lambda m: m[0] == slot_main.GIVEN_BACK)[-1] == (slot_main.GIVEN_BACK, [])
    assert [m[1] for m in outcomes] == ["ok", "ok"]


# --- a real daemon -----------------------------------------------------------------------------------


def status(client: redis.Redis, job: Job) -> JobStatus:
    return Job.fetch(job.id, connection=client, serializer=JSONSerializer).get_status()


def enqueue_many(client: redis.Redis, n: int, func: str, *args: object) -> list[Job]:
    """`n` P2 jobs in one pipeline (a backlog that is there before the daemon sees it)."""
    rq_queue = queue(client, 2)
    return rq_queue.enqueue_many([rq_queue.prepare_data(f"{JOBS}.{func}", args) for _ in range(n)])


def learn_short_jobs(client: redis.Redis, func: str = "noop", *args: object, n: int = 300) -> None:
    """Run `n` jobs of a short task, so the daemon knows its jobs (and this task's) are short."""
    jobs = enqueue_many(client, n, func, *args)
    wait_until(lambda: status(client, jobs[-1]) == JobStatus.FINISHED, timeout_s=30)


def test_a_pause_gives_back_the_jobs_waiting_in_a_slot_in_their_order(
    client: redis.Redis, redis_url: str
) -> None:
    # Given one slot that has learned its jobs are short, then a long one (of a task that was short until
    # now: jobs may wait behind it) with short jobs after it
    with running_daemon(redis_url, env={"ASCHED_SLOTS": "1", "ASCHED_P0_LANE": "false"}) as daemon:
        learn_short_jobs(client, "sleep", 0)
        # a job of a task known to be short; 4 s: the 20 enqueues and the pause below must land while it
        # runs, on a loaded CI machine too (1.5 s did not, once in about 10 suite runs)
        long = queue(client, 2).enqueue(f"{JOBS}.sleep", 4.0)
        after = [queue(client, 2).enqueue(f"{JOBS}.sleep", 0) for _ in range(20)]
        wait_until(lambda: status(client, long) == JobStatus.STARTED)
        # When P2 is paused while the long job runs
        assert pausing.pause(client, [Priority.P2], None, print)
        # Then every job after it is back at the front of p2, in order (those that waited in the slot
        # were given back unrun), and none of them runs once the long job has ended
        ids = [job.id for job in after]
        wait_until(lambda: [raw.decode() for raw in client.lrange("rq:queue:p2", 0, -1)] == ids)
        wait_until(lambda: status(client, long) == JobStatus.FINISHED, timeout_s=10)
        time.sleep(0.3)
        assert [status(client, job) for job in after] == [JobStatus.QUEUED] * 20
        assert client.zcard("rq:wip:p2") == 0
        assert re.search(r"slot 0 gave back [1-8] jobs that waited in it", daemon.output()), daemon.output()
        assert pausing.resume(client, [Priority.P2], print)
        wait_until(lambda: all(status(client, job) == JobStatus.FINISHED for job in after))


def test_slots_killed_while_short_jobs_wait_in_them_lose_nothing(client: redis.Redis, redis_url: str) -> None:
    # Given a daemon draining short jobs, with jobs waiting in its slots
    no_breaker = {"ASCHED_P0_LANE": "false", "ASCHED_BREAKER_FAILURES": "100"}  # the kills fail 3 jobs
    with running_daemon(redis_url, env=no_breaker) as daemon:
        learn_short_jobs(client, "spin", 0.0003)
        jobs = enqueue_many(client, 6000, "spin", 0.0003)
        # When its slots are SIGKILLed three times during the drain (a slot just forked, too: a job
        # handed to a slot that died unseen comes back unrun)
        kills = 0
        while kills < 3 and status(client, jobs[-1]) != JobStatus.FINISHED:
            slots = sorted(pid for pid in children(daemon.process.pid) if pid != daemon.process.pid)
            if slots:
                os.kill(slots[kills % len(slots)], signal.SIGKILL)
                kills += 1
            time.sleep(0.15)
        wait_until(lambda: client.llen("rq:queue:p2") == 0 and client.zcard("rq:wip:p2") == 0, timeout_s=60)
        # Then the daemon runs on and every job ended, once: finished, or failed if it was the one
        # running in a killed slot
        assert daemon.process.poll() is None, daemon.output()
        ended = [status(client, job) for job in jobs]
        failed = ended.count(JobStatus.FAILED)
        assert ended.count(JobStatus.FINISHED) + failed == len(jobs)
        assert failed <= kills
        assert kills == 3, "the drain ended before three kills: too short to prove anything"


@pytest.mark.parametrize("signals", [1, 2], ids=["graceful", "forced"])
def test_a_stop_while_short_jobs_wait_in_slots_puts_every_unrun_job_back(
    client: redis.Redis, redis_url: str, signals: int
) -> None:
    with running_daemon(redis_url) as daemon:
        learn_short_jobs(client, "spin", 0.0003)
        jobs = enqueue_many(client, 6000, "spin", 0.0003)
        wait_until(lambda: client.zcard("rq:finished:p2") > 300 + 500)  # jobs wait in the slots by now
        # When it is told to stop (twice at once: running jobs are killed too, nothing more starts)
        for _ in range(signals):
            daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(30) == 0
    # Then every job finished or is back in its queue, none is left claimed
    ended = [status(client, job) for job in jobs]
    assert ended.count(JobStatus.FINISHED) + ended.count(JobStatus.QUEUED) == len(jobs)
    assert client.llen("rq:queue:p2") == ended.count(JobStatus.QUEUED) > 0
    assert client.zcard("rq:wip:p2") == 0
