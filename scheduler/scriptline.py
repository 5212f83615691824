"""A dedicated Redis connection for the one Lua script the daemon runs every tick, sent asynchronously.

redis-py's client path (retry wrapper, parsing callbacks, pool checkout, and packing every argument
through a generator) costs more per call than the unix-socket round trip itself (~30 µs). The per-tick
script is the hot path, so its command is encoded here, straight to RESP bytes, with the part that never
changes (EVALSHA, the SHA, no keys: the script's keys are written into its source) encoded once, and
sent through one `Connection` of the client's pool class, with the same settings. It is split in two:
`send` returns the socket to poll, and `receive` reads the reply once it is readable, so the daemon
keeps handing jobs to slots while Redis runs the script on another core.
"""

from __future__ import annotations

import hashlib
from typing import Any

import redis
from redis.connection import AbstractConnection
from redis.exceptions import NoScriptError

Arg = str | int | float | bytes


def ensure_connected(conn: AbstractConnection) -> None:
    """Connect through the connection's own `connect()`. redis-py 8's send path connects with the base
    class's socket code, which skips a Sentinel-managed connection's lookup of the current master
    (it would dial localhost:6379); `connect()` is what the Sentinel connection class overrides."""
    if conn._sock is None:
        conn.connect()


class ScriptLine:
    """Calls one Lua script (that takes no keys) by its SHA over a private connection, one call in
    flight at a time."""

    def __init__(
        self, client: redis.Redis, source: str, replica_acks: int = 0, ack_timeout_ms: int = 0
    ) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._conn = client.connection_pool.make_connection()
        self._head = b"$7\r\nEVALSHA\r\n$40\r\n" + self.sha.encode() + b"\r\n$1\r\n0\r\n"
        self._packed = b""
        # durability: each call is followed, in the same packet, by WAIT <replicas> <timeout ms>
        self._wait = encode(b"$4\r\nWAIT\r\n", 1, [replica_acks, ack_timeout_ms]) if replica_acks else b""
        self.replica_acks = replica_acks
        self.acked = replica_acks  # how many replicas acknowledged the last call (WAIT's answer)

    def command(self, args: list[Arg]) -> bytes:
        """The call, encoded, to be sent on another connection (no WAIT behind it)."""
        return encode(self._head, 3, args)

    def send(self, args: list[Arg]) -> int:
        """Send a call; returns the socket's descriptor, readable once the reply is there."""
        self._packed = encode(self._head, 3, args) + self._wait
        with self._dropping_on_error():
            ensure_connected(self._conn)
            self._conn.send_packed_command([self._packed])
        return self._conn._sock.fileno()  # type: ignore[union-attr]  # redis-py keeps it private

    def receive(self) -> Any:
        """The reply to the call in flight (blocks until it is complete)."""
        with self._dropping_on_error():
            try:
                return self._read_call()
            except NoScriptError:  # Redis restarted or flushed its scripts: load it and call again
                if self._wait:
                    self._conn.read_response()  # the WAIT sent behind the refused call
                self._conn.send_command("SCRIPT", "LOAD", self.source)
                self._conn.read_response()
                self._conn.send_packed_command([self._packed])
                return self._read_call()

    def _read_call(self) -> Any:
        """The script's reply, then (with replica_acks) WAIT's: how many replicas have the writes."""
        reply = self._conn.read_response()
        if self._wait:
            self.acked = int(self._conn.read_response())
        return reply

    def __call__(self, args: list[Arg]) -> Any:
        """Send and wait for the reply."""
        self.send(args)
        return self.receive()

    def close(self) -> None:
        self._conn.disconnect()

    def address(self) -> tuple[str, int] | None:
        """The server this line is connected to now (host, port), None while it is not connected."""
        host, port = getattr(self._conn, "host", None), getattr(self._conn, "port", None)
        if getattr(self._conn, "_sock", None) is None or host is None or port is None:
            return None  # not connected, or a unix socket
        return str(host), int(port)

    def _dropping_on_error(self) -> _DropOnError:
        return _DropOnError(self._conn)


def encode(head: bytes, head_items: int, args: list[Arg]) -> bytes:
    """A RESP command: `head` (already encoded, `head_items` bulk strings) followed by `args`.

    Numbers are written as redis-py writes them (`repr`); text as UTF-8.
    """
    parts = [b"*%d\r\n" % (head_items + len(args)), head]
    append = parts.append
    for arg in args:
        if type(arg) is bytes:
            data = arg
        elif type(arg) is str:
            data = arg.encode()
        else:
            data = repr(arg).encode()
        append(b"$%d\r\n" % len(data))
        append(data)
        append(b"\r\n")
    return b"".join(parts)


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
