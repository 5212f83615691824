"""What one daemon knows of its queues between claims, and the watches that tell it.

A claim reports which queues it left empty; the daemon then keeps a watch on each (`waker.Waker`: a
pending no-op `BLMOVE` that answers when the queue gets a job) and claims from a queue again only once
its watch fired, unless it never looked. A queue known to hold jobs (`arrived`: its watch fired, or a
claim left jobs in it) more urgent than every job held locally is claimed from before the next local
job starts. A watch whose connection died without a word (a partition, a server no longer the master)
never fires: `check_silent` finds such a queue by its depth at two housekeeping rounds in a row, the
same watch set at both, and resets its watch. The daemon decides when to claim; this keeps the facts
it decides on.

A watch may carry a *parked claim* (`park`: the daemon says when, and which): Redis runs it the moment the
watch answers, so a job that lands in an empty queue is claimed without a round trip from the daemon.
Its reply comes with the watch's and goes to `claimed_behind`. Until that reply is read, the execution
ids it may give are this daemon's (`parked_executions`: a reconcile must not put those claims back). A
parked claim whose connection dropped may or may not have run: `lost` is told, and the daemon
reconciles at its next exchange.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from adaptive_scheduler.events import Poller
from adaptive_scheduler.intake import ParkedClaim
from adaptive_scheduler.waker import Waker
from loguru import logger


def _no_claim(index: int) -> ParkedClaim | None:
    return None


class Arrivals:
    """Per queue index: empty at the last claim, a job arrived since, and its watch."""

    def __init__(
        self,
        waker: Waker,
        poller: Poller,
        park: Callable[[int], ParkedClaim | None] = _no_claim,
        claimed_behind: Callable[[int, ParkedClaim, Any], None] = lambda index, parked, reply: None,
        lost: Callable[[], None] = lambda: None,
    ) -> None:
        self._waker = waker
        self._poller = poller
        self._park, self._claimed_behind, self._lost = park, claimed_behind, lost
        self.parked: dict[int, ParkedClaim] = {}  # claims parked behind armed watches, by queue index
        self._ran_unread: set[str] = set()  # parked executions that had run, unread, at the last round
        self.empty: set[int] = set()  # queues the last claim found empty (or broken: not claimed from)
        self.arrived: set[int] = set()  # queues known to hold jobs: a watch fired, or a claim left them so
        self._unread: list[int] = []  # watches that fired, whose reply is read after the claim is sent
        # queues with jobs whose watch had not fired at the last round -> that watch's generation
        self._silent: dict[int, int] = {}

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
        if self._waker.armed(index):
            return
        parked = self._park(index)
        fd = self._waker.arm(index, parked.command if parked is not None else b"")
        if fd is not None:
            if parked is not None:
                self.parked[index] = parked
            self._poller.add(fd, lambda: self._fired(index, fd))

    def unpark(self) -> None:
        """Take back every parked claim (it was made for a state that changed: a memory level, a pause,
        a stop, a lease): their watches are reset, and their queues claimed from at the next call."""
        for index in list(self.parked):
            self.reset(index)

    def parked_executions(self) -> list[str]:
        """The execution ids the parked claims may give: this daemon's until their replies are read."""
        return [execution for parked in self.parked.values() for execution in parked.executions]

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
        if self.parked.pop(index, None) is not None:
            self._lost()  # it may have run before the connection was closed

    def check_silent(self, depths: list[int], paused: frozenset[int]) -> list[int]:
        """Reset the watches of queues believed empty that held jobs at this round and the one before,
        with the same watch set at both (see the module's docstring); returns their indexes.

        Under load a queue's watch often has fired a moment before the round reads the depths, its
        answer not read yet: at two rounds in a row that is two watches, each alive (it fired, was read,
        and the queue was claimed from and watched again), not one that never answers."""
        silent = {i: self._waker.generation(i) for i in self.quiet() - paused if depths[i] > 0}
        dead = sorted(i for i, generation in silent.items() if self._silent.get(i) == generation)
        for index in dead:
            self.reset(index)
        self._silent = silent
        return dead

    def check_parked(self, ran: Callable[[list[str]], set[str]]) -> list[int]:
        """Reset the watches whose parked claim had run (`ran`: its mark is in Redis) at this round and
        the one before, its reply still unread: a connection dead without a word, which the queue's
        depth cannot show (the claim took the job). Returns their indexes."""
        found = ran(self.parked_executions()) if self.parked else set()
        dead = [i for i, parked in self.parked.items() if self._ran_unread & found & set(parked.executions)]
        for index in dead:
            self.reset(index)
        self._ran_unread = found
        return dead

    def close(self) -> None:
        self._waker.close()
        if self.parked:
            self.parked.clear()
            self._lost()

    def _fired(self, index: int, fd: int) -> None:
        """Note it; the reply itself is read once the claim for the new job has been sent, unless a claim
        was parked behind it: then both replies are read now, and the claim's is handed on."""
        self._poller.remove(fd)
        self.arrived.add(index)
        parked = self.parked.pop(index, None)
        if parked is None:
            self._unread.append(index)
            return
        try:
            reply = self._waker.answer_behind(index)
        except redis.exceptions.NoScriptError:
            return  # Redis lost its scripts (a restart): the claim did not run; the next exchange loads it
        except redis.RedisError as exc:
            logger.warning("lost the reply of the claim parked behind a watch: {}", exc)
            self._lost()
            return
        self._claimed_behind(index, parked, reply)
