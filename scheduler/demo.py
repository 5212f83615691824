"""The quick start's demo workload: a few jobs of each priority, through plain RQ like any producer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis
from adaptive_scheduler.payload import rq_serializer
from loguru import logger
from rq import Queue
from rq.job import Job

if TYPE_CHECKING:
    from adaptive_scheduler.settings import Settings


DEMO = (
    (3, "adaptive_scheduler.tasks.demo.heartbeat", ()),
    (2, "adaptive_scheduler.tasks.demo.sleep", (0.2,)),
    (2, "adaptive_scheduler.tasks.demo.add", (2, 3)),
    (1, "adaptive_scheduler.tasks.demo.spin", (0.1,)),
    (1, "adaptive_scheduler.tasks.demo.echo", ({"hello": "world"},)),
    (0, "adaptive_scheduler.tasks.demo.add", (40, 2)),
    (2, "adaptive_scheduler.tasks.demo.fail", ("a demo job that fails on purpose",)),
    (3, "os.system", ("echo this never runs",)),
    (0, "adaptive_scheduler.tasks.demo.exit_process", (3,)),
    (1, "adaptive_scheduler.tasks.demo.sleep", (0.1,)),
)


def enqueue_demo(client: redis.Redis, settings: Settings) -> list[str]:
    """Enqueue the demo jobs in one transaction, lowest priority first; returns their ids.

    They land together, so the daemon's first claim sees them all and starts the P0 ones first.
    """
    ids = []
    serializer = rq_serializer(settings.serializer)
    with client.pipeline() as pipe:
        for priority, func_path, args in sorted(DEMO, key=lambda item: -item[0]):
            queue = Queue(settings.queues[priority], connection=client, serializer=serializer)
            jobs = queue.enqueue_many([Queue.prepare_data(func_path, args=args)], pipeline=pipe)
            ids.extend(job.id for job in jobs)
        pipe.execute()
    logger.info("demo: enqueued {} jobs (P3 first, yet P0 runs first; 3 of them fail on purpose)", len(ids))
    return ids


def report(client: redis.Redis, ids: list[str], serializer: str) -> str | None:
    """A table of the demo jobs once every one has ended (None while some are still waiting or running)."""
    jobs = [Job.fetch(job_id, connection=client, serializer=rq_serializer(serializer)) for job_id in ids]
    if any(job.get_status().value in ("queued", "started", "scheduled") for job in jobs):
        return None
    lines = ["demo results (read back through RQ's own API), in the order they started:"]
    for job in sorted(jobs, key=lambda job: job.started_at or job.ended_at):
        lines.append(
            f"  {job.origin:<3} {job.get_status().value:<9} {job.func_name:<28} {_outcome(job)[:80]}"
        )
    return "\n".join(lines)


def _outcome(job: Job) -> str:
    if job.get_status().value == "finished":
        return repr(job.return_value())
    result = job.latest_result()
    text = (result.exc_string or "") if result else ""
    return text.strip().splitlines()[-1] if text.strip() else ""
