"""Periodic jobs' timing (APScheduler triggers, no I/O): aligned fire times, no backlog of missed ticks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from adaptive_scheduler.periodic import Periodic, marked_heartbeat, trigger_for
from adaptive_scheduler.settings import PeriodicJob, SettingsError, load_settings

T0 = datetime(2026, 11, 23, 5, 0, 3, 250_000, tzinfo=UTC)


def test_interval_ticks_are_aligned_to_the_epoch_so_every_daemon_agrees() -> None:
    trigger = trigger_for(PeriodicJob(name="hb", task="heartbeat", every_s=10))
    # two daemons started at different instants compute the same next tick
    assert trigger.get_next_fire_time(None, T0) == datetime(2026, 11, 23, 5, 0, 10, tzinfo=UTC)
    assert trigger.get_next_fire_time(None, T0 + timedelta(seconds=4)) == datetime(
        2026, 11, 23, 5, 0, 10, tzinfo=UTC
    )


def test_a_late_loop_fires_a_missed_tick_once_and_skips_the_backlog() -> None:
    trigger = trigger_for(PeriodicJob(name="hb", task="heartbeat", every_s=10))
    fired = datetime(2026, 11, 23, 5, 0, 10, tzinfo=UTC)
    # the loop comes back 45 s after that tick: the next one is the first after now, not 05:00:20
    assert Periodic._after(trigger, fired, fired + timedelta(seconds=45)) == fired + timedelta(seconds=50)


def test_cron_in_utc() -> None:
    trigger = trigger_for(PeriodicJob(name="c", task="noop", cron="*/5 * * * *"))
    assert trigger.get_next_fire_time(None, T0) == datetime(2026, 11, 23, 5, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        (b'{"asched_heartbeat": true}', True),
        (b'{"asched_heartbeat": "yes"}', False),
        (b'{"other": 1}', False),
        (b"\x80\x04garbage asched_heartbeat", False),
        (None, False),
    ],
)
def test_the_heartbeat_mark_in_rq_meta(meta: bytes | None, expected: bool) -> None:
    assert marked_heartbeat({"meta": meta} if meta is not None else {}) is expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('[{"name": "a", "task": "noop"}]', "give exactly one of every_s and cron"),
        ('[{"name": "a", "task": "noop", "every_s": 5, "cron": "* * * * *"}]', "exactly one"),
        ('[{"name": "a", "task": "noop", "cron": "61 * * * *"}]', "higher than the maximum"),
        (
            '[{"name": "a", "task": "noop", "every_s": 5}, {"name": "a", "task": "noop", "every_s": 9}]',
            "unique",
        ),
        ('[{"name": "a b", "task": "noop", "every_s": 5}]', "pattern"),
    ],
)
def test_bad_periodic_settings_get_one_line(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("ASCHED_PERIODIC", value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_list_setting_that_is_not_json_gets_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASCHED_PERIODIC", "every 5 s please")
    with pytest.raises(SettingsError, match=r"^invalid setting periodic \(ASCHED_PERIODIC\): not valid JSON"):
        load_settings()
