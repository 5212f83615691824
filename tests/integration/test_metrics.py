"""StatsD metrics from a real daemon, received on a real UDP socket."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import redis
from adaptive_scheduler.metrics import CATALOGUE

from tests.helpers import queue, running_daemon, wait_until
from tests.statsd_listener import StatsdListener


@pytest.fixture
def statsd() -> Iterator[StatsdListener]:
    listener = StatsdListener()
    yield listener
    listener.close()


def catalogue_pattern(name: str) -> str:
    """A catalogue name with its placeholders as regular expressions."""
    pattern = re.escape(name)
    for placeholder, part in (("{p}", "p[0-3]"), ("{n}", r"\d+"), ("{task}", "[A-Za-z0-9_-]+")):
        pattern = pattern.replace(re.escape(placeholder), part)
    return pattern


def test_job_counters_timers_and_gauges_arrive_with_catalogue_names(
    client: redis.Redis, redis_url: str, statsd: StatsdListener
) -> None:
    # Given a daemon sending metrics to our UDP socket under a test prefix
    # (no P0 lane: it opens while both slots are busy, and slots.total would count it)
    env = {"ASCHED_STATSD_URL": statsd.url, "ASCHED_STATSD_PREFIX": "t.{host}", "ASCHED_P0_LANE": "false"}
    with running_daemon(redis_url, env=env):
        # When it runs 20 good P1 jobs and 3 failing P2 jobs
        good = [queue(client, 1).enqueue("tests.fixtures.jobs.add", i, 1) for i in range(20)]
        bad = [queue(client, 2).enqueue("tests.fixtures.jobs.fail", "boom") for _ in range(3)]
        wait_until(lambda: all(j.get_status(refresh=True) == "finished" for j in good), 20)
        wait_until(lambda: all(j.get_status(refresh=True) == "failed" for j in bad), 20)
        # Then within a flush or two the counters add up
        received = wait_until(
            lambda: (r := statsd.drain()).counters.get(f"{prefix(r)}.jobs.failed.p2") == 3 and r, 10
        )
    head = prefix(received)
    assert head.startswith("t.") and head.count(".") == 1
    assert received.counters[f"{head}.jobs.started.p1"] == 20
    assert received.counters[f"{head}.jobs.finished.p1"] == 20
    assert len(received.timers[f"{head}.jobs.wait.p1"]) == 20
    assert all(0 <= ms < 10_000 for ms in received.timers[f"{head}.jobs.wait.p1"])
    assert len(received.timers[f"{head}.tasks.add.run"]) == 20
    assert len(received.timers[f"{head}.tasks.fail.run"]) == 3
    assert received.gauges[f"{head}.slots.total"] == 2
    assert 0 < received.gauges[f"{head}.pressure.percent"] < 100
    assert received.gauges[f"{head}.memory.daemon.rss_bytes"] > 10 * 2**20
    assert received.gauges[f"{head}.tasks.add.memory.stops"] == 0  # profiles: under the @task name
    assert f"{head}.tasks.fail.memory.predicted_bytes" in received.gauges
    # And every name is in the catalogue: no job id, bounded cardinality
    patterns = [re.compile(re.escape(head) + r"\." + catalogue_pattern(name)) for name in CATALOGUE]
    strays = {name for name in received.names() if not any(p.fullmatch(name) for p in patterns)}
    assert not strays
    ids = {job.id for job in good + bad}
    assert not any(job_id in line for line in received.lines for job_id in ids)


def prefix(received: object) -> str:
    """The `t.<host>` prefix, read off the first metric name."""
    names = sorted(received.names())  # type: ignore[attr-defined]
    return ".".join(names[0].split(".")[:2]) if names else "t.?"
