"""From the local queue to the slots: the daemon's dispatch decisions, applied.

For each local job, most urgent first: its payload (a bad one is rejected, with the reason), its fate at
the memory level (run, wait, skip, shed, put back: `governor.policy.fate`), its task's circuit breaker
(deferred while open), memory admission (`governor.enforcer`), then a slot: an idle one, or, for short
jobs while calm, a busy one to wait in behind its running job (`prefetch.Prefetch.behind`). Every outcome
that is not a start goes to `settle`, to be written with the daemon's next exchange: no Redis I/O here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from adaptive_scheduler import checkpoint, outcomes, tasks
from adaptive_scheduler.breaker import Breakers
from adaptive_scheduler.errors import PayloadError
from adaptive_scheduler.governor import Governor
from adaptive_scheduler.governor.admission import Decision
from adaptive_scheduler.governor.enforcer import Enforcer
from adaptive_scheduler.governor.policy import Fate, fate
from adaptive_scheduler.governor.pressure import Level
from adaptive_scheduler.governor.victim import Kind
from adaptive_scheduler.metrics import Metrics
from adaptive_scheduler.model import Call, ClaimedJob, JobOptions, Outcome, Priority, Settlement
from adaptive_scheduler.payload import decode_call, decode_options, past_deadline
from adaptive_scheduler.periodic import marked_heartbeat
from adaptive_scheduler.prefetch import Prefetch
from adaptive_scheduler.queue import Entry, LocalQueue
from adaptive_scheduler.rqtime import unix_seconds
from adaptive_scheduler.slotpool import SlotPool, log_failure
from adaptive_scheduler.slots import Running, Slot
from loguru import logger

if TYPE_CHECKING:
    from adaptive_scheduler.settings import Settings


class Dispatcher:
    """One daemon's hand-over of local jobs to its slots."""

    def __init__(
        self,
        settings: Settings,
        local: LocalQueue,
        pool: SlotPool,
        governor: Governor,
        enforcer: Enforcer,
        prefetch: Prefetch,
        breakers: Breakers,
        metrics: Metrics,
        counts: dict[str, int],
        settle: Callable[[Settlement], None],
    ) -> None:
        self.settings = settings
        self.local = local
        self.pool = pool
        self.governor = governor
        self.enforcer = enforcer
        self.prefetch = prefetch
        self.breakers = breakers
        self.metrics = metrics
        self.counts = counts  # the daemon's: "resumed" is counted here
        self._settle = settle
        self.defaults = JobOptions(
            settings.default_job_timeout_s, settings.default_result_ttl_s, settings.default_failure_ttl_s
        )
        self.log = logger  # the daemon binds its id (and binds it again when it serves under a new one)

    def feed(self, now: float, now_mono: float) -> None:
        """Hand the most urgent local jobs that fit in memory to idle slots (the daemon calls this only
        while it is not stopping).

        A job that does not fit yet keeps its place in the local queue while jobs behind it that fit go
        ahead (`admission`); one that waited too long stops the others from overtaking it.
        """
        if len(self.local):  # the daemon asks at every turn of its loop, mostly with nothing to hand over
            self._hand_over(now, now_mono)
        if self.settings.p0_lane and self.pool.lane is None and self.pool.saturated():
            # open it now, while nothing waits for it: a P0 job arriving next should not wait for a fork
            self.pool.open_lane(now_mono, "every slot is busy")

    def _hand_over(self, now: float, now_mono: float) -> None:
        waiting: list[Entry] = []
        behind = self._behind()
        try:  # every idle slot gets a job before any job waits in a busy one
            for most in (0, behind) if behind else (0,):
                if not all(self._feed(slot, now, now_mono, waiting, most) for slot in self.pool.slots):
                    break
        finally:
            for entry in waiting:
                self.local.restore(entry)

    def _behind(self) -> int:
        """How many short jobs may wait in each slot behind its running job this round."""
        if self.settings.slot_mode != "pool":
            return 0
        return self.prefetch.behind(self.governor.level is Level.NORMAL)

    def _feed(self, slot: Slot, now: float, now_mono: float, waiting: list[Entry], behind: int) -> bool:
        """Give `slot` a job if it is idle, and up to `behind` short jobs to wait in it behind that one;
        False when no more jobs may start in this round."""
        lane = self.pool.is_lane(slot)
        while slot.ready and len(self.local):
            if slot.busy and (
                lane or len(slot.waiting) >= behind or self.local.head_priority() == Priority.P0
            ):
                return True  # a P0 job never waits in a slot: it starts in the next free one (or the lane)
            if lane:
                if self.local.head_priority() != Priority.P0:
                    return True
                self.pool.lane_used(now_mono)
            entry = self.local.pop_entry()
            verdict = self._start(slot, entry, now, now_mono)
            if verdict is not Decision.START and slot.busy:
                self.local.restore(entry)  # it may not wait in this slot: it waits for a free one
                return True
            if verdict is not Decision.START:
                waiting.append(entry)
            if verdict is Decision.HOLD:
                return False
        return True

    def _start(self, slot: Slot, entry: Entry, now: float, now_mono: float) -> Decision:
        """Deal with a job from the local queue: run, park, reject or defer it (START), or keep it
        waiting (WAIT: others may go ahead; HOLD: nothing starts before it)."""
        job = entry[2]
        try:
            options = decode_options(job.fields, self.defaults)
        except PayloadError as exc:
            self._reject(job, self.defaults, str(exc), now)
            return Decision.START
        try:
            call = decode_call(
                job.fields.get("data"), self.settings.serializer, self.settings.allowed_modules
            )
            resume_state = checkpoint.decode(job.fields.get("asched_checkpoint"))
        except PayloadError as exc:
            self._reject(job, options, str(exc), now)
            return Decision.START
        task = tasks.lookup(call.func_path)
        if task is not None and task.timeout_s is not None and not job.fields.get("timeout"):
            options = replace(options, timeout_s=task.timeout_s)  # the job set none: the task's own
        verdict = self._verdict(job, task, now)
        if verdict is Fate.WAIT:
            return Decision.HOLD  # P2/P3 at HIGH: nothing of lower priority starts either
        if verdict is not Fate.RUN:
            self._park(job, verdict, now)
        elif slot.busy and not self._may_wait_in_slot(slot, call, task):
            return Decision.WAIT
        elif (retry_at := self._breaker_says_wait(job, call, now)) is not None:
            reason = f"deferred: the circuit breaker of {call.func_path} is open; retry at {retry_at:.3f}"
            self._settle(outcomes.deferred(job, reason, retry_at))
        else:
            admitted = self.enforcer.admit(job, call.func_path, now, now_mono)
            if admitted is not Decision.START:
                return admitted
            running = Running(job, call, options, now_mono, now_mono + options.timeout_s, task)
            self.enforcer.starting(running, slot, now)
            self._run(slot, running, resume_state, now)
            self.enforcer.started(running, now_mono)
        return Decision.START

    def _run(self, slot: Slot, running: Running, resume_state: object, now: float) -> None:
        job = running.job
        waits = slot.busy  # it starts once the jobs before it in the slot have run (`started` then)
        slot.give(running, resume_state)
        if job.priority == Priority.P0:
            self.prefetch.p0_started(running.started_mono)
        if not waits:
            self.started(running, now)
        if resume_state is not None:
            self.counts["resumed"] += 1
            self.metrics.job("resumed", job.priority)

    def started(self, running: Running, now: float) -> None:
        """A job starts in its slot (handed to an idle one, or next after the job it waited behind):
        StatsD's start count and its wait since it was enqueued."""
        if self.metrics.enabled:
            job = running.job
            self.metrics.job("started", job.priority)
            enqueued = unix_seconds(job.fields.get("enqueued_at"))
            if enqueued is not None:
                self.metrics.waited(job.priority, now - enqueued)

    def _may_wait_in_slot(self, slot: Slot, call: Call, task: tasks.TaskInfo | None) -> bool:
        """Whether a job may wait in busy `slot`: only a job of a short task behind a job of a short task
        (`Prefetch.short`); not if it must never run twice (a slot killed just as it started puts it
        back unaware), nor while its task's breaker watches it."""
        assert slot.running is not None
        if not (self.prefetch.short(call.func_path) and self.prefetch.short(slot.running.call.func_path)):
            return False
        kind = self.enforcer.planner.kind(call.func_path, task)
        return kind is not Kind.AT_MOST_ONCE and not self.breakers.watching(call.func_path)

    def _breaker_says_wait(self, job: ClaimedJob, call: Call, now: float) -> float | None:
        """When the job's task may run again if its circuit breaker is open, else None."""
        if not self.breakers.watching(call.func_path):
            return None
        running_ids = [slot.running.job.id for slot in self.pool.slots if slot.running is not None]
        return self.breakers.admit(call.func_path, job.id, now, running_ids)

    def sweep(self, now: float) -> None:
        """Apply the level to jobs waiting locally: skip or shed heartbeats, put back non-P0 at EMERGENCY."""
        for job in self.local.drain():
            call = self._peek_call(job)
            verdict = self._verdict(job, tasks.lookup(call.func_path) if call else None, now)
            if verdict in (Fate.RUN, Fate.WAIT):
                self.local.push(job)
            else:
                self._park(job, verdict, now)

    def _verdict(self, job: ClaimedJob, task: tasks.TaskInfo | None, now: float) -> Fate:
        """The policy's fate for a local job at the current level."""
        level = self.governor.level
        late = level == Level.EMERGENCY and past_deadline(job.fields, now)  # the deadline only counts there
        heartbeat = bool(task and task.heartbeat) or (
            level >= Level.ELEVATED and marked_heartbeat(job.fields)
        )
        return fate(level, job.priority, heartbeat, late)

    def _peek_call(self, job: ClaimedJob) -> Call | None:
        """The job's call if its payload is fine (a bad payload is dealt with when it would start)."""
        try:
            return decode_call(
                job.fields.get("data"), self.settings.serializer, self.settings.allowed_modules
            )
        except PayloadError:
            return None

    def _park(self, job: ClaimedJob, verdict: Fate, now: float) -> None:
        """A job not run for memory pressure: skipped, shed (kept for replay), or put back in Redis."""
        level = self.governor.level.name
        sample = self.governor.sample
        percent = sample.percent if sample else 0.0
        if verdict is Fate.PUT_BACK:
            self._settle(outcomes.put_back(job))
            return
        outcome = Outcome.SKIPPED if verdict is Fate.SKIP else Outcome.SHED
        why = "past its deadline, " if past_deadline(job.fields, now) else ""
        reason = f"{outcome.value}: {why}under memory pressure {level} ({percent:.1f} %)"
        self._settle(outcomes.parked(job, outcome, reason, level, now))
        self.log.bind(job_id=job.id, priority=job.priority.name).warning("job {}: {}", job.id, reason)

    def _reject(self, job: ClaimedJob, options: JobOptions, reason: str, now: float) -> None:
        settlement = outcomes.rejected(job, options, reason, now)
        log_failure(settlement)
        self._settle(settlement)
