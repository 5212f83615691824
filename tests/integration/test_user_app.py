"""A user's own application, laid out the way users lay theirs out (issue 13, "one namespace" and the
"Done means" walkthrough).

The app directory holds its own `tasks.py` (a Celery habit), `settings.py` (Django) and `scheduler.py`,
and a job module that uses the SDK. The daemon is started from that directory with the installed
`adaptive-scheduler` command, as a user starts it; producers are plain RQ with string paths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.helpers import DaemonProcess, queue, wait_until
from tests.integration.test_rq_compat import PYTHONS, run
from tests.integration.test_rq_worker import rq_info, workers

COMMAND = str(Path(sys.executable).with_name("adaptive-scheduler"))
APP = {
    "tasks.py": '''
        """The app's Celery-style tasks module: its own, not the daemon's."""
        def double(x):
            return 2 * x
    ''',
    "settings.py": "DEBUG = True  # a Django settings module\n",
    "scheduler.py": "raise ImportError('the daemon imported the app\\'s scheduler.py')\n",
    "myapp/__init__.py": "",
    "myapp/jobs.py": '''
        """Uses the SDK; `long_sum` and `add` are the README's names (once clashing with built-ins)."""
        import settings  # the app's own settings.py, found from the working directory
        from adaptive_scheduler.tasks import context, task

        @task(preemptible=True)
        def long_sum(n):
            ctx = context()
            state = ctx.resume_state or {"i": 0, "total": 0}
            while state["i"] < n:
                state["total"] += state["i"]
                state["i"] += 1
                ctx.checkpoint(state)
            return state["total"]

        @task()
        def add(a, b):
            return [a + b, settings.DEBUG]

        def nap(gate):
            """A plain RQ function (no SDK) that runs until the test removes the file `gate`."""
            import os, time
            deadline = time.monotonic() + 30
            while os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.02)
            return 3

        def whoami():
            """What code written for RQ's workers reads from inside a job."""
            from rq import get_current_job
            job = get_current_job()
            return [job.id, job.meta]
    ''',
}
# The walkthrough's config file: what the operator allows, and where Redis is (no ASCHED_ variable set).
CONFIG = """
allowed_modules = ["myapp.jobs", "tasks"]
redis_url = "{redis_url}"
slots = 2
"""
# A producer with nothing but rq 2 and redis installed, enqueuing by dotted path.
PRODUCE = """
import json, sys
from redis import Redis
from rq import Queue, __version__
from rq.serializers import JSONSerializer
r = Redis.from_url(sys.argv[1])
q = lambda p: Queue(f"p{p}", connection=r, serializer=JSONSerializer)
ids = {
    "nap": q(3).enqueue("myapp.jobs.nap", sys.argv[2]).id,
    "add": q(1).enqueue("myapp.jobs.add", 2, 3).id,
    "double": q(2).enqueue("tasks.double", 21).id,
    "whoami": q(1).enqueue("myapp.jobs.whoami", meta={"tenant": "a"}).id,
}
print(json.dumps({"version": __version__, "ids": ids}))
"""
READ_BACK = """
import json, sys
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer
r = Redis.from_url(sys.argv[1])
jobs = {k: Job.fetch(v, connection=r, serializer=JSONSerializer) for k, v in json.loads(sys.argv[2]).items()}
print(json.dumps({k: [job.get_status().value, job.return_value()] for k, job in jobs.items()}))
"""


def command(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed command, run from the app directory with its config file, as an operator would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCHED_")}
    return subprocess.run(
        [COMMAND, *args, "--config", "scheduler.toml"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def make_app(root: Path) -> Path:
    for name, text in APP.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


def test_the_daemon_runs_an_app_that_has_its_own_tasks_settings_and_scheduler_modules(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    app = make_app(tmp_path)
    env = {"ASCHED_ALLOWED_MODULES": '["myapp.jobs", "tasks"]', "PYTHONPATH": ""}
    daemon = DaemonProcess(redis_url, env=env, cwd=app, program=(COMMAND,))
    try:
        daemon.wait_ready()
        # (the installed command, run from the app directory, finds the app's task by its short name)
        by_name = subprocess.run(
            [COMMAND, "enqueue", "long_sum", "[1000]"],
            cwd=app,
            env={**os.environ, "ASCHED_REDIS_URL": redis_url, **env},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert by_name.returncode == 0, by_name.stderr
        jobs = [
            queue(client, 1).enqueue("tasks.double", 21),
            Job.fetch(by_name.stdout.strip(), connection=client, serializer=JSONSerializer),
            queue(client, 2).enqueue("myapp.jobs.add", 2, 3),
        ]
        ended = wait_until(
            lambda: all(job.get_status(refresh=True) in ("finished", "failed") for job in jobs), timeout_s=15
        )
        assert ended, daemon.output()
        results = [Job.fetch(job.id, connection=client, serializer=JSONSerializer) for job in jobs]
        assert [job.get_status() for job in results] == ["finished"] * 3, [job.exc_info for job in results]
        assert [job.return_value() for job in results] == [42, sum(range(1000)), [5, True]]
        assert daemon.stop() == 0, daemon.output()
        assert "Traceback" not in daemon.output()
    finally:
        daemon.kill()
        daemon.log.close()


def test_a_new_users_walkthrough_from_an_app_directory_with_a_config_file(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    # Given an app directory with its own tasks.py, settings.py, scheduler.py and myapp/jobs.py, and a
    # TOML config file there: the only settings (no ASCHED_ variable, nothing allowlisted by the tests)
    app = make_app(tmp_path)
    (app / "scheduler.toml").write_text(CONFIG.format(redis_url=redis_url))
    daemon = DaemonProcess(
        redis_url,
        env={"PYTHONPATH": ""},
        cwd=app,
        program=(COMMAND,),
        args=("--config", "scheduler.toml"),
        test_settings=False,
    )
    try:
        daemon.wait_ready()
        # When a producer that has only rq 2 installed enqueues by dotted path
        gate = tmp_path / "nap-gate"
        gate.touch()
        produced = json.loads(run(PYTHONS["rq2"], PRODUCE, redis_url, str(gate)))
        assert produced["version"].startswith("2")
        ids = produced["ids"]
        # Then `rq info` of both majors lists the daemon as one busy worker on the four queues, and
        # RQ's Worker API names the job it runs (the nap, until the gate opens; the others finish)
        wait_until(lambda: [w[3] for w in workers("rq2", redis_url)] == [ids["nap"]], timeout_s=10)
        for major in ("rq2", "rq3"):
            info = rq_info(major, redis_url)
            assert "1 workers" in info and "adaptive-scheduler:" in info, info
            assert "busy p0, p1, p2, p3" in info, info
        (worker,) = workers("rq3", redis_url)
        assert worker[1:4] == [["p0", "p1", "p2", "p3"], "busy", ids["nap"]]

        # When the operator pauses P3 from the app directory: a P3 job enqueued then waits in its queue
        # (the running P3 nap goes on), and `status` says so; resumed, it runs
        assert command(app, "pause", "P3").returncode == 0
        held = queue(client, 3).enqueue("myapp.jobs.add", 1, 1)
        shown = json.loads(command(app, "status", "--json").stdout)
        assert "P3" in shown["paused"], shown
        time.sleep(1.0)
        assert held.get_status(refresh=True) == "queued"
        assert command(app, "resume", "P3").returncode == 0
        wait_until(lambda: held.get_status(refresh=True) == "finished", timeout_s=10)

        # And every job ends as the producer's own RQ reads it back, get_current_job() included
        gate.unlink()
        nap = Job.fetch(ids["nap"], connection=client, serializer=JSONSerializer)
        wait_until(lambda: nap.get_status(refresh=True) == "finished", timeout_s=15)
        seen = json.loads(run(PYTHONS["rq2"], READ_BACK, redis_url, json.dumps(ids)))
        assert seen == {
            "nap": ["finished", 3],
            "add": ["finished", [5, True]],
            "double": ["finished", 42],
            "whoami": ["finished", [ids["whoami"], {"tenant": "a"}]],
        }, daemon.output()
        # and `rq info` counts them as the worker's, idle again
        idle = "idle p0, p1, p2, p3. jobs: 5 finished, 0 failed"
        wait_until(lambda: idle in rq_info("rq3", redis_url), timeout_s=10, interval_s=0.2)
        # No built-in helper is runnable by a producer: tests/integration/test_allowlist.py enqueues every
        # former one (and the test and demo helpers) from plain RQ against a daemon with default settings.
        assert daemon.stop() == 0, daemon.output()
        assert "Traceback" not in daemon.output()
    finally:
        daemon.kill()
        daemon.log.close()
    assert "0 workers" in rq_info("rq2", redis_url)
