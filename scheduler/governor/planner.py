"""The governor's planning half: what each task needs, whether a waiting job fits, which job stops.

It turns the daemon's state (the last reading, the running jobs, the learned profiles) into the values
the pure rules take (`admission`, `victim`, `policy`), and feeds what jobs reach back into the
profiles. A job's *footprint* is what it added to its slot (the larger of RSS and malloc growth since
it started); its *peak* the largest footprint any reading saw; its *need* the prediction it started
with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adaptive_scheduler.governor import admission
from adaptive_scheduler.governor.admission import Candidate, Decision, Room
from adaptive_scheduler.governor.monitor import MemorySample
from adaptive_scheduler.governor.profile_store import ProfileStore
from adaptive_scheduler.governor.victim import Kind, Runner
from adaptive_scheduler.model import ClaimedJob, Priority
from adaptive_scheduler.slots import Running
from adaptive_scheduler.tasks.registry import TaskInfo
from loguru import logger

if TYPE_CHECKING:
    from adaptive_scheduler.settings import Settings

MIB = 2**20
TOLD_MAX = 10_000


class Planner:
    """Admission and stop choice on learned per-task memory profiles."""

    def __init__(self, settings: Settings, store: ProfileStore, budget: int) -> None:
        self.store = store
        self.limit = int(budget * (settings.high_percent - settings.admission_headroom_percent) / 100)
        self.high = int(budget * settings.high_percent / 100)
        self.unprofiled_bytes = int(budget * settings.unprofiled_task_percent / 100)
        self.max_wait_s = settings.admission_max_wait_s
        self.at_most_once = frozenset(settings.at_most_once)
        self._told: set[str] = set()  # executions whose wait was logged

    def kind(self, func_path: str, task: TaskInfo | None) -> Kind:
        """What stopping a job of this task costs."""
        if task is not None and task.preemptible:
            return Kind.PREEMPTIBLE
        if (task is not None and task.at_most_once) or self._listed_at_most_once(func_path):
            return Kind.AT_MOST_ONCE
        return Kind.RESTARTABLE if task is not None and task.restartable else Kind.PLAIN

    def _listed_at_most_once(self, func_path: str) -> bool:
        return func_path in self.at_most_once or func_path.rpartition(".")[0] in self.at_most_once

    def admit(
        self,
        job: ClaimedJob,
        func_path: str,
        running: list[Running],
        sample: MemorySample | None,
        now: float,
        now_mono: float,
    ) -> Decision:
        """Whether `job` may start beside `running`, by the last reading."""
        if sample is None or job.priority == Priority.P0 or not running:
            return Decision.START  # as `admission.decide` would say, without a prediction to compute
        need = self.store.predict(func_path, now)
        candidate = Candidate(job.priority, need, now_mono - job.claimed_at)
        room = Room(
            max(sample.used, sample.heap),
            sum(r.remaining(self.unprofiled_bytes) for r in running),
            self.limit,
            len(running),
        )
        decision = admission.decide(candidate, room, self.unprofiled_bytes, self.max_wait_s)
        if decision is not Decision.START:
            self._log_wait(job, func_path, candidate, room)
        return decision

    def _log_wait(self, job: ClaimedJob, func_path: str, candidate: Candidate, room: Room) -> None:
        """One line per job that waits for memory (not one per attempt)."""
        if job.execution_id in self._told:
            return
        if len(self._told) >= TOLD_MAX:
            self._told.clear()
        self._told.add(job.execution_id)
        need = self.unprofiled_bytes if candidate.need is None else candidate.need
        why = (
            f"needs {need / MIB:.0f} MiB{'' if candidate.need is not None else ' (no profile yet)'}; "
            f"in use {room.in_use / MIB:.0f} + still to come from running jobs "
            f"{room.running_remaining / MIB:.0f} of {room.limit / MIB:.0f} MiB"
        )
        logger.bind(job_id=job.id, priority=job.priority.name).info(
            "job {} ({}) waits for memory: {}", job.id, func_path, why
        )

    def starting(self, running: Running, slot_growth: tuple[int, int], now: float) -> None:
        """A job is handed to a slot: note its need and what the slot held before it (RSS, malloc)."""
        running.need = self.store.predict(running.call.func_path, now)
        running.base = slot_growth

    def note(self, running: Running, slot_growth: tuple[int, int]) -> None:
        """A reading of the slot that runs `running`."""
        running.note_growth(slot_growth)

    def overflow(self, running: list[Running], sample: MemorySample | None) -> int:
        """Bytes by which what is in use plus what the running jobs are predicted to add passes HIGH
        (0 if it does not): the room a P0 job that did not fit needs made for it."""
        if sample is None:
            return 0
        remaining = sum(r.remaining(self.unprofiled_bytes) for r in running)
        return max(0, max(sample.used, sample.heap) + remaining - self.high)

    def runner(self, slot: int, running: Running) -> Runner:
        """`running` as victim choice sees it."""
        kind = self.kind(running.call.func_path, running.task)
        return Runner(slot, running.job.priority, kind, running.started_mono, running.footprint)

    def learned(self, running: Running, stopped_for_memory: bool, now: float) -> None:
        """A job ended (or was stopped for memory): its peak teaches its task's profile."""
        self.store.observe(running.call.func_path, running.peak, now, stopped_for_memory)
