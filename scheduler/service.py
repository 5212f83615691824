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
from adaptive_scheduler import proctitle
from adaptive_scheduler.daemon import Daemon
from adaptive_scheduler.exits import EXIT_SOFTWARE
from adaptive_scheduler.notify import Notifier
from adaptive_scheduler.redis_server import RedisServer
from loguru import logger

if TYPE_CHECKING:
    from adaptive_scheduler.settings import Settings

PULSE_WHILE_WAITING_S = 0.1


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
        proctitle.set_title(f"daemon {daemon.id}")
        signals = _note_signals()
        if not _join(daemon, signals):
            return 0
        daemon.startup()
        demo_ids = []
        if demo:
            from adaptive_scheduler.demo import enqueue_demo

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
    """One tick; a Redis outage or any Redis error is logged once, waited out with backoff, and does not
    stop the daemon."""
    _act_on_signals(daemon, signals)
    try:
        done = daemon.tick()
        if outage[0]:
            daemon.client.ping()  # a turn may make no Redis call at all: ask before saying it is back
    except redis.RedisError as exc:  # no Redis error stops the daemon: each one is waited out
        trouble = redis_trouble(exc)
        daemon.redis_failed()
        if not outage[0]:
            logger.warning("{}, retrying with backoff: {}", trouble, exc)
        daemon.notifier.status(f"DEGRADED: {trouble} ({exc}); retrying with backoff")
        daemon.notifier.tick(time.monotonic())  # the loop is alive: only a hung loop should miss pings
        # never longer than a renewal interval: peers wait one lease after Redis is back before they
        # reclaim, so a daemon must be retrying (and renew its lease) well within it
        cap_s = min(daemon.lease.renewal_interval_s(), daemon.notifier.watchdog_s or 5.0)
        _wait_alive(daemon, backoff_s(outage[0], cap_s=cap_s))
        outage[0] += 1
        return daemon.stop_requested and daemon.force_stop
    if outage[0]:
        logger.info("Redis reachable again after {} attempts", outage[0])
        outage[0] = 0
    return done


def redis_trouble(exc: redis.RedisError) -> str:
    """What a Redis error means for the daemon, in a few words (the DEGRADED status and the log).

    Every one is answered the same way (back off, keep the outcomes not yet written, retry: a claim is
    part of the same script as the settle, so nothing is claimed that cannot be settled), but an
    operator needs to know which it is: a restart, a full Redis, a replica after a failover.
    """
    for kind, meaning in ERROR_CLASSES:  # redis-py strips the reply's code for these
        if isinstance(exc, kind):
            return meaning
    text = str(exc)
    for prefix, meaning in REPLY_PREFIXES:
        if text.startswith(prefix):
            return meaning
    return "Redis refused a command"


E = redis.exceptions
ERROR_CLASSES: tuple[tuple[type[Exception], str], ...] = (
    (E.BusyLoadingError, "Redis is loading its data after a restart"),  # before ConnectionError: a subclass
    (E.OutOfMemoryError, "Redis is full (maxmemory reached; it refuses writes)"),
    (E.ReadOnlyError, "Redis is a read-only replica (a failover, or a wrong address)"),
    (E.MasterDownError, "Redis replica lost its master"),
    (E.NoPermissionError, "the Redis user lacks a permission"),
    (E.AuthenticationError, "Redis refused the credentials"),
    (E.ConnectionError, "Redis unreachable"),
    (E.TimeoutError, "Redis unreachable"),
)
REPLY_PREFIXES = (
    ("BUSY", "Redis is busy running a script"),
    ("MISCONF", "Redis cannot persist and refuses writes"),
    ("NOPERM", "the Redis user lacks a permission"),
    ("WRONGTYPE", "a Redis key holds the wrong type"),
)


def _join(daemon: Daemon, signals: list[int]) -> bool:
    """Join Redis; False if a stop signal came first. An unreachable Redis stops start-up (exit 69:
    systemd tries again later); any other Redis error (full, loading, read-only after a failover) is
    waited out here, DEGRADED, instead of a restart loop."""
    attempt = 0
    while not signals:
        try:
            daemon.join()
            return True
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not isinstance(exc, redis.exceptions.BusyLoadingError):
                raise
            _starting_later(daemon, exc, attempt)
        except redis.RedisError as exc:
            _starting_later(daemon, exc, attempt)
        attempt += 1
    return False


def _starting_later(daemon: Daemon, exc: redis.RedisError, attempt: int) -> None:
    trouble = redis_trouble(exc)
    if attempt == 0:
        logger.warning("cannot start yet: {} ({}); retrying with backoff", trouble, exc)
    daemon.notifier.status(f"DEGRADED: cannot start yet: {trouble} ({exc})")
    time.sleep(backoff_s(attempt))


def _wait_alive(daemon: Daemon, seconds: float) -> None:
    """Sleep through a backoff while keeping the pulse beating: the slots' jobs run on through a Redis
    outage (whether they are still this daemon's is for the lease renewal to say once Redis is back)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        daemon.pulse.beat(time.monotonic())
        time.sleep(min(left, PULSE_WHILE_WAITING_S))


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
            logger.warning(
                "{} after {} s: stopping now", _overdue(daemon, outage[0] > 0), daemon.settings.stop_timeout_s
            )
            daemon.request_stop()


def _overdue(daemon: Daemon, redis_away: bool) -> str:
    """Why a stop is still not done at its deadline: jobs still running, or (their jobs ended) Redis
    still away, so the outcomes could not be written (it waits that long for Redis to come back)."""
    running = sum(slot.busy for slot in daemon.pool.slots)
    if running:
        return f"{running} jobs still running (they go back to the front of their queues)"
    if redis_away:
        return "Redis still unreachable, so the outcomes of the jobs that ended are not written"
    return "the last outcomes not written yet"


def _report_demo(daemon: Daemon, ids: list[str]) -> list[str]:
    """Log the demo's results once all its jobs have ended; returns the ids still to report."""
    from adaptive_scheduler.demo import report

    table = report(daemon.client, ids, daemon.settings.serializer)
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
