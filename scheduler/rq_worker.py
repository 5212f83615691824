"""The daemon in RQ's worker registry, so that `rq info` and rq-dashboard count it as one RQ worker.

One daemon is one RQ worker, named as the job hashes it writes name it (`adaptive-scheduler:<daemon
id>`). Both supported majors list workers from the set `rq:workers` (or `rq:workers:<queue>`) and load
each from its hash `rq:worker:<name>` (`Worker.refresh`). The hash is written at join, then rewritten
whole, sets included, with every housekeeping round trip, so a Redis that lost it has it back within a
renewal interval. It lives one lease (`lease_ttl_s`: four renewals or more), so a daemon that dies leaves
RQ's list when its claims become recoverable; a clean stop or a rejoin under a new id removes it at once.
The current job is written both ways: rq 2 reads the `current_job` field, rq 3 the worker's executions
set, each member of which needs an `rq:execution:` hash.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis
from adaptive_scheduler import __version__, keys
from adaptive_scheduler.rqtime import rq_timestamp

if TYPE_CHECKING:
    from adaptive_scheduler.daemon import Daemon
    from redis.client import Pipeline

VERSION = f"adaptive-scheduler {__version__}"  # shown as the worker's version; nothing in RQ parses it
STARTED, IDLE, BUSY = "started", "idle", "busy"  # RQ's WorkerStatus values (`rq info` colours the last two)


@dataclass(frozen=True, slots=True)
class Identity:
    """What stays the same for the life of one registration."""

    name: str
    queues: tuple[str, ...]
    hostname: str
    pid: int
    birth: float  # unix s
    python_version: str

    @classmethod
    def here(cls, name: str, queues: Iterable[str], birth: float) -> Identity:
        """This process as the worker `name` serving `queues`."""
        return cls(name, tuple(queues), socket.gethostname(), os.getpid(), birth, sys.version)


@dataclass(frozen=True, slots=True)
class Execution:
    """A job running in a slot, under the execution id of its claim."""

    job_id: str
    execution_id: str
    started: float  # unix s


@dataclass(frozen=True, slots=True)
class Activity:
    """What the daemon does now, in the terms of RQ's worker hash."""

    executions: tuple[Execution, ...] = ()
    successful: int = 0  # jobs finished
    failed: int = 0  # jobs failed, retried ones included (an RQ worker counts those too)
    working_s: float = 0.0  # seconds the slots spent running jobs, summed
    state: str | None = None  # None: BUSY while any slot runs a job, else IDLE


def worker_fields(identity: Identity, activity: Activity, now: float) -> dict[str, str]:
    """The hash `rq:worker:<name>` as `Worker.refresh` of rq 2 and 3 parses it: timestamps in RQ's text
    form (`rq.utils.utcparse`), numbers as text. The current job is the longest-running one; with none,
    `current_job` is left out (the writer deletes it, as `set_current_job_id(None)` does)."""
    current = min(activity.executions, key=lambda e: (e.started, e.job_id), default=None)
    fields = {
        "birth": rq_timestamp(identity.birth),
        "last_heartbeat": rq_timestamp(now),
        "queues": ",".join(identity.queues),
        "pid": str(identity.pid),
        "hostname": identity.hostname,
        "ip_address": "unknown",  # RQ's own word when it cannot tell (it asks CLIENT LIST)
        "version": VERSION,
        "python_version": identity.python_version,
        "state": activity.state or (BUSY if current else IDLE),
        "successful_job_count": str(activity.successful),
        "failed_job_count": str(activity.failed),
        "total_working_time": f"{activity.working_s:.6f}",
        "current_job_working_time": f"{now - current.started:.6f}" if current else "0",
    }
    if current is not None:
        fields["current_job"] = current.job_id
    return fields


def execution_fields(worker_name: str, execution: Execution, now: float) -> dict[str, str]:
    """rq 3's hash of one execution, as `Execution.restore` parses it (times as unix-seconds floats)."""
    return {
        "id": execution.execution_id,
        "job_id": execution.job_id,
        "created_at": f"{execution.started:.6f}",
        "last_heartbeat": f"{now:.6f}",
        "worker_name": worker_name,
    }


