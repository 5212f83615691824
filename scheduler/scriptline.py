"""A dedicated Redis connection for the one Lua script the daemon runs every tick, sent asynchronously.

redis-py's client path (retry wrapper, parsing callbacks, pool checkout) costs 30-60 µs per call here,
more than the unix-socket round trip itself (~30 µs). The per-tick script is the hot path, so it goes
straight through one `Connection` of the client's pool class, with the same settings, and it is split
in two: `send` returns the socket to poll, and `receive` reads the reply once it is readable, so the
daemon keeps handing jobs to slots while Redis runs the script on another core.
"""

from __future__ import annotations

import hashlib
from typing import Any

import redis
from redis.exceptions import NoScriptError


class ScriptLine:
    """Calls one Lua script by its SHA over a private connection, one call in flight at a time."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._conn = client.connection_pool.make_connection()
        self._call: tuple[list[str], list[Any]] = ([], [])

    def send(self, keys: list[str], args: list[Any]) -> int:
        """Send a call; returns the socket's descriptor, readable once the reply is there."""
        self._call = (keys, args)
        with self._dropping_on_error():
            self._send()
        return self._conn._sock.fileno()  # type: ignore[union-attr]  # redis-py keeps it private

    def receive(self) -> Any:
        """The reply to the call in flight (blocks until it is complete)."""
        with self._dropping_on_error():
            try:
                return self._conn.read_response()
            except NoScriptError:  # Redis restarted or flushed its scripts: load it and call again
                self._conn.send_command("SCRIPT", "LOAD", self.source)
                self._conn.read_response()
                self._send()
                return self._conn.read_response()

    def __call__(self, keys: list[str], args: list[Any]) -> Any:
        """Send and wait for the reply."""
        self.send(keys, args)
        return self.receive()

    def close(self) -> None:
        self._conn.disconnect()

    def _send(self) -> None:
        keys, args = self._call
        self._conn.send_command("EVALSHA", self.sha, len(keys), *keys, *args)

    def _dropping_on_error(self) -> _DropOnError:
        return _DropOnError(self._conn)


class _DropOnError:
    """Disconnect on a connection error or timeout (the reply stream is out of step), then re-raise."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        if kind is not None and issubclass(kind, redis.ConnectionError | redis.TimeoutError):
            self._conn.disconnect()
        return False
