"""Exit codes, and the one place a command's known failures become one line on stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable

import redis

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
    except (ConnectionError, redis.ConnectionError, redis.TimeoutError) as exc:
        return _say(f"cannot reach Redis: {exc}", EXIT_FAILURE)


def _say(message: object, code: int) -> int:
    print(f"adaptive-scheduler: {message}", file=sys.stderr)
    return code
