"""Producers on each supported RQ major (2.x and 3.x) enqueue and read back through their own RQ.

RQ 3 is the one installed with the project; RQ 2 lives in .venv-rq2 (made by `./dev test`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.helpers import ROOT, running_daemon, wait_until

PRODUCE = """
import json, sys
from redis import Redis
from rq import Queue, Retry, __version__
from rq.serializers import JSONSerializer
r = Redis.from_url(sys.argv[1])
ids = []
for i in range(40):
    q = Queue(f"p{i % 4}", connection=r, serializer=JSONSerializer)
    ids.append(q.enqueue("tests.fixtures.jobs.add", i, 1).id)
p1 = Queue("p1", connection=r, serializer=JSONSerializer)
ids.append(p1.enqueue("tests.fixtures.jobs.fail", "x", retry=Retry(max=1)).id)
print(json.dumps({"version": __version__, "ids": ids}))
"""

READ_BACK = """
import json, sys
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer
r = Redis.from_url(sys.argv[1])
out = []
for job_id in json.loads(sys.argv[2]):
    job = Job.fetch(job_id, connection=r, serializer=JSONSerializer)
    result = job.latest_result()
    out.append([job.get_status().value, job.return_value(), result.exc_string if result else None,
                job.started_at is not None and job.ended_at is not None])
print(json.dumps(out))
"""

PYTHONS = {"rq3": Path(sys.executable), "rq2": ROOT / ".venv-rq2" / "bin" / "python"}


def run(python: Path, code: str, *args: str) -> str:
    if not python.exists():
        pytest.fail(f"{python} is missing: run ./dev test, which creates it")
    done = subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("major", ["rq2", "rq3"])
def test_a_producer_of_each_rq_major_enqueues_and_reads_back(
    major: str, client: redis.Redis, redis_url: str
) -> None:
    produced = json.loads(run(PYTHONS[major], PRODUCE, redis_url))
    assert produced["version"].startswith(major[-1])
    ids = produced["ids"]
    with running_daemon(redis_url):
        wait_until(
            lambda: all(
                Job.fetch(i, connection=client, serializer=JSONSerializer).get_status()
                in (JobStatus.FINISHED, JobStatus.FAILED)
                for i in ids
            ),
            timeout_s=30,
        )
    seen = json.loads(run(PYTHONS[major], READ_BACK, redis_url, json.dumps(ids)))
    assert seen[:40] == [["finished", i + 1, None, True] for i in range(40)]
    status, value, failure, timed = seen[40]
    assert (status, value, timed) == ("failed", None, True) and "RuntimeError: x" in failure


def test_rq_info_shows_our_queues_and_registries(client: redis.Redis, redis_url: str) -> None:
    run(PYTHONS["rq3"], PRODUCE, redis_url)
    with running_daemon(redis_url):
        wait_until(lambda: client.zcard("rq:failed:p1") == 1, timeout_s=30)
    info = subprocess.run(
        [str(Path(sys.executable).parent / "rq"), "info", "--url", redis_url, "-R"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert info.returncode == 0, info.stderr
    lines = {
        line.split("|")[0].strip(): line.split("|")[1].strip()
        for line in info.stdout.splitlines()
        if "|" in line
    }
    assert lines["p0"] == "0, 0 executing, 10 finished, 0 failed"
    assert lines["p1"] == "0, 0 executing, 10 finished, 1 failed"
