"""The local queue's depth follows the jobs' run time: deep for short jobs, the setting for long ones."""

from __future__ import annotations

import pytest
from adaptive_scheduler.prefetch import P0_QUIET_S, Prefetch

NOW = 1000.0


@pytest.mark.parametrize(
    ("run_s", "depth"),
    [(0.0001, 32), (0.001, 32), (0.002, 20), (0.005, 8), (0.01, 5), (0.5, 5), (60.0, 5)],
)
def test_depth_holds_about_twenty_milliseconds_of_work_per_slot(run_s: float, depth: int) -> None:
    prefetch = Prefetch(floor=5, ceiling=32, slots=2)
    prefetch.observe(run_s)
    assert prefetch.depth(True, NOW) == depth


def test_the_floor_holds_until_a_job_was_timed_and_under_pressure() -> None:
    prefetch = Prefetch(floor=5, ceiling=32, slots=2)
    assert prefetch.depth(True, NOW) == 5
    prefetch.observe(0.0001)
    assert prefetch.depth(False, NOW) == 5


def test_one_long_job_among_short_ones_lowers_the_depth_by_degrees() -> None:
    prefetch = Prefetch(floor=5, ceiling=32, slots=2)
    for _ in range(50):
        prefetch.observe(0.001)
    prefetch.observe(2.0)  # the mean moves 5 % of the way: 0.1 s, so the floor at once
    assert prefetch.depth(True, NOW) == 5
    for _ in range(150):  # and climbs back as short jobs keep finishing
        prefetch.observe(0.001)
    assert prefetch.depth(True, NOW) == 32


def test_a_ceiling_below_the_floor_is_the_floor() -> None:
    prefetch = Prefetch(floor=8, ceiling=4, slots=2)
    prefetch.observe(0.0001)
    assert prefetch.depth(True, NOW) == 8


def test_the_floor_holds_while_p0_jobs_arrive_and_a_while_after() -> None:
    prefetch = Prefetch(floor=5, ceiling=32, slots=2)
    prefetch.observe(0.001)
    prefetch.p0_started(NOW)
    assert prefetch.depth(True, NOW + 1) == 5
    assert prefetch.depth(True, NOW + P0_QUIET_S) == 32
