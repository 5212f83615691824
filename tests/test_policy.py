"""The pressure policy as tables, and invariants: P0 is never shed, skipped or stopped; one stop at a time."""

from __future__ import annotations

import pytest
from adaptive_scheduler.governor.policy import (
    Fate,
    Preempt,
    Reading,
    Stop,
    admitted_queues,
    fate,
    make_room_for,
    over_cap,
    pressure_stop,
)
from adaptive_scheduler.governor.pressure import Level, Thresholds
from adaptive_scheduler.governor.victim import Kind, Runner
from adaptive_scheduler.model import Priority
from hypothesis import given
from hypothesis import strategies as st

N, E, H, X = Level.NORMAL, Level.ELEVATED, Level.HIGH, Level.EMERGENCY
P0, P1, P2, P3 = Priority
CAP = 400_000_000


@pytest.mark.parametrize(
    ("level", "priority", "heartbeat", "expected", "past_deadline"),
    [
        (N, P3, True, Fate.RUN, False),
        (E, P3, True, Fate.SKIP, False),
        (E, P3, False, Fate.RUN, False),
        (H, P3, True, Fate.SKIP, False),
        (H, P2, False, Fate.WAIT, False),
        (H, P1, False, Fate.RUN, False),
        (X, P3, True, Fate.SHED, False),
        (X, P1, False, Fate.PUT_BACK, False),
        (X, P2, False, Fate.SHED, True),
        (X, P0, True, Fate.RUN, False),
    ],
)
def test_the_fate_of_a_local_job(
    level: Level, priority: Priority, heartbeat: bool, expected: Fate, past_deadline: bool
) -> None:
    assert fate(level, priority, heartbeat, past_deadline) == expected


@pytest.mark.parametrize(("level", "queues"), [(N, 4), (E, 4), (H, 2), (X, 1)])
def test_intake_narrows_with_pressure(level: Level, queues: int) -> None:
    assert admitted_queues(level) == queues


MIB = 2**20
BUDGET = 1000 * MIB
T = Thresholds()  # 70 / 85 / 95 %, margin 5


def running(
    slot: int, priority: Priority, preemptible: bool = True, footprint: int = 0, started_s: float = 0.0
) -> Runner:
    kind = Kind.PREEMPTIBLE if preemptible else Kind.PLAIN
    return Runner(slot, priority, kind, started_s, footprint)


def reading(percent: float) -> Reading:
    return Reading(int(BUDGET * percent / 100), BUDGET)


@pytest.mark.parametrize(
    ("percent", "jobs", "expected"),
    [
        # below HIGH nothing stops
        (84.9, [running(0, P3, footprint=300 * MIB), running(1, P2, footprint=300 * MIB)], None),
        # HIGH, two jobs: one P2/P3 job stops, the cheapest that frees enough (P3 before P2)
        (90.0, [running(0, P2, footprint=300 * MIB), running(1, P3, footprint=300 * MIB)], 1),
        # HIGH, a job alone is no danger yet: it runs on
        (90.0, [running(0, P3, footprint=800 * MIB)], None),
        # HIGH spares P1 (and P0); EMERGENCY does not spare P1
        (90.0, [running(0, P1, footprint=300 * MIB), running(1, P0, footprint=300 * MIB)], None),
        (96.0, [running(0, P1, footprint=300 * MIB), running(1, P0, footprint=300 * MIB)], 0),
        # a lower-priority job that frees too little is passed over for one that frees enough
        (96.0, [running(0, P3, footprint=10 * MIB), running(1, P2, footprint=300 * MIB)], 1),
        # none frees enough alone: the one that frees the most
        (99.0, [running(0, P3, footprint=50 * MIB), running(1, P2, footprint=100 * MIB)], 1),
        # same priority and kind: the most recently started (least work lost)
        (
            96.0,
            [
                running(0, P3, False, 300 * MIB, started_s=1.0),
                running(1, P3, False, 300 * MIB, started_s=5.0),
            ],
            1,
        ),
        # same priority: a preemptible job before a plain one
        (96.0, [running(0, P3, False, 300 * MIB), running(1, P3, True, 300 * MIB)], 1),
        # only P0 runs: nothing to stop
        (99.0, [running(0, P0, footprint=900 * MIB)], None),
    ],
)
def test_one_stop_per_reading_chosen_by_cost(
    percent: float, jobs: list[Runner], expected: int | None
) -> None:
    action = pressure_stop(reading(percent), T, jobs, stopping=False)
    assert (action.slot if action else None) == expected


def test_no_stop_while_an_earlier_stop_has_not_taken_effect() -> None:
    jobs = [running(0, P3, footprint=300 * MIB), running(1, P2, footprint=300 * MIB)]
    assert pressure_stop(reading(99), T, jobs, stopping=True) is None


def test_a_preemptible_victim_is_asked_to_checkpoint_and_a_plain_one_is_stopped() -> None:
    jobs = [running(0, P3, True, 300 * MIB), running(1, P2, False, 300 * MIB)]
    assert isinstance(pressure_stop(reading(96), T, jobs, stopping=False), Preempt)
    assert isinstance(pressure_stop(reading(96), T, jobs[1:], stopping=False), Stop)


def test_the_slot_cap_applies_at_any_level_even_to_p0() -> None:
    jobs = [running(0, P0, footprint=CAP + 1), running(1, P3, False, CAP + 1), running(2, P3, footprint=CAP)]
    assert over_cap(jobs, CAP) == [
        Preempt(0, "exceeded the slot memory cap (400 MB)"),
        Stop(1, "exceeded the slot memory cap (400 MB)"),
    ]


runners = st.lists(
    st.builds(
        Runner,
        st.integers(0, 7),
        st.sampled_from(Priority),
        st.sampled_from(Kind),
        st.floats(0, 100),
        st.integers(0, BUDGET),
    ),
    max_size=6,
    unique_by=lambda runner: runner.slot,
)


@given(runners, st.floats(0, 120), st.booleans())
def test_p0_is_never_the_victim_and_at_most_one_job_stops_per_reading(
    jobs: list[Runner], percent: float, stopping: bool
) -> None:
    action = pressure_stop(reading(percent), T, jobs, stopping)
    assert action is None or isinstance(action, Preempt | Stop)
    if action is not None:
        victim = next(j for j in jobs if j.slot == action.slot)
        assert victim.priority != P0 and not stopping


@given(
    st.sampled_from(Level),
    st.booleans(),
    st.booleans(),
)
def test_p0_is_never_shed_skipped_or_put_back_for_pressure(level: Level, heartbeat: bool, late: bool) -> None:
    assert fate(level, P0, heartbeat, late) == Fate.RUN


def test_a_waiting_p0_job_takes_the_slot_of_the_least_urgent_resumable_job() -> None:
    jobs = [running(0, P2), running(1, P3), running(2, P3, preemptible=False)]
    assert make_room_for(P0, jobs, yielding=False) == Preempt(1, "a P0 job is waiting for a slot")
    assert make_room_for(P1, jobs, yielding=False) is None
    assert make_room_for(P0, jobs, yielding=True) is None
    assert make_room_for(P0, [running(0, P1), running(1, P3, preemptible=False)], yielding=False) == Preempt(
        0, "a P0 job is waiting for a slot"
    )
    assert make_room_for(P0, [running(0, P0), running(1, P3, preemptible=False)], yielding=False) is None
