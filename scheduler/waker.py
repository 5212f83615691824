"""Tells the daemon the moment a queue it last found empty gets a job, without taking the job.

RQ producers only RPUSH onto a list; there is no notification to subscribe to, and Redis cannot block on
several lists without popping. So for each queue the daemon keeps one connection with a pending
`BLMOVE q q LEFT LEFT 0`, which moves the head of q onto the head of q: a no-op on the data that
answers as soon as q is non-empty. The connection's socket sits in the daemon's poll set, so no
thread is needed (the daemon stays single-threaded, which is what makes forking slots from it safe).

A queue is *armed* (its BLMOVE pending) only after a claim found it empty, and it disarms when it
answers. That serves two purposes: an idle daemon wakes within a millisecond of an enqueue, and a busy
daemon learns that a P0 job arrived before it hands the next, less urgent, local job to a slot.

A command may be sent *behind* the BLMOVE, in the same packet (`arm(index, behind)`): Redis runs it the
moment the BLMOVE answers, before any other client's command, and both replies come back together.
The daemon parks a claim there (`arrivals.Arrivals`), so a job that lands in an empty queue is claimed
by Redis itself, without waiting for the daemon to wake and ask.
"""

from __future__ import annotations

from typing import Any

import redis
from adaptive_scheduler.scriptline import encode, ensure_connected
from loguru import logger
from redis.connection import AbstractConnection


class Waker:
    """One blocking-call connection per queue, polled by the daemon."""

    def __init__(self, client: redis.Redis, queue_keys: list[str]) -> None:
        self._keys = queue_keys
        self._conns: list[AbstractConnection] = [client.connection_pool.make_connection() for _ in queue_keys]
        self._armed = [False] * len(queue_keys)
        self._arms = [0] * len(queue_keys)  # watches set so far per queue: tells one watch from the next
        self._refused = [_Refusals(f"cannot watch {key}") for key in queue_keys]

    def armed(self, index: int) -> bool:
        return self._armed[index]

    def generation(self, index: int) -> int:
        """How many watches were set on queue `index` so far: unchanged while one watch stays unanswered."""
        return self._arms[index]

    def arm(self, index: int, behind: bytes = b"") -> int | None:
        """Start watching queue `index`, with `behind` (an encoded command) run as soon as it answers;
        returns the descriptor to poll, or None if already armed."""
        if self._armed[index]:
            return None
        conn = self._conns[index]
        key = self._keys[index]
        try:
            ensure_connected(conn)
            conn.send_packed_command([encode(b"$6\r\nBLMOVE\r\n", 1, [key, key, "LEFT", "LEFT", 0]) + behind])
        except redis.RedisError as exc:
            self._refused[index].failed(exc)
            conn.disconnect()
            return None
        self._refused[index].succeeded()
        self._armed[index] = True
        self._arms[index] += 1
        return conn._sock.fileno()  # type: ignore[union-attr]  # redis-py keeps the socket private

    def answer_behind(self, index: int) -> Any:
        """Read queue `index`'s answer and the reply of the command behind it (its socket is readable),
        and disarm it. Raises RedisError (the connection is dropped: the command may or may not have run).
        """
        conn = self._conns[index]
        self._armed[index] = False
        try:
            conn.read_response()
            return conn.read_response()
        except redis.RedisError:
            conn.disconnect()
            raise

    def answer(self, index: int) -> int:
        """Read queue `index`'s answer (its socket is readable) and disarm it; returns the fd it used."""
        conn = self._conns[index]
        fd = conn._sock.fileno()  # type: ignore[union-attr]
        self._armed[index] = False
        try:
            conn.read_response()
        except redis.RedisError as exc:  # a dropped connection: the next arm reconnects
            logger.warning("lost the watch on {}: {}", self._keys[index], exc)
            conn.disconnect()
        return fd

    def reset(self, index: int) -> int | None:
        """Drop queue `index`'s watch and its connection (it never answered: a connection that died
        without a word, or one to a server that is no longer the master); returns the descriptor it
        was polled on, if it was armed. The next `arm` connects afresh."""
        conn = self._conns[index]
        sock = conn._sock  # type: ignore[attr-defined]
        fd = sock.fileno() if sock is not None and self._armed[index] else None
        self._armed[index] = False
        conn.disconnect()
        return fd

    def close(self) -> None:
        for conn in self._conns:
            conn.disconnect()


class ControlWatch:
    """A subscription to `asched:control` (`adaptive_scheduler.controls`) polled by the daemon: an
    operator's pause or resume wakes it within a millisecond instead of at its next housekeeping.

    The subscription is only the fast path: the daemon re-reads the pauses at every housekeeping round
    anyway, so a message lost with a dropped connection costs at most that long.
    """

    def __init__(self, client: redis.Redis, channel: str) -> None:
        self._channel = channel
        self._conn: AbstractConnection = client.connection_pool.make_connection()
        self._refused = _Refusals(f"cannot subscribe to {channel}")
        self.subscribed = False

    def subscribe(self) -> int | None:
        """Subscribe (the confirmation is read with the first message); returns the descriptor to poll,
        or None if Redis refused or is away (try again later)."""
        try:
            ensure_connected(self._conn)
            self._conn.send_command("SUBSCRIBE", self._channel)
        except redis.RedisError as exc:
            self._refused.failed(exc)
            self._conn.disconnect()
            return None
        self._refused.succeeded()
        self.subscribed = True
        return self._conn._sock.fileno()  # type: ignore[union-attr]  # redis-py keeps the socket private

    def drain(self) -> bool:
        """Read what arrived (the socket is readable); True if it held a message. On a dropped connection
        `subscribed` turns False: remove the descriptor from the poll set, then `close()`."""
        got = False
        try:
            while True:
                # push_request: under RESP3 (redis-py's default now) pub/sub replies are pushes, which a
                # plain read hands to a callback before blocking for a reply that never comes
                reply = self._conn.read_response(push_request=True)
                got = got or (isinstance(reply, list) and reply[:1] == [b"message"])
                if not self._conn.can_read(timeout=0):
                    return got
        except (redis.RedisError, OSError) as exc:
            logger.warning("lost the subscription to {}: {}", self._channel, exc)
            self.subscribed = False
            return True  # something may have changed meanwhile: read the pauses again

    def close(self) -> None:
        self.subscribed = False
        self._conn.disconnect()


class _Refusals:
    """Say the first of a run of failures to connect as a WARNING, the rest at DEBUG: the daemon retries
    at every turn of an outage (measured: 13 "cannot subscribe" warnings in 4 s of one), and the outage
    itself is said once by the loop (`service._tick`)."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._failing = False

    def failed(self, exc: redis.RedisError) -> None:
        logger.log("DEBUG" if self._failing else "WARNING", "{}: {}", self._what, exc)
        self._failing = True

    def succeeded(self) -> None:
        self._failing = False
