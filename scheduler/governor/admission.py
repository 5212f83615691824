"""Which waiting job may start now, given what memory is in use and what is predicted (pure).

A job starts only if what is in use now, plus what the running jobs are still predicted to add, plus
its own predicted peak stays under the admission limit (HIGH minus a headroom: below the level at
which the daemon would have to stop something). Rules, in queue order (P0 first, FIFO inside a
priority):

- P0 is never held back (room is made for it by stopping lower work, one job at a time).
- A job that does not fit waits, and a job behind it (same or lower priority) that fits goes ahead;
  but once a waiting job has waited `max_wait_s`, nothing behind it goes ahead (a reservation, as in
  backfill schedulers): the running jobs drain until it fits, so a big job is not starved forever by a
  stream of small ones.
- A task without a profile is assumed to need `unprofiled_bytes` (a share of the budget) until a run
  of it has ended and taught its profile. Running its first jobs one at a time would be safer still,
  but it serializes every new task on hosts with plenty of memory; a wrong guess costs at most one
  stop for memory, after which the stopped run's peak (bumped) is the profile.
- With no other job running, the head job starts whatever its prediction: waiting cannot make room.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from adaptive_scheduler.model import Priority


@dataclass(frozen=True, slots=True)
class Room:
    """Bytes: the reading, what running jobs are still predicted to add, and the admission limit."""

    in_use: int
    running_remaining: int
    limit: int
    running_jobs: int  # jobs running now (P0 included)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A job waiting in the local queue, as admission sees it."""

    priority: Priority
    need: int | None  # its task's predicted peak; None: no profile yet
    waited_s: float


class Decision(Enum):
    """What admission says of one waiting job."""

    START = "start"
    WAIT = "wait"  # a job behind it may go ahead
    HOLD = "hold"  # waits, and has waited long enough that nothing behind it goes ahead


def fits(room: Room, need: int) -> bool:
    """Whether `need` more bytes stay under the limit, with what runs now and what it will add."""
    return room.in_use + room.running_remaining + need <= room.limit


def decide(candidate: Candidate, room: Room, unprofiled_bytes: int, max_wait_s: float) -> Decision:
    """Whether the job may start now."""
    if candidate.priority == Priority.P0 or room.running_jobs == 0:
        return Decision.START
    need = unprofiled_bytes if candidate.need is None else candidate.need
    if fits(room, need):
        return Decision.START
    return Decision.HOLD if candidate.waited_s >= max_wait_s else Decision.WAIT


def pick(candidates: Sequence[Candidate], room: Room, unprofiled_bytes: int, max_wait_s: float) -> int | None:
    """The position of the job to start next (candidates in queue order), or None when all must wait."""
    for position, candidate in enumerate(candidates):
        decision = decide(candidate, room, unprofiled_bytes, max_wait_s)
        if decision is Decision.START:
            return position
        if decision is Decision.HOLD:
            return None
    return None
