"""The daemon's RQ worker entry, without Redis: the fields, the keys, and the commands added to a pipeline.

rq 3 (the project's own RQ) parses the fields here with its own code; tests/integration/test_rq_worker.py
has both majors read a live daemon's entry.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from adaptive_scheduler import keys
from adaptive_scheduler.rq_worker import (
    Activity,
    Execution,
    Identity,
    Registration,
    activity_of,
    execution_fields,
    worker_fields,
)
from rq import Worker, worker_registration
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE
from rq.executions import Execution as RqExecution
from rq.utils import utcparse

NAME = "adaptive-scheduler:web-1-42-abc123"
QUEUES = ("p0", "p1", "p2", "p3")
BIRTH = 1_800_000_000.25
NOW = BIRTH + 60.5
IDENTITY = Identity(NAME, QUEUES, "web-1", 42, BIRTH, "3.11.7")
A = Execution("job-a", "web-1-42-abc123.7", NOW - 5.0)
B = Execution("job-b", "web-1-42-abc123.8", NOW - 2.0)


class RecordingPipeline:
    """Records the commands a pipeline would send, as (name, args, kwargs)."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self.commands.append((name, args, kwargs))

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [args for command, args, _ in self.commands if command == name]


def refreshed(fields: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Worker:
    """An rq 3 Worker loaded from `fields` by RQ's own `refresh` (no server: hgetall is replaced)."""
    connection = redis.Redis(unix_socket_path="/nonexistent")
    raw = {k.encode(): v.encode() for k, v in fields.items()}
    monkeypatch.setattr(connection, "hgetall", lambda key: raw if key == keys.rq_worker(NAME) else {})
    worker = Worker([], NAME, connection=connection, prepare_for_work=False)
    worker.refresh()
    return worker


def test_an_idle_daemon_reads_back_through_rqs_own_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a daemon with no job running, 7 jobs finished, 3 failed (retried ones included)
    fields = worker_fields(IDENTITY, Activity((), 7, 3, 12.5), NOW)
    # When RQ loads it
    worker = refreshed(fields, monkeypatch)
    # Then it has its queues, state, counts and times, and no current job
    assert worker.queue_names() == list(QUEUES) and worker.get_state() == "idle"
    assert (worker.pid, worker.hostname) == (42, "web-1")
    assert (worker.successful_job_count, worker.failed_job_count, worker.total_working_time) == (7, 3, 12.5)
    assert worker.birth_date == datetime.fromtimestamp(BIRTH, UTC)
    assert worker.last_heartbeat == datetime.fromtimestamp(NOW, UTC)
    assert "current_job" not in fields and fields["current_job_working_time"] == "0"


@pytest.mark.parametrize(
    ("running", "current", "working_s"),
    [((A,), "job-a", 5.0), ((B, A), "job-a", 5.0), ((B,), "job-b", 2.0)],
)
def test_a_busy_daemon_names_its_longest_running_job(
    running: tuple[Execution, ...], current: str, working_s: float
) -> None:
    fields = worker_fields(IDENTITY, Activity(running), NOW)
    assert fields["state"] == "busy" and fields["current_job"] == current
    assert float(fields["current_job_working_time"]) == pytest.approx(working_s)


def test_the_activity_counts_retried_failures_as_rq_does_and_dates_jobs_by_the_wall_clock() -> None:
    # Given a daemon with one busy and one idle slot (its job started 4 s ago by the monotonic clock)
    job = SimpleNamespace(id="job-a", execution_id="d.1")
    slots = [
        SimpleNamespace(running=SimpleNamespace(job=job, started_mono=96.0)),
        SimpleNamespace(running=None),
    ]
    counts = {"finished": 7, "failed": 2, "retried": 1, "put_back": 4}
    daemon = SimpleNamespace(pool=SimpleNamespace(slots=slots), counts=counts, working_s=3.5)
    # When its activity is read at monotonic 100
    activity = activity_of(daemon, NOW, 100.0)  # type: ignore[arg-type]
    # Then
    assert activity == Activity((Execution("job-a", "d.1", NOW - 4.0),), 7, 3, 3.5)


def test_a_state_given_wins_over_the_slots() -> None:
    assert worker_fields(IDENTITY, Activity((A,), state="started"), NOW)["state"] == "started"


def test_timestamps_are_in_rqs_text_form() -> None:
    fields = worker_fields(IDENTITY, Activity(), NOW)
    assert utcparse(fields["birth"]).timestamp() == pytest.approx(BIRTH, abs=1e-6)
    assert fields["last_heartbeat"].endswith("Z")


def test_an_execution_reads_back_through_rq3s_own_restore() -> None:
    fields = execution_fields(NAME, A, NOW)
    execution = RqExecution("?", "?", connection=None)  # type: ignore[arg-type]
    execution.restore({k.encode(): v.encode() for k, v in fields.items()})
    assert (execution.job_id, execution.worker_name) == ("job-a", NAME)
    assert execution.created_at.timestamp() == pytest.approx(A.started, abs=1e-6)
    assert execution.last_heartbeat.timestamp() == pytest.approx(NOW, abs=1e-6)


def test_our_key_names_are_rqs() -> None:
    worker = Worker([], NAME, connection=redis.Redis(unix_socket_path="/nonexistent"), prepare_for_work=False)
    assert keys.RQ_WORKERS == worker_registration.REDIS_WORKER_KEYS == Worker.redis_workers_keys
    assert keys.rq_workers_of("p0") == worker_registration.WORKERS_BY_QUEUE_KEY % "p0"
    assert keys.rq_worker(NAME) == worker.key
    assert (
        keys.rq_worker_executions(NAME)
        == WORKER_EXECUTIONS_KEY_TEMPLATE.format(NAME)
        == worker.executions_key
    )
    execution = RqExecution(A.execution_id, A.job_id, connection=None)  # type: ignore[arg-type]
    assert keys.rq_execution(A.job_id, A.execution_id) == execution.key


def test_a_heartbeat_renews_the_hash_the_sets_and_the_executions() -> None:
    # Given a registration whose last heartbeat saw jobs A and B
    registration = Registration(IDENTITY, ttl_s=2.5)
    registration.heartbeat(RecordingPipeline(), Activity((A, B)), NOW)
    pipe = RecordingPipeline()
    # When the next one sees A alone
    registration.heartbeat(pipe, Activity((A,)), NOW + 1)
    key = keys.rq_worker(NAME)
    # Then the hash is rewritten and expires in one TTL, and it is in RQ's five sets again
    assert pipe.named("pexpire")[0] == (key, 2500)
    assert sorted(args[0] for args in pipe.named("sadd") if args[1] == key) == sorted(
        [keys.RQ_WORKERS, *(keys.rq_workers_of(q) for q in QUEUES)]
    )
    # and the executions set holds A only, B's hash is deleted, A's rewritten with a TTL
    executions = keys.rq_worker_executions(NAME)
    assert pipe.named("delete") == [(executions, keys.rq_execution(B.job_id, B.execution_id))]
    assert (executions, f"{A.job_id}:{A.execution_id}") in pipe.named("sadd")
    assert (keys.rq_execution(A.job_id, A.execution_id), 2500) in pipe.named("pexpire")
    assert pipe.named("hdel") == []


def test_an_idle_heartbeat_deletes_the_current_job() -> None:
    pipe = RecordingPipeline()
    Registration(IDENTITY, ttl_s=10).heartbeat(pipe, Activity(), NOW)
    assert pipe.named("hdel") == [(keys.rq_worker(NAME), "current_job")]
    assert pipe.named("delete") == [(keys.rq_worker_executions(NAME),)]


def test_unregistering_leaves_every_set_and_deletes_the_hashes() -> None:
    registration = Registration(IDENTITY, ttl_s=10)
    registration.heartbeat(RecordingPipeline(), Activity((A,)), NOW)
    pipe = RecordingPipeline()
    registration.unregister(pipe)
    key = keys.rq_worker(NAME)
    assert sorted(args[0] for args in pipe.named("srem")) == sorted(
        [keys.RQ_WORKERS, *(keys.rq_workers_of(q) for q in QUEUES)]
    )
    assert pipe.named("delete") == [
        (key, keys.rq_worker_executions(NAME), keys.rq_execution(A.job_id, A.execution_id))
    ]
