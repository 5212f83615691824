"""Test helpers: waiting on a condition, running a real daemon process, producing with plain RQ."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import redis
from adaptive_scheduler.redis_url import connect
from rq import Queue
from rq.serializers import JSONSerializer

ROOT = Path(__file__).resolve().parent.parent
# What test daemons may run: the job functions of tests/fixtures/jobs.py (nothing is allowed by default).
FIXTURES = {"ASCHED_ALLOWED_MODULES": '["tests.fixtures.jobs"]'}


def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.02) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s: {predicate}")


def children(pid: int, zombies: bool = False) -> set[int]:
    """A process's children: the live ones, or only the zombies (ended, not reaped by their parent)."""
    found = set()
    for child in psutil.Process(pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if (child.status() == psutil.STATUS_ZOMBIE) == zombies:
                found.add(child.pid)
    return found


def autogroup_nice(pid: int) -> int | None:
    """The nice of a process's session's CPU group ("/autogroup-7 nice 5"); None where the kernel does
    not group CPU time by session (no autogroup, or it is off) or the process has ended."""
    try:
        if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() != "1":
            return None
        return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None


def title(pid: int) -> str:
    """A process's command line as `ps` shows it (its title, once the process set one); "<gone>" once
    it has ended (a slot replaced meanwhile), so that a wait on it fails with the titles it saw."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except (FileNotFoundError, ProcessLookupError):
        return "<gone>"


def queue(client: redis.Redis, priority: int) -> Queue:
    """The plain RQ queue of a priority, as producers use it (JSON serializer)."""
    return Queue(f"p{priority}", connection=client, serializer=JSONSerializer)


def live_daemons(client: redis.Redis) -> int:
    return len(list(client.scan_iter(match="asched:status:*")))


class LogFile:
    """A daemon's log: written by the daemon, read by the test, removed by `close()` or when collected.

    The test keeps no descriptor open on it (a forgotten one would surface as a ResourceWarning in
    whichever later test the garbage collector happens to run).
    """

    def __init__(self) -> None:
        self.fd, self.name = tempfile.mkstemp(prefix="asched-daemon-", suffix=".log")
        self._remove = weakref.finalize(self, _remove_quietly, self.name)

    def close_writer(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        self.close_writer()
        self._remove()


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class DaemonProcess:
    """`python -m adaptive_scheduler run` as a real child process against the test Redis."""

    def __init__(
        self,
        redis_url: str,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        cgroup_procs: Path | None = None,
        cwd: Path = ROOT,
        program: tuple[str, ...] = (sys.executable, "-m", "adaptive_scheduler"),
        test_settings: bool = True,
    ) -> None:
        """`test_settings=False`: no ASCHED_ variable but those of `env` (a config file names the rest,
        `redis_url` included), as a user's daemon is started."""
        ours = {"ASCHED_REDIS_URL": redis_url, "ASCHED_LOG_LEVEL": "DEBUG", **FIXTURES}
        inherited = {k: v for k, v in os.environ.items() if test_settings or not k.startswith("ASCHED_")}
        full_env = {**inherited, **(ours if test_settings else {}), **(env or {})}
        self.log = LogFile()
        command = [*program, "run", *args]
        if cgroup_procs is not None:  # join the cgroup first, then become the daemon
            command = ["sh", "-c", f'echo $$ > {cgroup_procs} && exec "$0" "$@"', *command]
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=full_env,
            stdout=self.log.fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.log.close_writer()  # the daemon has its own copy: no descriptor left open here
        self.client = connect(redis_url)

    def wait_ready(self, count: int = 1, timeout_s: float = 15.0) -> DaemonProcess:
        """Wait until the daemon has published its status (it has slots up and serves)."""
        wait_until(lambda: live_daemons(self.client) >= count or self.process.poll() is not None, timeout_s)
        assert self.process.poll() is None, self.output()
        return self

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then wait for a clean exit; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGUSR2)  # the daemon dumps its threads' stacks (faulthandler)
            time.sleep(0.5)
            self.kill()
            raise AssertionError(
                f"the daemon did not stop within {timeout_s:g} s of SIGTERM; its log, ending with its "
                f"stack:\n{self.output()[-12000:]}"
            ) from None

    def kill(self) -> None:
        """SIGKILL the daemon alone, as a crash would (its slots die with it, by PDEATHSIG)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def output(self) -> str:
        """Everything the daemon logged so far."""
        return Path(self.log.name).read_text(errors="replace")


@contextmanager
def running_daemon(redis_url: str, **kwargs: Any) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(redis_url, **kwargs)
    try:
        yield daemon.wait_ready()
    finally:
        if daemon.process.poll() is None:
            daemon.stop()
        daemon.client.close()
        daemon.log.close()


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`python -m adaptive_scheduler ARGS` as a user runs it: only `env`'s ASCHED_* settings, not ours."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASCHED_")} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "adaptive_scheduler", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
