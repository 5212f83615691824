"""A flaky task opens its circuit breaker; its jobs wait (deferred, not failed); a trial closes it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import redis
from rq.job import JobStatus

from tests.helpers import ROOT, queue, running_daemon, wait_until


def test_a_flaky_task_opens_its_breaker_and_a_successful_trial_closes_it(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    down = tmp_path / "dependency-down"
    down.touch()
    env = {"ASCHED_BREAKER_COOLDOWN_S": "3"}  # open long enough for a `status` call under load
    with running_daemon(redis_url, env=env) as daemon:
        # Given three failures of one task within the window
        failing = [queue(client, 1).enqueue("tests.fixtures.jobs.fail_while", str(down)) for _ in range(3)]
        wait_until(lambda: all(j.get_status(refresh=True) == JobStatus.FAILED for j in failing))
        wait_until(lambda: "circuit breaker of task tests.fixtures.jobs.fail_while opened" in daemon.output())
        # When more jobs of that task arrive (and one of another task)
        waiting = [queue(client, 1).enqueue("tests.fixtures.jobs.fail_while", str(down)) for _ in range(2)]
        other = queue(client, 1).enqueue("tests.fixtures.jobs.add", 1, 1)
        # Then they are deferred into RQ's scheduled registry with the reason, not failed; others run
        wait_until(lambda: all(j.get_status(refresh=True) == JobStatus.SCHEDULED for j in waiting))
        wait_until(lambda: other.get_status(refresh=True) == JobStatus.FINISHED)
        reason = client.hget(waiting[0].key, "asched_reason").decode()
        assert "circuit breaker of tests.fixtures.jobs.fail_while is open" in reason
        assert client.zcard("rq:scheduled:p1") == 2
        wait_until(lambda: breakers_in_status(redis_url) == {"tests.fixtures.jobs.fail_while": "open"})
        # And once the dependency is back, after the cooldown one trial runs, succeeds and closes it
        down.unlink()
        wait_until(lambda: all(j.get_status(refresh=True) == JobStatus.FINISHED for j in waiting), 15)
        assert sum(f"job {j.id} is the trial" in daemon.output() for j in waiting) == 1
        assert "circuit breaker of task tests.fixtures.jobs.fail_while closed" in daemon.output()
    assert [j.return_value() for j in waiting] == ["ok", "ok"]


def breakers_in_status(redis_url: str) -> dict[str, str]:
    """The breakers `status --json` shows for the one live daemon."""
    command = [sys.executable, "-m", "adaptive_scheduler", "status", "--json"]
    output = subprocess.check_output(command, cwd=ROOT, env={"ASCHED_REDIS_URL": redis_url})
    return json.loads(output)["daemons"][0]["breakers"]
