"""The producer's back-pressure helper against a real Redis and a daemon really at EMERGENCY.

Budget 300 MB = 286 MiB (the daemon holds about 46 MiB): a P0 job allocating 250 MiB puts the daemon
at EMERGENCY while it holds it (as in test_memory.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import redis
from adaptive_scheduler import controls, keys
from adaptive_scheduler.backpressure import FLAG_META, Backpressure, Backpressured, backpressure
from adaptive_scheduler.model import Priority
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.helpers import ROOT, cli, queue, running_daemon, wait_until

SMALL_BUDGET = {
    "ASCHED_MEMORY_BUDGET": "300MB",
    "ASCHED_PRESSURE_HOLD_S": "0.5",
    "ASCHED_PREEMPT_GRACE_S": "1",
}


def test_a_p3_enqueue_is_refused_while_a_daemon_is_at_emergency(client: redis.Redis, redis_url: str) -> None:
    refuse = Backpressure(client, max_age_s=0)
    flag = Backpressure(client, mode="flag", max_age_s=0)
    with running_daemon(redis_url, env=SMALL_BUDGET) as daemon:
        assert refuse.read() == backpressure(client)
        assert refuse.read().level == "NORMAL" and refuse.read().daemons == 1
        # Given a daemon at EMERGENCY (a P0 job holding 250 MiB of its 286 for 4 s)
        hog = queue(client, 0).enqueue("tests.fixtures.jobs.allocate", 250, 4.0)
        wait_until(lambda: "-> EMERGENCY" in daemon.output(), timeout_s=15)
        wait_until(lambda: refuse.read().level == "EMERGENCY", timeout_s=2)  # published on the change
        # When a producer enqueues a P3 job through the helper, it is refused with the level
        refused = "P3 job refused: the daemons are under memory pressure EMERGENCY"
        with pytest.raises(Backpressured, match=refused) as exc:
            refuse.enqueue(queue(client, 3), "tests.fixtures.jobs.add", 1, 2)
        assert exc.value.level == "EMERGENCY" and exc.value.priority is Priority.P3
        assert client.llen("rq:queue:p3") == 0  # nothing was enqueued
        # while a P1 job goes through, and in "flag" mode a P2 job is enqueued carrying the level
        assert refuse.check("P1").level == "EMERGENCY"
        flagged = flag.enqueue(queue(client, 2), "tests.fixtures.jobs.add", 2, 3, meta={"mine": 1})
        meta = Job.fetch(flagged.id, connection=client, serializer=JSONSerializer).meta
        assert meta == {"mine": 1, FLAG_META: "EMERGENCY"}
        # and `status --json` reports the same level for the daemon
        overview = json.loads(cli("status", "--json", env={"ASCHED_REDIS_URL": redis_url}).stdout)
        assert [d["memory"]["level"] for d in overview["daemons"]] == ["EMERGENCY"]
        # When the hog ends and the level falls, P3 jobs are accepted again
        wait_until(lambda: refuse.read().level == "NORMAL", timeout_s=20)
        refuse.enqueue(queue(client, 3), "tests.fixtures.jobs.add", 1, 2)
        assert Job.fetch(hog.id, connection=client, serializer=JSONSerializer).get_status() == "finished"
    assert client.hlen(keys.LEVELS) == 0  # a clean stop removes the daemon's level
    assert backpressure(client).daemons == 0


def test_readings_are_cached_one_round_trip_each(client: redis.Redis) -> None:
    # Given a daemon's level in the real format (the producer-side decision alone: no daemon needed)
    entry = controls.level_entry("HIGH", 88.0, until=time.time() + 60)
    client.hset(keys.LEVELS, "some-daemon", entry)
    controls.pause(client, [Priority.P1], time.time(), None, "ops@test")
    bp = Backpressure(client, max_age_s=60)
    before = client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0)
    # When it is asked 50 times
    refused = 0
    for _ in range(50):
        try:
            bp.check(Priority.P3)
        except Backpressured as exc:
            refused += 1
            assert exc.pressure.paused == {Priority.P1}
    # Then it read Redis once (the two hashes in one pipeline) and refused every time
    assert client.info("commandstats")["cmdstat_hgetall"]["calls"] - before == 2
    assert refused == 50 and bp.read().level == "HIGH" and bp.read().daemons == 1


def test_the_helper_loads_neither_the_daemon_nor_its_dependencies() -> None:
    code = (
        "import sys, adaptive_scheduler.backpressure\n"
        "heavy = ('pydantic', 'psutil', 'loguru', 'apscheduler', 'statsd', 'setproctitle',\n"
        "  'adaptive_scheduler.settings', 'adaptive_scheduler.governor', 'adaptive_scheduler.daemon')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
