"""The daemon's slots as a pool: start them, read what they say, and turn every way a job can end in a
slot into a `Settlement` (finished, failed, preempted), replacing slots that died, overran or were
recycled. The pool does no Redis I/O: it hands settlements to `settle`, and the daemon batches them.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from adaptive_scheduler import checkpoint, outcomes, proctitle, slot_main
from adaptive_scheduler.events import Poller
from adaptive_scheduler.governor.monitor import Monitor
from adaptive_scheduler.governor.victim import Kind
from adaptive_scheduler.lease import renewal_interval_s
from adaptive_scheduler.model import Outcome, Settlement
from adaptive_scheduler.pulse import Pulse, fence_after_s
from adaptive_scheduler.slots import LANE_OOM_SCORE_ADJ, SLOT_OOM_SCORE_ADJ, End, Running, Slot, SlotSpec
from loguru import logger

if TYPE_CHECKING:
    from adaptive_scheduler.settings import Settings


class SlotPool:
    """`settings.slots` slot processes, polled through the daemon's `Poller`."""

    def __init__(
        self,
        settings: Settings,
        poller: Poller,
        monitor: Monitor,
        settle: Callable[[Settlement], None],
        ended: Callable[[Running, End, float], None],
        pulse: Pulse,
        redis_url: str = "",
        started: Callable[[Running, Slot], None] = lambda running, slot: None,
        unrun: Callable[[list[Running]], None] = lambda given: None,
    ) -> None:
        self.settings = settings
        self.slots: list[Slot] = []
        self.start_ms: deque[float] = deque(maxlen=1000)  # recent slot start-up times (fork to ready)
        self._poller = poller
        self._monitor = monitor
        self._settle = settle
        self._ended = ended  # told of every job that left a slot (but at a daemon stop), with its run time
        self._started = started  # told when a job that waited in a slot starts there
        self._unrun = unrun  # given the jobs that waited in a slot and leave it unrun, in their order
        self._lane_used_mono = 0.0
        self._retiring: list[Slot] = []  # killed slots not yet reaped
        fence_s = fence_after_s(settings.lease_ttl_s, renewal_interval_s(settings.lease_ttl_s))
        self._spec = SlotSpec(
            settings.serializer,
            False,
            settings.sample_interval_s,
            0,
            pulse,
            fence_s,
            redis_url=redis_url,  # a job's rq.get_current_job() connects there, if it uses its Job
            queues=settings.queues,
        )
        self.log = logger

    def start(self) -> None:
        """Fork every slot and wait until each is ready."""
        self.slots = [self._new_slot(i) for i in range(self.settings.slots)]
        for slot in self.slots:
            if slot.wait_ready():
                self._monitor.track(slot.index, slot.pid, slot.heap)

    def free(self) -> list[Slot]:
        """Slots that are ready and have no job (the P0 lane aside: it takes P0 jobs only)."""
        return [slot for slot in self.slots if not slot.busy and slot.ready and not self.is_lane(slot)]

    # --- the P0 lane: one more slot, for P0 jobs only, open while P0 jobs keep finding every slot busy

    def is_lane(self, slot: Slot) -> bool:
        return self._is_lane_index(slot.index)

    def _is_lane_index(self, index: int) -> bool:
        """The lane's place is after the `settings.slots` regular slots."""
        return index >= self.settings.slots

    @property
    def lane(self) -> Slot | None:
        return self.slots[-1] if len(self.slots) > self.settings.slots else None

    def open_lane(self, now_mono: float, why: str) -> None:
        """Fork the lane if it is not open (ready for a P0 job in a few ms); either way, keep it open."""
        self._lane_used_mono = now_mono
        if self.lane is None:
            self.slots.append(self._new_slot(self.settings.slots))
            self.log.info("P0 lane opened: {}", why)

    def saturated(self) -> bool:
        """Every slot but the lane is running a job."""
        return all(slot.busy for slot in self.slots[: self.settings.slots])

    def lane_used(self, now_mono: float) -> None:
        self._lane_used_mono = now_mono

    def close_idle_lane(self, now_mono: float, idle_s: float) -> None:
        """Stop the lane once no P0 job has used it for `idle_s` (kept while every other slot is busy)."""
        lane = self.lane
        if lane is None or lane.busy or self.saturated():
            return
        if now_mono - self._lane_used_mono > idle_s:
            self.slots.pop()
            for fd in lane.fds:
                self._poller.remove(fd)
            lane.stop()
            self._monitor.untrack(lane.index)
            self.log.info("P0 lane closed: unused for {:g} s", idle_s)

    def stopping(self) -> bool:
        """A stop is under way: a job asked to yield, or a killed slot whose memory is not back yet."""
        return bool(self._retiring) or any(r.preempt_deadline is not None for r in self.running())

    def busy(self) -> bool:
        return any(slot.busy for slot in self.slots)

    def running(self) -> list[Running]:
        return [slot.running for slot in self.slots if slot.running is not None]

    def waiting(self) -> list[Running]:
        """The jobs waiting in slots behind their running jobs (handed over, not started)."""
        return [running for slot in self.slots for running in slot.waiting]

    def take_back_all(self) -> None:
        """Have every slot give back the jobs waiting in it (memory pressure, a P0 job, a pause, a stop):
        they return to the local queue unrun (`unrun`)."""
        for slot in self.slots:
            slot.take_back()

    def stop_all(self) -> list[Running]:
        """Kill busy slots and stop idle ones; returns the jobs that were running (to put back)."""
        unfinished = []
        for retired in self._retiring:
            self._poller.remove(retired.pidfd)
            retired.reap(block=True)
        self._retiring.clear()
        for slot in self.slots:
            held = [slot.running] if slot.running is not None else []
            unfinished += [*held, *slot.waiting]  # waiting: never started (or never sent: a dead slot)
            slot.waiting.clear()
            if held:
                slot.kill()
            else:
                slot.stop()
        return unfinished

    def abandon(self) -> list[Running]:
        """Kill every running job and replace its slot, writing no outcome (the jobs are no longer this
        daemon's: its lease was lost); returns them."""
        abandoned = []
        for slot in list(self.slots):
            running, slot.running = slot.running, None
            if running is not None or slot.waiting:
                abandoned += [*([running] if running is not None else []), *slot.waiting]
                slot.waiting.clear()
                self._swap(slot)
        return abandoned

    def reap_timeouts(self, now_mono: float) -> None:
        """Stop jobs past their timeout, and preempted jobs past their grace period."""
        for slot in self.slots:
            running = slot.running
            if running is not None and running.preempt_deadline and now_mono > running.preempt_deadline:
                late = running.preempt_reason + "; no checkpoint within the grace period"
                if running.for_memory:
                    self.stop_for_memory(slot, late)
                else:
                    self._interrupt(slot)
            elif running is not None and now_mono > running.deadline_mono:
                slot.running = None
                self._swap(slot)
                reason = f"job exceeded its timeout of {running.options.timeout_s:g} s and was stopped"
                now = time.time()
                self._fail(running, reason, now - (now_mono - running.started_mono), now)

    def recycle_leaky(self, growth: dict[int, int], limit: int) -> None:
        """Replace idle slots whose RSS grew past `limit` since they started (memory a job left behind)."""
        for slot in self.slots:
            grown = growth.get(slot.index, 0)
            if not slot.busy and slot.ready and grown > limit:
                self.log.warning(
                    "slot {} (pid {}) recycled: idle, yet its RSS grew {:.0f} MiB since it started",
                    slot.index,
                    slot.pid,
                    grown / 2**20,
                )
                self._swap(slot)

    def stop_for_memory(self, slot: Slot, reason: str) -> None:
        """Kill a slot's job for memory (pressure or the slot cap), and decide where the job goes.

        It resumes from its checkpoint if it saved one; a job that must not run twice fails; any other
        goes back to the front of its queue to run again, until it has been stopped
        `memory_stop_limit` times: then it is parked in the shed registry with its peak (replayable),
        never failed and never looping. None of this counts against the task's circuit breaker.
        """
        running, slot.running = slot.running, None
        assert running is not None
        self._swap(slot)
        self._settle_memory_stop(running, reason)

    def _oom_killed(self, slot: Slot, running: Running) -> bool:
        """Whether the kernel's OOM killer took this slot: it died of SIGKILL, which the daemon did not
        send, while the kernel's count of OOM kills grew. (Slots are its first choice: see
        `slots.SLOT_OOM_SCORE_ADJ`.) Any other death of a slot is its job's own failure."""
        if slot.exitcode != -signal.SIGKILL or running.oom_kills_before is None:
            return False
        now = self._monitor.oom_kills()
        return now is not None and now > running.oom_kills_before

    def _settle_memory_stop(self, running: Running, reason: str) -> None:
        """Where a job stopped for memory goes (see `stop_for_memory`); its slot is already replaced."""
        now = time.time()
        started = now - (time.monotonic() - running.started_mono)
        stops = _memory_stops(running) + 1
        if running.checkpoint:
            self._settle(outcomes.preempted(running.job, running.checkpoint, started, now))
            self._log_preempted(running, "killed, resumes from its checkpoint")
        elif running.kind is Kind.AT_MOST_ONCE:
            why = f"stopped: {reason}; not run again: its task is marked at-most-once"
            self._settle_failure(running, why, started, now)
        elif stops >= self.settings.memory_stop_limit:
            why = (
                f"parked: stopped for memory {stops} times (limit memory_stop_limit="
                f"{self.settings.memory_stop_limit}); peak {running.peak / 2**20:.0f} MiB; last: {reason}"
            )
            self._settle(outcomes.parked(running.job, Outcome.SHED, why, "memory", now))
            self.log.bind(job_id=running.job.id).warning("job {} {}", running.job.id, why)
        else:
            why = f"stopped for memory ({stops} of {self.settings.memory_stop_limit}): {reason}"
            self._settle(outcomes.stopped(running.job, "", why, started, now))
            self.log.bind(job_id=running.job.id).warning("job {} {}; runs again", running.job.id, why)
        self._ended(running, End.STOPPED_FOR_MEMORY, now - started)

    def _interrupt(self, slot: Slot) -> None:
        """Kill a job that was asked to yield its slot (not for memory) and did not in time: it goes back
        to the front of its queue, from its checkpoint if it saved one, without counting as a stop."""
        running, slot.running = slot.running, None
        assert running is not None
        self._swap(slot)
        now = time.time()
        started = now - (time.monotonic() - running.started_mono)
        self._settle(outcomes.preempted(running.job, running.checkpoint, started, now))
        self._log_preempted(running, "killed after the grace period")
        self._ended(running, End.INTERRUPTED, now - started)

    # --- what slots say --------------------------------------------------------------------------

    def _on_message(self, slot: Slot) -> bool:
        """Read what the slot sent (its descriptor is readable); False once it has gone."""
        try:
            messages = slot.receive()
        except (EOFError, OSError):
            return False  # the slot died; its pidfd says so and `_on_exit` settles the job
        for message in messages:
            if self.slots[slot.index] is not slot:
                break  # replaced by an earlier message (its one job done, or preempted): nothing follows
            if message is None:
                self._monitor.track(slot.index, slot.pid, slot.heap)  # ready: its RSS now is its base
            elif message[0] == "checkpoint":
                if slot.running is not None and slot.running.job.id == message[1]:
                    slot.running.checkpoint = checkpoint.encode(message[2])
            elif message[0] == slot_main.GIVEN_BACK:
                self._on_given_back(slot, message[1])
            else:
                self._on_outcome(slot, message)
        return True

    def _on_given_back(self, slot: Slot, job_ids: list[str]) -> None:
        before = slot.running
        if given := slot.given_back(job_ids, time.monotonic()):
            self.log.info("slot {} gave back {} jobs that waited in it, unrun", slot.index, len(given))
            self._unrun(given)
        if slot.running is not None and slot.running is not before:
            self._started(slot.running, slot)  # sent after the TAKE_BACK: it started instead

    def _on_exit(self, slot: Slot) -> None:
        if not slot.exited():
            return
        while self.slots[slot.index] is slot and slot.conn.poll(0) and self._on_message(slot):
            pass  # it sent its outcome (or more) before it ended
        if self.slots[slot.index] is slot:
            self._replace(slot)

    def _on_outcome(self, slot: Slot, message: tuple[object, ...]) -> None:
        job_id, kind, payload, started, ended = message
        running = slot.running
        if running is None or running.job.id != job_id:
            self.log.warning("slot {} reported an outcome for job {} it was not running", slot.index, job_id)
            return
        slot.running = None
        if kind == "ok":
            self._settle(outcomes.finished(running.job, running.options, payload, started, ended))  # type: ignore[arg-type]
            self._ended(running, End.FINISHED, ended - started)  # type: ignore[operator]
        elif kind == "preempted":
            self._settle(outcomes.preempted(running.job, running.checkpoint, started, ended))  # type: ignore[arg-type]
            self._log_preempted(running, "checkpointed")
            how = End.STOPPED_FOR_MEMORY if running.for_memory else End.INTERRUPTED
            self._ended(running, how, ended - started)  # type: ignore[operator]
        else:
            self._fail(running, str(payload), started, ended)  # type: ignore[arg-type]
        if self.settings.slot_mode == "fresh" or kind == "preempted":
            self._replace(slot)  # a preempted slot is recycled so its memory really goes back
        elif self.slots[slot.index] is slot and (following := slot.next_job(time.monotonic())) is not None:
            self._started(following, slot)

    def _replace(self, slot: Slot) -> None:
        """Settle the job of a slot that died (or finished its one job) and start a new slot."""
        running, slot.running = slot.running, None
        if running is not None and slot.heap.fenced():
            self._put_back_fenced(slot, running)
        elif running is not None and self._oom_killed(slot, running):
            self.log.warning("slot {} (pid {}) replaced: {}", slot.index, slot.pid, KERNEL_OOM_KILL)
            self._settle_memory_stop(running, KERNEL_OOM_KILL)
        elif running is not None:
            now = time.time()
            self._fail(running, f"{running.call.func_path}: {slot.death_reason()}", now, now)
            self.log.warning("slot {} (pid {}) replaced: {}", slot.index, slot.pid, slot.death_reason())
        self._swap(slot)

    def _put_back_fenced(self, slot: Slot, running: Running) -> None:
        """The slot stopped its own job because this daemon was silent past its fence (frozen): the job
        goes back to the front of its queue, if it is still this daemon's when the outcome is written."""
        now = time.time()
        self._settle(outcomes.preempted(running.job, running.checkpoint, now, now))
        self.log.bind(job_id=running.job.id).warning(
            "slot {} stopped job {} itself: this daemon was silent past its fence (frozen?); the job goes "
            "back to its queue unless another daemon has it",
            slot.index,
            running.job.id,
        )
        self._ended(running, End.INTERRUPTED, 0.0)

    # --- slot processes --------------------------------------------------------------------------

    def _new_slot(self, index: int) -> Slot:
        one_job = self.settings.slot_mode == "fresh"
        lane = self._is_lane_index(index)
        nice = 0 if lane else self.settings.slot_nice  # the P0 lane: not niced
        role = proctitle.slot_role(index, lane)
        oom_score_adj = LANE_OOM_SCORE_ADJ if lane else SLOT_OOM_SCORE_ADJ
        spec = replace(self._spec, one_job=one_job, nice=nice, role=role, oom_score_adj=oom_score_adj)
        slot = Slot(index, spec)
        message_fd, exit_fd = slot.fds
        self._poller.add(message_fd, lambda: self._on_message(slot))
        self._poller.add(exit_fd, lambda: self._on_exit(slot))
        return slot

    def _swap(self, slot: Slot) -> None:
        """Retire `slot` (stop polling it, kill it) and put a new one in its place; the jobs waiting in
        it go back unrun (one may have just started: only jobs that may run twice wait in a slot)."""
        if slot.waiting:
            given, slot.waiting = list(slot.waiting), deque()
            self._unrun(given)
        if slot.start_ms is not None:
            self.start_ms.append(slot.start_ms)
        for fd in slot.fds:
            self._poller.remove(fd)
        slot.send_kill()
        if not slot.reap(block=False):  # reaped when its pidfd says it ended, meanwhile the new one starts
            self._retiring.append(slot)
            self._poller.add(slot.pidfd, lambda: self._on_retired_exit(slot))
        self.slots[slot.index] = self._new_slot(slot.index)

    def _on_retired_exit(self, slot: Slot) -> None:
        if slot.exited():
            self._poller.remove(slot.pidfd)
            slot.reap(block=False)
            self._retiring.remove(slot)

    # --- outcomes --------------------------------------------------------------------------------

    def _fail(self, running: Running, reason: str, started: float, ended: float) -> None:
        """The task's own failure (an exception, a crash, its timeout): the breaker counts it."""
        self._settle_failure(running, reason, started, ended)
        self._ended(running, End.FAILED, ended - started)

    def _settle_failure(self, running: Running, reason: str, started: float, ended: float) -> None:
        settlement = outcomes.failed(running.job, running.options, reason, started, ended)
        log_failure(settlement)
        self._settle(settlement)

    def _log_preempted(self, running: Running, how: str) -> None:
        self.log.bind(job_id=running.job.id, priority=running.job.priority.name).warning(
            "job {} preempted ({}): {}", running.job.id, how, running.preempt_reason or "slot recycled"
        )


KERNEL_OOM_KILL = "killed by the kernel's OOM killer: the host or the daemon's cgroup ran out of memory"


def log_failure(settlement: Settlement) -> None:
    """One line per failed (or retried) job: its id, outcome and the last line of the reason."""
    last_line = settlement.reason.strip().splitlines()[-1] if settlement.reason.strip() else ""
    logger.bind(job_id=settlement.job.id, priority=settlement.job.priority.name).warning(
        "job {} {}: {}", settlement.job.id, settlement.outcome.value, last_line[:300]
    )


def _memory_stops(running: Running) -> int:
    """How many times the job was stopped for memory before this run (a field the settle script keeps)."""
    raw = running.job.fields.get("asched_memory_stops")
    try:
        return max(0, int(raw)) if raw else 0
    except ValueError:
        return 0
