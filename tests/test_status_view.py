"""`status` as text, from an overview written by hand: claimed jobs apart from running ones."""

from __future__ import annotations

from typing import Any

from adaptive_scheduler.status_view import STARTED_LEGEND, render


def slot(index: int, job_id: str | None) -> dict[str, Any]:
    running = 3.2 if job_id else None
    return {"index": index, "pid": 100 + index, "job_id": job_id, "task": "jobs.add", "running_s": running}


def overview() -> dict[str, Any]:
    """P1: 3 jobs in RQ's started registry, 2 running in the daemon's slots, 1 held in its local queue."""
    row = {"queued": 0, "started": 0, "running": 0, "waiting_for_slot": 0, "finished": 0, "failed": 0}
    queues = {f"P{i}": {**row, "queue": f"p{i}", "scheduled": 0} for i in range(4)}
    queues["P1"] |= {"started": 3, "running": 2, "waiting_for_slot": 1}
    daemon = {
        "id": "web-1-42-abc123",
        "pid": 42,
        "slot_mode": "fork",
        "local": {"P0": 0, "P1": 1, "P2": 0, "P3": 0},
        "slots": [slot(0, "a"), slot(1, "b")],
        "counts": {},
        "running": 2,
        "waiting_for_slot": 1,
    }
    return {"queues": queues, "totals": {}, "daemons": [daemon], "task_profiles": []}


def test_a_queue_row_splits_started_into_running_and_claimed() -> None:
    lines = render(overview(), 0.0).splitlines()
    assert lines[0].split() == [
        "priority",
        "queue",
        "queued",
        "started",
        "running",
        "claimed",
        "finished",
        "failed",
        "scheduled",
    ]
    assert lines[2].split() == ["P1", "p1", "0", "3", "2", "1", "0", "0", "0"]
    assert lines[5] == STARTED_LEGEND and "waiting for a slot" in STARTED_LEGEND


def test_a_daemon_line_says_what_runs_and_what_waits_for_a_slot() -> None:
    text = render(overview(), 0.0)
    assert "web-1-42-abc123 (pid 42, fork): running 2 of 2 slots; claimed, waiting for a slot: P1 1" in text
