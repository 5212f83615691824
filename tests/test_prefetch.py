"""The local queue's depth follows the jobs' run time: deep for short jobs, the setting for long ones."""

from __future__ import annotations

import pytest
from adaptive_scheduler.prefetch import P0_QUIET_S, TASKS_KEPT, Prefetch

NOW = 1000.0
TASK = "app.jobs.short"


@pytest.mark.parametrize(
    ("run_s", "depth"),
    [(0.0001, 32), (0.001, 32), (0.002, 20), (0.005, 8), (0.01, 5), (0.5, 5), (60.0, 5)],
)
def test_depth_holds_about_twenty_milliseconds_of_work_per_slot(run_s: float, depth: int) -> None:
    prefetch = Prefetch(floor=5, ceiling=32, slots=2)
    prefetch.observe(run_s, TASK)
    assert prefetch.depth(True, NOW) == depth


def test_the_floor_holds_until_a_job_was_timed_and_under_pressure() -> None:
    prefetch = Prefetch(floor=5, ceiling=32, slots=2)
    assert prefetch.depth(True, NOW) == 5
    prefetch.observe(0.0001, TASK)
    assert prefetch.depth(False, NOW) == 5


def test_one_long_job_among_short_ones_lowers_the_depth_by_degrees() -> None:
    prefetch = Prefetch(floor=5, ceiling=32, slots=2)
    for _ in range(50):
        prefetch.observe(0.001, TASK)
    prefetch.observe(2.0, TASK)  # the mean moves 5 % of the way: 0.1 s, so the floor at once
    assert prefetch.depth(True, NOW) == 5
    for _ in range(150):  # and climbs back as short jobs keep finishing
        prefetch.observe(0.001, TASK)
    assert prefetch.depth(True, NOW) == 32


def test_a_ceiling_below_the_floor_is_the_floor() -> None:
    prefetch = Prefetch(floor=8, ceiling=4, slots=2)
    prefetch.observe(0.0001, TASK)
    assert prefetch.depth(True, NOW) == 8


def test_the_floor_holds_while_p0_jobs_arrive_and_a_while_after() -> None:
    prefetch = Prefetch(floor=5, ceiling=32, slots=2)
    prefetch.observe(0.001, TASK)
    prefetch.p0_started(NOW)
    assert prefetch.depth(True, NOW + 1) == 5
    assert prefetch.depth(True, NOW + P0_QUIET_S) == 32


@pytest.mark.parametrize(
    ("run_s", "behind"),
    [(0.00005, 8), (0.0004, 5), (0.0005, 4), (0.001, 2), (0.0015, 1), (0.0025, 0), (1.0, 0)],
)
def test_about_two_milliseconds_of_short_jobs_wait_in_a_slot_behind_its_job(
    run_s: float, behind: int
) -> None:
    prefetch = Prefetch(floor=5, ceiling=32, slots=2)
    prefetch.observe(run_s, TASK)
    assert prefetch.behind(True) == behind


def test_no_job_waits_in_a_slot_untimed_or_under_pressure_but_p0_jobs_do_not_stop_it() -> None:
    prefetch = Prefetch(floor=5, ceiling=32, slots=2)
    assert prefetch.behind(True) == 0
    prefetch.observe(0.00005, TASK)
    assert prefetch.behind(False) == 0
    prefetch.p0_started(NOW)
    assert prefetch.behind(True) == 8


def test_a_task_is_short_once_timed_at_two_milliseconds_or_less_on_the_mean() -> None:
    prefetch = Prefetch(floor=5, ceiling=32, slots=2)
    assert not prefetch.short(TASK)
    prefetch.observe(0.0002, TASK)
    prefetch.observe(0.5, "app.jobs.long")
    assert prefetch.short(TASK) and not prefetch.short("app.jobs.long")
    for _ in range(100):  # a task that became slow stops being short
        prefetch.observe(0.01, TASK)
    assert not prefetch.short(TASK)


def test_run_times_are_kept_for_the_tasks_used_last() -> None:
    prefetch = Prefetch(floor=5, ceiling=32, slots=2)
    prefetch.observe(0.0001, "first")
    for i in range(TASKS_KEPT):
        prefetch.observe(0.0001, f"task{i}")
        if i == TASKS_KEPT // 2:
            prefetch.observe(0.0001, "first")  # used again: kept
    assert prefetch.short("first") and prefetch.short(f"task{TASKS_KEPT - 1}")
    assert not prefetch.short("task0")
