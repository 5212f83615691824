"""The daemon's small local priority queue (pure): claimed jobs waiting for a free slot.

P0 before P1 before P2 before P3, first-in first-out within a priority. It is bounded by the caller
(the daemon never claims more than it may hold): the backlog stays in Redis.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator

from adaptive_scheduler.model import ClaimedJob, Priority

Entry = tuple[int, int, ClaimedJob]  # (priority, arrival order, job)


class LocalQueue:
    """A heap of claimed jobs ordered by (priority, arrival)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self._heap: list[Entry] = []
        self._seq = itertools.count()
        self._ahead = itertools.count(-1, -1)  # places before every arrival, for jobs given back unrun

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[ClaimedJob]:
        return (job for _, _, job in sorted(self._heap))

    @property
    def room(self) -> int:
        """How many more jobs fit."""
        return max(0, self.depth - len(self._heap))

    def push(self, job: ClaimedJob) -> None:
        heapq.heappush(self._heap, (int(job.priority), next(self._seq), job))

    def push_ahead(self, jobs: list[ClaimedJob]) -> None:
        """Put back jobs that were handed to a slot and given back unrun, in their order, ahead of the
        jobs of their priority that arrived after them."""
        for job in reversed(jobs):
            heapq.heappush(self._heap, (int(job.priority), next(self._ahead), job))

    def head_priority(self) -> int:
        """Priority of the job `pop` would return. IndexError when empty."""
        return self._heap[0][0]

    def pop(self) -> ClaimedJob:
        """The most urgent, oldest job. IndexError when empty."""
        return heapq.heappop(self._heap)[2]

    def pop_entry(self) -> Entry:
        """Like `pop`, with the job's place in the order, for `restore`. IndexError when empty."""
        return heapq.heappop(self._heap)

    def restore(self, entry: Entry) -> None:
        """Put a popped entry back where it was (a job that must wait keeps its turn)."""
        heapq.heappush(self._heap, entry)

    def drain(self) -> list[ClaimedJob]:
        """Remove and return every job, most urgent first."""
        jobs = list(self)
        self._heap.clear()
        return jobs

    def counts(self) -> dict[Priority, int]:
        """Jobs held per priority."""
        counts = dict.fromkeys(Priority, 0)
        for priority, _, _ in self._heap:
            counts[Priority(priority)] += 1
        return counts
