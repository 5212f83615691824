"""What one daemon knows of its queues between claims, and the watches that tell it.

A claim reports which queues it left empty; the daemon then keeps a watch on each (`waker.Waker`: a
pending no-op `BLMOVE` that answers when the queue gets a job) and claims from a queue again only once
its watch fired, unless it never looked. A queue known to hold jobs (`arrived`: its watch fired, or a
claim left jobs in it) more urgent than every job held locally is claimed from before the next local
job starts. A watch whose connection died without a word (a
partition, a server no longer the master) never fires: `check_silent` finds such a queue by its depth
at two housekeeping rounds in a row and resets its watch. The daemon decides when to claim; this keeps
the facts it decides on.
"""

from __future__ import annotations

from adaptive_scheduler.events import Poller
from adaptive_scheduler.waker import Waker


class Arrivals:
    """Per queue index: empty at the last claim, a job arrived since, and its watch."""

    def __init__(self, waker: Waker, poller: Poller) -> None:
        self._waker = waker
        self._poller = poller
        self.empty: set[int] = set()  # queues the last claim found empty (or broken: not claimed from)
        self.arrived: set[int] = set()  # queues known to hold jobs: a watch fired, or a claim left them so
        self._unread: list[int] = []  # watches that fired, whose reply is read after the claim is sent
        self._silent: set[int] = set()  # queues with jobs whose watch did not fire (at the last round)

    def quiet(self) -> set[int]:
        """Queues empty at the last claim that got no job since: nothing to claim there."""
        return self.empty - self.arrived

    def claimed(
        self,
        answered: set[int],
        took: set[int],
        emptied: set[int],
        broken: set[int],
        paused: frozenset[int],
    ) -> None:
        """A claim's reply: the arrivals it answered are served; watch the queues it left empty.

        A claim that took jobs but left one of the queues it answered for, or took from, not empty (it
        took as many as the local queue had room for) tells that queue still holds jobs: it stays
        `arrived`, so the daemon claims from it again before starting a less urgent job it holds.
        Without that, P0 jobs that landed together waited in Redis, unwatched, for the next claim a
        finished job brought (`bench.load` at 75 %: 3-5 ms of its P0 p99) while the slots started P3
        jobs held locally. A claim that took nothing (its lease refused) says nothing of the queues.
        """
        still_holding = (answered | took) - emptied - broken if took else set()
        self.arrived = (self.arrived - answered) | still_holding
        self.empty = emptied | broken  # a broken queue is not claimed from until fixed
        for index in emptied:
            self.arm(index, paused)

    def resumed(self, indexes: set[int]) -> None:
        """Resumed queues: look at them at the next claim (they were not watched while paused)."""
        self.empty -= indexes

    def arm(self, index: int, paused: frozenset[int]) -> None:
        """Watch queue `index`, unless it is paused (watching it would only wake the daemon)."""
        if index in paused:
            return
        self.read_answers()  # a queue is re-armed only after its last answer was read
        fd = self._waker.arm(index)
        if fd is not None:
            self._poller.add(fd, lambda: self._fired(index, fd))

    def rearm(self, paused: frozenset[int]) -> None:
        """Set again the watches that could not be set (Redis refused, or was away)."""
        for index in self.quiet():
            self.arm(index, paused)

    def read_answers(self) -> None:
        """Read the replies of the watches that fired (after the claim they called for was sent)."""
        for index in self._unread:
            self._waker.answer(index)
        self._unread.clear()

    def reset(self, index: int) -> None:
        """Drop queue `index`'s watch and its connection, and claim from the queue at the next call."""
        fd = self._waker.reset(index)
        if fd is not None:
            self._poller.remove(fd)
        self.arrived.add(index)

    def check_silent(self, depths: list[int], paused: frozenset[int]) -> list[int]:
        """Reset the watches of queues believed empty that held jobs at this round and the one before
        (see the module's docstring); returns their indexes."""
        silent = {i for i in self.quiet() - paused if depths[i] > 0}
        dead = sorted(silent & self._silent)
        for index in dead:
            self.reset(index)
        self._silent = silent
        return dead

    def close(self) -> None:
        self._waker.close()

    def _fired(self, index: int, fd: int) -> None:
        """Note it; the reply itself is read once the claim for the new job has been sent."""
        self._poller.remove(fd)
        self.arrived.add(index)
        self._unread.append(index)
