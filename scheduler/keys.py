"""Every Redis key the daemon touches: RQ's (so RQ's tools see our work) and our own.

RQ's layout is shared by rq 2.x and 3.x: job hashes ``rq:job:<id>``, queues ``rq:queue:<name>``,
registries ``rq:{wip,finished,failed,scheduled}:<queue>``, results streams ``rq:results:<id>``, and the
worker registry (``rq:workers``, ``rq:workers:<queue>``, ``rq:worker:<name>``), where each daemon is
one worker (`adaptive_scheduler.rq_worker`).
"""

from __future__ import annotations

RQ_JOB = "rq:job:"
RQ_QUEUES = "rq:queues"
RESULTS = "rq:results:"
RQ_WORKERS = "rq:workers"  # set of every registered worker's hash key: what `rq info` counts
OURS = "asched:"


def job(job_id: str) -> str:
    return f"{RQ_JOB}{job_id}"


def queue(name: str) -> str:
    return f"rq:queue:{name}"


def started(name: str) -> str:
    return f"rq:wip:{name}"


def finished(name: str) -> str:
    return f"rq:finished:{name}"


def failed(name: str) -> str:
    return f"rq:failed:{name}"


def scheduled(name: str) -> str:
    return f"rq:scheduled:{name}"


def canceled(name: str) -> str:
    return f"rq:canceled:{name}"


def rq_workers_of(queue_name: str) -> str:
    """RQ's set of the worker keys serving `queue_name` (`rq info -R`, `Worker.all(queue=...)`)."""
    return f"{RQ_WORKERS}:{queue_name}"


def rq_worker(name: str) -> str:
    """RQ's hash of the worker `name`: what `Worker.refresh` reads back."""
    return f"rq:worker:{name}"


def rq_worker_executions(name: str) -> str:
    """rq 3's set of the worker's executions in progress (``<job id>:<execution id>``): its current jobs."""
    return f"rq:worker:{name}:executions"


def rq_execution(job_id: str, execution_id: str) -> str:
    """rq 3's hash of one execution of a job (read through the worker's executions set)."""
    return f"rq:execution:{job_id}:{execution_id}"


def daemon_lease(daemon_id: str) -> str:
    """Exists (with a TTL) while the daemon `daemon_id` is alive; its claims are safe while it does."""
    return f"{OURS}daemon:{daemon_id}"


def daemon_status(daemon_id: str) -> str:
    """The daemon's self-description for `status` (JSON), expiring with its lease."""
    return f"{OURS}status:{daemon_id}"


SHED = f"{OURS}shed"  # sorted set: ids of jobs shed under memory pressure, by time; `shed replay`
SKIPPED = f"{OURS}skipped"  # sorted set: ids of heartbeat jobs skipped under memory pressure
FOREIGN = f"{OURS}foreign"  # list: queue entries that named no RQ job (bad id, or a key of another type)
FOREIGN_KEPT = 10_000  # ... the most recent ones kept
DAEMONS = f"{OURS}daemons"  # set of daemon ids that have claimed work (recovery scans it)
PROFILES = f"{OURS}profiles"  # hash: task (function path) -> its memory profile (versioned JSON)
PAUSED = f"{OURS}paused"  # hash: priority name (P0..P3) -> its pause (versioned JSON); `pause`, `resume`
LEVELS = f"{OURS}levels"  # hash: daemon id -> its memory level, until when (versioned JSON); for producers
PARKED = f"{OURS}parked:"  # + execution id -> job id: a claim parked behind a watch ran (`arrivals`)
CONTROL = f"{OURS}control"  # pub/sub channel: "the pauses changed", so daemons re-read them at once
