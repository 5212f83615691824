"""What the daemon knows of its queues between claims (`Arrivals`), against a real Redis: the watches
that fire when a job lands, and what a claim's reply teaches."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from adaptive_scheduler.arrivals import Arrivals
from adaptive_scheduler.events import Poller
from adaptive_scheduler.waker import Waker

QUEUES = ["rq:queue:p0", "rq:queue:p1", "rq:queue:p2", "rq:queue:p3"]
NONE_PAUSED: frozenset[int] = frozenset()


@pytest.fixture()
def poller() -> Poller:
    return Poller()


@pytest.fixture()
def arrivals(client: redis.Redis, poller: Poller) -> Iterator[Arrivals]:
    """Arrivals with real watches on the four queues, closed after the test."""
    made = Arrivals(Waker(client, QUEUES), poller)
    try:
        yield made
    finally:
        made.close()


def test_a_watch_on_an_empty_queue_fires_when_a_job_lands_and_leaves_the_job_there(
    client: redis.Redis, arrivals: Arrivals, poller: Poller
) -> None:
    # Given a claim that left P0 empty (so the daemon watches it)
    arrivals.claimed(answered=set(), took=set(), emptied={0}, broken=set(), paused=NONE_PAUSED)
    assert arrivals.quiet() == {0}
    poller.wait(0.05)
    assert arrivals.arrived == set()
    # When a producer pushes a job onto it
    client.rpush(QUEUES[0], "job-1")
    poller.wait(1.0)
    # Then the daemon knows P0 holds jobs, and the job is still there to claim
    assert arrivals.arrived == {0}
    arrivals.read_answers()
    assert client.lrange(QUEUES[0], 0, -1) == [b"job-1"]


def test_a_claim_that_left_jobs_in_a_queue_keeps_it_known_to_hold_jobs(arrivals: Arrivals) -> None:
    # Given P0's watch fired (several P0 jobs landed at once)
    arrivals.arrived = {0}
    # When a claim answering it took one P0 job and left P0 not empty
    arrivals.claimed(answered={0}, took={0}, emptied={1, 2, 3}, broken=set(), paused=NONE_PAUSED)
    # Then P0 still counts as holding jobs: the daemon claims from it again before a P3 job starts
    assert arrivals.arrived == {0}
    # And one that emptied it does not
    arrivals.claimed(answered={0}, took={0}, emptied={0, 1, 2, 3}, broken=set(), paused=NONE_PAUSED)
    assert arrivals.arrived == set()


def test_a_claim_that_took_nothing_says_nothing_of_the_queues_it_answered_for(arrivals: Arrivals) -> None:
    # Given P1's watch fired
    arrivals.arrived = {1}
    # When the claim took no job (its lease was refused) and reported no queue empty
    arrivals.claimed(answered={1}, took=set(), emptied=set(), broken=set(), paused=NONE_PAUSED)
    # Then P1 is not kept as holding jobs (claiming again and again would find nothing either)
    assert arrivals.arrived == set()


def test_a_queue_that_arrived_after_the_claim_was_sent_stays_known(arrivals: Arrivals) -> None:
    # Given P2's watch fired after a claim that answered for P0 only was sent
    arrivals.arrived = {0, 2}
    # When that claim's reply comes (it emptied P0 and never reached P2)
    arrivals.claimed(answered={0}, took={0}, emptied={0}, broken=set(), paused=NONE_PAUSED)
    # Then P2's arrival is kept for the next claim
    assert arrivals.arrived == {2}
