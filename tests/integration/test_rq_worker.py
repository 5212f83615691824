"""RQ's own tools see each daemon as one worker: `rq info` and `Worker.all()` of rq 2 and rq 3.

A running daemon is listed with its queues and state, busy with a current job while one runs; it leaves
the list on a clean stop, and after a SIGKILL once its entry expires (one lease); a daemon that lost its
lease and serves again under a new id is listed under that id alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import redis
from adaptive_scheduler import keys
from adaptive_scheduler.daemon import Daemon
from adaptive_scheduler.settings.load import load_settings
from rq import Worker

from tests.helpers import ROOT, DaemonProcess, queue, running_daemon, wait_until

RQ = {"rq3": Path(sys.executable).parent, "rq2": ROOT / ".venv-rq2" / "bin"}
SHORT_LEASE = {"ASCHED_LEASE_TTL_S": "1", "ASCHED_SLOTS": "2"}
WORKERS = """
import json, sys
from redis import Redis
from rq import Worker
r = Redis.from_url(sys.argv[1])
print(json.dumps([[w.name, w.queue_names(), w.get_state(), w.get_current_job_id(), w.successful_job_count]
                  for w in Worker.all(connection=r)]))
"""


def workers(major: str, url: str) -> list[list[object]]:
    """`Worker.all()` as that RQ major loads it: name, queues, state, current job id, jobs finished."""
    done = subprocess.run(
        [str(RQ[major] / "python"), "-c", WORKERS, url], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def rq_info(major: str, url: str) -> str:
    """`rq info --only-workers` of that RQ major's command line."""
    done = subprocess.run(
        [str(RQ[major] / "rq"), "info", "--url", url, "-W"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def worker_name(client: redis.Redis) -> str:
    (status_key,) = client.scan_iter(match=keys.daemon_status("*"))
    return "adaptive-scheduler:" + status_key.decode().removeprefix(keys.daemon_status(""))


def worker_keys(client: redis.Redis) -> list[bytes]:
    return sorted(client.scan_iter(match="rq:worker*")) + sorted(client.scan_iter(match="rq:execution*"))


def test_a_running_daemon_is_one_rq_worker_for_both_majors_until_it_stops(
    client: redis.Redis, redis_url: str
) -> None:
    with running_daemon(redis_url, env={"ASCHED_SLOTS": "2"}):
        name = worker_name(client)
        wait_until(lambda: [w.get_state() for w in Worker.all(connection=client)] == ["idle"])
        # Given an idle daemon: both majors' `rq info` list it, idle, on its four queues
        for major in ("rq2", "rq3"):
            info = rq_info(major, redis_url)
            assert f"{name} (" in info and "idle p0, p1, p2, p3. jobs: 0 finished, 0 failed" in info, info
            assert "1 workers" in info, info
        # When a job runs: it is busy, with that job as its current one, for both majors
        job = queue(client, 1).enqueue("tests.fixtures.jobs.sleep", 4.0)  # outlasts two CLIs under load
        wait_until(lambda: [w.get_state() for w in Worker.all(connection=client)] == ["busy"])
        for major in ("rq2", "rq3"):
            assert workers(major, redis_url) == [[name, ["p0", "p1", "p2", "p3"], "busy", job.id, 0]]
        # and idle again once it finished, with the job counted
        wait_until(lambda: [w.successful_job_count for w in Worker.all(connection=client)] == [1])
        assert workers("rq2", redis_url) == [[name, ["p0", "p1", "p2", "p3"], "idle", None, 1]]
    # Then a clean stop removes it at once: no worker, no key of it left
    assert "0 workers" in rq_info("rq3", redis_url)
    assert worker_keys(client) == []


def test_a_killed_daemons_entry_expires_and_the_next_daemon_prunes_it(
    client: redis.Redis, redis_url: str
) -> None:
    # Given a daemon with a 1 s lease, killed
    doomed = DaemonProcess(redis_url, env=SHORT_LEASE).wait_ready()
    try:
        dead = keys.rq_worker(worker_name(client))
        assert client.exists(dead)
        doomed.kill()
        # Then RQ's tools stop listing it within about a lease
        wait_until(lambda: not client.exists(dead), timeout_s=2.5)
        assert workers("rq2", redis_url) == [] and workers("rq3", redis_url) == []
    finally:
        doomed.kill()
        doomed.client.close()
        doomed.log.close()
    # And the next daemon to start removes what it left in the per-queue sets (RQ's readers never do)
    client.sadd(keys.rq_workers_of("p2"), dead)
    with running_daemon(redis_url, env=SHORT_LEASE):
        live = keys.rq_worker(worker_name(client)).encode()
        assert client.smembers(keys.rq_workers_of("p2")) == {live}
        assert client.smembers(keys.RQ_WORKERS) == {live}


def test_a_daemon_serving_again_under_a_new_id_is_a_new_rq_worker(
    client: redis.Redis, redis_url: str
) -> None:
    daemon = Daemon(load_settings(), redis_url)
    try:
        daemon.join()
        old = daemon.intake.worker.key
        # Given another daemon reclaimed this one's jobs (its lease gone, its id out of the set)
        client.delete(keys.daemon_lease(daemon.id))
        client.srem(keys.DAEMONS, daemon.id)
        # When its housekeeping finds the lease lost
        daemon._housekeeping(time.time())
        # Then it is registered under its new id only
        new = daemon.intake.worker.key
        assert new == keys.rq_worker(f"adaptive-scheduler:{daemon.id}") != old
        assert not client.exists(old) and client.hget(new, "state") == b"idle"
        for name in ("p0", "p3"):
            assert client.smembers(keys.rq_workers_of(name)) == {new.encode()}
        assert [w.key for w in Worker.all(connection=client)] == [new]
    finally:
        daemon.shutdown()
    assert worker_keys(client) == []
