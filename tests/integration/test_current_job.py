"""`rq.get_current_job()` inside a job a slot runs: the running job, as RQ's own workers give it.

Code written for plain RQ reads `job.id` and `job.meta` and calls `job.save_meta()` from inside a job
(issue 13). The daemon runs with whichever RQ major its venv has (rq>=2.4,<4): the daemon test uses this
venv's, and the slot-side module is also run under the other major's python.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import rq
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.helpers import ROOT, queue, running_daemon, wait_until

SLOT_SIDE = """
import json, sys
sys.path.insert(0, sys.argv[2])
import rq
from redis import Redis
from rq import Queue, get_current_job
from rq.serializers import JSONSerializer
from adaptive_scheduler.current_job import CurrentJob

url = sys.argv[1]
enqueued = Queue("p2", connection=Redis.from_url(url), serializer=JSONSerializer).enqueue(
    "x.f", 7, meta={"tenant": "a"})
current = CurrentJob(url, "json", ("p0", "p1", "p2", "p3"))
before = get_current_job()
seen = []
for job_id, meta in ((enqueued.id, b'{"tenant": "a"}'), (enqueued.id, None)):
    with current.running(job_id, 2, meta, ("x.f", (7,), {})):
        job = get_current_job()
        seen.append([job.id, dict(job.meta), job.origin, job.func_name, list(job.args)])
        job.meta["note"] = "saved"
        if meta:
            job.save_meta()
after = get_current_job()
print(json.dumps({"rq": rq.__version__, "seen": seen, "outside": [before, after]}))
"""
PYTHONS = {"rq3": Path(sys.executable), "rq2": ROOT / ".venv-rq2" / "bin" / "python"}


def fetch(client: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=client, serializer=JSONSerializer)


def test_a_job_sees_itself_through_get_current_job_and_saves_its_meta(
    client: redis.Redis, redis_url: str
) -> None:
    # Given a daemon with one pool slot (jobs run one after another in the same process)
    with running_daemon(redis_url, env={"ASCHED_SLOTS": "1"}):
        # When plain RQ jobs read their current job, the first with meta, the second without
        first = queue(client, 1).enqueue("tests.fixtures.jobs.current_job", "hi", meta={"tenant": "a"})
        second = queue(client, 3).enqueue("tests.fixtures.jobs.current_job")
        wait_until(lambda: all(fetch(client, j.id).get_status() == "finished" for j in (first, second)))
    # Then each saw itself: its id, meta, queue, call, the JSON serializer and a working connection
    assert fetch(client, first.id).return_value() == {
        "id": first.id,
        "meta": {"tenant": "a"},
        "origin": "p1",
        "func_name": "tests.fixtures.jobs.current_job",
        "args": ["hi"],
        "serializer": "JSONSerializer",
        "ping": True,
        "status": "started",
    }
    seen = fetch(client, second.id).return_value()
    assert (seen["id"], seen["meta"], seen["origin"]) == (second.id, {}, "p3")  # nothing of the first
    # And what the first saved with save_meta() is in Redis, next to the producer's meta
    assert fetch(client, first.id).get_meta() == {"tenant": "a", "note": "hi"}


@pytest.mark.parametrize("major", ["rq2", "rq3"])
def test_the_slot_side_sets_the_current_job_of_either_rq_major(
    major: str, client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    # Given the slot-side module loaded under that major's python (it needs only redis and rq)
    python = PYTHONS[major]
    if not python.exists():
        pytest.fail(f"{python} is missing: run ./dev test, which creates it")
    (tmp_path / "adaptive_scheduler").symlink_to(ROOT / "scheduler")
    done = subprocess.run(
        [str(python), "-c", SLOT_SIDE, redis_url, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["rq"].startswith(major[-1]) and (major == "rq2" or out["rq"] == rq.__version__)
    # Then inside each job get_current_job() is that job; outside it is None, as under RQ's workers
    job_id = out["seen"][0][0]
    assert out["seen"] == [
        [job_id, {"tenant": "a"}, "p2", "x.f", [7]],
        [job_id, {}, "p2", "x.f", [7]],  # a second job starts with fresh meta
    ]
    assert out["outside"] == [None, None]
    assert fetch(client, job_id).get_meta() == {"tenant": "a", "note": "saved"}
