"""The pressure policy, as tables, plus the invariant that P0 is never shed, skipped or preempted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.governor.policy import Fate, Preempt, RunningJob, Stop, act_on_running, admitted_queues, fate
from scheduler.governor.pressure import Level
from scheduler.model import Priority

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


def running(slot: int, priority: Priority, preemptible: bool = True, growth: int = 0) -> RunningJob:
    return RunningJob(slot, priority, False, preemptible, False, growth)


def test_high_preempts_resumable_p2_and_p3_only() -> None:
    jobs = [running(0, P1), running(1, P2), running(2, P3, preemptible=False), running(3, P3)]
    assert [a.slot for a in act_on_running(H, jobs, CAP)] == [1, 3]
    assert all(isinstance(a, Preempt) for a in act_on_running(H, jobs, CAP))


def test_emergency_stops_all_but_p0() -> None:
    jobs = [running(0, P0), running(1, P1), running(2, P3, preemptible=False)]
    actions = act_on_running(X, jobs, CAP)
    assert actions == [
        Preempt(1, "memory pressure EMERGENCY: everything but P0 stops"),
        Stop(2, "memory pressure EMERGENCY: everything but P0 stops"),
    ]


def test_the_slot_cap_applies_at_any_level_even_to_p0() -> None:
    jobs = [running(0, P0, preemptible=False, growth=CAP + 1), running(1, P3, growth=CAP + 1)]
    assert act_on_running(N, jobs, CAP) == [
        Stop(0, "exceeded the slot memory cap (400 MB)"),
        Preempt(1, "exceeded the slot memory cap (400 MB)"),
    ]


@given(
    st.sampled_from(list(Level)),
    st.lists(st.tuples(st.booleans(), st.booleans(), st.integers(0, CAP)), max_size=8),
    st.booleans(),
    st.booleans(),
)
def test_p0_is_never_shed_skipped_put_back_or_preempted_for_pressure(
    level: Level, flags: list[tuple[bool, bool, int]], heartbeat: bool, past_deadline: bool
) -> None:
    assert fate(level, P0, heartbeat, past_deadline) == Fate.RUN
    jobs = [RunningJob(i, P0, heartbeat, pre, rest, growth) for i, (pre, rest, growth) in enumerate(flags)]
    assert act_on_running(level, jobs, CAP) == []


def test_a_waiting_p0_job_takes_the_slot_of_the_least_urgent_resumable_job() -> None:
    from scheduler.governor.policy import make_room_for

    jobs = [running(0, P2), running(1, P3), running(2, P3, preemptible=False)]
    assert make_room_for(P0, jobs, yielding=False) == Preempt(1, "a P0 job is waiting for a slot")
    assert make_room_for(P1, jobs, yielding=False) is None
    assert make_room_for(P0, jobs, yielding=True) is None
    assert make_room_for(P0, [running(0, P1), running(1, P3, preemptible=False)], yielding=False) == Preempt(
        0, "a P0 job is waiting for a slot"
    )
    assert make_room_for(P0, [running(0, P0), running(1, P3, preemptible=False)], yielding=False) is None
