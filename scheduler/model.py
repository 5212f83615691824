"""Values shared by the daemon's modules.

Glossary: a *job* is one RQ job; its *task* is the function it names; a *slot* is a process that runs one
job at a time; *claim* moves a job from its Redis queue into this daemon's care (the RQ started
registry, atomically); *settle* writes a job's outcome back; *put back* returns a claimed job to the
front of its queue.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any


class Priority(IntEnum):
    """P0 is the most urgent; lower value runs first."""

    P0 = 0
    P1 = 1
    P2 = 2
    P3 = 3

    @classmethod
    def parse(cls, text: str) -> Priority:
        """'P1', 'p1' or '1' -> Priority.P1; ValueError otherwise."""
        name = text.strip().upper()
        name = name if name.startswith("P") else f"P{name}"
        try:
            return cls[name]
        except KeyError:
            raise ValueError(f"unknown priority {text!r} (use P0, P1, P2 or P3)") from None


class Outcome(Enum):
    """Where a settled job ends."""

    FINISHED = "finished"
    FAILED = "failed"
    RETRY = "retry"  # failed, but RQ retries are left: queued or scheduled again
    PUT_BACK = "put_back"  # not run (or stopped at a clean stop): back at the front of its queue
    PREEMPTED = "preempted"  # stopped under memory pressure: front of its queue, with its checkpoint
    STOPPED = "stopped"  # stopped for memory without a checkpoint: front of its queue to run again, counted
    SKIPPED = "skipped"  # a heartbeat not run under memory pressure (RQ sees it canceled)
    SHED = "shed"  # parked in the shed registry under memory pressure, to be replayed
    DEFERRED = "deferred"  # its task's circuit breaker is open: RQ's scheduled registry until it may run


@dataclass(frozen=True, slots=True)
class JobOptions:
    """The RQ job options the daemon honours, read from the job hash."""

    timeout_s: float
    result_ttl_s: int
    failure_ttl_s: int
    retries_left: int = 0
    retry_intervals: tuple[int, ...] = ()
    retry_at_front: bool = False


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job this daemon has claimed: it is in RQ's started registry under `execution_id`."""

    id: str
    priority: Priority
    execution_id: str
    fields: dict[str, bytes] = field(repr=False)
    claimed_at: float = 0.0  # time.monotonic() of the claim


@dataclass(frozen=True, slots=True)
class Call:
    """A decoded, allowlisted function call, ready to hand to a slot."""

    func_path: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Settlement:
    """A job's outcome, ready to be written to Redis by `Intake.exchange`."""

    job: ClaimedJob
    outcome: Outcome
    started_at: float = 0.0  # wall clock, for RQ's started_at/ended_at
    ended_at: float = 0.0
    result: bytes | None = None  # serialized return value (FINISHED)
    reason: str = ""  # exception text (FAILED, RETRY)
    options: JobOptions | None = None
    extra: str = ""  # RETRY: "<retries left>:<run at, unix s; 0 = now>:<1 at front | 0>";
    # PREEMPTED: the checkpoint to resume from; SKIPPED and SHED: the pressure level; DEFERRED: run at
    noted_mono: float = field(default_factory=time.monotonic)  # when the daemon learnt the outcome
