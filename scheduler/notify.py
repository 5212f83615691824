"""systemd's notify protocol (sd_notify): READY, WATCHDOG, STATUS and STOPPING datagrams.

Outside systemd (no NOTIFY_SOCKET) every call is a no-op. The variables are taken out of the
environment once read, as `sd_notify(unset_environment=1)` does, so neither the slots, the jobs nor an
embedded redis-server (which speaks the protocol too) can talk to systemd in the daemon's name.

The watchdog is pinged from the main loop (`tick`), never from a thread: a loop that hangs stops
pinging, and systemd restarts the service, which is the point of `WatchdogSec=`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

from loguru import logger


class Notifier:
    """Sends state changes to systemd over its unix datagram socket."""

    def __init__(self, environ: MutableMapping[str, str] = os.environ) -> None:
        address = environ.pop("NOTIFY_SOCKET", "")
        watchdog_usec = environ.pop("WATCHDOG_USEC", "")
        watchdog_pid = environ.pop("WATCHDOG_PID", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address  # '@': abstract
        self._socket: socket.socket | None = None
        if self._address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        ours = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_s = int(watchdog_usec) / 2e6 if watchdog_usec.isdigit() and ours else None
        self._next_ping = 0.0
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def ready(self, status: str) -> None:
        """The daemon serves: Redis answered and the slots are up."""
        self._send(f"READY=1\nSTATUS={status}")
        self._last_status = status

    def status(self, text: str) -> None:
        """A one-line state for `systemctl status`; sent only when it changed."""
        if text != self._last_status:
            self._send(f"STATUS={text}")
            self._last_status = text

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def tick(self, now_mono: float) -> None:
        """Ping the watchdog if half its interval has passed since the last ping."""
        if self.watchdog_s is not None and now_mono >= self._next_ping:
            self._next_ping = now_mono + self.watchdog_s
            self._send("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, message: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:  # systemd gone or the socket full: nothing to do but say so
            logger.warning("sd_notify to {} failed: {}", self._address.lstrip("\0"), exc)
