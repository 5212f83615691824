"""The circuit breaker's transitions, as a table, and its board (no I/O)."""

from __future__ import annotations

import pytest
from adaptive_scheduler.breaker import Breaker, BreakerRules, Breakers, Circuit, admit, failed, succeeded
from adaptive_scheduler.metrics import Metrics
from hypothesis import given
from hypothesis import strategies as st

RULES = BreakerRules(failures=3, window_s=60, cooldown_s=30)
CLOSED, OPEN, HALF = Circuit.CLOSED, Circuit.OPEN, Circuit.HALF_OPEN


@pytest.mark.parametrize(
    ("before", "event", "now", "after"),
    [
        (Breaker(), "fail", 100, Breaker(CLOSED, (100,))),
        (Breaker(CLOSED, (50, 90)), "fail", 100, Breaker(OPEN, opened_at=100)),  # 3rd within 60 s
        (Breaker(CLOSED, (30, 90)), "fail", 100, Breaker(CLOSED, (90, 100))),  # 30 is out of the window
        (Breaker(CLOSED, (90,)), "ok", 100, Breaker(CLOSED, (90,))),  # one success does not forgive
        (Breaker(OPEN, opened_at=100), "fail", 110, Breaker(OPEN, opened_at=100)),  # late: cooldown stands
        (Breaker(OPEN, opened_at=100), "ok", 110, Breaker(OPEN, opened_at=100)),
        (Breaker(HALF, opened_at=100, trial="j"), "ok", 131, Breaker()),  # the trial succeeded
        (Breaker(HALF, opened_at=100, trial="j"), "fail", 131, Breaker(OPEN, opened_at=131)),
    ],
)
def test_results_move_the_breaker(before: Breaker, event: str, now: float, after: Breaker) -> None:
    move = succeeded if event == "ok" else failed
    assert move(before, RULES, now) == after


@pytest.mark.parametrize(
    ("before", "now", "job", "trial_running", "after", "retry_at"),
    [
        (Breaker(), 100, "a", False, Breaker(), None),
        (Breaker(OPEN, opened_at=100), 110, "a", False, Breaker(OPEN, opened_at=100), 130),  # deferred
        (Breaker(OPEN, opened_at=100), 130, "a", False, Breaker(HALF, opened_at=100, trial="a"), None),
        (
            Breaker(HALF, opened_at=100, trial="a"),
            131,
            "b",
            True,
            Breaker(HALF, opened_at=100, trial="a"),
            132,
        ),
        (
            Breaker(HALF, opened_at=100, trial="a"),
            131,
            "b",
            False,
            Breaker(HALF, opened_at=100, trial="b"),
            None,
        ),
    ],
)
def test_admission(
    before: Breaker, now: float, job: str, trial_running: bool, after: Breaker, retry_at: float | None
) -> None:
    assert admit(before, RULES, now, job, trial_running) == (after, retry_at)


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 5)), max_size=60))
def test_at_most_one_trial_runs_and_open_never_admits_before_its_cooldown(
    events: list[tuple[bool, float]],
) -> None:
    breaker, now, running_trial = Breaker(), 0.0, None
    for n, (ok, step) in enumerate(events):
        now += step
        before = breaker
        breaker, retry_at = admit(breaker, RULES, now, f"j{n}", running_trial is not None)
        if before.circuit is OPEN and now < before.opened_at + RULES.cooldown_s:
            assert retry_at == before.opened_at + RULES.cooldown_s
        if retry_at is None and breaker.circuit is HALF:
            assert running_trial is None or running_trial == f"j{n}"
            running_trial = f"j{n}"
        if retry_at is None:  # the job ran; its result arrives at once
            breaker = (succeeded if ok else failed)(breaker, RULES, now)
            running_trial = None
        assert retry_at is None or retry_at > now


def test_the_board_forgets_healthy_tasks_and_lists_open_ones() -> None:
    board = Breakers(BreakerRules(failures=2, window_s=10, cooldown_s=5), Metrics(None, "x"))
    board.ended("flaky", ok=False, now=0)
    assert board.watching("flaky") and board.not_closed() == {}
    board.ended("flaky", ok=False, now=1)
    assert board.not_closed() == {"flaky": "open"}
    assert board.admit("flaky", "j1", now=2, running_ids=()) == 6
    assert board.admit("flaky", "j2", now=6, running_ids=()) is None  # the trial
    assert board.admit("flaky", "j3", now=6.5, running_ids=("j2",)) == 7.5
    board.ended("flaky", ok=True, now=7)
    assert not board.watching("flaky") and board.admit("flaky", "j3", now=7, running_ids=()) is None
