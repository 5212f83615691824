"""Admission (pure): a job starts only if it fits; smaller ones go ahead; aging; P0 never waits."""

from __future__ import annotations

import pytest
from adaptive_scheduler.governor.admission import Candidate, Decision, Room, decide, fits, pick
from adaptive_scheduler.model import Priority
from hypothesis import given
from hypothesis import strategies as st

MIB = 2**20
P0, P1, P2, P3 = Priority
UNPROFILED = 175 * MIB
WAIT_S = 60.0
# 700 MiB budget, admission limit 80 %: 560 MiB; the daemon itself holds 50
ROOM_EMPTY = Room(in_use=50 * MIB, running_remaining=0, limit=560 * MIB, running_jobs=0)
ROOM_ONE_BIG = Room(in_use=200 * MIB, running_remaining=230 * MIB, limit=560 * MIB, running_jobs=1)


def job(priority: Priority, need_mib: int | None, waited_s: float = 0.0) -> Candidate:
    return Candidate(priority, None if need_mib is None else need_mib * MIB, waited_s)


@pytest.mark.parametrize(
    ("candidate", "room", "expected"),
    [
        (job(P2, 380), ROOM_EMPTY, Decision.START),  # nothing runs: it starts whatever it needs
        (job(P2, 800), ROOM_EMPTY, Decision.START),
        (job(P2, 380), ROOM_ONE_BIG, Decision.WAIT),  # 200 + 230 + 380 > 560
        (job(P2, 46), ROOM_ONE_BIG, Decision.START),  # 200 + 230 + 46 <= 560: a small one packs beside it
        (job(P2, 380, waited_s=61), ROOM_ONE_BIG, Decision.HOLD),  # waited too long: nothing overtakes it
        (job(P0, 900), ROOM_ONE_BIG, Decision.START),  # P0 is never held back
        (job(P2, None), ROOM_ONE_BIG, Decision.WAIT),  # unprofiled: assumed 175 MiB, does not fit
        (job(P2, None), Room(50 * MIB, 0, 560 * MIB, 1), Decision.START),
    ],
)
def test_what_admission_says(candidate: Candidate, room: Room, expected: Decision) -> None:
    assert decide(candidate, room, UNPROFILED, WAIT_S) is expected


def test_a_small_job_behind_a_big_one_that_does_not_fit_goes_ahead() -> None:
    queue = [job(P2, 380), job(P2, 380), job(P3, 46)]
    assert pick(queue, ROOM_ONE_BIG, UNPROFILED, WAIT_S) == 2


def test_a_big_job_that_waited_long_enough_is_not_overtaken() -> None:
    queue = [job(P2, 380, waited_s=WAIT_S), job(P3, 46)]
    assert pick(queue, ROOM_ONE_BIG, UNPROFILED, WAIT_S) is None


candidates = st.lists(
    st.builds(
        Candidate,
        st.sampled_from(Priority),
        st.none() | st.integers(0, 2000 * MIB),
        st.floats(0, 120),
    ),
    max_size=6,
).map(lambda jobs: sorted(jobs, key=lambda j: j.priority))
rooms = st.builds(
    Room,
    st.integers(0, 1000 * MIB),
    st.integers(0, 1000 * MIB),
    st.integers(0, 1000 * MIB),
    st.integers(0, 4),
)


@given(candidates, rooms)
def test_p0_is_never_held_back_and_nothing_predicted_not_to_fit_starts_beside_others(
    queue: list[Candidate], room: Room
) -> None:
    chosen = pick(queue, room, UNPROFILED, WAIT_S)
    if queue and queue[0].priority == P0:
        assert chosen == 0
    if chosen is not None and queue[chosen].priority != P0 and room.running_jobs > 0:
        need = queue[chosen].need
        assert fits(room, UNPROFILED if need is None else need)


@given(candidates, rooms)
def test_the_first_job_that_may_start_is_the_one_chosen_and_a_held_job_is_not_overtaken(
    queue: list[Candidate], room: Room
) -> None:
    chosen = pick(queue, room, UNPROFILED, WAIT_S)
    for candidate in queue[: len(queue) if chosen is None else chosen]:
        decision = decide(candidate, room, UNPROFILED, WAIT_S)
        assert decision is not Decision.START
        if decision is Decision.HOLD:
            assert chosen is None  # a job that waited too long: nothing behind it started
            break
