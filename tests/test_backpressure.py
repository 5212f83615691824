"""The producer's decision (pure) and the formats it reads: levels, pauses, durations, priorities."""

from __future__ import annotations

import json

import pytest
from adaptive_scheduler import controls
from adaptive_scheduler.backpressure import Pressure, verdict
from adaptive_scheduler.errors import UsageError
from adaptive_scheduler.governor.pressure import Level
from adaptive_scheduler.model import Priority
from adaptive_scheduler.pausing import parse_duration, parse_priorities

P2_P3 = frozenset({Priority.P2, Priority.P3})


def pressure(level: str, paused: frozenset[Priority] = frozenset()) -> Pressure:
    return Pressure(level, 1, paused)


def test_the_producer_knows_the_governor_levels_by_name_and_order() -> None:
    assert tuple(level.name for level in sorted(Level)) == controls.LEVEL_NAMES


@pytest.mark.parametrize(
    ("level", "priority", "refused"),
    [
        ("NORMAL", Priority.P3, False),
        ("ELEVATED", Priority.P3, False),
        ("HIGH", Priority.P3, True),
        ("HIGH", Priority.P2, True),
        ("HIGH", Priority.P1, False),
        ("EMERGENCY", Priority.P3, True),
        ("EMERGENCY", Priority.P0, False),
    ],
)
def test_guarded_priorities_are_refused_at_or_above_the_threshold(
    level: str, priority: Priority, refused: bool
) -> None:
    why = verdict(pressure(level), priority, "HIGH", P2_P3, refuse_paused=False)
    assert (why is not None) is refused
    if refused:
        assert f"memory pressure {level}" in why


def test_a_paused_priority_is_refused_only_when_asked() -> None:
    paused = pressure("NORMAL", frozenset({Priority.P1}))
    assert verdict(paused, Priority.P1, "HIGH", P2_P3, refuse_paused=False) is None
    assert "P1 is paused" in (verdict(paused, Priority.P1, "HIGH", P2_P3, refuse_paused=True) or "")


def test_levels_that_ran_out_are_ignored_and_the_highest_counts() -> None:
    raw = {
        b"a": controls.level_entry("HIGH", 87.0, until=100.0).encode(),
        b"b": controls.level_entry("EMERGENCY", 99.0, until=50.0).encode(),  # died without a clean stop
        b"c": controls.level_entry("ELEVATED", 72.0, until=100.0).encode(),
        b"d": b"not json",
        b"e": json.dumps({"v": 2, "level": "EMERGENCY", "until": 100.0}).encode(),  # a newer format
    }
    levels = controls.parse_levels(raw, now=60.0)
    assert levels == {"a": "HIGH", "c": "ELEVATED"}
    assert controls.highest(levels.values()) == "HIGH"
    assert controls.highest([]) == "NORMAL"


def test_a_pause_with_a_duration_ends_and_bad_entries_are_ignored() -> None:
    raw = {
        b"P2": json.dumps({"v": 1, "since": 10.0, "until": None, "by": "ops@h"}).encode(),
        b"P3": json.dumps({"v": 1, "since": 10.0, "until": 20.0, "by": "ops@h"}).encode(),
        b"P9": json.dumps({"v": 1, "since": 10.0, "until": None, "by": "ops@h"}).encode(),
        b"P1": b"{}",
    }
    pauses = controls.parse_pauses(raw)
    assert set(pauses) == {Priority.P2, Priority.P3}
    assert controls.active(pauses, 15.0) == {Priority.P2, Priority.P3}
    assert controls.active(pauses, 20.0) == {Priority.P2}


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1.5m", 90)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "soon", "10 minutes", "5w"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="positive duration"):
        parse_duration(text)


def test_priorities_are_named_as_elsewhere_in_the_cli() -> None:
    assert parse_priorities(["p3", "P1", "2", "P3"], all_=False) == [Priority.P1, Priority.P2, Priority.P3]
    assert parse_priorities([], all_=True) == list(Priority)
    for texts, all_ in (([], False), (["P1"], True), (["P7"], False)):
        with pytest.raises(UsageError):
            parse_priorities(texts, all_)
