"""Plain RQ job functions for ``bench.memstorm``: no import of ``tasks`` or ``scheduler``.

They stand for an application's ordinary jobs, which know nothing of the daemon: no checkpoints, no
SDK. Both `rq worker` (by dotted path, PYTHONPATH=<repo root>) and our daemon (with
ASCHED_ALLOWED_MODULES='["bench.plain_jobs"]') run them unchanged.

``touch`` records each execution in the file named by ``BENCH_RUN_LOG``, one line per event, so that
the harness measures starts, progress and stops the same way for every system:

    start <job id> <execution> <unix s> <rq|tag>
    beat <job id> <execution> <unix s>
    end <job id> <execution> <unix s>

An execution that never writes ``end`` was stopped (killed, preempted or failed); its last ``beat``
tells how much work it threw away, to one step. The job id comes from ``rq.get_current_job()`` where
that works (``rq`` in the last field), else from the ``tag`` kwarg the producer passes (``tag``).
"""

from __future__ import annotations

import os
import time
import uuid

RUN_LOG_ENV = "BENCH_RUN_LOG"
PAGE = 4096
STEPS = 20


def touch(mib: int, seconds: float, tag: str | None = None) -> int:
    """Allocate `mib` MiB in `STEPS` equal chunks over `seconds`, touching every page (so it is
    resident), hold it all until the end and return `mib`."""
    job_id, via = _job_id(tag)
    execution = uuid.uuid4().hex[:8]
    _record(f"start {job_id} {execution} {time.time()!r} {via}")
    chunk = mib * 2**20 // STEPS
    held = []
    for _ in range(STEPS):
        block = bytearray(chunk)  # calloc'd pages are not resident until written
        block[::PAGE] = b"\x01" * len(range(0, chunk, PAGE))
        held.append(block)
        time.sleep(seconds / STEPS)
        _record(f"beat {job_id} {execution} {time.time()!r}")
    _record(f"end {job_id} {execution} {time.time()!r}")
    return mib


def small(mib: int, seconds: float, tag: str | None = None) -> int:
    """`touch` under another name: the small jobs of the packing storm, a function of their own."""
    return touch(mib, seconds, tag)


def marker() -> float:
    """A P0 job that does nothing but answer: its wait (start minus enqueue) is what is measured."""
    return time.time()


def _job_id(tag: str | None) -> tuple[str, str]:
    """The running job's id and where it came from: RQ's job context, else the producer's tag."""
    from rq import get_current_job  # here: a plain job of the application would import rq anyway

    job = get_current_job()
    if job is not None:
        return job.id, "rq"
    return tag or "-", "tag"


def _record(line: str) -> None:
    """Append one line with a single O_APPEND write, so lines of concurrent jobs never interleave."""
    path = os.environ.get(RUN_LOG_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
