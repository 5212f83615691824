"""A user's own application, laid out the way users lay theirs out (issue 13, "one namespace").

The app directory holds its own `tasks.py` (a Celery habit), `settings.py` (Django) and `scheduler.py`,
and a job module that uses the SDK. The daemon is started from that directory with the installed
`adaptive-scheduler` command, as a user starts it; producers are plain RQ with string paths.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.helpers import DaemonProcess, queue, wait_until

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
    ''',
}


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
        jobs = [
            queue(client, 1).enqueue("tasks.double", 21),
            queue(client, 1).enqueue("myapp.jobs.long_sum", 1000),
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
