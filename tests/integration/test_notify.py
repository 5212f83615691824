"""sd_notify on a real unix datagram socket: READY once serving, WATCHDOG from the loop, STATUS, STOPPING."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
from adaptive_scheduler.notify import Notifier

from tests.helpers import DaemonProcess, queue


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(15)
    yield sock
    sock.close()


def receive_until(sock: socket.socket, wanted: str, seen: list[tuple[float, str]]) -> str:
    """Read datagrams (noting when each came) until one contains `wanted`; returns that one."""
    while True:
        message = sock.recv(4096).decode()
        seen.append((time.monotonic(), message))
        if wanted in message:
            return message


def seen_or_receive(sock: socket.socket, wanted: str, seen: list[tuple[float, str]]) -> str:
    """The first message seen so far that contains `wanted`, else the next one to arrive."""
    return next((m for _, m in seen if wanted in m), None) or receive_until(sock, wanted, seen)


def test_a_daemon_reports_ready_watchdog_status_and_stopping(
    client: redis.Redis, redis_url: str, notify_socket: socket.socket
) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.getsockname(), "WATCHDOG_USEC": "400000"}
    daemon = DaemonProcess(redis_url, env=env)
    seen: list[tuple[float, str]] = []
    try:
        # READY comes once, when Redis answered and both slots are up, with a status line
        ready = receive_until(notify_socket, "READY=1", seen)
        assert len(psutil.Process(daemon.process.pid).children()) == 2, (
            daemon.output(),
            [m for _, m in seen if "STATUS" in m],
            client.keys(),
        )
        assert "STATUS=NORMAL" in ready and "slots 0/2 busy" in ready
        assert not any("WATCHDOG=1" in m for _, m in seen[:-1]), "pinged before it was ready"
        # WATCHDOG every half WATCHDOG_USEC (0.2 s), from the loop
        queue(client, 1).enqueue("tests.fixtures.jobs.add", 1, 2)
        start = time.monotonic()
        pings = 0
        while time.monotonic() - start < 1.5:
            pings += receive_until(notify_socket, "WATCHDOG=1", seen) is not None
        assert 6 <= pings <= 9, pings
        # STATUS follows what the daemon does
        status = seen_or_receive(notify_socket, "finished 1,", seen)
        assert status.startswith("STATUS=NORMAL") and "queued P0 0 P1 0" in status, status
        # STOPPING on SIGTERM, before the process ends
        daemon.process.terminate()
        receive_until(notify_socket, "STOPPING=1", seen)
        assert daemon.process.wait(timeout=20) == 0
    finally:
        daemon.kill()
        daemon.log.close()


def test_the_notify_variables_are_not_inherited(tmp_path: Path) -> None:
    environ = {
        "NOTIFY_SOCKET": str(tmp_path / "n"),
        "WATCHDOG_USEC": "1000000",
        "WATCHDOG_PID": "1",
        "A": "b",
    }
    notifier = Notifier(environ)
    assert environ == {"A": "b"}  # the embedded redis-server and the jobs cannot talk to systemd
    assert notifier.enabled and notifier.watchdog_s is None  # the watchdog is for another process
    notifier.close()


def test_watchdog_pings_only_when_the_loop_ticks(notify_socket: socket.socket) -> None:
    notifier = Notifier(
        {
            "NOTIFY_SOCKET": notify_socket.getsockname(),
            "WATCHDOG_USEC": "2000000",
            "WATCHDOG_PID": str(os.getpid()),
        }
    )
    assert notifier.watchdog_s == 1.0
    notifier.tick(100.0)
    notifier.tick(100.5)  # within the half interval: no second ping
    notifier.tick(101.0)
    notifier.status("x")
    notifier.status("x")  # unchanged: not sent again
    notifier.close()
    notify_socket.settimeout(0.2)
    messages = []
    with pytest.raises(TimeoutError):
        while True:
            messages.append(notify_socket.recv(100).decode())
    assert messages == ["WATCHDOG=1", "WATCHDOG=1", "STATUS=x"]


def test_an_abstract_socket_address_works() -> None:
    name = f"asched-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        notifier.ready("up")
        notifier.close()
        assert sock.recv(100) == b"READY=1\nSTATUS=up"
    finally:
        sock.close()
