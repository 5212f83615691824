"""Pressure levels: thresholds, immediate rise, slow fall, no flapping inside the band."""

from __future__ import annotations

import pytest
from adaptive_scheduler.governor.pressure import Level, State, Thresholds, classify, level_for
from hypothesis import given
from hypothesis import strategies as st

T = Thresholds()


@pytest.mark.parametrize(
    ("percent", "level"),
    [
        (0, Level.NORMAL),
        (69.9, Level.NORMAL),
        (70, Level.ELEVATED),
        (84.9, Level.ELEVATED),
        (85, Level.HIGH),
        (94.9, Level.HIGH),
        (95, Level.EMERGENCY),
        (250, Level.EMERGENCY),
    ],
)
def test_each_threshold_starts_its_level(percent: float, level: Level) -> None:
    assert level_for(percent, T) == level


def test_going_up_is_immediate_even_several_levels_at_once() -> None:
    assert classify(96, State(Level.NORMAL), T, now=0).level == Level.EMERGENCY


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        # (time, percent) pairs from HIGH: inside the band (>= 80) never leaves HIGH
        ([(0, 84), (1, 81), (2, 80), (5, 82)], Level.HIGH),
        # below the band but not for the hold time
        ([(0, 79), (1, 79), (1.9, 79)], Level.HIGH),
        # below the band for the hold time: one level down
        ([(0, 79), (1, 79), (2, 79)], Level.ELEVATED),
        # a reading back inside the band restarts the hold
        ([(0, 79), (1.5, 81), (2, 79), (3.9, 79)], Level.HIGH),
        # down one level at a time, each with its own hold
        ([(0, 10), (2, 10), (4, 10)], Level.NORMAL),
        ([(0, 10), (2, 10), (3, 10)], Level.ELEVATED),
    ],
)
def test_going_down_needs_the_margin_and_the_hold(
    readings: list[tuple[float, float]], expected: Level
) -> None:
    state = State(Level.HIGH)
    for now, percent in readings:
        state = classify(percent, state, T, now)
    assert state.level == expected


@given(st.lists(st.floats(min_value=80.0, max_value=84.99), min_size=1, max_size=200))
def test_no_flapping_inside_the_band(readings: list[float]) -> None:
    state = State(Level.HIGH)
    for i, percent in enumerate(readings):
        state = classify(percent, state, T, now=float(i))
        assert state.level == Level.HIGH


@given(
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=0.5), st.floats(min_value=0, max_value=120)), max_size=300
    )
)
def test_the_level_never_trails_a_reading_above_its_threshold(steps: list[tuple[float, float]]) -> None:
    state, now = State(), 0.0
    for dt, percent in steps:
        now += dt
        state = classify(percent, state, T, now)
        assert state.level >= level_for(percent, T)
