"""Stop signals are only noted by the handler and acted on by the loop.

A handler runs between any two bytecodes of the main thread. Before, it logged and asked the daemon
to stop from there; a SIGTERM arriving while the daemon was inside a log call made loguru refuse the
nested call (its lock was held: "deadlock avoided"), so the "SIGTERM received" line was lost, and
the stop was asked from the middle of whatever code the signal interrupted.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from adaptive_scheduler import service
from loguru import logger


class StopRequests:
    """What `_act_on_signals` needs of a daemon: the stop flag and the call that sets it."""

    def __init__(self) -> None:
        self.stop_requested = False
        self.calls = 0

    def request_stop(self) -> None:
        self.calls += 1
        self.stop_requested = True


@pytest.fixture
def restored_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_a_sigterm_during_a_log_call_is_not_lost(restored_handlers: None) -> None:
    received = service._note_signals()
    lines: list[str] = []

    def sink_that_gets_signalled(message: object) -> None:
        lines.append(str(message))
        if "lane opened" in str(message):
            os.kill(os.getpid(), signal.SIGTERM)  # delivered while loguru holds its lock

    sink = logger.add(sink_that_gets_signalled, format="{message}")
    try:
        logger.info("P0 lane opened: every slot is busy")
        assert received == [signal.SIGTERM]
        daemon = StopRequests()
        service._act_on_signals(daemon, received)  # type: ignore[arg-type]
    finally:
        logger.remove(sink)
    assert daemon.stop_requested and daemon.calls == 1
    assert received == []
    assert any("SIGTERM received: stopping after running jobs finish" in line for line in lines)


def test_a_second_signal_asks_to_stop_at_once(restored_handlers: None) -> None:
    received = service._note_signals()
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGTERM)
    daemon = StopRequests()
    service._act_on_signals(daemon, received)  # type: ignore[arg-type]
    assert daemon.calls == 2
