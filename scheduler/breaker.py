"""Per-task circuit breakers: a task that keeps failing stops being started for a while.

The transitions are pure functions of (breaker, rules, now), table-tested; `Breakers` holds one per
task for the daemon, logs each change once and counts it. While a breaker is open, jobs of its task
are deferred (RQ's scheduled registry, until the cooldown ends), never failed.

    CLOSED    --`failures` failures within `window_s`-->  OPEN
    OPEN      --a job arrives after `cooldown_s`------->  HALF_OPEN (that job is the one trial)
    HALF_OPEN --the trial succeeds-------------------->  CLOSED
    HALF_OPEN --the trial fails----------------------->  OPEN (a new cooldown)

Each daemon keeps its own breakers: with several daemons, each one learns a task is failing for itself.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from enum import Enum

from adaptive_scheduler.metrics import Metrics
from loguru import logger

RECHECK_S = 1.0  # a job arriving while the half-open trial runs is deferred this long


class Circuit(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerRules:
    failures: int = 3
    window_s: float = 60.0
    cooldown_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Breaker:
    circuit: Circuit = Circuit.CLOSED
    failures: tuple[float, ...] = ()  # times of the recent failures (CLOSED)
    opened_at: float = 0.0
    trial: str | None = None  # the job id of the half-open trial


def failed(breaker: Breaker, rules: BreakerRules, now: float) -> Breaker:
    """A job of the task failed."""
    if breaker.circuit is Circuit.HALF_OPEN:
        return Breaker(Circuit.OPEN, opened_at=now)
    if breaker.circuit is Circuit.OPEN:
        return breaker  # a job started before it opened: the cooldown stands
    recent = (*(t for t in breaker.failures if now - t < rules.window_s), now)
    if len(recent) >= rules.failures:
        return Breaker(Circuit.OPEN, opened_at=now)
    return replace(breaker, failures=recent)


def succeeded(breaker: Breaker, rules: BreakerRules, now: float) -> Breaker:
    """A job of the task finished."""
    if breaker.circuit is Circuit.HALF_OPEN:
        return Breaker()
    return breaker


def admit(
    breaker: Breaker, rules: BreakerRules, now: float, job_id: str, trial_running: bool
) -> tuple[Breaker, float | None]:
    """May this job start now? Returns the new breaker and None (start it) or when to try again."""
    if breaker.circuit is Circuit.CLOSED:
        return breaker, None
    if breaker.circuit is Circuit.OPEN:
        reopen = breaker.opened_at + rules.cooldown_s
        if now < reopen:
            return breaker, reopen
        return Breaker(Circuit.HALF_OPEN, opened_at=breaker.opened_at, trial=job_id), None
    if trial_running and breaker.trial != job_id:
        return breaker, now + min(RECHECK_S, rules.cooldown_s)
    return replace(breaker, trial=job_id), None  # the trial ended without a verdict: a new one


class Breakers:
    """The daemon's breakers, one per task that failed lately."""

    def __init__(self, rules: BreakerRules, metrics: Metrics) -> None:
        self.rules = rules
        self._metrics = metrics
        self._by_task: dict[str, Breaker] = {}

    def watching(self, task: str) -> bool:
        """Whether `task` failed lately (the common case, no, costs one dict lookup)."""
        return task in self._by_task

    def admit(self, task: str, job_id: str, now: float, running_ids: Collection[str]) -> float | None:
        """None when a job of `task` may start now, else the time to try it again."""
        breaker = self._by_task.get(task)
        if breaker is None:
            return None
        after, retry_at = admit(breaker, self.rules, now, job_id, breaker.trial in running_ids)
        self._set(task, breaker, after)
        return retry_at

    def ended(self, task: str, ok: bool, now: float) -> None:
        breaker = self._by_task.get(task)
        if ok and breaker is None:
            return
        before = breaker or Breaker()
        after = succeeded(before, self.rules, now) if ok else failed(before, self.rules, now)
        self._set(task, before, after)

    def not_closed(self) -> dict[str, str]:
        """Task -> circuit, for the breakers that are open or half-open."""
        return {task: b.circuit.value for task, b in self._by_task.items() if b.circuit is not Circuit.CLOSED}

    def _set(self, task: str, before: Breaker, after: Breaker) -> None:
        if after == Breaker():
            self._by_task.pop(task, None)
        else:
            self._by_task[task] = after
        if after.circuit is before.circuit:
            return
        log = logger.bind(task=task, circuit=after.circuit.value)
        if after.circuit is Circuit.OPEN:
            self._metrics.count("breaker.opened")
            log.warning(
                "circuit breaker of task {} opened ({}): its jobs wait {:g} s, then one trial runs",
                task,
                f"{self.rules.failures} failures within {self.rules.window_s:g} s"
                if before.circuit is Circuit.CLOSED
                else "the trial failed",
                self.rules.cooldown_s,
            )
        elif after.circuit is Circuit.HALF_OPEN:
            log.info("circuit breaker of task {} half-open: job {} is the trial", task, after.trial)
        else:
            self._metrics.count("breaker.closed")
            log.info("circuit breaker of task {} closed: the trial succeeded", task)
