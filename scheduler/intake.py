"""Moving jobs between Redis and the daemon: claim, settle, put back, recover, promote.

Each operation is one Lua script call for a whole batch, so the Redis cost per job stays a handful of
commands (RQ's worker pays ~50). Scripts are atomic: a kill -9 of the daemon at any instant leaves
every job in its queue, in a started registry under this daemon's execution id (recovered by any daemon
once this one's lease expires), or settled.
"""

from __future__ import annotations

import base64
import itertools
import time
import zlib
from importlib.resources import files

import redis
from loguru import logger
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from scheduler import keys
from scheduler.model import ClaimedJob, Outcome, Priority, Settlement
from scheduler.payload import FIELDS
from scheduler.rqtime import rq_timestamp
from settings import Settings

LEASE_SLACK_S = 60  # RQ's own cleanup must not fail our running jobs: keep their score in the future


def _script(client: redis.Redis, name: str) -> redis.commands.core.Script:
    return client.register_script(files("scheduler.lua").joinpath(f"{name}.lua").read_text())


class Intake:
    """Claims, settles and recovers jobs for one daemon (`daemon_id`)."""

    def __init__(self, client: redis.Redis, settings: Settings, daemon_id: str) -> None:
        self.client = client
        self.settings = settings
        self.daemon_id = daemon_id
        self.worker_name = f"adaptive-scheduler:{daemon_id}"
        self._counter = itertools.count()
        self._queue_keys = [keys.queue(name) for name in settings.queues]
        self._started_keys = [keys.started(name) for name in settings.queues]
        self._settle_keys = [
            key
            for name in settings.queues
            for key in (
                keys.queue(name),
                keys.started(name),
                keys.finished(name),
                keys.failed(name),
                keys.scheduled(name),
            )
        ]
        self._claim = _script(client, "claim")
        self._settle = _script(client, "settle")
        self._recover = _script(client, "recover")
        self._promote = _script(client, "promote")

    def announce(self) -> None:
        """Take (or renew) this daemon's lease and register the queues with RQ (`rq info` lists them)."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(
                keys.daemon_lease(self.daemon_id), self.worker_name, px=int(self.settings.lease_ttl_s * 1000)
            )
            pipe.sadd(keys.DAEMONS, self.daemon_id)
            pipe.sadd(keys.RQ_QUEUES, *self._queue_keys)
            pipe.execute()

    def renew_lease(self) -> None:
        """Keep this daemon's claims safe from recovery for another lease period."""
        self.client.pexpire(keys.daemon_lease(self.daemon_id), int(self.settings.lease_ttl_s * 1000))

    def release_lease(self) -> None:
        """Drop the lease on a clean stop (after everything was settled or put back)."""
        self.client.delete(keys.daemon_lease(self.daemon_id))

    def claim(self, count: int, now: float) -> tuple[list[ClaimedJob], list[str]]:
        """Claim up to `count` jobs, P0 first. Returns the claimed jobs and ids whose hash was gone."""
        first = next(self._counter)
        for _ in range(count - 1):
            next(self._counter)
        args = [
            count,
            f"{self.daemon_id}.",
            first,
            now,
            rq_timestamp(now),
            self.worker_name,
            int(self.settings.default_job_timeout_s),
            int(self.settings.lease_ttl_s + LEASE_SLACK_S),
            *FIELDS[1:],
        ]
        flat = self._claim(keys=self._queue_keys + self._started_keys, args=args)
        return self._parse_claim(flat)

    def _parse_claim(self, flat: list[bytes | int]) -> tuple[list[ClaimedJob], list[str]]:
        stride = 3 + len(FIELDS)
        claimed: list[ClaimedJob] = []
        missing: list[str] = []
        claimed_at = time.monotonic()
        for i in range(0, len(flat), stride):
            priority, raw_id, execution = flat[i], flat[i + 1], flat[i + 2]
            job_id = raw_id.decode()  # type: ignore[union-attr]
            if not execution:
                missing.append(job_id)
                continue
            fields = dict(zip(FIELDS, flat[i + 3 : i + stride], strict=True))
            claimed.append(
                ClaimedJob(job_id, Priority(priority), execution.decode(), fields, claimed_at)  # type: ignore[union-attr, arg-type]
            )
        return claimed, missing

    def settle(self, settlements: list[Settlement], now: float) -> None:
        """Write every outcome of the batch to Redis in one atomic call."""
        if not settlements:
            return
        args: list[str | int | float | bytes] = [now, self.worker_name, keys.STATS]
        for item in settlements:
            args.extend(_settle_args(item))
        with_dependents = self._settle(keys=self._settle_keys, args=args)
        for raw_id in with_dependents:
            self._enqueue_dependents(raw_id.decode())

    def put_back(self, jobs: list[ClaimedJob], now: float) -> None:
        """Return claimed jobs, unrun, to the front of their queues (in their original order)."""
        self.settle([Settlement(job, Outcome.PUT_BACK) for job in reversed(jobs)], now)

    def recover(self) -> list[str]:
        """Put back the claims of daemons whose lease expired; returns the recovered job ids."""
        recovered = self._recover(
            keys=self._queue_keys + self._started_keys + [keys.DAEMONS],
            args=[keys.daemon_lease("")],
        )
        return [raw.decode() for raw in recovered]

    def promote_scheduled(self, now: float) -> int:
        """Move due scheduled jobs (enqueue_at/enqueue_in, retry intervals) into their queues."""
        scheduled = [keys.scheduled(name) for name in self.settings.queues]
        return int(self._promote(keys=scheduled + self._queue_keys, args=[now, 1000]))

    def depths(self) -> list[int]:
        """Jobs waiting in Redis per priority, P0 first."""
        with self.client.pipeline(transaction=False) as pipe:
            for key in self._queue_keys:
                pipe.llen(key)
            return [int(n) for n in pipe.execute()]

    def _enqueue_dependents(self, job_id: str) -> None:
        """Rare path: let RQ's own code release the jobs that waited for this one."""
        try:
            job = Job.fetch(job_id, connection=self.client, serializer=JSONSerializer)
            Queue(job.origin, connection=self.client, serializer=JSONSerializer).enqueue_dependents(job)
        except Exception as exc:  # the parent's outcome is written; a dependent stays deferred
            logger.bind(job_id=job_id).warning("could not enqueue dependents: {}", exc)


def _settle_args(item: Settlement) -> list[str | int | float | bytes]:
    job, options = item.job, item.options
    ttl = 0
    if options is not None:
        ttl = options.result_ttl_s if item.outcome is Outcome.FINISHED else options.failure_ttl_s
    payload = b""
    exc_info = b""
    if item.outcome is Outcome.FINISHED and item.result is not None:
        payload = base64.b64encode(item.result)
    elif item.reason:
        exc_info = _zlib(item.reason)
        payload = base64.b64encode(exc_info)
    return [
        item.outcome.value,
        job.id,
        int(job.priority),
        job.execution_id,
        rq_timestamp(item.started_at) if item.started_at else "",
        rq_timestamp(item.ended_at) if item.ended_at else "",
        item.started_at,
        item.ended_at,
        ttl,
        payload,
        exc_info,
        item.retry_spec,
    ]


def _zlib(text: str) -> bytes:
    return zlib.compress(text.encode("utf-8", "replace"))
