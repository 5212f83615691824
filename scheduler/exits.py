"""Exit codes, and the one place a command's known failures become one line on stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable

from scheduler.errors import SchedulerError, UsageError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def reporting_failures(command: Callable[[], int]) -> int:
    """Run `command`; bad input exits 2 and a runtime failure 1, each with one line, no traceback."""
    try:
        return int(command())
    except UsageError as exc:
        return _say(exc, EXIT_USAGE)
    except SchedulerError as exc:
        return _say(exc, EXIT_FAILURE)
    except Exception as exc:
        if not _unreachable(exc):
            raise
        return _say(f"cannot reach Redis: {exc}", EXIT_FAILURE)


def _unreachable(exc: Exception) -> bool:
    """A lost or refused connection (redis-py's own classes, if it was imported: `run` execs first)."""
    redis = sys.modules.get("redis")
    kinds = (ConnectionError, redis.ConnectionError, redis.TimeoutError) if redis else (ConnectionError,)
    return isinstance(exc, kinds)


def _say(message: object, code: int) -> int:
    print(f"adaptive-scheduler: {message}", file=sys.stderr)
    return code
