"""`run`: start Redis if none is configured, run the daemon until a signal, stop everything cleanly.

Signal handlers only set flags; the loop notices them within one tick. The first SIGTERM/SIGINT stops
intake and lets running jobs finish (up to `stop_timeout_s`); a second one stops at once. Either way,
jobs that did not finish go back to the front of their queues: delivery is at-least-once.
"""

from __future__ import annotations

import faulthandler
import random
import signal
import time
from types import FrameType
from typing import TYPE_CHECKING

import redis
from loguru import logger

from scheduler.daemon import Daemon
from scheduler.exits import EXIT_SOFTWARE
from scheduler.notify import Notifier
from scheduler.redis_server import RedisServer

if TYPE_CHECKING:
    from settings import Settings


def serve(settings: Settings, demo: bool = False, until_idle: bool = False) -> int:
    """Run one daemon in the foreground; returns the process exit code."""
    notifier = Notifier()  # read and unset first: the embedded redis-server must not inherit it
    embedded = None
    url = settings.redis_url_text()
    if url is None:
        embedded = RedisServer(settings.state_dir, persistent=True).start()
        url = embedded.url
        logger.info("no ASCHED_REDIS_URL: started embedded redis-server at {}", url)
    try:
        daemon = Daemon(settings, url, notifier=notifier)
        signals = _note_signals()
        daemon.startup()
        demo_ids = []
        if demo:
            from scheduler.demo import enqueue_demo

            demo_ids = enqueue_demo(daemon.client, settings)
        try:
            _loop(daemon, until_idle, demo_ids, signals)
        except Exception:  # a bug escaped a tick: say so loudly, stop cleanly, exit for a restart
            logger.opt(exception=True).critical("the daemon loop failed; stopping (exit code 70)")
            return EXIT_SOFTWARE
        finally:
            daemon.shutdown()
    finally:
        if embedded is not None:
            embedded.stop()
        notifier.close()
    return 0


def backoff_s(attempt: int, base_s: float = 0.1, cap_s: float = 5.0) -> float:
    """Full-jitter exponential backoff: a random wait in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap_s, base_s * 2**attempt))


def _tick(daemon: Daemon, outage: list[int], signals: list[int]) -> bool:
    """One tick; a Redis outage is logged once, waited out with backoff, and does not stop the daemon."""
    _act_on_signals(daemon, signals)
    try:
        done = daemon.tick()
        if outage[0]:
            daemon.client.ping()  # a turn may make no Redis call at all: ask before saying it is back
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        if not outage[0]:
            logger.warning("Redis unreachable, retrying with backoff: {}", exc)
        daemon.notifier.status(f"DEGRADED: Redis unreachable ({exc}); retrying with backoff")
        daemon.notifier.tick(time.monotonic())  # the loop is alive: only a hung loop should miss pings
        time.sleep(min(backoff_s(outage[0]), daemon.notifier.watchdog_s or 5.0))
        outage[0] += 1
        return daemon.stop_requested and daemon.force_stop
    if outage[0]:
        logger.info("Redis reachable again after {} attempts", outage[0])
        outage[0] = 0
    return done


def _loop(daemon: Daemon, until_idle: bool, demo_ids: list[str], signals: list[int]) -> None:
    stop_deadline: float | None = None
    outage = [0]
    while not _tick(daemon, outage, signals):
        if demo_ids and daemon.is_idle():
            demo_ids = _report_demo(daemon, demo_ids)
        if until_idle and not daemon.stop_requested and daemon.is_idle():
            logger.info("all queues are empty: stopping (--until-idle)")
            daemon.request_stop()
        if daemon.stop_requested and stop_deadline is None:
            stop_deadline = time.monotonic() + daemon.settings.stop_timeout_s
        if stop_deadline is not None and time.monotonic() > stop_deadline and not daemon.force_stop:
            logger.warning("jobs still running after {} s: putting them back", daemon.settings.stop_timeout_s)
            daemon.request_stop()


def _report_demo(daemon: Daemon, ids: list[str]) -> list[str]:
    """Log the demo's results once all its jobs have ended; returns the ids still to report."""
    from scheduler.demo import report

    table = report(daemon.client, ids)
    if table is None:
        return ids
    logger.info("{}\n(keep enqueueing: `adaptive-scheduler enqueue add '[1, 2]'`; Ctrl-C stops)", table)
    return []


def _note_signals() -> list[int]:
    """Have SIGTERM and SIGINT noted in the returned list, for the loop to act on (`_act_on_signals`).

    The handler does nothing else: it runs between any two bytecodes of the loop, possibly inside a
    log call (loguru's lock held: it refuses a nested call, and that log line is lost) or halfway
    through a message to a slot. It interrupts the loop's poll, which resumes for at most one tick
    (0.1 s). SIGUSR2 makes Python print every thread's stack to stderr (the log): where is it stuck?"""
    received: list[int] = []
    faulthandler.register(signal.SIGUSR2, all_threads=True)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return received


def _act_on_signals(daemon: Daemon, received: list[int]) -> None:
    """First signal: stop after running jobs finish; a second: stop at once (see `request_stop`)."""
    while received:
        signum = received.pop(0)
        how = "at once" if daemon.stop_requested else "after running jobs finish"
        logger.info("{} received: stopping {}", signal.Signals(signum).name, how)
        daemon.request_stop()
