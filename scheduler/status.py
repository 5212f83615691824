"""What each daemon reports about itself, and the `status` view that gathers it with queue depths.

A daemon publishes a small JSON document under its own key every housekeeping turn, with a TTL of one
lease, so `status` lists exactly the live daemons, on any host, from Redis alone. The same reading
gives systemd its one-line STATUS and StatsD its gauges.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from adaptive_scheduler import controls, keys, task_profiles, tasks
from adaptive_scheduler.errors import SchedulerError
from adaptive_scheduler.governor.profiles import Rule
from adaptive_scheduler.metrics import metric_segment
from adaptive_scheduler.model import Priority
from adaptive_scheduler.task_profiles import TaskRow

if TYPE_CHECKING:
    from adaptive_scheduler.daemon import Daemon


@dataclass(frozen=True, slots=True)
class SlotStatus:
    index: int
    pid: int | None
    job_id: str | None
    task: str | None
    running_s: float | None
    rss_mb: float | None = None
    job_grew_mb: float | None = None  # RSS the running job added since the slot was ready
    heap_mb: float | None = None  # the slot's malloc in use
    p0_lane: bool = False  # the extra slot for P0 jobs only


@dataclass(frozen=True, slots=True)
class MemoryStatus:
    level: str
    pressure_percent: float
    used_mb: float
    budget_mb: float
    budget_source: str
    daemon_rss_mb: float
    heap_mb: float = 0.0  # daemon's malloc in use + each slot's growth: the other half of the formula
    daemon_heap_mb: float = 0.0
    psi_some_avg10: float | None = None  # kernel memory PSI, % of the last 10 s (None: no PSI here)
    psi_full_avg10: float | None = None


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    id: str
    pid: int
    slot_mode: str
    local: dict[str, int]
    slots: list[SlotStatus]
    counts: dict[str, int]
    memory: MemoryStatus | None = None
    at: float = 0.0
    breakers: dict[str, str] = field(default_factory=dict)  # task -> open | half_open
    paused: list[str] = field(default_factory=list)  # priorities it claims nothing from (`pause`)

    @classmethod
    def of(cls, daemon: Daemon) -> DaemonStatus:
        now_mono = time.monotonic()
        sample = daemon.governor.sample
        slots = [
            SlotStatus(
                slot.index,
                slot.pid,
                slot.running.job.id if slot.running else None,
                slot.running.call.func_path if slot.running else None,
                round(now_mono - slot.running.started_mono, 3) if slot.running else None,
                _mb(sample.slot_rss.get(slot.index)) if sample else None,
                _mb(sample.slot_growth.get(slot.index)) if sample else None,
                _mb(sample.slot_heap.get(slot.index)) if sample else None,
                daemon.pool.is_lane(slot),
            )
            for slot in daemon.pool.slots
        ]
        memory = None
        if sample is not None:
            memory = MemoryStatus(
                daemon.governor.level.name,
                round(sample.percent, 1),
                _mb(sample.used) or 0.0,
                _mb(sample.budget) or 0.0,
                sample.budget_source,
                _mb(sample.daemon_rss) or 0.0,
                _mb(sample.heap) or 0.0,
                _mb(sample.daemon_heap) or 0.0,
                sample.psi.some if sample.psi else None,
                sample.psi.full if sample.psi else None,
            )
        local = {priority.name: n for priority, n in waiting_for_slot(daemon).items()}
        counts = dict(daemon.counts)
        if daemon.periodic is not None:
            counts |= {f"periodic_{name}": n for name, n in daemon.periodic.counts.items()}
        return cls(
            daemon.id,
            os.getpid(),
            daemon.settings.slot_mode,
            local,
            slots,
            counts,
            memory,
            time.time(),
            daemon.breakers.not_closed(),
            [priority.name for priority in sorted(daemon.paused)],
        )


def waiting_for_slot(daemon: Daemon) -> dict[Priority, int]:
    """Claimed jobs not started, per priority: in the local queue, or waiting in a slot behind its job."""
    counts = daemon.local.counts()
    for running in daemon.pool.waiting():
        counts[running.job.priority] += 1
    return counts


def status_line(daemon: Daemon, depths: list[int]) -> str:
    """The daemon in one line, for sd_notify STATUS (`systemctl status`): level, pressure, queues."""
    sample = daemon.governor.sample
    pressure = f" {sample.percent:.1f} % of {sample.budget / 2**20:.0f} MiB" if sample else ""
    queued = " ".join(f"P{i} {n}" for i, n in enumerate(depths))
    busy = sum(1 for slot in daemon.pool.slots if slot.busy)
    paused = f"; paused {' '.join(p.name for p in sorted(daemon.paused))}" if daemon.paused else ""
    return (
        f"{daemon.governor.level.name}{pressure}; queued {queued}{paused}; local {len(daemon.local)}; "
        f"slots {busy}/{len(daemon.pool.slots)} busy; finished {daemon.counts['finished']}, "
        f"failed {daemon.counts['failed']}"
    )


def gauges(daemon: Daemon, depths: list[int]) -> dict[str, float]:
    """The gauges of the metrics catalogue (`adaptive_scheduler.metrics.CATALOGUE`), read now."""
    values: dict[str, float] = {
        "slots.busy": sum(1 for slot in daemon.pool.slots if slot.busy),
        "slots.total": len(daemon.pool.slots),
        "breakers.open": len(daemon.breakers.not_closed()),
        "pressure.level": int(daemon.governor.level),
    }
    local = waiting_for_slot(daemon)
    for priority, depth in zip(Priority, depths, strict=True):
        values[f"queue.local.{priority.name.lower()}"] = local.get(priority, 0)
        values[f"queue.redis.{priority.name.lower()}"] = depth
        values[f"paused.{priority.name.lower()}"] = int(priority in daemon.paused)
    sample = daemon.governor.sample
    if sample is not None:
        values |= {
            "pressure.percent": round(sample.percent, 2),
            "memory.used_bytes": sample.used,
            "memory.budget_bytes": sample.budget,
            "memory.daemon.rss_bytes": sample.daemon_rss,
            "memory.heap_bytes": sample.heap,
            "memory.daemon.heap_bytes": sample.daemon_heap,
        }
        if sample.psi is not None:
            values["memory.psi.some_avg10"] = sample.psi.some
            values["memory.psi.full_avg10"] = sample.psi.full
        for index, rss in sample.slot_rss.items():
            values[f"memory.slot.{index}.rss_bytes"] = rss
            values[f"memory.slot.{index}.growth_bytes"] = sample.slot_growth.get(index, 0)
        for index, heap in sample.slot_heap.items():
            values[f"memory.slot.{index}.heap_bytes"] = heap
    store = daemon.profiles
    return values | task_profiles.gauges(store.profiles, time.time(), store.rule, task_segment)


def task_segment(func_path: str) -> str:
    """A task in a metric path, as the `tasks.{task}.run` timer names it: its @task name, else its path."""
    info = tasks.lookup(func_path)
    return metric_segment(info.name if info else func_path)


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def publish(client: redis.Redis, status: DaemonStatus, ttl_s: float) -> None:
    """Store `status` for `ttl_s` seconds."""
    client.set(keys.daemon_status(status.id), json.dumps(asdict(status)), px=int(ttl_s * 1000))


@dataclass(frozen=True, slots=True)
class Overview:
    """Everything `status` shows.

    A queue's `started` is RQ's started registry, what `rq info` calls executing: the jobs running in a
    slot plus those claimed into a daemon's local queue, waiting for a slot. Each queue row splits it into
    `waiting_for_slot` (summed over the daemons' local queues) and `running` (the rest); each daemon gets
    the same two counts. The daemons publish once per renewal interval, so the split may lag a second.
    """

    queues: dict[str, dict[str, Any]]
    totals: dict[str, int]  # summed over the live daemons, since each started
    daemons: list[dict[str, Any]] = field(default_factory=list)
    task_profiles: list[TaskRow] = field(default_factory=list)  # largest predicted peak first
    task_profiles_error: str | None = None  # why the profiles could not be read at all
    paused: dict[str, dict[str, Any]] = field(default_factory=dict)  # priority -> since, until, by


def gather(client: redis.Redis, queue_names: tuple[str, ...], rule: Rule) -> Overview:
    """Read the overview from Redis: depth and registries per priority, live daemons, totals, and the
    task profiles (predicted with `rule`)."""
    with client.pipeline(transaction=False) as pipe:
        for name in queue_names:
            pipe.llen(keys.queue(name))
            pipe.zcard(keys.started(name))
            pipe.zcard(keys.finished(name))
            pipe.zcard(keys.failed(name))
            pipe.zcard(keys.scheduled(name))
        results = [
            -1 if isinstance(value, redis.ResponseError) else value  # a queue key that is not a list
            for value in pipe.execute(raise_on_error=False)
        ]
    daemons = _daemons(client)
    queues = {}
    for i, name in enumerate(queue_names):
        queued, started, finished, failed, scheduled = results[i * 5 : i * 5 + 5]
        waiting = sum(daemon["local"].get(f"P{i}", 0) for daemon in daemons)
        queues[f"P{i}"] = {
            "queue": name,
            "queued": queued,
            "started": started,
            "running": max(0, started - waiting),
            "waiting_for_slot": waiting,
            "finished": finished,
            "failed": failed,
            "scheduled": scheduled,
        }
    totals: dict[str, int] = {}
    for daemon in daemons:
        for name, count in daemon["counts"].items():
            totals[name] = totals.get(name, 0) + count
    try:  # a profiles key of the wrong type costs its section, not the whole overview
        profiles, error = task_profiles.gather(client, rule, time.time()), None
    except SchedulerError as exc:
        profiles, error = [], str(exc)
    now = time.time()
    pauses = controls.read_pauses(client)
    paused = {p.name: pause.as_dict() for p, pause in sorted(pauses.items()) if pause.active(now)}
    return Overview(queues, totals, daemons, profiles, error, paused)


def _daemons(client: redis.Redis) -> list[dict[str, Any]]:
    """The live daemons' published status, each with its jobs `running` (in a slot) and
    `waiting_for_slot` (claimed, held in its local queue)."""
    names = sorted(client.scan_iter(match=keys.daemon_status("*"), count=100))
    values = client.mget(names) if names else []
    daemons = [json.loads(value) for value in values if value]
    for daemon in daemons:
        daemon["running"] = sum(1 for slot in daemon["slots"] if slot["job_id"])
        daemon["waiting_for_slot"] = sum(daemon["local"].values())
    return daemons
