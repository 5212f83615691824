"""Which one running job to stop when memory must be freed (pure).

Never every job at once: one victim per decision, then the next reading decides again. The victim
is the job whose stop frees enough at the least cost; cost orders by priority (lowest first), then
by what a stop throws away (a preemptible job checkpoints; a restartable one and a plain RQ job run
again from the start; an at-most-once job fails), then by work lost (the most recently started
first). When no single job frees enough, the one that frees the most goes first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from adaptive_scheduler.model import Priority


class Kind(IntEnum):
    """What stopping a job costs, cheapest first."""

    PREEMPTIBLE = 0  # checkpoints with the SDK and resumes
    RESTARTABLE = 1  # marked safe to run again from the start
    PLAIN = 2  # a plain RQ job: runs again (at-least-once, as after a crash)
    AT_MOST_ONCE = 3  # marked not safe to run twice: a stop fails it


@dataclass(frozen=True, slots=True)
class Runner:
    """A running job, as victim choice sees it."""

    slot: int
    priority: Priority
    kind: Kind
    started_s: float  # monotonic
    footprint: int  # bytes its job has added so far


def cost(runner: Runner) -> tuple[int, int, float]:
    """Smaller is cheaper to stop."""
    return (-runner.priority, runner.kind, -runner.started_s)


def choose(runners: Sequence[Runner], need: int, lowest: Priority = Priority.P1) -> Runner | None:
    """The one job to stop to free `need` bytes, among jobs of priority `lowest` or less urgent."""
    candidates = [r for r in runners if r.priority >= max(lowest, Priority.P1)]
    if not candidates:
        return None
    enough = [r for r in candidates if r.footprint >= need]
    if enough:
        return min(enough, key=cost)
    return max(candidates, key=lambda r: (r.footprint, tuple(-c for c in cost(r))))
