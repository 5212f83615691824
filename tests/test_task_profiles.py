"""Task profiles as shown (pure): rows from stored entries, the table, the StatsD gauges."""

from __future__ import annotations

import json

import pytest
from adaptive_scheduler.governor.profiles import Profile, Rule, encode, predict
from adaptive_scheduler.metrics import CATALOGUE
from adaptive_scheduler.settings.model import Settings
from adaptive_scheduler.status import task_segment
from adaptive_scheduler.task_profiles import EMPTY, GAUGE_TASKS, TaskRow, gauges, render, rows, rule_of, table

MIB = 2**20
NOW = 1_800_000_000.0
RULE = Rule()


def stored(*peaks_mib: int, stops: int = 0, updated: float = NOW - 60) -> bytes:
    peaks = tuple((updated, peak * MIB) for peak in peaks_mib)
    return encode(Profile(len(peaks), peaks, stops, updated)).encode()


def test_rows_carry_runs_prediction_last_peak_stops_and_time() -> None:
    # Given one task with three runs, the last of 100 MiB, one stopped for memory
    (only,) = rows({"myapp.jobs.resize": stored(300, 200, 100, stops=1)}, NOW, RULE)
    # Then its row has what the daemons would predict from it
    assert only == TaskRow("myapp.jobs.resize", 3, int(300 * MIB * 1.15), 100 * MIB, 1, NOW - 60, error=None)


def test_rows_are_sorted_by_predicted_peak_largest_first_unreadable_last() -> None:
    entries = {
        "small": stored(10),
        "broken": b"{",
        "large": stored(500),
        "never.peaked": encode(Profile(0, (), 0, NOW)).encode(),
        "medium": stored(100),
    }
    assert [row.task for row in rows(entries, NOW, RULE)] == [
        "large",
        "medium",
        "small",
        "never.peaked",
        "broken",
    ]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100_000, "RecursionError"),
        (b'{"v": 2}', "not a version 1 profile"),
        (b'{"v":1,"runs":1,"peaks":[],"stops":0,"updated":' + b"9" * 400 + b"}", "out of range"),
        (b'{"v":1,"runs":1,"peaks":[[1,' + b"9" * 5000 + b']],"stops":0,"updated":1}', "digits"),
        (b'{"v":1,"runs":1,"peaks":[[1,-5]],"stops":0,"updated":1}', "is not [unix s, bytes]"),
        (b'{"v":1,"runs":0,"peaks":[[1,5]],"stops":0,"updated":1}', "1 peaks for 0 runs"),
        (json.dumps({"v": 1, "runs": 1, "peaks": [], "stops": 0, "updated": NOW + 3e5}), "out of range"),
    ],
)
def test_an_unreadable_entry_is_a_row_that_says_why(raw: bytes, reason: str) -> None:
    (only,) = rows({"myapp.jobs.bad": raw}, NOW, RULE)
    assert only.task == "myapp.jobs.bad" and only.error is not None
    assert only.error.startswith("unreadable: ") and reason in only.error
    assert (only.runs, only.predicted_bytes, only.last_peak_bytes) == (None, None, None)


def test_the_rule_comes_from_the_settings() -> None:
    settings = Settings(profile_margin_percent=40, profile_half_life_s=3600)
    assert rule_of(settings) == Rule(margin=0.4, half_life_s=3600)
    assert rule_of(Settings()) == RULE  # the defaults agree


def test_the_table_has_a_header_and_aligned_columns_in_mib() -> None:
    shown = rows({"myapp.jobs.resize": stored(100, stops=2), "bad": b"x"}, NOW, RULE)
    header, resize, bad = table(shown, NOW)
    assert header.startswith("task ")
    assert header.endswith("  runs  predicted MiB  last peak MiB  memory stops  updated")
    assert resize.split() == ["myapp.jobs.resize", "1", "115.0", "100.0", "2", "60", "s", "ago"]
    assert header.index("updated") == resize.index("60 s ago")
    for column, value in (("runs", " 1 "), ("predicted MiB", "115.0"), ("memory stops", " 2 ")):
        assert header.index(column) + len(column) == resize.index(value) + len(value.rstrip())
    assert bad.split(maxsplit=1) == ["bad", "unreadable: not JSON"]


@pytest.mark.parametrize(
    ("age_s", "shown"),
    [(-30, "0 s ago"), (59, "59 s ago"), (600, "10 min ago"), (3 * 3600, "3 h ago"), (4 * 86400, "4 d ago")],
)
def test_updated_is_shown_as_an_age_in_a_readable_unit(age_s: float, shown: str) -> None:
    line = table([TaskRow("t", 1, 1, 1, 0, NOW - age_s)], NOW)[1]
    assert line.endswith(f"  {shown}")


def test_a_task_name_with_control_characters_is_escaped() -> None:
    line = table([TaskRow("evil\x1b[2J\n", error="unreadable: not JSON")], NOW)[1]
    assert "\x1b" not in line and "\n" not in line and "evil\\x1b[2J\\n" in line


def test_no_profiles_says_they_come_as_jobs_end() -> None:
    assert render([], NOW) == EMPTY == "no task profiles yet (they are learned as jobs end)"


def profile(peak_mib: int, stops: int = 0) -> Profile:
    return Profile(1 + stops, ((NOW - 60, peak_mib * MIB),), stops, NOW - 60)


def test_gauges_name_each_task_and_give_prediction_last_peak_and_stops() -> None:
    values = gauges({"myapp.jobs.resize": profile(100, stops=2)}, NOW, RULE, lambda task: "resize")
    assert values == {
        "tasks.resize.memory.predicted_bytes": int(100 * MIB * 1.15),
        "tasks.resize.memory.last_peak_bytes": 100 * MIB,
        "tasks.resize.memory.stops": 2,
    }
    assert {name.replace("resize", "{task}") for name in values} <= set(CATALOGUE)


def test_gauges_are_capped_to_the_tasks_with_the_largest_predictions() -> None:
    profiles = {f"app.t{i}": profile(i + 1) for i in range(GAUGE_TASKS + 20)}
    values = gauges(profiles, NOW, RULE, lambda task: task.replace(".", "_"))
    named = {name.split(".")[1] for name in values}
    assert len(named) == GAUGE_TASKS
    assert named == {f"app_t{i}" for i in range(20, GAUGE_TASKS + 20)}


def test_two_tasks_with_one_metric_name_keep_the_larger_prediction() -> None:
    profiles = {"a.b": profile(10), "a_b": profile(30), "c": Profile(1, (), 0, NOW)}
    values = gauges(profiles, NOW, RULE, lambda task: task.replace(".", "_"))
    assert values == {
        "tasks.a_b.memory.predicted_bytes": predict(profiles["a_b"], NOW, RULE),
        "tasks.a_b.memory.last_peak_bytes": 30 * MIB,
        "tasks.a_b.memory.stops": 0,
    }


def test_a_registered_task_is_named_by_its_short_name_like_the_run_timer() -> None:
    import tests.fixtures.jobs  # noqa: F401  (registers its @task names)

    assert task_segment("tests.fixtures.jobs.allocate") == "allocate"
    assert task_segment("myapp.jobs.resize") == "myapp_jobs_resize"
    assert task_segment("myapp.jobs.ré size") == "myapp_jobs_r__size"
