"""`rq.get_current_job()` inside a slot: the running job as an `rq.job.Job`, as RQ's own workers give it.

Code written for plain RQ reads `job.id` and `job.meta` and calls `job.save_meta()` from inside a job.
A slot builds that Job from what the daemon already read at the claim (id, queue, the raw `meta` field)
and the call it runs: no Redis read per job. The Job's connection is one client per slot process, made
when its first job starts; redis-py opens the socket at the first command, so a slot whose jobs never
touch their Job never connects.

Building a Job through `Job.__init__` costs ~20 µs (fifty attributes, a serializer lookup, an id check),
~5 % of a no-op job's turn in a slot; so the first Job is built that way and each later one copies its
attributes (~2 µs), with fresh lists and dicts. Whichever RQ major is installed, its own slot for the
current job is set for the job's duration: `rq.job._current_job` (a ContextVar, rq 3) or
`rq.job._job_stack` (a LocalStack, rq 2).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import redis
from adaptive_scheduler.redis_url import connect
from rq import job as rq_job
from rq.job import Job, JobStatus
from rq.serializers import DefaultSerializer, JSONSerializer

CallParts = tuple[str, tuple[Any, ...], dict[str, Any]]  # func_path, args, kwargs


class CurrentJob:
    """Makes `rq.get_current_job()` return the job a slot runs; one per slot process."""

    def __init__(self, redis_url: str, serializer: str, queues: tuple[str, ...]) -> None:
        self._redis_url = redis_url
        # as payload.rq_serializer, not imported from there: this module needs only redis and rq, so a
        # test can load it under either RQ major
        self._serializer = DefaultSerializer if serializer == "pickle" else JSONSerializer
        self._queues = queues
        self._template: dict[str, Any] | None = None  # a fresh Job's attributes, made at the first job
        self._containers: list[tuple[str, type]] = []  # ... those holding a list, dict or set

    @contextlib.contextmanager
    def running(self, job_id: str, priority: int, meta: bytes | None, call: CallParts) -> Iterator[Job]:
        """The current job is `job_id` inside the block; `meta` is the job hash's raw field."""
        job = self._build(job_id, priority, meta, call)
        if hasattr(rq_job, "_current_job"):  # rq 3
            token = rq_job._current_job.set(job)
            try:
                yield job
            finally:
                rq_job._current_job.reset(token)
        else:  # rq 2
            rq_job._job_stack.push(job)
            try:
                yield job
            finally:
                rq_job._job_stack.pop()

    def _build(self, job_id: str, priority: int, meta: bytes | None, call: CallParts) -> Job:
        if self._template is None:
            self._make_template()
        job = Job.__new__(Job)
        attributes = job.__dict__
        attributes.update(self._template)  # type: ignore[arg-type]
        for name, kind in self._containers:
            attributes[name] = kind()
        job._id = job_id
        job.origin = self._queues[priority] if priority < len(self._queues) else ""
        job._func_name, job._args, job._kwargs = call
        job._instance = None
        job._status = JobStatus.STARTED
        self._read_meta(job, meta)
        return job

    def _make_template(self) -> None:
        client = connect(self._redis_url) if self._redis_url else redis.Redis()  # no socket until used
        template = vars(Job(connection=client, serializer=self._serializer))
        self._containers = [(k, type(v)) for k, v in template.items() if type(v) in (list, dict, set)]
        self._template = dict(template)

    def _read_meta(self, job: Job, meta: bytes | None) -> None:
        """As RQ's `Job.restore` reads it: undecodable meta is kept under "unserialized" (and rq 3 writes
        those bytes back unchanged on `save_meta`)."""
        if not meta:
            return
        try:
            job.meta = self._serializer.loads(meta)
        except Exception:  # whatever the producer stored, as RQ itself tolerates
            job.meta = {"unserialized": meta}
            if "_unreadable_meta" in job.__dict__:
                job._unreadable_meta = meta
