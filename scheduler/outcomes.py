"""Turning what happened to a job into a `Settlement` (pure): finished, failed, or retried as RQ would."""

from __future__ import annotations

from adaptive_scheduler.model import ClaimedJob, JobOptions, Outcome, Settlement
from adaptive_scheduler.payload import retry_interval_s


def finished(job: ClaimedJob, options: JobOptions, result: bytes, started: float, ended: float) -> Settlement:
    return Settlement(job, Outcome.FINISHED, started, ended, result=result, options=options)


def failed(job: ClaimedJob, options: JobOptions, reason: str, started: float, ended: float) -> Settlement:
    """A failure: retried if the job has RQ retries left (now, or after its interval), else failed."""
    if options.retries_left <= 0:
        return Settlement(job, Outcome.FAILED, started, ended, reason=reason, options=options)
    interval = retry_interval_s(options)
    run_at = ended + interval if interval > 0 else 0
    spec = f"{options.retries_left - 1}:{run_at:.3f}:{int(options.retry_at_front)}"
    return Settlement(job, Outcome.RETRY, started, ended, reason=reason, options=options, extra=spec)


def rejected(job: ClaimedJob, options: JobOptions, reason: str, now: float) -> Settlement:
    """A job that could not even start (bad payload, not allowed): failed, never retried."""
    return Settlement(job, Outcome.FAILED, now, now, reason=reason, options=options)


def put_back(job: ClaimedJob) -> Settlement:
    """A claimed job returned unrun (or stopped part-way) to the front of its queue."""
    return Settlement(job, Outcome.PUT_BACK)


def preempted(job: ClaimedJob, checkpoint: str, started: float, ended: float) -> Settlement:
    """Stopped under memory pressure: back to the front of its queue, to resume from `checkpoint`."""
    return Settlement(job, Outcome.PREEMPTED, started, ended, extra=checkpoint)


def stopped(job: ClaimedJob, checkpoint: str, reason: str, started: float, ended: float) -> Settlement:
    """Stopped for memory (pressure or slot cap): back to the front of its queue to run again (from
    `checkpoint` if it saved one), its count of such stops raised by one."""
    return Settlement(job, Outcome.STOPPED, started, ended, reason=reason, extra=checkpoint)


def parked(job: ClaimedJob, outcome: Outcome, reason: str, level: str, now: float) -> Settlement:
    """Not run under memory pressure: SKIPPED (a heartbeat) or SHED (kept for replay)."""
    return Settlement(job, outcome, now, now, reason=reason, extra=level)


def deferred(job: ClaimedJob, reason: str, run_at: float) -> Settlement:
    """Not run because its task's circuit breaker is open: scheduled again for `run_at` (unix s)."""
    return Settlement(job, Outcome.DEFERRED, reason=reason, extra=f"{run_at:.3f}")


COUNT_NAMES = {
    Outcome.FINISHED: "finished",
    Outcome.FAILED: "failed",
    Outcome.RETRY: "retried",
    Outcome.PUT_BACK: "put_back",
    Outcome.PREEMPTED: "preempted",
    Outcome.STOPPED: "stopped",
    Outcome.SKIPPED: "skipped",
    Outcome.SHED: "shed",
    Outcome.DEFERRED: "deferred",
}


def count_name(outcome: Outcome) -> str:
    """The counter an outcome bumps."""
    return COUNT_NAMES[outcome]
