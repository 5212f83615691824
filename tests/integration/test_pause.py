"""`pause` and `resume` against real daemons: a paused priority's jobs stay queued in RQ, untouched,
while other priorities run; every live daemon honours the flag; resume lets them run within a tick."""

from __future__ import annotations

import json
import time

import redis
from adaptive_scheduler import controls, pausing
from adaptive_scheduler.model import Priority
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.helpers import FIXTURES, cli, queue, running_daemon, wait_until


def env(redis_url: str) -> dict[str, str]:
    return {"ASCHED_REDIS_URL": redis_url}


def status_of(client: redis.Redis, job: Job) -> JobStatus:
    return Job.fetch(job.id, connection=client, serializer=JSONSerializer).get_status()


def queued_ids(client: redis.Redis, name: str) -> list[str]:
    return [raw.decode() for raw in client.lrange(f"rq:queue:{name}", 0, -1)]


def stays_queued(client: redis.Redis, jobs: list[Job], seconds: float) -> None:
    """Every job is still in its RQ queue, status queued, for `seconds` (checked every 20 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for job in jobs:
            assert job.id in queued_ids(client, job.origin), f"{job.id} left {job.origin}"
            assert status_of(client, job) == JobStatus.QUEUED
        time.sleep(0.02)


def commands(client: redis.Redis, name: str) -> int:
    """How many times Redis ran command `name` so far (INFO commandstats)."""
    return int(client.info("commandstats").get(f"cmdstat_{name}", {}).get("calls", 0))


def test_a_paused_p3_job_stays_queued_while_a_p1_job_runs_then_runs_after_resume(
    client: redis.Redis, redis_url: str
) -> None:
    with running_daemon(redis_url) as daemon:
        # Given P3 paused from the CLI (as `p3`)
        paused = cli("pause", "p3", env=env(redis_url))
        assert paused.returncode == 0, paused.stderr
        assert "paused P3" in paused.stdout and "applied by 1 of 1 live daemons" in paused.stdout
        # When a P3 job and then a P1 job are enqueued
        low = queue(client, 3).enqueue("tests.fixtures.jobs.add", 1, 2)
        high = queue(client, 1).enqueue("tests.fixtures.jobs.add", 3, 4)
        # Then the P1 job runs and the P3 job stays in its RQ queue, untouched, for over a second
        wait_until(lambda: status_of(client, high) == JobStatus.FINISHED)
        stays_queued(client, [low], 1.2)
        assert client.zcard("rq:wip:p3") == 0
        # and `status --json` shows the pause, cluster-wide and per daemon
        overview = json.loads(cli("status", "--json", env=env(redis_url)).stdout)
        assert list(overview["paused"]) == ["P3"] and overview["paused"]["P3"]["until"] is None
        assert [d["paused"] for d in overview["daemons"]] == [["P3"]]
        shown = cli("status", env=env(redis_url)).stdout
        assert "paused: P3 since" in shown and "until resumed; 1 of 1 live daemons claim none" in shown
        # When P3 is resumed (what `resume` writes; the command's own start-up is not the daemon's part),
        # its job runs within a tick: the daemon is subscribed, it does not wait for its housekeeping
        resumed_at = time.time()
        controls.resume(client, [Priority.P3])
        wait_until(lambda: status_of(client, low) == JobStatus.FINISHED, timeout_s=5)
        started = Job.fetch(low.id, connection=client, serializer=JSONSerializer).started_at
        assert started is not None and started.timestamp() - resumed_at < 1.0
        assert "paused priorities now: P3" in daemon.output()
    assert client.hlen("asched:paused") == 0


def test_two_daemons_honour_the_pause_of_several_priorities(client: redis.Redis, redis_url: str) -> None:
    with running_daemon(redis_url) as first, running_daemon(redis_url):
        first.wait_ready(count=2)
        # Given P2 and P3 paused (as `2` and `P3`) while two daemons serve
        paused = cli("pause", "2", "P3", env=env(redis_url))
        assert "applied by 2 of 2 live daemons" in paused.stdout, paused.stdout + paused.stderr
        # When jobs of every priority but P0 arrive
        held = [queue(client, p).enqueue("tests.fixtures.jobs.add", p, i) for p in (2, 3) for i in range(4)]
        ran = [queue(client, 1).enqueue("tests.fixtures.jobs.add", 1, i) for i in range(6)]
        # Then neither daemon claims a P2 or P3 job, and both keep serving P1
        wait_until(lambda: all(status_of(client, job) == JobStatus.FINISHED for job in ran))
        stays_queued(client, held, 1.2)
        published = [json.loads(v) for v in client.mget(list(client.scan_iter(match="asched:status:*")))]
        assert [d["paused"] for d in published] == [["P2", "P3"], ["P2", "P3"]]
        # When everything is resumed, the held jobs run
        assert cli("resume", "--all", env=env(redis_url)).returncode == 0
        wait_until(lambda: all(status_of(client, job) == JobStatus.FINISHED for job in held), timeout_s=5)


def test_running_jobs_finish_and_claimed_ones_go_back_to_the_front_in_order(
    client: redis.Redis, redis_url: str
) -> None:
    # Given one slot running a P3 job and two more P3 jobs claimed, waiting for the slot
    with running_daemon(redis_url, env={"ASCHED_SLOTS": "1"}) as daemon:
        running = queue(client, 3).enqueue("tests.fixtures.jobs.sleep", 2.0)
        wait_until(lambda: status_of(client, running) == JobStatus.STARTED)
        waiting = [queue(client, 3).enqueue("tests.fixtures.jobs.add", i, i) for i in range(2)]
        wait_until(lambda: client.zcard("rq:wip:p3") == 3)  # claimed into the local queue
        # When P3 is paused (what `pause` runs, without the command's start-up: the job is still running)
        assert pausing.pause(client, [Priority.P3], None, print)
        # Then the claimed jobs are back at the front of p3, in their order, and the running one finishes
        wait_until(lambda: queued_ids(client, "p3") == [job.id for job in waiting])
        wait_until(lambda: status_of(client, running) == JobStatus.FINISHED, timeout_s=5)
        stays_queued(client, waiting, 0.5)
        assert daemon.client.zcard("rq:wip:p3") == 0
        # When it is resumed, they run
        assert cli("resume", "P3", env=env(redis_url)).returncode == 0
        wait_until(lambda: all(status_of(client, job) == JobStatus.FINISHED for job in waiting))


def test_a_paused_queue_with_jobs_costs_no_claims_and_no_watches(client: redis.Redis, redis_url: str) -> None:
    # Given an idle daemon whose only jobs are in a paused queue
    with running_daemon(redis_url):
        assert cli("pause", "P3", env=env(redis_url)).returncode == 0
        for i in range(5):
            queue(client, 3).enqueue("tests.fixtures.jobs.add", i, i)
        before_eval, before_watch = commands(client, "evalsha"), commands(client, "blmove")
        # When two seconds pass
        time.sleep(2.0)
        # Then the daemon made no claim calls and set no watch on the paused queue: housekeeping only
        # (renew, reclaim and promote once per second, each an EVALSHA), not a claim per tick
        assert commands(client, "evalsha") - before_eval <= 9
        assert commands(client, "blmove") == before_watch
        assert client.llen("rq:queue:p3") == 5


def test_a_pause_given_a_duration_ends_by_itself(client: redis.Redis, redis_url: str) -> None:
    with running_daemon(redis_url):
        paused = cli("pause", "P2", "--for", "3s", env=env(redis_url))
        assert paused.returncode == 0 and "paused P2 until" in paused.stdout, paused.stdout + paused.stderr
        job = queue(client, 2).enqueue("tests.fixtures.jobs.add", 1, 1)
        stays_queued(client, [job], 0.5)
        wait_until(lambda: status_of(client, job) == JobStatus.FINISHED, timeout_s=8)


def test_pausing_p0_warns_and_bad_input_exits_2(redis_url: str) -> None:
    paused = cli("pause", "P0", env=env(redis_url))
    assert paused.returncode == 0  # no daemon alive: each honours it when it starts
    assert "warning: pausing P0" in paused.stderr and "no daemon is alive" in paused.stdout
    assert cli("resume", "P0", env=env(redis_url)).returncode == 0
    for args in (("pause",), ("pause", "P4"), ("pause", "P1", "--all"), ("pause", "P1", "--for", "soon")):
        result = cli(*args, env=env(redis_url))
        assert result.returncode == 2, (args, result.stdout, result.stderr)
    assert "P0, P1, P2 or P3" in cli("pause", "P4", env=env(redis_url)).stderr


def test_a_daemon_started_while_paused_claims_nothing_of_it(client: redis.Redis, redis_url: str) -> None:
    # Given P3 paused before any daemon runs, and a P3 job queued
    assert cli("pause", "P3", env={**env(redis_url), **FIXTURES}).returncode == 0
    job = queue(client, 3).enqueue("tests.fixtures.jobs.add", 1, 1)
    # When a daemon starts, its first claim already leaves P3 alone
    with running_daemon(redis_url):
        probe = queue(client, 1).enqueue("tests.fixtures.jobs.add", 0, 0)
        wait_until(lambda: status_of(client, probe) == JobStatus.FINISHED)
        stays_queued(client, [job], 0.5)


def test_a_daemon_at_high_does_not_spin_on_the_queues_it_does_not_claim(
    client: redis.Redis, redis_url: str
) -> None:
    # Given a daemon at HIGH (a P1 job holding 210 MiB of a 286 MiB budget), a free slot, P3 jobs queued
    small = {"ASCHED_MEMORY_BUDGET": "300MB", "ASCHED_PRESSURE_HOLD_S": "0.5"}
    with running_daemon(redis_url, env=small) as daemon:
        hog = queue(client, 1).enqueue("tests.fixtures.jobs.allocate", 210, 4.0)
        wait_until(lambda: "-> HIGH" in daemon.output(), timeout_s=15)
        waiting = [queue(client, 3).enqueue("tests.fixtures.jobs.add", i, i) for i in range(3)]
        before = commands(client, "evalsha")
        # When a second passes at HIGH (P2/P3 are not claimed there)
        time.sleep(1.0)
        # Then the daemon called Redis for housekeeping only, not in a loop (it was ~3,750 calls/s)
        assert commands(client, "evalsha") - before <= 8
        # and once the level falls, the P3 jobs run
        wait_until(lambda: all(status_of(client, job) == JobStatus.FINISHED for job in waiting), timeout_s=20)
        assert status_of(client, hog) == JobStatus.FINISHED
