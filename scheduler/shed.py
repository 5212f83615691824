"""The shed registry seen from the command line: list what was shed under memory pressure, replay it.

Shed jobs are never deleted: they keep their hash (no TTL), sit in `asched:shed` by time and in RQ's
canceled registry of their queue, and carry the reason and the level. Replaying one puts it back at
the end of its queue.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import redis
from adaptive_scheduler import keys

LISTED_FIELDS = ("origin", "asched_reason", "asched_level", "asched_outcome", "ended_at", "description")


def list_shed(client: redis.Redis, limit: int = 1000) -> list[dict[str, Any]]:
    """The shed jobs, oldest first, with their queue, reason, level and time."""
    entries = client.zrange(keys.SHED, 0, limit - 1, withscores=True)
    with client.pipeline(transaction=False) as pipe:
        for job_id, _ in entries:
            pipe.hmget(keys.job(job_id.decode()), LISTED_FIELDS)
        rows = pipe.execute()
    listed = []
    for (job_id, shed_at), values in zip(entries, rows, strict=True):
        fields = {
            name: value.decode() if value else None for name, value in zip(LISTED_FIELDS, values, strict=True)
        }
        listed.append(
            {
                "id": job_id.decode(),
                "queue": fields["origin"],
                "shed_at": shed_at,
                "outcome": fields["asched_outcome"],
                "level": fields["asched_level"],
                "reason": fields["asched_reason"],
            }
        )
    return listed


def replay(client: redis.Redis, job_ids: list[str]) -> list[str]:
    """Put shed jobs back in their queues; returns the ids actually replayed."""
    if not job_ids:
        return []
    script = client.register_script(files("adaptive_scheduler.lua").joinpath("replay.lua").read_text())
    return [raw.decode() for raw in script(keys=[keys.SHED], args=job_ids)]


def all_ids(client: redis.Redis) -> list[str]:
    return [raw.decode() for raw in client.zrange(keys.SHED, 0, -1)]
