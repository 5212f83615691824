"""The command line as a user types it: real processes, real Redis, exit codes and the words printed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest
import redis
from adaptive_scheduler.exits import EXIT_FAILURE, EXIT_TIMEOUT, EXIT_UNAVAILABLE, EXIT_USAGE
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.helpers import FIXTURES, cli, queue, running_daemon, title, wait_until


def test_enqueue_then_status_show_the_job_run(client: redis.Redis, redis_url: str) -> None:
    env = {"ASCHED_REDIS_URL": redis_url, **FIXTURES}
    with running_daemon(redis_url):
        enqueued = cli("enqueue", "add", "[2, 40]", "--priority", "P0", env=env)
        assert enqueued.returncode == 0, enqueued.stderr
        job_id = enqueued.stdout.strip()
        job = Job.fetch(job_id, connection=client, serializer=JSONSerializer)
        wait_until(lambda: job.get_status() == JobStatus.FINISHED)
        assert job.return_value() == 42
        # daemons publish their counts once a second
        status = wait_until(
            lambda: (s := json.loads(cli("status", "--json", env=env).stdout))["totals"]["finished"] and s
        )
        table = cli("status", env=env).stdout
    assert status["queues"]["P0"]["finished"] == 1
    assert status["totals"]["finished"] == 1
    assert len(status["daemons"]) == 1 and len(status["daemons"][0]["slots"]) == 2
    assert "P0        p0" in table and "live daemons: 1" in table


def test_enqueue_and_periodic_jobs_write_the_configured_serializer(
    client: redis.Redis, redis_url: str
) -> None:
    # Given a daemon that accepts pickle (trusted producers), with a periodic job every second
    beat = '[{"name": "beat", "task": "add", "args": [1, 1], "every_s": 1}]'
    env = {"ASCHED_SERIALIZER": "pickle", "ASCHED_PERIODIC": beat}
    with running_daemon(redis_url, env=env):
        # When the CLI enqueues a job with the same settings
        enqueued = cli("enqueue", "add", "[2, 40]", env={"ASCHED_REDIS_URL": redis_url, **FIXTURES, **env})
        assert enqueued.returncode == 0, enqueued.stderr
        # Then it is pickled (RQ's default serializer reads it back) and runs, and so do the periodic ticks
        job = Job.fetch(enqueued.stdout.strip(), connection=client)
        wait_until(lambda: job.get_status(refresh=True) in (JobStatus.FINISHED, JobStatus.FAILED))
        assert job.return_value() == 42, job.latest_result().exc_string
        tick = wait_until(lambda: next(client.scan_iter(match="rq:job:periodic-beat-*"), None))
        beat_job = Job.fetch(tick.decode().removeprefix("rq:job:"), connection=client)
        wait_until(lambda: beat_job.get_status(refresh=True) in (JobStatus.FINISHED, JobStatus.FAILED))
        assert beat_job.return_value() == 2, beat_job.latest_result().exc_string


def test_job_says_where_a_job_is_waits_for_its_end_and_exits_by_its_outcome(
    client: redis.Redis, redis_url: str
) -> None:
    env = {"ASCHED_REDIS_URL": redis_url, **FIXTURES}
    # Given a job enqueued while no daemon runs
    job_id = cli("enqueue", "sleep", "[3]", env=env).stdout.strip()  # outlasts CLI calls under load
    queued = cli("job", job_id, env=env)
    assert queued.returncode == 0, queued.stderr
    assert queued.stdout.splitlines()[:3] == [
        f"job {job_id}: queued",
        "  task     tests.fixtures.jobs.sleep",
        "  where    queued in p2 (P2), 0 job(s) ahead of it",
    ]
    # When a wait runs out before the job ends: exit 124, still saying where it is
    timed_out = cli("job", job_id, "--wait", "0.3", env=env)
    assert timed_out.returncode == EXIT_TIMEOUT == 124 and "queued in p2" in timed_out.stdout
    with running_daemon(redis_url):
        # Then a daemon claims it (named), and a wait ends with its result
        (status_key,) = client.keys("asched:status:*")
        daemon_id = status_key.decode().removeprefix("asched:status:")
        claimed = wait_until(lambda: (r := cli("job", job_id, env=env)) and "claimed" in r.stdout and r)
        assert f"claimed by daemon {daemon_id} at " in claimed.stdout
        waited = cli("job", job_id, "--wait", "--json", env=env)
        failing = cli("enqueue", "fail", '["no such width"]', env=env).stdout.strip()
        failed = cli("job", failing, "--wait", "20", env=env)
    assert waited.returncode == 0, waited.stderr
    view = json.loads(waited.stdout)
    assert (view["status"], view["result"], view["queue"], view["priority"]) == ("finished", 3, "p2", "P2")
    assert failed.returncode == 1 and "  error    RuntimeError: no such width" in failed.stdout
    missing = cli("job", "no-such-job", env=env)
    assert missing.returncode == 1 and "no job 'no-such-job' in Redis" in missing.stderr


def test_status_exits_1_when_no_daemon_is_alive_and_still_prints_the_table(redis_url: str) -> None:
    result = cli("status", env={"ASCHED_REDIS_URL": redis_url})
    assert result.returncode == EXIT_FAILURE == 1
    assert "live daemons: 0" in result.stdout and "priority  queue" in result.stdout
    assert result.stderr.strip() == "adaptive-scheduler: no daemon is alive"


def test_config_is_read_when_given_after_the_command(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "asched.toml"
    lines = [
        f'redis_url = "{redis_url}"',
        'allowed_modules = ["tests.fixtures.jobs"]',
        'queues = ["a", "b", "c", "d"]',
    ]
    config.write_text("\n".join(lines))
    result = cli("enqueue", "add", "[1, 2]", "--priority", "P1", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert client.lrange("rq:queue:b", 0, -1) == [result.stdout.strip().encode()]


def test_a_tasks_own_priority_and_timeout_apply_when_the_producer_sets_none(
    client: redis.Redis, redis_url: str
) -> None:
    env = {"ASCHED_REDIS_URL": redis_url, **FIXTURES}
    # `heartbeat` is @task(priority="P3"), `add` has none (P2); `bounded_sleep` is @task(timeout=1.0)
    beat, plain, bounded = (
        cli("enqueue", *command, env=env).stdout.strip()
        for command in (("heartbeat",), ("add", "[1, 1]"), ("bounded_sleep", "[5]"))
    )
    assert [client.lrange(f"rq:queue:p{p}", 0, -1) for p in (3, 2)] == [
        [beat.encode()],
        [plain.encode(), bounded.encode()],
    ]
    with running_daemon(redis_url):
        job = Job.fetch(bounded, connection=client, serializer=JSONSerializer)
        wait_until(lambda: job.get_status(refresh=True) == JobStatus.FAILED, timeout_s=10)
    assert "exceeded its timeout of 1 s" in job.latest_result().exc_string


def test_bad_cli_input_gets_one_clear_line_and_exit_code_2(redis_url: str) -> None:
    env = {"ASCHED_REDIS_URL": redis_url, **FIXTURES}
    cases = {
        (
            "enqueue",
            "os.system",
            '["ls"]',
        ): "task 'os.system' is not allowed (allowed: functions of tests.fixtures.jobs)",
        ("enqueue", "add", "[1,"): "args must be JSON",
        ("enqueue", "add", '{"a": 1}'): "args must be a JSON list",
        ("enqueue", "add", "[1, 2]", "--priority", "P7"): "unknown priority 'P7' (use P0, P1, P2 or P3)",
    }
    for args, message in cases.items():
        result = cli(*args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"ASCHED_SLOTS": "0"},
            "invalid setting slots (ASCHED_SLOTS) = '0': Input should be greater than or equal to 1",
        ),
        (
            {"ASCHED_SLOT": "4"},
            "unknown environment variable ASCHED_SLOT: not a setting (did you mean ASCHED_SLOTS?)",
        ),
        (
            {"ASCHED_MEMORY_BUDGET": "64MB"},
            "invalid setting memory_budget (ASCHED_MEMORY_BUDGET) = '64MB': Value error, must be at least "
            "64.0MiB (got 64.0MB)",
        ),
        (
            {"ASCHED_MEMORY_BUDGET": "100MiB", "ASCHED_SLOT_MEMORY_CAP": "200MB"},
            "invalid settings: Value error, slot_memory_cap (200.0MB) must not exceed memory_budget "
            "(100.0MiB): lower slot_memory_cap or raise memory_budget",
        ),
        (
            {"ASCHED_STOP_TIMEOUT_S": "inf"},
            "invalid setting stop_timeout_s (ASCHED_STOP_TIMEOUT_S) = 'inf': Input should be a finite number",
        ),
    ],
)
def test_bad_settings_stop_start_up_with_one_line_and_exit_code_2(
    env: dict[str, str], expected: str, tmp_path: Path
) -> None:
    result = cli("run", env=env, cwd=tmp_path)
    assert result.returncode == EXIT_USAGE == 2
    assert result.stderr.strip() == f"adaptive-scheduler: {expected}"


def test_a_periodic_job_naming_a_task_that_may_not_run_stops_start_up_with_exit_code_2(
    redis_url: str,
) -> None:
    beat = '[{"name": "beat", "task": "os.system", "every_s": 5}]'
    result = cli("run", env={"ASCHED_REDIS_URL": redis_url, "ASCHED_PERIODIC": beat, **FIXTURES})
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "periodic job 'beat': task 'os.system' is not allowed" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_job_running_the_cli_inherits_an_environment_the_settings_accept(
    client: redis.Redis, redis_url: str
) -> None:
    # Given a daemon configured through ASCHED_ variables, one of them the project's own non-setting
    env = {"ASCHED_SLOTS": "1", "ASCHED_TEST_CANARY": "/nonexistent/canary"}
    with running_daemon(redis_url, env=env):
        # When one of its jobs runs the command line, in the environment the slot gave it
        job = queue(client, 1).enqueue("tests.fixtures.jobs.run_cli", ["status", "--json"])
        wait_until(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, timeout_s=30)
    # Then nothing the daemon or the slot added stops the settings from loading
    code, stderr = job.return_value()
    assert code == 0, stderr


def test_run_without_redis_url_runs_the_demo_on_an_embedded_redis(tmp_path: Path) -> None:
    # Given no ASCHED_REDIS_URL: the demo runs on an embedded redis-server in the state directory
    env = {"ASCHED_STATE_DIR": str(tmp_path / "state")}
    demo = cli("run", "--demo", "--until-idle", env=env)
    assert demo.returncode == 0, demo.stderr
    assert "started embedded redis-server" in demo.stderr
    assert "'finished': 7, 'failed': 3" in demo.stderr
    table = demo.stderr.split("demo results", 1)[1]
    assert table.index("p0  finished  adaptive_scheduler.tasks.demo.add") < table.index(
        "p3  finished  adaptive_scheduler.tasks.demo.heartbeat"
    )
    # And a status query with no daemon running says how to start one
    status = cli("status", env=env)
    assert status.returncode == EXIT_UNAVAILABLE and "start the daemon" in status.stderr


def test_the_embedded_redis_keeps_queued_jobs_across_a_restart(tmp_path: Path) -> None:
    from adaptive_scheduler.redis_server import RedisServer

    from tests.helpers import queue

    server = RedisServer(tmp_path, persistent=True).start()
    job_id = queue(redis.Redis.from_url(server.url), 1).enqueue("tests.fixtures.jobs.noop").id
    server.stop()
    server = RedisServer(tmp_path, persistent=True).start()
    try:
        restarted = redis.Redis.from_url(server.url)
        assert restarted.lrange("rq:queue:p1", 0, -1) == [job_id.encode()]
    finally:
        server.stop()


def test_an_allowed_module_that_does_not_import_stops_start_up_with_one_line(redis_url: str) -> None:
    result = cli("run", env={"ASCHED_REDIS_URL": redis_url, "ASCHED_ALLOWED_MODULES": '["no_such_jobs"]'})
    assert result.returncode == EXIT_USAGE
    assert "allowed module 'no_such_jobs' cannot be imported: No module named 'no_such_jobs'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command", [("run",), ("status",), ("enqueue", "add", "[1, 2]"), ("shed", "list"), ("tasks",)]
)
def test_an_unreachable_redis_gets_one_line_and_exit_code_69(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    env = {"ASCHED_REDIS_URL": f"unix://{tmp_path}/nothing.sock", **FIXTURES}
    result = cli(*command, env=env)
    assert result.returncode == EXIT_UNAVAILABLE == 69, result.stderr
    assert "cannot reach Redis" in result.stderr and "Traceback" not in result.stderr


def test_run_execs_a_daemon_without_pydantic_or_the_settings_descriptor(redis_url: str) -> None:
    with running_daemon(redis_url) as daemon:
        process = psutil.Process(daemon.process.pid)  # the pid the user started: the exec keeps it
        (status_key,) = daemon.client.keys("asched:status:*")
        daemon_id = status_key.decode().removeprefix("asched:status:")
        # the daemon proper runs there (the launcher sets no title), and `ps` says which process is which
        assert title(process.pid) == f"adaptive-scheduler: daemon {daemon_id}"
        wait_until(lambda: len(process.children()) == 2)
        slots = process.children()
        wait_until(
            lambda: (
                sorted(title(slot.pid) for slot in slots) == [f"adaptive-scheduler: slot {i}" for i in (0, 1)]
            )
        )
        for proc in (process, *process.children()):
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
            assert "pydantic" not in maps, f"pid {proc.pid} maps pydantic"
            links = [os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{proc.pid}/fd")]
            assert not [link for link in links if "adaptive-scheduler-settings" in link], links
        job_id = cli(
            "enqueue", "add", "[2, 3]", env={"ASCHED_REDIS_URL": redis_url, **FIXTURES}
        ).stdout.strip()
        job = Job.fetch(job_id, connection=daemon.client, serializer=JSONSerializer)
        wait_until(lambda: job.get_status(refresh=True) == JobStatus.FINISHED)
        assert job.return_value() == 5
