"""`job ID` (pure part): what one job's facts say about where it is, and the exit code scripts get."""

from __future__ import annotations

from dataclasses import replace

import pytest
from adaptive_scheduler.job_view import JobFacts, describe, exit_code, render

T = "2026-12-05T10:00:00Z"
QUEUED = JobFacts("j1", "queued", "myapp.jobs.resize", "p2", "P2", enqueued_at=T)


@pytest.mark.parametrize(
    ("facts", "where", "code"),
    [
        (replace(QUEUED, position=3), "queued in p2 (P2), 3 job(s) ahead of it", 0),
        (QUEUED, "queued in p2 (P2)", 0),
        (
            replace(QUEUED, position=0, ours={"asched_memory_stops": "2", "asched_reason": "memory HIGH"}),
            "queued in p2 (P2), 0 job(s) ahead of it; stopped for memory 2 time(s) so far (memory HIGH)",
            0,
        ),
        (
            replace(
                QUEUED,
                status="started",
                worker="adaptive-scheduler:host-1-ab",
                worker_alive=True,
                started_at=T,
            ),
            f"claimed by daemon host-1-ab at {T}, from p2 (P2)",
            0,
        ),
        (
            replace(
                QUEUED,
                status="started",
                worker="adaptive-scheduler:host-1-ab",
                worker_alive=False,
                started_at=T,
            ),
            f"claimed by daemon host-1-ab at {T}, from p2 (P2); its lease has expired: a live daemon will "
            "put it back",
            0,
        ),
        (
            replace(QUEUED, status="started", worker="rq-worker-7", started_at=T),
            f"started by RQ worker rq-worker-7 at {T}",
            0,
        ),
        (replace(QUEUED, status="scheduled", scheduled_for=T), f"scheduled for {T} in p2 (P2)", 0),
        (
            replace(
                QUEUED,
                status="scheduled",
                scheduled_for=T,
                ours={"asched_reason": "circuit breaker of myapp.jobs.resize is open"},
            ),
            f"scheduled for {T} in p2 (P2): circuit breaker of myapp.jobs.resize is open",
            0,
        ),
        (
            replace(QUEUED, status="deferred", depends_on=("a", "b")),
            "waiting for the jobs it depends on: a, b",
            0,
        ),
        (replace(QUEUED, status="finished", ended_at=T, result=42), f"finished at {T}", 0),
        (replace(QUEUED, status="failed", ended_at=T, error="ValueError: no"), f"failed at {T}", 1),
        (
            replace(
                QUEUED,
                status="canceled",
                ours={"asched_outcome": "shed", "asched_level": "HIGH", "asched_reason": "P2 shed at HIGH"},
            ),
            "shed under memory pressure (HIGH): P2 shed at HIGH; `adaptive-scheduler shed replay j1`",
            1,
        ),
        (
            replace(
                QUEUED, status="canceled", ours={"asched_outcome": "skipped", "asched_level": "ELEVATED"}
            ),
            "skipped under memory pressure (ELEVATED): ",
            1,
        ),
        (replace(QUEUED, status="canceled", ended_at=T), f"canceled at {T}", 1),
        (replace(QUEUED, status="stopped", ended_at=T), f"stopped at {T}", 1),
    ],
)
def test_where_a_job_is_and_its_exit_code(facts: JobFacts, where: str, code: int) -> None:
    view = describe(facts)
    assert view["where"] == where
    assert exit_code(view) == code


def test_a_shed_job_shows_shed_as_its_status_where_rq_says_canceled() -> None:
    facts = replace(QUEUED, status="canceled", ours={"asched_outcome": "shed"})
    assert describe(facts)["status"] == "shed"


def test_a_finished_job_shows_its_result_and_a_failed_one_its_error() -> None:
    finished = describe(replace(QUEUED, status="finished", ended_at=T, result={"w": 100}))
    failed = describe(replace(QUEUED, status="failed", ended_at=T, error="ValueError: too wide"))
    assert finished["result"] == {"w": 100} and "error" not in finished
    assert failed["error"] == "ValueError: too wide" and "result" not in failed
    assert render(finished).splitlines() == [
        "job j1: finished",
        "  task     myapp.jobs.resize",
        f"  where    finished at {T}",
        "  result   {'w': 100}",
    ]
    assert render(failed).splitlines()[-1] == "  error    ValueError: too wide"


def test_a_payload_in_another_format_still_shows_where_the_job_is() -> None:
    assert "? (payload unreadable)" in render(describe(replace(QUEUED, task=None)))
