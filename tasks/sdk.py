"""The task SDK: what a job sees of the daemon while it runs.

    from adaptive_scheduler.tasks import context, task

    @task(preemptible=True)
    def long_sum(n: int) -> int:
        ctx = context()
        state = ctx.resume_state or {"i": 0, "total": 0}
        while state["i"] < n:
            state["total"] += state["i"]
            state["i"] += 1
            ctx.checkpoint(state)  # near-free unless the daemon asked for the slot back
        return state["total"]

Under memory pressure the daemon asks a slot for its memory back (SIGUSR1). The next `checkpoint`
sends the state to the daemon and unwinds the job with `Preempted`; the job goes back to the front of
its queue with that state, and `resume_state` hands it to the next run. Without a preemption request,
`checkpoint` also saves the state at most once per `SAVE_EVERY_S`, so a job killed before it could
answer resumes from there. The state must be JSON-serializable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

SAVE_EVERY_S = 1.0


class Preempted(BaseException):  # a signal to unwind, like SystemExit: not an Exception
    """Raised by `checkpoint` to unwind a job the daemon preempted; never catch it."""


class JobContext:
    """The running job's handle on the daemon: resume state, checkpoints, the preemption flag."""

    def __init__(self, job_id: str, resume_state: Any, send: Callable[[tuple[Any, ...]], None]) -> None:
        self.job_id = job_id
        self.resume_state = resume_state
        self._send = send
        self._saved_at = time.monotonic()

    def should_yield(self) -> bool:
        """True once the daemon has asked for this slot back: checkpoint soon."""
        return _preempt_requested

    def checkpoint(self, state: Any) -> None:
        """Offer `state` to the daemon; raises `Preempted` if it asked for the slot back."""
        if _preempt_requested:
            self._send(("checkpoint", self.job_id, json.dumps(state)))
            raise Preempted
        now = time.monotonic()
        if now - self._saved_at >= SAVE_EVERY_S:
            self._saved_at = now
            self._send(("checkpoint", self.job_id, json.dumps(state)))


_current: JobContext | None = None
_preempt_requested = False


def context() -> JobContext:
    """The context of the job running in this process.

    Outside adaptive-scheduler (a plain `rq worker`, a test, a shell) it is a detached context: no
    resume state, and `checkpoint` never preempts nor sends anything, so SDK tasks run anywhere.
    """
    return _current if _current is not None else JobContext("", None, _discard)


def _discard(message: tuple[Any, ...]) -> None:
    """Where a detached context's checkpoints go."""


def enter(job_context: JobContext | None) -> None:
    """Called by the slot around each job (None after it)."""
    global _current, _preempt_requested
    _current = job_context
    _preempt_requested = False


def request_preemption(*_: object) -> None:
    """The slot's SIGUSR1 handler: only sets a flag, which `checkpoint` reads."""
    global _preempt_requested
    _preempt_requested = True
