"""StatsD metrics of one daemon: what a dashboard charts.

Every name is `<prefix>.<metric>`, from a fixed catalogue (`CATALOGUE`, documented in the README):
priorities, outcomes, slot indexes and task names are the only variable parts, so the number of
series is bounded (a job id never appears in a name). Counters are summed in the daemon and sent once
per flush, timers are batched into full UDP packets, gauges are set once per flush: a busy daemon
sends a few packets per second, not one per job. With no `statsd_url`, every call is a no-op.
"""

from __future__ import annotations

import re
import socket
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from adaptive_scheduler.model import Outcome, Priority
from adaptive_scheduler.outcomes import count_name

if TYPE_CHECKING:
    import statsd

UDP_PAYLOAD = 1400  # fits one Ethernet frame
PRIORITIES = tuple(p.name.lower() for p in Priority)
OUTCOME_COUNTERS = ("started", "resumed", *sorted({count_name(o) for o in Outcome}))

# name pattern -> (kind, meaning). `{p}`: p0..p3; `{n}`: slot index; `{task}`: task name.
CATALOGUE: dict[str, tuple[str, str]] = {
    "pressure.percent": ("gauge", "memory in use, % of the budget"),
    "pressure.level": ("gauge", "0 NORMAL, 1 ELEVATED, 2 HIGH, 3 EMERGENCY"),
    "memory.used_bytes": ("gauge", "memory counted against the budget"),
    "memory.budget_bytes": ("gauge", "the budget"),
    "memory.heap_bytes": ("gauge", "the daemon's malloc in use plus each slot's growth"),
    "memory.daemon.rss_bytes": ("gauge", "the daemon process's RSS"),
    "memory.daemon.heap_bytes": ("gauge", "the daemon process's malloc in use"),
    "memory.slot.{n}.rss_bytes": ("gauge", "slot n's RSS"),
    "memory.slot.{n}.growth_bytes": ("gauge", "what slot n's job added to its RSS"),
    "memory.slot.{n}.heap_bytes": ("gauge", "slot n's malloc in use"),
    "memory.psi.some_avg10": ("gauge", "kernel memory PSI: % of the last 10 s some tasks stalled on memory"),
    "memory.psi.full_avg10": ("gauge", "kernel memory PSI: % of the last 10 s all tasks stalled on memory"),
    "queue.local.{p}": ("gauge", "jobs claimed, not started: in the local queue or waiting in a slot"),
    "queue.redis.{p}": ("gauge", "jobs waiting in Redis"),
    "paused.{p}": ("gauge", "1 while the priority is paused (`pause`): this daemon claims none of it"),
    "slots.busy": ("gauge", "slots running a job"),
    "slots.total": ("gauge", "slots"),
    "breakers.open": ("gauge", "tasks whose circuit breaker is open or half-open"),
    **{f"jobs.{name}.{{p}}": ("counter", f"jobs {name.replace('_', ' ')}") for name in OUTCOME_COUNTERS},
    "jobs.enqueued.{p}": ("counter", "jobs this daemon enqueued (periodic jobs)"),
    "periodic.fired": ("counter", "periodic ticks enqueued by this daemon"),
    "periodic.skipped": ("counter", "periodic heartbeat ticks skipped under memory pressure"),
    "breaker.opened": ("counter", "circuit breaker transitions to open"),
    "breaker.closed": ("counter", "circuit breaker transitions to closed"),
    "jobs.wait.{p}": ("timer", "ms from enqueue to start"),
    "tasks.{task}.run": ("timer", "ms a job of this task ran (finished or failed)"),
    "tasks.{task}.memory.predicted_bytes": (
        "gauge",
        "what the task's next run is expected to add at its peak (learned profile; the 50 largest)",
    ),
    "tasks.{task}.memory.last_peak_bytes": ("gauge", "what the task's last run added at its peak"),
    "tasks.{task}.memory.stops": ("gauge", "runs of the task stopped for memory since its profile began"),
}


def metric_segment(text: str) -> str:
    """`text` as one Graphite path segment: letters, digits, '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text) or "_"


def expand_prefix(prefix: str) -> str:
    """The configured prefix with `{host}` replaced by this host's short name."""
    return prefix.replace("{host}", metric_segment(socket.gethostname().split(".")[0]))


class Metrics:
    """Buffers this daemon's metrics and sends them to StatsD on `flush()`."""

    def __init__(self, url: str | None, prefix: str) -> None:
        self.prefix = expand_prefix(prefix)
        self._counts: Counter[str] = Counter()
        self._client: statsd.StatsClient | None = None
        if url:
            import statsd  # here: a daemon without metrics does not carry the client

            host, _, port = url.removeprefix("udp://").rpartition(":")
            self._client = statsd.StatsClient(host, int(port), prefix=self.prefix, maxudpsize=UDP_PAYLOAD)
            self._timings = self._client.pipeline()

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def count(self, name: str, n: int = 1) -> None:
        if self._client is not None:
            self._counts[name] += n

    def job(self, event: str, priority: Priority) -> None:
        """A job event (started, finished, shed, ...) of one priority."""
        if self._client is not None:
            self._counts[f"jobs.{event}.{PRIORITIES[priority]}"] += 1

    def waited(self, priority: Priority, seconds: float) -> None:
        if self._client is not None:
            self._timings.timing(f"jobs.wait.{PRIORITIES[priority]}", max(0.0, seconds) * 1000)

    def ran(self, task: str, seconds: float) -> None:
        if self._client is not None:
            self._timings.timing(f"tasks.{metric_segment(task)}.run", max(0.0, seconds) * 1000)

    def flush(self, gauges: Mapping[str, float]) -> None:
        """Send the summed counters, the batched timers and the current gauges (UDP: never blocks)."""
        if self._client is None:
            return
        pipe = self._timings
        for name, n in self._counts.items():
            pipe.incr(name, n)
        self._counts.clear()
        for name, value in gauges.items():
            pipe.gauge(name, value)
        pipe.send()  # the statsd client drops a packet nobody receives: metrics are best-effort
        self._timings = self._client.pipeline()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
