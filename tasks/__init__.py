"""Tasks: the allowlisted functions the daemon runs, and the `@task` decorator that registers them."""

from __future__ import annotations

from tasks import builtin
from tasks.registry import TaskInfo, describe_allowed, is_allowed, lookup, registered_paths, task

__all__ = ["TaskInfo", "builtin", "describe_allowed", "is_allowed", "lookup", "registered_paths", "task"]
