"""The governor's hands: apply its decisions to the slots (stops for memory, room for P0 jobs) and keep
each running job's memory bookkeeping (its need at the start, its footprint at every reading).

The decisions themselves are pure (`policy`, `victim`, `admission`); this is where they meet the slot
pool. Stops go one at a time: none while an earlier one has not taken effect (`SlotPool.stopping`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adaptive_scheduler.governor.admission import Decision
from adaptive_scheduler.governor.planner import Planner
from adaptive_scheduler.governor.policy import (
    Preempt,
    Reading,
    Stop,
    make_room_for,
    over_cap,
    pressure_stop,
    stop_action,
)
from adaptive_scheduler.governor.reader import Governor
from adaptive_scheduler.governor.victim import Runner, choose
from adaptive_scheduler.model import ClaimedJob, Priority
from adaptive_scheduler.slotpool import SlotPool
from adaptive_scheduler.slots import End, Running, Slot
from loguru import logger

if TYPE_CHECKING:
    from adaptive_scheduler.settings import Settings

FRESH_READ_BYTES = 16 * 2**20  # a slot that held this much at the last reading is read again at a start


class Enforcer:
    """Memory decisions applied to one daemon's slot pool."""

    def __init__(self, settings: Settings, governor: Governor, pool: SlotPool, planner: Planner) -> None:
        self.settings = settings
        self.governor = governor
        self.pool = pool
        self.planner = planner
        self.log = logger
        # one stop, then a reading taken after it, then perhaps another: the memory a stop frees shows
        # only in the next reading, whichever path (a level, the slot cap, room for P0) stopped
        self._last_reading_mono = 0.0
        self._last_stop_mono = -1.0

    # --- readings ------------------------------------------------------------------------------------

    def after_reading(self, now_mono: float) -> None:
        """Note each running job's footprint; stop jobs past the slot cap, and one job if the reading
        calls for it; replace idle slots that kept memory."""
        sample = self.governor.sample
        assert sample is not None
        self._last_reading_mono = now_mono
        self.pool.recycle_leaky(sample.slot_growth, int(self.settings.slot_idle_growth_limit))
        for slot in self.pool.slots:
            if slot.running is not None:
                self.planner.note(slot.running, sample.growth(slot.index, slot.pid))
        runners = self.runners()
        actions = over_cap(runners, int(self.settings.slot_memory_cap))
        reading = Reading(max(sample.used, sample.heap), sample.budget)
        stopping = self._stopping() or bool(actions)
        stop = pressure_stop(reading, self.governor.thresholds, runners, stopping)
        for action in [*actions, *([stop] if stop else [])]:
            self.apply(action, now_mono, reading.percent)

    def _stopping(self) -> bool:
        """A stop has not shown in a reading yet: no other stop for memory now."""
        return self.pool.stopping() or self._last_stop_mono >= self._last_reading_mono

    def apply(self, action: Preempt | Stop, now_mono: float, percent: float) -> None:
        self._last_stop_mono = now_mono
        slot = self.pool.slots[action.slot]
        match action:
            case Preempt(reason=reason):
                slot.ask_to_yield(self.settings.preempt_grace_s, reason, now_mono, for_memory=True)
                self.log.bind(job_id=slot.running.job.id if slot.running else None).warning(
                    "preempting slot {}: {} (pressure {:.1f} %)", slot.index, reason, percent
                )
            case Stop(reason=reason):
                self.pool.stop_for_memory(slot, reason)

    def runners(self) -> list[Runner]:
        """The running jobs not already asked to yield, as victim choice sees them."""
        return [
            self.planner.runner(slot.index, slot.running)
            for slot in self.pool.slots
            if slot.running is not None and slot.running.preempt_deadline is None
        ]

    # --- starts --------------------------------------------------------------------------------------

    def admit(self, job: ClaimedJob, func_path: str, now: float, now_mono: float) -> Decision:
        """Whether `job` fits beside the running jobs (admission)."""
        return self.planner.admit(job, func_path, self.pool.running(), self.governor.sample, now, now_mono)

    def starting(self, running: Running, slot: Slot, now: float) -> None:
        """`running` is about to be handed to `slot`: note what stopping it costs, its need and what the
        slot held before it."""
        running.kind = self.planner.kind(running.call.func_path, running.task)
        self.planner.starting(running, self._slot_growth(slot), now)
        if self.governor.sample is not None:
            running.oom_kills_before = self.governor.sample.oom_kills

    def promoted(self, running: Running, slot: Slot) -> None:
        """A job that waited in `slot` behind another starts: what the slot holds now is its base."""
        running.base = self._slot_growth(slot)
        if self.governor.sample is not None:
            running.oom_kills_before = self.governor.sample.oom_kills

    def started(self, running: Running, now_mono: float) -> None:
        """A P0 job started although it is predicted not to fit: stop one lower job now, before the
        reading shows the shortage (the next readings stop more if they must)."""
        sample = self.governor.sample
        if running.job.priority != Priority.P0 or sample is None or self._stopping():
            return
        need = self.planner.overflow(self.pool.running(), sample)
        victim = choose(self.runners(), need) if need > 0 else None
        if victim is not None:
            reason = f"a P0 job needs {need / 2**20:.0f} MiB more than is free below HIGH"
            self.apply(stop_action(victim, reason), now_mono, sample.percent)

    def make_slot_for_p0(self, now_mono: float) -> None:
        """Every slot busy and a P0 job waiting: open the P0 lane, or, when it is busy too (or off),
        preempt a resumable lower job."""
        self.pool.take_back_all()  # jobs waiting in slots never keep a P0 job waiting
        if not all(slot.busy for slot in self.pool.slots):
            return  # a slot is free, or starting (a replacement not yet ready): it will take the job
        if self.settings.p0_lane and self.pool.lane is None:
            self.pool.open_lane(now_mono, "a P0 job found every slot busy")
            return
        yielding = any(r.preempt_deadline is not None for r in self.pool.running())
        action = make_room_for(Priority.P0, self.runners(), yielding)
        if action is not None:
            slot = self.pool.slots[action.slot]
            slot.ask_to_yield(self.settings.preempt_grace_s, action.reason, now_mono)
            self.log.bind(job_id=slot.running.job.id if slot.running else None).info(
                "preempting slot {}: {}", slot.index, action.reason
            )

    def ended(self, running: Running, end: End, now: float) -> None:
        """A job left its slot: what it reached teaches its task's profile (not after an interruption,
        which says nothing of its need)."""
        if end is not End.INTERRUPTED:
            self.planner.learned(running, end is End.STOPPED_FOR_MEMORY, now)

    def _slot_growth(self, slot: Slot) -> tuple[int, int]:
        """What the slot holds before its next job: the last reading, or a fresh one if that reading saw
        it hold much (the job before may have ended since, its peak still in that reading)."""
        sample = self.governor.sample
        growth = sample.growth(slot.index, slot.pid) if sample else (0, 0)
        if max(growth) < FRESH_READ_BYTES:
            return growth
        return self.governor.monitor.slot_growth_now(slot.index, slot.pid)
