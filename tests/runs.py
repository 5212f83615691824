"""Reading what `tests.fixtures.jobs.paced_run` recorded: executions per job, and whether any overlapped."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Execution:
    job_id: str
    first: float
    last: float
    ended: bool = False


def executions(path: Path) -> dict[str, list[Execution]]:
    """Job id -> its executions, in the order they started."""
    runs: dict[str, Execution] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        kind, execution, job_id, at = line.split()
        run = runs.setdefault(execution, Execution(job_id, float(at), float(at)))
        run.last = max(run.last, float(at))
        run.ended = run.ended or kind == "end"
    by_job: dict[str, list[Execution]] = defaultdict(list)
    for run in sorted(runs.values(), key=lambda r: r.first):
        by_job[run.job_id].append(run)
    return dict(by_job)


def overlapping(path: Path) -> list[tuple[str, Execution, Execution]]:
    """Pairs of executions of one job whose spans intersect."""
    found = []
    for job_id, runs in executions(path).items():
        for i, a in enumerate(runs):
            found += [(job_id, a, b) for b in runs[i + 1 :] if b.first <= a.last]
    return found
