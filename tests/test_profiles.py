"""Learned memory profiles (pure): the estimate, the bump after a stop, decay, and what is not trusted."""

from __future__ import annotations

import json

import pytest
from adaptive_scheduler.governor.profiles import Profile, Rule, decode, encode, observe, predict
from hypothesis import given
from hypothesis import strategies as st

MIB = 2**20
DAY = 24 * 3600.0
RULE = Rule()  # p90 + 15 %, 24 h half-life, a stop counts 1.2x what it reached
NOW = 1_800_000_000.0


def learned(*peaks_mib: int, at: float = NOW) -> Profile:
    profile = None
    for peak in peaks_mib:
        profile = observe(profile, peak * MIB, at, stopped=False, rule=RULE)
    assert profile is not None
    return profile


def test_nothing_is_predicted_before_a_first_run_ends() -> None:
    assert predict(None, NOW, RULE) is None


def test_one_run_predicts_its_peak_plus_the_margin() -> None:
    assert predict(learned(330), NOW, RULE) == int(330 * MIB * 1.15)


def test_the_p90_ignores_a_rare_small_run_but_not_a_rare_large_one() -> None:
    # nine runs of 100 MiB and one of 10: p90 is 100; nine of 100 and one of 500: p90 reaches 100 too,
    # but two of 500 in ten reach the 90th percentile
    assert predict(learned(*[100] * 9, 10), NOW, RULE) == int(100 * MIB * 1.15)
    assert predict(learned(*[100] * 8, 500, 500), NOW, RULE) == int(500 * MIB * 1.15)


def test_old_peaks_count_less_than_recent_ones() -> None:
    old = learned(*[500] * 5, at=NOW - 10 * DAY)  # weight 2**-10 each
    recent = observe(old, 100 * MIB, NOW, stopped=False, rule=RULE)
    assert predict(recent, NOW, RULE) == int(100 * MIB * 1.15)


def test_a_run_stopped_for_memory_counts_as_more_than_it_reached() -> None:
    profile = observe(None, 300 * MIB, NOW, stopped=True, rule=RULE)
    assert profile.memory_stops == 1 and profile.last_peak == int(300 * MIB * 1.2)
    assert predict(profile, NOW, RULE) == int(int(300 * MIB * 1.2) * 1.15)


def test_only_the_most_recent_peaks_are_kept() -> None:
    profile = learned(*range(1, 100))
    assert profile.runs == 99 and len(profile.peaks) == RULE.max_peaks
    assert profile.last_peak == 99 * MIB


def test_a_profile_survives_its_stored_form() -> None:
    profile = learned(10, 20, 30)
    assert decode(encode(profile), NOW) == profile


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"not json", "Expecting value"),
        (json.dumps({"v": 2, "runs": 1, "peaks": [], "stops": 0, "updated": NOW}), "not a version 1"),
        (json.dumps({"v": 1, "runs": -1, "peaks": [], "stops": 0, "updated": NOW}), "out of range"),
        (json.dumps({"v": 1, "runs": 1, "peaks": [[NOW, -5]], "stops": 0, "updated": NOW}), "is not"),
        (json.dumps({"v": 1, "runs": 1, "peaks": [[NOW, 2**60]], "stops": 0, "updated": NOW}), "absurd"),
        (
            json.dumps({"v": 1, "runs": 1, "peaks": [[NOW + 9 * DAY, 5]], "stops": 0, "updated": NOW}),
            "is not",
        ),
        (
            json.dumps({"v": 1, "runs": 1, "peaks": [[NOW, 1], [NOW, 2]], "stops": 0, "updated": NOW}),
            "2 peaks",
        ),
        (json.dumps({"v": 1, "runs": True, "peaks": [], "stops": 0, "updated": NOW}), "out of range"),
        ('{"v": 1, "runs": 1, "peaks": [], "stops": 0, "updated": 1' + "0" * 400 + "}", "out of range"),
        ("[" * 100_000 + "]" * 100_000, "RecursionError"),
    ],
)
def test_an_unreadable_or_absurd_profile_is_refused_with_a_reason(raw: str | bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        decode(raw, NOW)


@given(st.lists(st.tuples(st.integers(0, 2**40), st.booleans()), min_size=1, max_size=60))
def test_the_prediction_covers_the_last_peak_unless_it_is_an_outlier_below_p90(
    runs: list[tuple[int, bool]],
) -> None:
    profile = None
    for peak, stopped in runs:
        profile = observe(profile, peak, NOW, stopped, RULE)
    assert profile is not None
    prediction = predict(profile, NOW, RULE)
    assert prediction is not None
    kept = sorted(peak for _, peak in profile.peaks)
    assert prediction >= kept[int(0.9 * (len(kept) - 1))]  # at least the plain p90 of what was kept
    assert prediction <= int(kept[-1] * (1 + RULE.margin))  # never more than the largest plus margin
