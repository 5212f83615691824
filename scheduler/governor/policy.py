"""What memory pressure does to jobs (pure): which may start, which are skipped, shed or put back,
which running ones are preempted. Values in, decisions out; the daemon applies them.

| level     | claim from | a local job that is not P0 ...         | running jobs (one stop per reading)  |
|-----------|------------|-----------------------------------------|-------------------------------------|
| NORMAL    | P0..P3     | runs (if admission finds it fits)       | run                                 |
| ELEVATED  | P0..P3     | runs; heartbeats are skipped            | run                                 |
| HIGH      | P0, P1     | P2/P3 wait; heartbeats are skipped      | one P2/P3 job stops, if two or more run |
| EMERGENCY | P0         | back to Redis; shed if a heartbeat or   | one job that is not P0 stops        |
|           |            | past its deadline                       |                                     |

The stops are decided on the reading, not the level (the level lingers for its hysteresis, the
memory a stop freed does not), and one at a time: a stop waits for the previous one to take effect.
`victim.choose` picks which job. Any level: a slot whose job grew past the slot memory cap is stopped.
P0 is never shed, skipped, put back or stopped for pressure.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from adaptive_scheduler.governor.pressure import Level, Thresholds
from adaptive_scheduler.governor.victim import Kind, Runner, choose, cost
from adaptive_scheduler.model import Priority


class Fate(Enum):
    """What happens to a claimed job at the head of the local queue."""

    RUN = "run"
    WAIT = "wait"  # stays claimed locally until pressure falls
    SKIP = "skip"
    SHED = "shed"
    PUT_BACK = "put_back"


@dataclass(frozen=True, slots=True)
class Preempt:
    """Ask the slot's job to checkpoint and stop; kill it after the grace period."""

    slot: int
    reason: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the slot's job now, for memory: it runs again, or is parked or failed (see `SlotPool`)."""

    slot: int
    reason: str


@dataclass(frozen=True, slots=True)
class Reading:
    """The part of a memory sample the stop rules use (bytes)."""

    used: int  # the larger of RSS-based use and the malloc reading
    budget: int

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.budget


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


def pressure_stop(
    reading: Reading, thresholds: Thresholds, runners: list[Runner], stopping: bool
) -> Preempt | Stop | None:
    """The one stop a reading calls for, if any (`stopping`: an earlier stop has not taken effect yet).

    At or above EMERGENCY any job but P0 may be the victim; at or above HIGH only P2/P3, and only while
    another job still runs beside it (a job alone below EMERGENCY is no danger to the host). The
    victim frees what brings the reading back under HIGH minus the margin.
    """
    percent = reading.percent
    if stopping or percent < thresholds.high:
        return None
    if percent >= thresholds.emergency:
        lowest, level = Priority.P1, "EMERGENCY"
    elif len(runners) >= 2:
        lowest, level = Priority.P2, "HIGH"
    else:
        return None
    need = int(reading.used - (thresholds.high - thresholds.margin) / 100 * reading.budget)
    victim = choose(runners, need, lowest)
    if victim is None:
        return None
    reason = f"memory pressure {level} ({percent:.1f} %): one job stops to free {need / 2**20:.0f} MiB"
    return stop_action(victim, reason)


def over_cap(runners: list[Runner], cap_bytes: int) -> list[Preempt | Stop]:
    """Jobs that grew past the slot memory cap (any priority, P0 included)."""
    reason = f"exceeded the slot memory cap ({cap_bytes // 1_000_000} MB)"
    return [stop_action(r, reason) for r in runners if r.footprint > cap_bytes]


def stop_action(victim: Runner, reason: str) -> Preempt | Stop:
    """A preemptible job is asked to checkpoint first; any other is stopped at once."""
    return Preempt(victim.slot, reason) if victim.kind == Kind.PREEMPTIBLE else Stop(victim.slot, reason)


def make_room_for(waiting: Priority, runners: list[Runner], yielding: bool) -> Preempt | None:
    """With every slot busy and a P0 job waiting: which running job gives its slot up, if any.

    Only a preemptible or restartable job of lower priority is asked, the least urgent first, and only
    one at a time (`yielding`: a slot is already on its way back), so a P0 job waits for at most one
    checkpoint.
    """
    if waiting != Priority.P0 or yielding:
        return None
    candidates = [r for r in runners if r.priority > Priority.P0 and r.kind <= Kind.RESTARTABLE]
    if not candidates:
        return None
    victim = min(candidates, key=cost)
    return Preempt(victim.slot, "a P0 job is waiting for a slot")
