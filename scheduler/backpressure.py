"""Back-pressure for producers: how hard the daemons are pressed, before a job is enqueued.

A producer that keeps enqueuing P2/P3 work while the daemons shed it only grows the backlog. This
helper reads the cluster's memory level (the highest among the live daemons) and the paused
priorities, in one round trip (two small hash reads, `adaptive_scheduler.controls`) cached for
`max_age_s`, and refuses (or only flags) jobs of the priorities it guards at or above a threshold.

It needs only `redis` and `rq` at run time (no settings, no governor), so it works from a producer's
venv that has this package installed beside plain RQ:

    bp = Backpressure(redis_conn)                   # refuse P2/P3 at HIGH or EMERGENCY
    job = bp.enqueue(Queue("p3", connection=redis_conn, serializer=JSONSerializer), "myapp.jobs.f", 1)
    # raises Backpressured(level="EMERGENCY", priority=P3) instead of enqueuing while pressed
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import redis
from adaptive_scheduler import controls, keys
from adaptive_scheduler.errors import SchedulerError
from adaptive_scheduler.model import Priority

if TYPE_CHECKING:
    from rq import Queue
    from rq.job import Job

DEFAULT_QUEUES = ("p0", "p1", "p2", "p3")  # the daemon's default `queues`, P0..P3
FLAG_META = "asched_backpressure"  # job.meta key holding the level a flagged job was enqueued at


@dataclass(frozen=True, slots=True)
class Pressure:
    """The cluster as a producer sees it."""

    level: str  # the highest level among the live daemons: NORMAL, ELEVATED, HIGH or EMERGENCY
    daemons: int  # live daemons that reported one (0: none alive; level NORMAL)
    paused: frozenset[Priority]  # priorities no daemon claims from now

    def at_least(self, level: str) -> bool:
        return controls.LEVEL_NAMES.index(self.level) >= controls.LEVEL_NAMES.index(level)


class Backpressured(SchedulerError):
    """A job refused at the source: the daemons are pressed (or its priority is paused)."""

    def __init__(self, priority: Priority, pressure: Pressure, why: str) -> None:
        super().__init__(f"{priority.name} job refused: {why}")
        self.priority = priority
        self.pressure = pressure
        self.level = pressure.level


class Backpressure:
    """Reads the pressure (cached `max_age_s`) and decides whether a job of a priority may be enqueued.

    Args:
        connection: the producer's Redis client (the daemons' Redis).
        threshold: the lowest level that refuses (or flags) jobs of the `guarded` priorities.
        guarded: the priorities subject to the threshold (default P2 and P3; P0 is never refused for a level).
        mode: "refuse" raises `Backpressured`; "flag" enqueues anyway and records the level in the job's
            meta (`asched_backpressure`), so the producer can log, slow down or count.
        refuse_paused: also refuse jobs of paused priorities (default: they are enqueued and wait).
        queues: the queue names of P0..P3, as in the daemons' `queues` setting.
        max_age_s: how long one reading is reused.
    """

    def __init__(
        self,
        connection: redis.Redis,
        threshold: str = "HIGH",
        guarded: Iterable[Priority | str | int] = (Priority.P2, Priority.P3),
        mode: Literal["refuse", "flag"] = "refuse",
        refuse_paused: bool = False,
        queues: Sequence[str] = DEFAULT_QUEUES,
        max_age_s: float = 1.0,
    ) -> None:
        if threshold not in controls.LEVEL_NAMES:
            raise ValueError(f"unknown level {threshold!r} (use one of {', '.join(controls.LEVEL_NAMES)})")
        if mode not in ("refuse", "flag"):
            raise ValueError(f"unknown mode {mode!r} (use 'refuse' or 'flag')")
        if len(queues) != len(Priority):
            raise ValueError(f"queues needs exactly {len(Priority)} names, P0..P3, got {list(queues)}")
        self.connection = connection
        self.threshold = threshold
        self.guarded = frozenset(_priority(p) for p in guarded)
        self.mode = mode
        self.refuse_paused = refuse_paused
        self.queues = tuple(queues)
        self.max_age_s = max_age_s
        self._cached: Pressure | None = None
        self._read_mono = 0.0

    def read(self) -> Pressure:
        """The current pressure: at most one Redis round trip per `max_age_s`."""
        now_mono = time.monotonic()
        if self._cached is None or now_mono - self._read_mono >= self.max_age_s:
            self._cached = read(self.connection)
            self._read_mono = now_mono
        return self._cached

    def why_not(self, priority: Priority | str | int) -> str | None:
        """Why a job of `priority` should not be enqueued now, or None if it may."""
        wanted = _priority(priority)
        return verdict(self.read(), wanted, self.threshold, self.guarded, self.refuse_paused)

    def check(self, priority: Priority | str | int) -> Pressure:
        """The pressure, if a job of `priority` may be enqueued now.

        Raises:
            Backpressured: it may not (mode "refuse" only; in mode "flag" nothing is raised).
        """
        wanted = _priority(priority)
        why = self.why_not(wanted)
        if why is not None and self.mode == "refuse":
            raise Backpressured(wanted, self.read(), why)
        return self.read()

    def enqueue(self, queue: Queue, f: Any, *args: Any, **kwargs: Any) -> Job:
        """`queue.enqueue(f, *args, **kwargs)` unless the pressure refuses a job of the queue's priority.

        Raises:
            Backpressured: refused (mode "refuse").
            ValueError: `queue` is not one of the daemons' queues.
        """
        priority = self.priority_of(queue.name)
        pressure = self.check(priority)
        if self.mode == "flag" and self.why_not(priority) is not None:
            meta = dict(kwargs.pop("meta", None) or {})
            kwargs["meta"] = meta | {FLAG_META: pressure.level}
        return queue.enqueue(f, *args, **kwargs)

    def priority_of(self, queue_name: str) -> Priority:
        try:
            return Priority(self.queues.index(queue_name))
        except ValueError:
            known = list(self.queues)
            raise ValueError(f"queue {queue_name!r} is none of the daemons' queues {known}") from None


def read(connection: redis.Redis, now: float | None = None) -> Pressure:
    """The pressure now, uncached: one round trip reading `asched:levels` and `asched:paused`."""
    with connection.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.LEVELS)
        pipe.hgetall(keys.PAUSED)
        raw_levels, raw_pauses = pipe.execute()
    now = time.time() if now is None else now
    levels = controls.parse_levels(raw_levels, now)
    paused = controls.active(controls.parse_pauses(raw_pauses), now)
    return Pressure(controls.highest(levels.values()), len(levels), paused)


def backpressure(connection: redis.Redis) -> Pressure:
    """The cluster's pressure now (uncached; `Backpressure` caches): its level, live daemons, pauses."""
    return read(connection)


def verdict(
    pressure: Pressure, priority: Priority, threshold: str, guarded: frozenset[Priority], refuse_paused: bool
) -> str | None:
    """Why a job of `priority` should not be enqueued under `pressure`, or None (pure)."""
    if refuse_paused and priority in pressure.paused:
        return f"{priority.name} is paused (adaptive-scheduler resume {priority.name})"
    if priority in guarded and pressure.at_least(threshold):
        return (
            f"the daemons are under memory pressure {pressure.level} "
            f"(refusing {', '.join(sorted(p.name for p in guarded))} at {threshold} or above)"
        )
    return None


def _priority(value: Priority | str | int) -> Priority:
    if isinstance(value, Priority):
        return value
    return Priority.parse(str(value))
