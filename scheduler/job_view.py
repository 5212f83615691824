"""`job ID`: where one job is, or how it ended, read through RQ's own Job API with the configured serializer.

`read` does the Redis reads once and returns `JobFacts`; `describe` (pure) turns them into the view the
command prints (`render`) or dumps (--json), and `exit_code` (pure) into the exit code scripts test:
0 finished (or not ended yet), 1 failed, shed, skipped, canceled or stopped. `wait_for_end` polls the
job's status until it has ended, for `--wait`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from adaptive_scheduler import keys
from adaptive_scheduler.errors import JobNotFound
from adaptive_scheduler.payload import rq_serializer

if TYPE_CHECKING:
    import redis
    from rq.job import Job

ENDED = frozenset({"finished", "failed", "canceled", "stopped"})  # RQ's statuses no job leaves by itself
OURS = ("asched_outcome", "asched_reason", "asched_level", "asched_memory_stops")
DAEMON_PREFIX = "adaptive-scheduler:"  # our daemons' RQ worker names (adaptive_scheduler.intake)
POLL_FIRST_S, POLL_MAX_S = 0.05, 1.0


@dataclass(frozen=True, slots=True)
class JobFacts:
    """What Redis holds about one job, read once; times are ISO 8601 UTC text."""

    id: str
    status: str  # RQ's status ("queued", "started", "finished", ...)
    task: str | None  # the function's dotted path; None when the payload is not in the configured format
    queue: str | None
    priority: str | None  # P0..P3, None for a queue that is not one of the configured four
    enqueued_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    worker: str | None = None  # RQ's worker_name: "adaptive-scheduler:<daemon id>" for our daemons
    worker_alive: bool | None = None  # that daemon's lease still exists (None: not one of ours)
    position: int | None = None  # jobs ahead of it in its queue (queued only)
    scheduled_for: str | None = None
    depends_on: tuple[str, ...] = ()
    result: Any = None
    error: str | None = None  # the last line of the latest failure's traceback
    ours: dict[str, str] = field(default_factory=dict)  # asched_* fields: outcome, reason, level, stops


def read(client: redis.Redis, job_id: str, queues: tuple[str, ...], serializer: str) -> JobFacts:
    """Everything `describe` needs about `job_id`.

    Raises:
        JobNotFound: no such job hash (never enqueued here, or expired after its result or failure TTL).
    """
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        job = Job.fetch(job_id, connection=client, serializer=rq_serializer(serializer))
    except NoSuchJobError:
        raise JobNotFound(
            f"no job {job_id!r} in Redis: never enqueued there, or expired (result_ttl, failure_ttl)"
        ) from None
    status = job.get_status(refresh=False)
    values = client.hmget(keys.job(job_id), OURS)
    base = JobFacts(
        job.id,
        status.value if status is not None else "unknown",
        _task(job),
        job.origin or None,
        f"P{queues.index(job.origin)}" if job.origin in queues else None,
        _iso(job.enqueued_at),
        _iso(job.started_at),
        _iso(job.ended_at),
        job.worker_name or None,
        ours={name: raw.decode(errors="replace") for name, raw in zip(OURS, values, strict=True) if raw},
    )
    return _with_place(client, job, base)


def _with_place(client: redis.Redis, job: Job, facts: JobFacts) -> JobFacts:
    """`facts` completed with what its status makes worth a look: outcome, queue place, claimer, time."""
    from dataclasses import replace

    from rq import Queue
    from rq.exceptions import NoSuchJobError
    from rq.registry import ScheduledJobRegistry

    match facts.status:
        case "finished":
            return replace(facts, result=job.return_value())
        case "failed":
            return replace(facts, error=_last_line(job))
        case "queued" if facts.queue:
            return replace(facts, position=Queue(facts.queue, connection=client).get_job_position(job.id))
        case "started" if facts.worker and facts.worker.startswith(DAEMON_PREFIX):
            alive = bool(client.exists(keys.daemon_lease(facts.worker.removeprefix(DAEMON_PREFIX))))
            return replace(facts, worker_alive=alive)
        case "scheduled" if facts.queue:
            try:
                at = ScheduledJobRegistry(facts.queue, connection=client).get_scheduled_time(job.id)
            except NoSuchJobError:  # moved to its queue since the status was read
                return facts
            return replace(facts, scheduled_for=_iso(at))
        case "deferred":
            return replace(facts, depends_on=tuple(job.dependency_ids))
    return facts


def describe(facts: JobFacts) -> dict[str, Any]:
    """The view of one job as plain data: its fields, `where` (one sentence), and `result` or `error`."""
    status = facts.ours.get("asched_outcome", facts.status) if facts.status == "canceled" else facts.status
    view: dict[str, Any] = {
        "id": facts.id,
        "status": status,  # RQ's, except "shed" and "skipped" for the jobs RQ calls canceled
        "task": facts.task,
        "queue": facts.queue,
        "priority": facts.priority,
        "enqueued_at": facts.enqueued_at,
        "started_at": facts.started_at,
        "ended_at": facts.ended_at,
        "where": where(facts),
    }
    if facts.status == "finished":
        view["result"] = facts.result
    if facts.status == "failed":
        view["error"] = facts.error
    return view


def where(facts: JobFacts) -> str:
    """One sentence on where the job is, or how it ended."""
    say = _WHERE.get(facts.status)
    return say(facts) if say is not None else f"status {facts.status!r}"


def _queued(facts: JobFacts) -> str:
    ahead = "" if facts.position is None else f", {facts.position} job(s) ahead of it"
    stops = facts.ours.get("asched_memory_stops")
    if stops:
        ahead += f"; stopped for memory {stops} time(s) so far ({facts.ours.get('asched_reason', '?')})"
    return f"queued in {_queue(facts)}{ahead}"


def _started(facts: JobFacts) -> str:
    if facts.worker is None or not facts.worker.startswith(DAEMON_PREFIX):
        return f"started by RQ worker {facts.worker or '?'} at {facts.started_at}"
    daemon = facts.worker.removeprefix(DAEMON_PREFIX)
    lapsed = "" if facts.worker_alive else "; its lease has expired: a live daemon will put it back"
    return f"claimed by daemon {daemon} at {facts.started_at}, from {_queue(facts)}{lapsed}"


def _scheduled(facts: JobFacts) -> str:
    reason = facts.ours.get("asched_reason")  # a deferral by the task's open circuit breaker
    why = f": {reason}" if reason else ""
    return f"scheduled for {facts.scheduled_for or '?'} in {_queue(facts)}{why}"


def _canceled(facts: JobFacts) -> str:
    outcome, level = facts.ours.get("asched_outcome"), facts.ours.get("asched_level")
    reason = facts.ours.get("asched_reason", "")
    if outcome == "shed":
        return f"shed under memory pressure ({level}): {reason}; `adaptive-scheduler shed replay {facts.id}`"
    if outcome == "skipped":
        return f"skipped under memory pressure ({level}): {reason}"
    return f"canceled at {facts.ended_at}"


_WHERE: dict[str, Callable[[JobFacts], str]] = {
    "queued": _queued,
    "started": _started,
    "scheduled": _scheduled,
    "canceled": _canceled,
    "finished": lambda facts: f"finished at {facts.ended_at}",
    "failed": lambda facts: f"failed at {facts.ended_at}",
    "stopped": lambda facts: f"stopped at {facts.ended_at}",
    "deferred": lambda facts: f"waiting for the jobs it depends on: {', '.join(facts.depends_on) or '?'}",
    "created": lambda facts: "created, not enqueued yet",
}


def render(view: dict[str, Any]) -> str:
    """A few aligned lines: status, task, queue, where, and the result or the error."""
    lines = [f"job {view['id']}: {view['status']}", f"  task     {view['task'] or '? (payload unreadable)'}"]
    lines.append(f"  where    {view['where']}")
    if "result" in view:
        lines.append(f"  result   {view['result']!r}")
    if view.get("error"):
        lines.append(f"  error    {view['error']}")
    return "\n".join(lines)


def exit_code(view: dict[str, Any]) -> int:
    """0 while the job runs or waits, and once it finished; 1 once it failed, was shed, skipped,
    canceled or stopped."""
    return 0 if view["status"] not in ("failed", "shed", "skipped", "canceled", "stopped") else 1


def wait_for_end(client: redis.Redis, job_id: str, timeout_s: float, serializer: str) -> bool:
    """Poll the job's status (RQ's API) until it has ended; False if `timeout_s` passed first.

    Raises:
        JobNotFound: the job's hash is gone (or never was).
    """
    from rq.exceptions import InvalidJobOperation, NoSuchJobError
    from rq.job import Job

    deadline, pause_s = time.monotonic() + timeout_s, POLL_FIRST_S
    try:
        job = Job.fetch(job_id, connection=client, serializer=rq_serializer(serializer))
        while job.get_status(refresh=True).value not in ENDED:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                return False
            time.sleep(min(pause_s, left_s))
            pause_s = min(POLL_MAX_S, pause_s * 2)
    except (NoSuchJobError, InvalidJobOperation):  # InvalidJobOperation: the hash went while polled
        raise JobNotFound(
            f"no job {job_id!r} in Redis: never enqueued there, or expired (result_ttl, failure_ttl)"
        ) from None
    return True


def _queue(facts: JobFacts) -> str:
    return f"{facts.queue} ({facts.priority})" if facts.priority else str(facts.queue)


def _task(job: Job) -> str | None:
    from rq.exceptions import DeserializationError

    try:
        return str(job.func_name)
    except DeserializationError:
        return None


def _last_line(job: Job) -> str | None:
    result = job.latest_result()
    text = (result.exc_string or "") if result is not None else ""
    return text.strip().splitlines()[-1] if text.strip() else None


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
