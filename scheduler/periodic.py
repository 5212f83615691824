"""Periodic jobs: APScheduler's triggers say when; the daemon's loop enqueues each tick into Redis.

Why not an APScheduler scheduler object: its BackgroundScheduler runs a thread, and the daemon forks
slot processes, which must not happen while another thread may hold a lock (logging's, say). The
triggers (`IntervalTrigger`, `CronTrigger`) are the part worth reusing: the loop asks them for the next
fire time and fires when it is due, on its own thread.

Several daemons share one Redis, so every daemon computes the same fire times (intervals are aligned
to the Unix epoch; cron is wall-clock UTC) and a tick is enqueued by whichever daemon first sets its
dedup key (`SET NX` with a TTL). A daemon that was down, or a loop that was late, fires a missed
tick once, never a backlog of them. A heartbeat tick is not enqueued while this daemon's memory
pressure is ELEVATED or worse: it is counted as skipped (nothing piles up in Redis), and enqueued
heartbeats carry an RQ ttl of one interval, so one that waits longer than that expires instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import redis
from adaptive_scheduler import tasks
from adaptive_scheduler.errors import ConfigError
from adaptive_scheduler.governor.pressure import Level
from adaptive_scheduler.keys import OURS
from adaptive_scheduler.metrics import Metrics
from adaptive_scheduler.model import Priority
from adaptive_scheduler.payload import rq_serializer
from loguru import logger

if TYPE_CHECKING:
    from adaptive_scheduler.settings import PeriodicJob
    from apscheduler.triggers.base import BaseTrigger

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_DEDUP_TTL_S = 60
HEARTBEAT_META = "asched_heartbeat"  # in a job's RQ meta: a heartbeat, as @task(heartbeat=True) is


def marked_heartbeat(fields: dict[str, bytes]) -> bool:
    """Whether a claimed job's RQ meta marks it as a heartbeat (periodic heartbeat ticks are)."""
    meta = fields.get("meta")
    if not meta or HEARTBEAT_META.encode() not in meta:
        return False
    try:
        return json.loads(meta).get(HEARTBEAT_META) is True
    except (ValueError, AttributeError):
        return False


def trigger_for(job: PeriodicJob) -> BaseTrigger:
    # imported here, as RQ below: a daemon without periodic jobs does not carry them (about 3 MiB)
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if job.cron is not None:
        return CronTrigger.from_crontab(job.cron, timezone=UTC)
    return IntervalTrigger(seconds=job.every_s, start_date=EPOCH, timezone=UTC)


def dedup_key(name: str, fire_time: datetime) -> str:
    return f"{OURS}periodic:{name}:{int(fire_time.timestamp())}"


@dataclass
class Entry:
    job: PeriodicJob
    trigger: BaseTrigger
    next_fire: datetime
    heartbeat: bool
    priority: Priority
    period_s: float  # interval, or the cron's current gap: the job ttl and the dedup key's TTL


class Periodic:
    """The configured periodic jobs and when each fires next."""

    def __init__(
        self,
        client: redis.Redis,
        jobs: tuple[PeriodicJob, ...],
        queues: tuple[str, ...],
        metrics: Metrics,
        allowed_modules: tuple[str, ...],
        serializer: str = "json",
    ) -> None:
        """Raises ConfigError when a periodic job names a task that may not run. Ticks are enqueued in
        the `serializer` the daemon accepts ("json" or "pickle")."""
        for job in jobs:
            info = tasks.lookup(job.task)
            if not tasks.is_allowed(info.path if info else job.task, allowed_modules):
                allowed = tasks.describe_allowed(allowed_modules)
                raise ConfigError(f"periodic job {job.name!r}: task {job.task!r} is not allowed ({allowed})")
        self._client = client
        self._queues = queues
        self._metrics = metrics
        self._serializer = serializer
        self.counts = {"fired": 0, "skipped": 0}
        now = datetime.now(UTC)
        self._entries = [self._entry(job, now) for job in jobs]

    def next_due(self) -> float | None:
        """Unix time of the next tick, or None when there are no periodic jobs."""
        return min((e.next_fire.timestamp() for e in self._entries), default=None)

    def fire_due(self, now: float, level: Level) -> None:
        """Enqueue (or skip) every tick that is due; each is fired once across all daemons."""
        now_dt = datetime.fromtimestamp(now, UTC)
        for entry in self._entries:
            if entry.next_fire > now_dt:
                continue
            fire_time = entry.next_fire
            entry.next_fire = self._after(entry.trigger, fire_time, now_dt)
            entry.period_s = max(1.0, (entry.next_fire - fire_time).total_seconds())
            ttl_s = max(MIN_DEDUP_TTL_S, int(2 * entry.period_s))
            if not self._client.set(dedup_key(entry.job.name, fire_time), "1", nx=True, ex=ttl_s):
                continue  # another daemon fired this tick
            if entry.heartbeat and level >= Level.ELEVATED:
                self.counts["skipped"] += 1
                self._metrics.count("periodic.skipped")
                logger.bind(periodic=entry.job.name).info(
                    "periodic heartbeat {} skipped: memory pressure {}", entry.job.name, level.name
                )
                continue
            self._enqueue(entry, fire_time)

    def _enqueue(self, entry: Entry, fire_time: datetime) -> None:
        from rq import Queue

        job = entry.job
        info = tasks.lookup(job.task)
        serializer = rq_serializer(self._serializer)
        queue = Queue(self._queues[entry.priority], connection=self._client, serializer=serializer)
        queue.enqueue(
            info.path if info else job.task,
            args=job.args,
            kwargs=job.kwargs,
            job_id=f"periodic-{job.name}-{int(fire_time.timestamp())}",
            ttl=int(entry.period_s) if entry.heartbeat else None,
            meta={HEARTBEAT_META: True} if entry.heartbeat else None,
            description=f"periodic {job.name} ({job.cron or f'every {job.every_s:g} s'})",
            job_timeout=info.timeout_s if info else None,
        )
        self.counts["fired"] += 1
        self._metrics.count("periodic.fired")
        self._metrics.job("enqueued", entry.priority)

    def _entry(self, job: PeriodicJob, now: datetime) -> Entry:
        trigger = trigger_for(job)
        info = tasks.lookup(job.task)
        heartbeat = job.heartbeat if job.heartbeat is not None else bool(info and info.heartbeat)
        first = trigger.get_next_fire_time(None, now)
        period = job.every_s or (trigger.get_next_fire_time(first, first) - first).total_seconds()
        priority = Priority.parse(job.priority or (info.priority if info else None) or "P3")
        return Entry(job, trigger, first, heartbeat, priority, period)

    @staticmethod
    def _after(trigger: BaseTrigger, fire_time: datetime, now: datetime) -> datetime:
        """The first fire time after `now`: ticks missed in between are dropped, not made up."""
        following = trigger.get_next_fire_time(fire_time, now)
        while following is not None and following <= now:
            following = trigger.get_next_fire_time(following, now)
        assert following is not None, "interval and cron triggers never end"
        return following
