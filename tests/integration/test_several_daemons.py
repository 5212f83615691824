"""Two daemons on one Redis: they share the work, a periodic tick runs once, a killed one loses nothing."""

from __future__ import annotations

import json
import time

import redis
from rq.registry import FinishedJobRegistry

from tests.helpers import DaemonProcess, queue, running_daemon, wait_until

FAST_LEASE = {"ASCHED_LEASE_TTL_S": "1"}
BEAT_EVERY_S = json.dumps([{"name": "beat", "task": "heartbeat", "every_s": 1}])


def daemon_counts(client: redis.Redis) -> list[dict[str, int]]:
    return [json.loads(client.get(key))["counts"] for key in client.scan_iter(match="asched:status:*")]


def finished(client: redis.Redis) -> int:
    return sum(FinishedJobRegistry(f"p{p}", connection=client).count for p in range(4))


def test_two_daemons_enqueue_each_periodic_tick_once(client: redis.Redis, redis_url: str) -> None:
    env = {"ASCHED_PERIODIC": BEAT_EVERY_S}
    with running_daemon(redis_url, env=env):
        second = DaemonProcess(redis_url, env=env).wait_ready(count=2)
        try:
            time.sleep(3.2)
            wait_until(lambda: sum(c.get("periodic_fired", 0) for c in daemon_counts(client)) >= 3)
            counts = daemon_counts(client)
        finally:
            second.stop()
            second.log.close()
    ids = [i.decode() for i in client.zrange("rq:finished:p3", 0, -1)]
    ticks = sorted(int(i.rsplit("-", 1)[1]) for i in ids)
    # one job per second, no tick twice, none missing in between
    assert len(ticks) >= 3 and ticks == list(range(ticks[0], ticks[0] + len(ticks))), ticks
    assert all(client.xlen(f"rq:results:{i}") == 1 for i in ids)  # each ran exactly once
    fired = [c.get("periodic_fired", 0) for c in counts]
    assert sum(fired) >= 3 and len(fired) == 2


def test_killing_one_of_two_daemons_loses_no_job(client: redis.Redis, redis_url: str) -> None:
    ids = [queue(client, i % 4).enqueue("tests.fixtures.jobs.sleep", 0.01).id for i in range(400)]
    with running_daemon(redis_url, env=FAST_LEASE):
        doomed = DaemonProcess(redis_url, env=FAST_LEASE).wait_ready(count=2)
        wait_until(lambda: finished(client) >= 60, timeout_s=30)
        doomed.kill()
        doomed.log.close()
        killed_at = time.monotonic()
        held = [m.decode() for p in range(4) for m in client.zrange(f"rq:wip:p{p}", 0, -1)]
        held_by_doomed = [m for m in held if f"-{doomed.process.pid}-" in m]
        wait_until(lambda: not set(held_by_doomed) & {m for p in range(4) for m in _wip(client, p)})
        recovery_s = time.monotonic() - killed_at
        wait_until(lambda: finished(client) == 400, timeout_s=60)
    print(f"{len(held_by_doomed)} claims of the killed daemon back in their queues after {recovery_s:.2f} s")
    assert held_by_doomed, "the kill should catch jobs in the doomed daemon's hands"
    assert recovery_s < 5, recovery_s  # lease 1 s here (10 s by default): seconds, not minutes
    assert all(client.xlen(f"rq:results:{i}") == 1 for i in ids)  # none finished twice


def _wip(client: redis.Redis, priority: int) -> list[str]:
    return [m.decode() for m in client.zrange(f"rq:wip:p{priority}", 0, -1)]
