"""The local priority queue: P0 first, FIFO within a priority, bounded room."""

from __future__ import annotations

from adaptive_scheduler.model import ClaimedJob, Priority
from adaptive_scheduler.queue import LocalQueue
from hypothesis import given
from hypothesis import strategies as st


def job(job_id: str, priority: int) -> ClaimedJob:
    return ClaimedJob(job_id, Priority(priority), f"d.{job_id}", {})


def test_jobs_leave_by_priority_then_arrival() -> None:
    queue = LocalQueue(depth=5)
    for job_id, priority in [("a", 3), ("b", 1), ("c", 3), ("d", 0), ("e", 1)]:
        queue.push(job(job_id, priority))
    assert [queue.pop().id for _ in range(5)] == ["d", "b", "e", "a", "c"]


def test_room_counts_down_to_zero_and_never_below() -> None:
    queue = LocalQueue(depth=2)
    assert queue.room == 2
    queue.push(job("a", 2))
    queue.push(job("b", 2))
    queue.push(job("c", 2))
    assert queue.room == 0


def test_drain_empties_the_queue_most_urgent_first() -> None:
    queue = LocalQueue(depth=5)
    for job_id, priority in [("a", 2), ("b", 0)]:
        queue.push(job(job_id, priority))
    assert [j.id for j in queue.drain()] == ["b", "a"]
    assert len(queue) == 0


@given(st.lists(st.integers(min_value=0, max_value=3), max_size=50))
def test_pops_come_out_sorted_by_priority_and_stable_within_one(priorities: list[int]) -> None:
    queue = LocalQueue(depth=100)
    for index, priority in enumerate(priorities):
        queue.push(job(str(index), priority))
    popped = [queue.pop() for _ in priorities]
    assert [(int(j.priority), int(j.id)) for j in popped] == sorted((p, i) for i, p in enumerate(priorities))
    assert queue.counts() == dict.fromkeys(Priority, 0)


def test_jobs_given_back_unrun_go_ahead_of_later_arrivals_in_their_order() -> None:
    queue = LocalQueue(depth=10)
    later = [job(f"later{i}", Priority.P2) for i in range(2)]
    for j in later:
        queue.push(j)
    queue.push(job("urgent", Priority.P0))
    queue.push_ahead([job("first", Priority.P2), job("second", Priority.P2)])
    assert [j.id for j in queue.drain()] == ["urgent", "first", "second", "later0", "later1"]
