"""The daemon-slot link: pickled messages over a socket pair, each prefixed with its length.

`multiprocessing.Connection` reads a message in two system calls (its length, then its body) and goes
through several layers of Python per call; a slot link carries two messages per job, so this one reads
whatever is there in one call and splits it into messages itself. Both ends run the same Python
(the slot is a fork of the daemon), so pickle is the framing's payload format.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import socket
import struct
from typing import Any

PROTOCOL = pickle.HIGHEST_PROTOCOL
HEADER = struct.Struct("!I")
READ_BYTES = 65536


class Channel:
    """One end of a slot's socket pair."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._chunks: list[bytes] = []  # read, not yet taken: joined only once a frame is complete, so a
        self._size = 0  # large message costs one copy, not one per read
        self._want = HEADER.size  # bytes needed before the next message can be taken

    @staticmethod
    def pair() -> tuple[Channel, Channel]:
        """Two connected ends: one for the daemon, one for the slot."""
        left, right = socket.socketpair()
        return Channel(left), Channel(right)

    def fileno(self) -> int:
        return self._fd

    def send(self, message: Any) -> None:
        """Send one message (blocks while the peer's buffer is full). OSError once the peer is gone."""
        data = pickle.dumps(message, PROTOCOL)
        self._sock.sendall(HEADER.pack(len(data)) + data)

    def receive(self) -> Any:
        """The next message, waiting for it. EOFError once the peer has closed its end."""
        while True:
            message = self._take()
            if message is not _NOTHING:
                return message
            self._fill()

    def receive_ready(self) -> list[Any]:
        """Read once (the descriptor is readable) and return every complete message buffered; may be
        empty when only part of a message has arrived. EOFError once the peer has closed its end."""
        self._fill()
        return self._take_all()

    def receive_waiting(self) -> list[Any]:
        """Every complete message sent so far, without waiting (one non-blocking read: about a
        microsecond when nothing came). EOFError once the other end has closed."""
        with contextlib.suppress(BlockingIOError):
            self._keep(self._sock.recv(READ_BYTES, socket.MSG_DONTWAIT))
        return self._take_all()

    def poll(self, timeout_s: float) -> bool:
        """Whether the descriptor becomes readable (more bytes, or the end) within `timeout_s`.

        For the `receive_ready` side, which leaves no complete message buffered."""
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        return bool(poller.poll(timeout_s * 1000))

    def close(self) -> None:
        self._sock.close()

    def _fill(self) -> None:
        self._keep(os.read(self._fd, READ_BYTES))

    def _keep(self, data: bytes) -> None:
        if not data:
            raise EOFError("the other end of the slot link is closed")
        self._chunks.append(data)
        self._size += len(data)

    def _take_all(self) -> list[Any]:
        messages = []
        while (message := self._take()) is not _NOTHING:
            messages.append(message)
        return messages

    def _take(self) -> Any:
        """The first complete message buffered, removed from the buffer; `_NOTHING` if there is none."""
        if self._size < self._want:
            return _NOTHING
        buffer = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        end = HEADER.size + HEADER.unpack_from(buffer)[0]
        if len(buffer) < end:
            self._chunks, self._want = [buffer], end
            return _NOTHING
        rest = buffer[end:]
        self._chunks, self._size, self._want = ([rest] if rest else []), len(rest), HEADER.size
        return pickle.loads(memoryview(buffer)[HEADER.size : end])


_NOTHING = object()
