"""The allowlist is the operator's alone: what a plain RQ producer can and cannot make a daemon run."""

from __future__ import annotations

from pathlib import Path

import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.helpers import cli, queue, running_daemon, wait_until

# Every function the package shipped allowlisted (tasks/builtin.py) until 2026-12-05.
FORMER_BUILTINS = [
    "noop",
    "add",
    "echo",
    "sleep",
    "heartbeat",
    "stamp",
    "spin",
    "allocate",
    "leak",
    "allocate_steps",
    "long_sum",
    "fail",
    "exit_process",
    "kill_self",
    "segfault",
    "fail_while",
    "reserve",
    "record_run",
    "spawn_children",
    "ignore_sigterm",
    "ignore_preemption_signal",
    "bounded_sleep",
]


def fetch(client: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=client, serializer=JSONSerializer)


def failure_text(client: redis.Redis, job_id: str) -> str:
    result = fetch(client, job_id).latest_result()
    return (result.exc_string or "") if result else ""


def args_for(name: str, scratch: Path) -> tuple[object, ...]:
    """Arguments that would leave a file behind in `scratch` if the function ran."""
    if name in ("record_run", "spawn_children", "fail_while"):
        return (str(scratch / name),)
    return ()


def test_no_former_builtin_nor_test_or_demo_helper_runs_on_a_daemon_with_default_settings(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    # Given a daemon with default settings (nothing allowlisted) and a plain RQ producer sending every
    # former built-in, the same helpers at their test-fixture path, and the demo's tasks
    paths = [f"tasks.builtin.{name}" for name in FORMER_BUILTINS]
    paths += [f"tests.fixtures.jobs.{name}" for name in FORMER_BUILTINS]
    paths += ["adaptive_scheduler.tasks.demo.add", "adaptive_scheduler.tasks.demo.exit_process"]
    jobs = {
        path: queue(client, 1).enqueue(path, *args_for(path.rpartition(".")[2], tmp_path)).id
        for path in paths
    }
    # When the daemon serves them
    with running_daemon(redis_url, env={"ASCHED_ALLOWED_MODULES": "[]"}) as daemon:
        wait_until(
            lambda: all(fetch(client, j).get_status() == JobStatus.FAILED for j in jobs.values()),
            timeout_s=20,
        )
        alive = daemon.process.poll() is None
    # Then each failed as not allowed, none ran (no file written anywhere), and the daemon kept serving
    for path, job_id in jobs.items():
        assert f"task {path!r} is not allowed (allowed: nothing;" in failure_text(client, job_id), path
    assert list(tmp_path.iterdir()) == []
    assert alive


def test_a_standard_library_module_in_allowed_modules_stops_start_up_with_one_line(redis_url: str) -> None:
    for modules, named in (('["builtins"]', "builtins"), ('["myapp.jobs", "os"]', "os")):
        result = cli("run", env={"ASCHED_REDIS_URL": redis_url, "ASCHED_ALLOWED_MODULES": modules})
        assert result.returncode == 2, result.stderr
        assert f"{named!r} is part of Python's standard library" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
