"""A dedicated Redis connection for the one Lua script the daemon runs every tick.

redis-py's client path (retry wrapper, command parsing callbacks, pool checkout) costs 30-60 µs per
call here, more than the unix-socket round trip itself (~30 µs); the per-tick script is the hot path,
so it goes straight through one `Connection` of the client's pool class with the same settings.
"""

from __future__ import annotations

import hashlib
from typing import Any

import redis
from redis.exceptions import NoScriptError


class ScriptLine:
    """Calls one Lua script by its SHA over a private connection, loading it when Redis lacks it."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._conn = client.connection_pool.make_connection()

    def __call__(self, keys: list[str], args: list[Any]) -> Any:
        """Run the script; raises redis.ConnectionError/TimeoutError (after dropping the connection)."""
        try:
            try:
                return self._run(keys, args)
            except NoScriptError:
                self._conn.send_command("SCRIPT", "LOAD", self.source)
                self._conn.read_response()
                return self._run(keys, args)
        except (redis.ConnectionError, redis.TimeoutError):
            self._conn.disconnect()
            raise

    def close(self) -> None:
        self._conn.disconnect()

    def _run(self, keys: list[str], args: list[Any]) -> Any:
        self._conn.send_command("EVALSHA", self.sha, len(keys), *keys, *args)
        return self._conn.read_response()
