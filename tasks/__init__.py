"""Tasks: the allowlisted functions the daemon runs, the `@task` decorator, and the SDK (`context`)."""

from __future__ import annotations

from adaptive_scheduler.tasks.registry import (
    TaskInfo,
    describe_allowed,
    import_allowed,
    is_allowed,
    lookup,
    registered_paths,
    task,
)
from adaptive_scheduler.tasks.sdk import JobContext, Preempted, context

__all__ = [
    "JobContext",
    "Preempted",
    "TaskInfo",
    "context",
    "describe_allowed",
    "import_allowed",
    "is_allowed",
    "lookup",
    "registered_paths",
    "task",
]
