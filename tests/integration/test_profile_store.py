"""Memory profiles in a real Redis: shared between daemons, bounded, and never trusted when damaged."""

from __future__ import annotations

import json
import time

import pytest
import redis
from adaptive_scheduler.governor.profile_store import ProfileStore
from adaptive_scheduler.governor.profiles import Rule
from loguru import logger

MIB = 2**20
KEY = "asched:profiles"


def write(store: ProfileStore, client: redis.Redis) -> None:
    with client.pipeline() as pipe:
        store.write(pipe)
        pipe.execute()


def test_what_one_daemon_learns_another_reads(client: redis.Redis) -> None:
    # Given a daemon that saw a task's run end
    first, second = ProfileStore(client, Rule(), 100), ProfileStore(client, Rule(), 100)
    now = time.time()
    first.observe("myapp.jobs.resize", 330 * MIB, now, stopped=False)
    write(first, client)
    # When another daemon refreshes
    second.refresh(now, force=True)
    # Then it predicts the same need (p90 + 15 %)
    assert second.predict("myapp.jobs.resize", now) == first.predict("myapp.jobs.resize", now)
    assert second.predict("myapp.jobs.resize", now) == int(330 * MIB * 1.15)


def test_a_damaged_entry_is_ignored_with_one_log_line(
    client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    client.hset(KEY, mapping={
        "bad.json": "{not json",
        "bad.absurd": json.dumps({"v": 1, "runs": 1, "peaks": [[now, 2**62]], "stops": 0, "updated": now}),
        "good.task": json.dumps({"v": 1, "runs": 1, "peaks": [[now, 10 * MIB]], "stops": 0, "updated": now}),
    })  # fmt: skip
    store = ProfileStore(client, Rule(), 100)
    sink = logger.add(lambda message: print(message, end=""), level="WARNING")
    try:
        store.refresh(now, force=True)
        store.refresh(now, force=True)  # the second time says nothing new
    finally:
        logger.remove(sink)
    lines = [line for line in capsys.readouterr().out.splitlines() if "memory profile of" in line]
    assert len(lines) == 2 and any("bad.json" in line and "not JSON" in line for line in lines)
    assert any("bad.absurd" in line and "absurd" in line for line in lines)
    assert store.predict("bad.json", now) is None and store.predict("bad.absurd", now) is None
    assert store.predict("good.task", now) == int(10 * MIB * 1.15)


def test_at_most_max_tasks_are_kept_the_least_recently_updated_go(client: redis.Redis) -> None:
    store = ProfileStore(client, Rule(), max_tasks=3)
    now = time.time()
    for i in range(5):
        store.observe(f"task{i}", MIB, now + i, stopped=False)
    write(store, client)
    assert sorted(k.decode() for k in client.hkeys(KEY)) == ["task2", "task3", "task4"]