def activity_of(daemon: Daemon, now: float, now_mono: float) -> Activity:
    """Read the daemon's slots and counters (`now`: unix s, `now_mono`: the monotonic time with it)."""
    executions = tuple(
        Execution(running.job.id, running.job.execution_id, now - (now_mono - running.started_mono))
        for slot in daemon.pool.slots
        if (running := slot.running) is not None
    )
    counts = daemon.counts
    return Activity(executions, counts["finished"], counts["failed"] + counts["retried"], daemon.working_s)


class Registration:
    """One daemon's entry in RQ's worker registry. Each method adds its commands to the caller's
    pipeline, so registering rides on a round trip the daemon makes anyway."""

    def __init__(self, identity: Identity, ttl_s: float) -> None:
        self.identity = identity
        self.key = keys.rq_worker(identity.name)
        self._ttl_ms = int(ttl_s * 1000)
        self._sets = [keys.RQ_WORKERS, *(keys.rq_workers_of(name) for name in identity.queues)]
        self._executions_key = keys.rq_worker_executions(identity.name)
        self._written: set[str] = set()  # the execution hashes the last heartbeat wrote

    def register(self, pipe: Pipeline, now: float, state: str = STARTED) -> None:
        """Birth: a fresh hash, in `state` until the first heartbeat ("started": the slots are not up yet;
        "idle" on a rejoin, which stopped every job)."""
        pipe.delete(self.key, self._executions_key)
        self.heartbeat(pipe, Activity(state=state), now)

    def heartbeat(self, pipe: Pipeline, activity: Activity, now: float) -> None:
        """Rewrite the hash whole and renew its TTL; add it to the sets again (a Redis that restarted
        empty, or a `Worker.all()` that found the hash expired during an outage, dropped it)."""
        fields = worker_fields(self.identity, activity, now)
        pipe.hset(self.key, mapping=fields)
        if "current_job" not in fields:
            pipe.hdel(self.key, "current_job")
        pipe.pexpire(self.key, self._ttl_ms)
        for key in self._sets:
            pipe.sadd(key, self.key)
        self._write_executions(pipe, activity.executions, now)

    def _write_executions(self, pipe: Pipeline, executions: tuple[Execution, ...], now: float) -> None:
        """rq 3's view of the running jobs: the set rewritten, a hash per job, the ended jobs' hashes
        deleted (a hash whose delete was lost expires with its TTL)."""
        current = {keys.rq_execution(e.job_id, e.execution_id): e for e in executions}
        ended = self._written - current.keys()
        pipe.delete(self._executions_key, *ended)
        if current:
            pipe.sadd(self._executions_key, *(f"{e.job_id}:{e.execution_id}" for e in executions))
            pipe.pexpire(self._executions_key, self._ttl_ms)
        for key, execution in current.items():
            pipe.hset(key, mapping=execution_fields(self.identity.name, execution, now))
            pipe.pexpire(key, self._ttl_ms)
        self._written = set(current)

    def unregister(self, pipe: Pipeline) -> None:
        """Leave RQ's registry at once: a clean stop, or a rejoin under a new id."""
        for key in self._sets:
            pipe.srem(key, self.key)
        pipe.delete(self.key, self._executions_key, *self._written)
        self._written = set()


def prune(client: redis.Redis, queues: Iterable[str]) -> int:
    """Remove from RQ's worker sets the members whose hash is gone (killed daemons, dead RQ workers),
    as RQ's own maintenance does (`clean_worker_registry`), which no RQ worker may be here to run;
    returns how many. Up to three round trips: for start-up only."""
    sets = [keys.RQ_WORKERS, *(keys.rq_workers_of(name) for name in queues)]
    with client.pipeline(transaction=False) as pipe:
        for key in sets:
            pipe.smembers(key)
        members = sorted(set().union(*pipe.execute()))
    if not members:
        return 0
    with client.pipeline(transaction=False) as pipe:
        for member in members:
            pipe.exists(member)
        gone = [member for member, alive in zip(members, pipe.execute(), strict=True) if not alive]
    if gone:
        with client.pipeline(transaction=False) as pipe:
            for key in sets:
                pipe.srem(key, *gone)
            pipe.execute()
    return len(gone)
