"""Short task names across modules, as the command line sees them: one clear line, or the right task."""

from __future__ import annotations

import pytest
import redis
from adaptive_scheduler.exits import EXIT_USAGE

from tests.helpers import cli

BOTH = '["tests.fixtures.clash_a", "tests.fixtures.clash_b"]'
CLASH = (
    "adaptive-scheduler: task name 'resize' is shared by tests.fixtures.clash_a.resize and "
    "tests.fixtures.clash_b.resize: give them distinct names with @task(name=...)"
)


@pytest.mark.parametrize("command", [("run",), ("enqueue", "resize", "[100]"), ("enqueue", "thumbnail")])
def test_two_allowed_tasks_with_one_short_name_stop_the_daemon_and_the_cli_with_one_line(
    command: tuple[str, ...], redis_url: str, client: redis.Redis
) -> None:
    # Given two allowed modules that each define @task() resize
    env = {"ASCHED_REDIS_URL": redis_url, "ASCHED_ALLOWED_MODULES": BOTH}
    # When the daemon starts, or the CLI enqueues (even a task whose name is unique)
    result = cli(*command, env=env)
    # Then one line names both dotted paths and the fix; exit code 2, no traceback, nothing enqueued
    assert result.returncode == EXIT_USAGE, result.stderr
    assert result.stderr.strip().splitlines()[-1] == CLASH
    assert "Traceback" not in result.stderr
    assert client.keys("rq:queue:*") == []


def test_a_unique_short_name_still_finds_its_task(redis_url: str, client: redis.Redis) -> None:
    env = {"ASCHED_REDIS_URL": redis_url, "ASCHED_ALLOWED_MODULES": '["tests.fixtures.clash_b"]'}
    result = cli("enqueue", "resize", "[100]", env=env)
    assert result.returncode == 0, result.stderr
    assert client.hget(f"rq:job:{result.stdout.strip()}", "description") == (
        b"tests.fixtures.clash_b.resize(100)"
    )
