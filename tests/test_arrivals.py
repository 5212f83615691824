"""What the daemon knows of its queues between claims (`Arrivals`), against a real Redis: the watches
that fire when a job lands, what a claim's reply teaches, and the claims parked behind watches."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from adaptive_scheduler import keys
from adaptive_scheduler.arrivals import Arrivals
from adaptive_scheduler.events import Poller
from adaptive_scheduler.intake import LEASE_SLACK_S, Intake, ParkedClaim
from adaptive_scheduler.settings import load_settings
from adaptive_scheduler.waker import Waker
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.helpers import queue, wait_until

QUEUES = ["rq:queue:p0", "rq:queue:p1", "rq:queue:p2", "rq:queue:p3"]
NONE_PAUSED: frozenset[int] = frozenset()
ALL = {0, 1, 2, 3}


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


def test_a_watch_that_never_answers_while_its_queue_holds_jobs_is_reset_at_the_second_round(
    arrivals: Arrivals,
) -> None:
    # Given P0 watched (a claim left it empty) and a connection that will never answer: the depth read
    # at housekeeping says P0 holds a job, yet nothing lands where the watch waits
    arrivals.claimed(answered=set(), took=set(), emptied={0}, broken=set(), paused=NONE_PAUSED)
    holds_one = [1, 0, 0, 0]
    # When two housekeeping rounds see it so, the same watch set at both
    first = arrivals.check_silent(holds_one, NONE_PAUSED)
    second = arrivals.check_silent(holds_one, NONE_PAUSED)
    # Then the second resets the watch and has the queue claimed from
    assert (first, second) == ([], [0])
    assert 0 in arrivals.arrived


def test_a_queue_whose_watch_fired_between_two_rounds_is_not_taken_for_silent(
    client: redis.Redis, arrivals: Arrivals, poller: Poller
) -> None:
    # Given P0 watched, and a job that landed just before a round read the depths (its watch fired, its
    # answer not read yet: what a busy daemon sees about once per round at 75 % load)
    arrivals.claimed(answered=set(), took=set(), emptied={0}, broken=set(), paused=NONE_PAUSED)
    client.rpush(QUEUES[0], "job-1")
    assert arrivals.check_silent([1, 0, 0, 0], NONE_PAUSED) == []
    # When the daemon reads the answer, claims the job and watches P0 again, and the next round again
    # reads the depth just after the next job landed
    poller.wait(1.0)
    arrivals.read_answers()
    client.lpop(QUEUES[0])
    arrivals.claimed(answered={0}, took={0}, emptied={0}, broken=set(), paused=NONE_PAUSED)
    client.rpush(QUEUES[0], "job-2")
    # Then that is a second watch, alive: it is not reset (it was, with a warning, before)
    assert arrivals.check_silent([1, 0, 0, 0], NONE_PAUSED) == []
    poller.wait(1.0)
    assert arrivals.arrived == {0}  # ... and it fires


# --- claims parked behind watches: Redis claims the job the moment it lands --------------------------


class Parking:
    """What the daemon gives `Arrivals` to park claims with: one job per claim, from every queue."""

    def __init__(self, intake: Intake) -> None:
        self.intake = intake
        self.replies: list[tuple[int, ParkedClaim, Any]] = []
        self.lost = 0

    def park(self, index: int) -> ParkedClaim:
        return self.intake.parked_claim(1, 4, NONE_PAUSED)

    def claimed_behind(self, index: int, parked: ParkedClaim, reply: Any) -> None:
        self.replies.append((index, parked, reply))

    def reply_lost(self) -> None:
        self.lost += 1


@pytest.fixture()
def intake(client: redis.Redis) -> Intake:
    made = Intake(client, load_settings(), "parker")
    made.announce()
    assert made.exchange([], 4, time.time()).jobs == []  # loads the script, finds the queues empty
    return made


@pytest.fixture()
def parking(client: redis.Redis, poller: Poller, intake: Intake) -> Iterator[tuple[Arrivals, Parking]]:
    park = Parking(intake)
    made = Arrivals(Waker(client, QUEUES), poller, park.park, park.claimed_behind, park.reply_lost)
    try:
        yield made, park
    finally:
        made.close()


def test_a_parked_claim_takes_a_job_the_moment_it_lands_by_redis_clock(
    client: redis.Redis, poller: Poller, intake: Intake, parking: tuple[Arrivals, Parking]
) -> None:
    arrivals, park = parking
    # Given P1 watched with a claim parked behind it, a while ago
    arrivals.arm(1, NONE_PAUSED)
    [execution] = arrivals.parked_executions()
    time.sleep(1.5)
    # When a producer enqueues a P1 job
    enqueued = time.time()
    job_id = queue(client, 1).enqueue("tests.fixtures.jobs.add", 2, 3).id
    poller.wait(1.0)
    # Then the reply came with the watch's: the job is this daemon's, under the parked execution id
    [(index, _, reply)] = park.replies
    [job] = intake.parse_claim(reply).jobs
    assert (index, job.id, job.execution_id) == (1, job_id, execution)
    assert arrivals.parked_executions() == [] and 1 in arrivals.arrived
    assert client.llen(QUEUES[1]) == 0
    # stamped by Redis's clock when it landed, not when the claim was parked 1.5 s earlier
    started_at = Job.fetch(job_id, connection=client, serializer=JSONSerializer).started_at
    assert started_at is not None
    assert abs(started_at.replace(tzinfo=None).timestamp() - enqueued) < 0.5  # RQ's naive UTC
    settings = load_settings()
    score = client.zscore("rq:wip:p1", f"{job_id}:{execution}")
    expiry = enqueued + settings.default_job_timeout_s + settings.lease_ttl_s + LEASE_SLACK_S
    # the claim's expiry from when it ran, in whole seconds rounded up (as RQ writes it); from when it
    # was parked it would be 1.5 s earlier
    assert score is not None and -0.4 < score - expiry < 1.4
    assert client.get(keys.PARKED + execution) == job_id.encode()  # its mark, for a reply never read


def test_a_parked_claim_under_a_lease_no_longer_held_claims_nothing(
    client: redis.Redis, poller: Poller, intake: Intake, parking: tuple[Arrivals, Parking]
) -> None:
    arrivals, park = parking
    arrivals.arm(1, NONE_PAUSED)
    client.delete(keys.daemon_lease("parker"))  # the daemon was frozen past its lease
    job_id = queue(client, 1).enqueue("tests.fixtures.jobs.add", 2, 3).id
    poller.wait(1.0)
    [(_, _, reply)] = park.replies
    assert intake.parse_claim(reply).jobs == []
    assert client.lrange(QUEUES[1], 0, -1) == [job_id.encode()]  # left for a daemon that holds its lease


def test_a_parked_claim_whose_reply_never_comes_is_found_by_its_mark_and_its_watch_reset(
    client: redis.Redis, intake: Intake, parking: tuple[Arrivals, Parking]
) -> None:
    arrivals, park = parking
    # Given P2's parked claim ran (a job landed) but its reply is never read (a connection dead without
    # a word: here, the daemon's poll is simply not run)
    arrivals.arm(2, NONE_PAUSED)
    queue(client, 2).enqueue("tests.fixtures.jobs.add", 2, 3)
    wait_until(lambda: client.llen(QUEUES[2]) == 0)
    # When housekeeping looks for the marks of parked claims, twice
    assert arrivals.check_parked(intake.parked_ran) == []  # once may be a reply on its way
    assert arrivals.check_parked(intake.parked_ran) == [2]
    # Then the watch is reset, the claim counted lost (the daemon reconciles: it goes back), and P2 is
    # claimed from at the next call
    assert park.lost == 1 and arrivals.parked_executions() == [] and 2 in arrivals.arrived


def test_resetting_a_watch_with_a_parked_claim_counts_the_claim_lost(
    parking: tuple[Arrivals, Parking],
) -> None:
    arrivals, park = parking
    arrivals.arm(3, NONE_PAUSED)
    arrivals.unpark()
    assert park.lost == 1 and arrivals.parked_executions() == []


def test_an_arrival_a_claim_stopped_before_is_kept(arrivals: Arrivals) -> None:
    # Given every queue found empty, then P3's watch fired
    arrivals.claimed(answered=set(), took=set(), emptied=ALL, broken=set(), paused=NONE_PAUSED)
    arrivals.arrived = {3}
    # When the claim sent for it took a P1 job (P1 had one) and looked no further
    arrivals.claimed(answered={3}, took={1}, emptied={1}, broken=set(), paused=NONE_PAUSED)
    # Then P3 still holds what arrived: claimed from next, not left unwatched and believed empty
    assert 3 in arrivals.arrived and 3 not in arrivals.quiet()
