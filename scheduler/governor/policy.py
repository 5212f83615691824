"""What memory pressure does to jobs (pure): which may start, which are skipped, shed or put back,
which running ones are preempted. Values in, decisions out; the daemon applies them.

| level     | claim from | a local job that is not P0 ...         | running jobs                        |
|-----------|------------|-----------------------------------------|-------------------------------------|
| NORMAL    | P0..P3     | runs                                    | run                                 |
| ELEVATED  | P0..P3     | runs; heartbeats are skipped            | run                                 |
| HIGH      | P0, P1     | P2/P3 wait; heartbeats are skipped      | resumable P2/P3 are preempted       |
| EMERGENCY | P0         | back to Redis; shed if a heartbeat or   | all but P0 stop                     |
|           |            | past its deadline                       |                                     |

Resumable: the task is preemptible (checkpoints with the SDK) or restartable (may run again from
the start). A job that is neither and must stop fails with the reason.

Any level: a slot whose job grew past the slot memory cap is preempted if it can be, else stopped.
P0 is never shed, skipped, put back or preempted for pressure.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from scheduler.governor.pressure import Level
from scheduler.model import Priority


class Fate(Enum):
    """What happens to a claimed job at the head of the local queue."""

    RUN = "run"
    WAIT = "wait"  # stays claimed locally until pressure falls
    SKIP = "skip"
    SHED = "shed"
    PUT_BACK = "put_back"


@dataclass(frozen=True, slots=True)
class RunningJob:
    """What the policy needs to know of a slot's job."""

    slot: int
    priority: Priority
    heartbeat: bool
    preemptible: bool
    restartable: bool
    growth_bytes: int


@dataclass(frozen=True, slots=True)
class Preempt:
    """Ask the slot's job to checkpoint and stop; kill it after the grace period."""

    slot: int
    reason: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the slot's job now: it cannot checkpoint and may not restart; it fails with `reason`."""

    slot: int
    reason: str


def admitted_queues(level: Level) -> int:
    """How many queues, most urgent first, a claim may take from."""
    return {Level.NORMAL: 4, Level.ELEVATED: 4, Level.HIGH: 2, Level.EMERGENCY: 1}[level]


def fate(level: Level, priority: Priority, heartbeat: bool, past_deadline: bool = False) -> Fate:
    """What to do with a local job at `level` (`past_deadline`: the producer's deadline has passed)."""
    if priority == Priority.P0:
        return Fate.RUN
    if level == Level.EMERGENCY:
        return Fate.SHED if heartbeat or past_deadline else Fate.PUT_BACK
    if heartbeat and level >= Level.ELEVATED:
        return Fate.SKIP
    if level == Level.HIGH and priority >= Priority.P2:
        return Fate.WAIT
    return Fate.RUN


def act_on_running(level: Level, jobs: list[RunningJob], slot_cap_bytes: int) -> list[Preempt | Stop]:
    """The preemptions and stops `level` and the slot cap call for."""
    actions: list[Preempt | Stop] = []
    for job in jobs:
        resumable = job.preemptible or job.restartable
        if job.growth_bytes > slot_cap_bytes:
            cap_mb = slot_cap_bytes // 1_000_000
            reason = f"exceeded the slot memory cap ({cap_mb} MB)"
            actions.append(Preempt(job.slot, reason) if resumable else Stop(job.slot, reason))
        elif job.priority == Priority.P0:
            continue
        elif level == Level.EMERGENCY:
            reason = "memory pressure EMERGENCY: everything but P0 stops"
            actions.append(Preempt(job.slot, reason) if resumable else Stop(job.slot, reason))
        elif level == Level.HIGH and job.priority >= Priority.P2 and resumable:
            actions.append(Preempt(job.slot, "memory pressure HIGH: P2/P3 jobs are preempted"))
    return actions


def make_room_for(waiting: Priority, jobs: list[RunningJob], yielding: bool) -> Preempt | None:
    """With every slot busy and a P0 job waiting: which running job gives its slot up, if any.

    Only a resumable job of lower priority is asked, the least urgent first, and only one at a time
    (`yielding`: a slot is already on its way back), so a P0 job waits for at most one checkpoint.
    """
    if waiting != Priority.P0 or yielding:
        return None
    candidates = [j for j in jobs if j.priority > Priority.P0 and (j.preemptible or j.restartable)]
    if not candidates:
        return None
    victim = max(candidates, key=lambda job: job.priority)
    return Preempt(victim.slot, "a P0 job is waiting for a slot")
